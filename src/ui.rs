//! Renders the library's events on stderr: a live status line on a terminal, plain lines
//! otherwise, everything with `--verbose`, only warnings with `--quiet`.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use kforge::flow::{Event, Outcome, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

pub struct Ui {
    level: Level,
    tty: bool,
    state: Mutex<State>,
}

struct State {
    step_start: Instant,
    status_shown: bool,
    last_draw: Option<Instant>,
}

impl Ui {
    pub fn new(level: Level) -> Self {
        Self {
            level,
            tty: std::io::stderr().is_terminal(),
            state: Mutex::new(State {
                step_start: Instant::now(),
                status_shown: false,
                last_draw: None,
            }),
        }
    }

    fn line(st: &mut State, text: &str) {
        let mut err = std::io::stderr().lock();
        if st.status_shown {
            let _ = write!(err, "\r\x1b[K");
            st.status_shown = false;
        }
        let _ = writeln!(err, "{text}");
    }
}

fn secs(d: std::time::Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

impl Reporter for Ui {
    fn event(&self, event: &Event<'_>) {
        let mut st = self.state.lock().expect("ui lock");
        match event {
            Event::Warn { step, message } => {
                Self::line(&mut st, &format!("warning: [{step}] {message}"));
            }
            _ if self.level == Level::Quiet => {}
            Event::StepStarted { step } => {
                st.step_start = Instant::now();
                if self.level == Level::Verbose || !self.tty {
                    Self::line(&mut st, &format!("==> {step}"));
                } else {
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K    {step} ...");
                    let _ = err.flush();
                    st.status_shown = true;
                }
            }
            Event::StepFinished {
                step,
                elapsed,
                outcome,
            } => match outcome {
                Outcome::Ran => Self::line(&mut st, &format!("ok  {step} ({})", secs(*elapsed))),
                Outcome::Skipped(why) => Self::line(&mut st, &format!("--  {step} skipped: {why}")),
            },
            Event::Info { step, message } => {
                Self::line(&mut st, &format!("    [{step}] {message}"));
            }
            Event::Command { step, command } => {
                if self.level == Level::Verbose {
                    Self::line(&mut st, &format!("    [{step}] $ {command}"));
                }
            }
            Event::Output { step, line } => {
                if self.level == Level::Verbose {
                    Self::line(&mut st, line);
                } else if self.tty {
                    // A status line, redrawn at most 10 times a second.
                    let now = Instant::now();
                    if st
                        .last_draw
                        .is_some_and(|t| now.duration_since(t).as_millis() < 100)
                    {
                        return;
                    }
                    st.last_draw = Some(now);
                    let mut text = format!(
                        "    {step} {} {}",
                        secs(st.step_start.elapsed()),
                        line.trim()
                    );
                    text.truncate(100);
                    let mut err = std::io::stderr().lock();
                    let _ = write!(err, "\r\x1b[K{text}");
                    let _ = err.flush();
                    st.status_shown = true;
                }
            }
        }
    }
}
