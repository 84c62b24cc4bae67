//! Renders the library's events on stderr: on a terminal, an indicatif spinner per step
//! (step, elapsed, objects built, what the tool is doing); otherwise plain lines and, while a
//! step runs, a heartbeat at least every 30 s so that a CI log of a long compile shows life;
//! everything with `--verbose`, only warnings with `--quiet`.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use kforge::flow::{Event, Outcome, Reporter};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Quiet,
    Normal,
    Verbose,
}

/// A plain-output heartbeat after this long without a line.
const HEARTBEAT: Duration = Duration::from_secs(30);

pub struct Ui {
    level: Level,
    tty: bool,
    state: Arc<Mutex<State>>,
}

/// The step running now, as the renderer sees it.
struct Running {
    step: String,
    start: Instant,
    /// Lines that name a built object (Kbuild's `  CC  kernel/fork.o`, ninja's `[12/900]`).
    objects: u64,
    last_output: String,
    spinner: Option<ProgressBar>,
}

struct State {
    running: Option<Running>,
    /// When the last line was written (plain output).
    last_line: Instant,
}

impl State {
    /// Writes a whole line, above the spinner when one is drawn.
    fn line(&mut self, text: &str) {
        match self.running.as_ref().and_then(|r| r.spinner.as_ref()) {
            Some(pb) => pb.suspend(|| eprintln!("{text}")),
            None => eprintln!("{text}"),
        }
        self.last_line = Instant::now();
    }
}

impl Ui {
    pub fn new(level: Level) -> Self {
        let ui = Self {
            level,
            tty: std::io::stderr().is_terminal(),
            state: Arc::new(Mutex::new(State {
                running: None,
                last_line: Instant::now(),
            })),
        };
        if !ui.tty && level != Level::Quiet {
            let state = Arc::downgrade(&ui.state);
            std::thread::spawn(move || {
                while let Some(state) = state.upgrade() {
                    heartbeat(&mut state.lock().expect("ui lock"));
                    drop(state);
                    std::thread::sleep(Duration::from_secs(1));
                }
            });
        }
        ui
    }
}

/// Says that the running step is alive, when nothing was written for [`HEARTBEAT`].
fn heartbeat(st: &mut State) {
    if st.last_line.elapsed() < HEARTBEAT {
        return;
    }
    let Some(r) = &st.running else { return };
    let text = heartbeat_line(r);
    st.line(&text);
}

fn heartbeat_line(r: &Running) -> String {
    use std::fmt::Write as _;
    let mut text = format!(
        "    [{}] still running, {}",
        r.step,
        secs(r.start.elapsed())
    );
    if r.objects > 0 {
        let _ = write!(text, ", {} objects", r.objects);
    }
    if !r.last_output.is_empty() {
        let _ = write!(text, ", last: {}", clip(&r.last_output, 100));
    }
    text
}

/// At most `max` characters of `s` (never cutting a character in two).
fn clip(s: &str, max: usize) -> &str {
    s.char_indices().nth(max).map_or(s, |(i, _)| &s[..i])
}

/// True for a line that reports one object built: Kbuild's quiet lines (`  CC      x.o`,
/// `  LD [M]  y.ko`) and ninja's `[n/total]` lines.
fn names_an_object(line: &str) -> bool {
    let t = line.trim_start();
    if t.starts_with('[') {
        return t
            .split_once(']')
            .is_some_and(|(n, _)| n[1..].split_once('/').is_some());
    }
    let verb: String = t
        .chars()
        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
        .collect();
    let rest = &t[verb.len()..];
    line.starts_with("  ")
        && (2..=10).contains(&verb.len())
        && rest.starts_with(' ')
        && !rest.trim().is_empty()
}

fn secs(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn spinner(step: &str) -> ProgressBar {
    let pb = ProgressBar::new_spinner();
    pb.set_style(
        ProgressStyle::with_template("{spinner} {prefix} {elapsed:>4} {wide_msg}")
            .expect("a valid template"),
    );
    pb.set_prefix(step.to_owned());
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

impl Reporter for Ui {
    fn event(&self, event: &Event<'_>) {
        let mut st = self.state.lock().expect("ui lock");
        match event {
            Event::Warn { step, message } => st.line(&format!("warning: [{step}] {message}")),
            _ if self.level == Level::Quiet => {}
            Event::StepStarted { step } => {
                let live = self.tty && self.level == Level::Normal;
                if !live {
                    st.line(&format!("==> {step}"));
                }
                st.running = Some(Running {
                    step: (*step).to_owned(),
                    start: Instant::now(),
                    objects: 0,
                    last_output: String::new(),
                    spinner: live.then(|| spinner(step)),
                });
            }
            Event::StepFinished {
                step,
                elapsed,
                outcome,
            } => {
                if let Some(pb) = st.running.take().and_then(|r| r.spinner) {
                    pb.finish_and_clear();
                }
                match outcome {
                    Outcome::Ran => st.line(&format!("ok  {step} ({})", secs(*elapsed))),
                    Outcome::Skipped(why) => st.line(&format!("--  {step} skipped: {why}")),
                }
            }
            Event::Info { step, message } => st.line(&format!("    [{step}] {message}")),
            Event::Command { step, command } => {
                if self.level == Level::Verbose {
                    st.line(&format!("    [{step}] $ {command}"));
                }
            }
            Event::Output { line, .. } => {
                if self.level == Level::Verbose {
                    st.line(line);
                }
                if let Some(r) = st.running.as_mut() {
                    if names_an_object(line) {
                        r.objects += 1;
                    }
                    line.trim().clone_into(&mut r.last_output);
                    if let Some(pb) = &r.spinner {
                        pb.set_message(if r.objects > 0 {
                            format!("{} objects  {}", r.objects, r.last_output)
                        } else {
                            r.last_output.clone()
                        });
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clipping_never_splits_a_character() {
        assert_eq!(clip("abc", 2), "ab");
        assert_eq!(clip("abc", 5), "abc");
        // Each of these is more than one byte: a byte-index cut at 2 would panic.
        assert_eq!(clip("ééé", 2), "éé");
        assert_eq!(
            clip("  CC  drivers/ü/x.o — 日本語", 23),
            "  CC  drivers/ü/x.o — 日"
        );
    }

    #[test]
    fn object_lines_are_counted_and_others_not() {
        for yes in [
            "  CC      kernel/fork.o",
            "  LD [M]  fs/fuse/virtiofs.ko",
            "  HOSTCC  scripts/kconfig/conf.o",
            "[12/1469] Compiling C object libqemuutil.a.p/util_osdep.c.o",
        ] {
            assert!(names_an_object(yes), "{yes}");
        }
        for no in [
            "make[1]: Entering directory '/x'",
            "  GEN     ",
            "warning: unused variable",
            "CC kernel/fork.o",
            "[ok]",
            "",
        ] {
            assert!(!names_an_object(no), "{no}");
        }
    }

    #[test]
    fn the_heartbeat_says_step_time_objects_and_the_last_line() {
        let r = Running {
            step: "compile".into(),
            start: Instant::now().checked_sub(Duration::from_secs(95)).unwrap(),
            objects: 812,
            last_output: format!("CC {}", "ü".repeat(200)),
            spinner: None,
        };
        let line = heartbeat_line(&r);
        assert!(
            line.starts_with("    [compile] still running, 1m3"),
            "{line}"
        );
        assert!(line.contains(", 812 objects, last: CC üü"), "{line}");
        assert_eq!(line.split("last: ").nth(1).unwrap().chars().count(), 100);
    }
}
