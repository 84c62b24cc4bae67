//! fetch_devel: materialize the identity's devel layer, from the store (so a reused or
//! peer-fetched identity works the same), into the developer worktree's `build/`, laid out
//! like the slot's own `O=` directory, and regenerate `compile_commands.json` so that every
//! path in it points into the developer's worktree.
//!
//! Afterwards `make -C <worktree>/build M=<dir>` builds an out-of-tree module against the
//! kernel (the kernel's documented form for a kernel built with `O=`), and clangd finds
//! `<worktree>/compile_commands.json`.

use std::path::{Path, PathBuf};

use super::KernelRun;
use super::devtools::{Entry, read_entries};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::store::Layer;

pub struct FetchDevel;

impl Step<KernelRun> for FetchDevel {
    fn name(&self) -> &'static str {
        "fetch_devel"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let Some(worktree) = ctx.state.dev_worktree.clone() else {
            return Ok(Outcome::Skipped("no developer worktree".into()));
        };
        let release = ctx.release();
        let store = ctx.store()?;
        if store
            .record::<crate::kernel::manifest::Manifest>(Layer::Devel, &release)?
            .is_none()
        {
            return Err(crate::error::PlanError::NoDevelLayer(store.entry(&release)).into());
        }
        let build = worktree.join("build");
        let fresh = worktree.join(format!("build.kforge-new-{}", std::process::id()));
        let old = worktree.join(format!("build.kforge-old-{}", std::process::id()));
        let _ = fs_err::remove_dir_all(&fresh);
        let record: super::KernelRecord = match store.materialize(Layer::Devel, &release, &fresh) {
            Ok(r) => r,
            Err(e) => {
                let _ = fs_err::remove_dir_all(&fresh);
                return Err(e.into());
            }
        };
        // What Kbuild writes into an O= directory of its own, so make runs from it.
        fs_err::write(
            fresh.join("Makefile"),
            "# Written by kforge as Kbuild would: the source tree is the parent directory.\ninclude ../Makefile\n",
        )?;
        fs_err::write(fresh.join(".gitignore"), "# kforge's devel layer\n*\n")?;
        std::os::unix::fs::symlink("..", fresh.join("source"))?;
        let database = fresh.join("compile_commands.json");
        let entries = if database.is_file() {
            let from = Path::new(&record.manifest.build_dir).to_owned();
            let entries = relocate(
                read_entries(&database)?,
                &Moves {
                    build: (from.clone(), build.clone()),
                    src: (
                        from.parent().map(Path::to_owned).unwrap_or_default(),
                        worktree.clone(),
                    ),
                },
            );
            let text = serde_json::to_string_pretty(&entries).expect("serializes");
            fs_err::write(&database, &text)?;
            Some((entries.len(), text))
        } else {
            None
        };
        // Swap in the new build/ (the old one is kforge's own output, never the user's).
        if std::fs::symlink_metadata(&build).is_ok() {
            fs_err::rename(&build, &old)?;
        }
        fs_err::rename(&fresh, &build)?;
        let _ = fs_err::remove_dir_all(&old);
        let top = worktree.join("compile_commands.json");
        let message = if let Some((n, text)) = entries {
            crate::fsutil::write_atomic(&top, text.as_bytes())?;
            format!(
                "{} files of kernel-{release} in {}; {} ({n} entries)",
                record.files.len(),
                build.display(),
                top.display()
            )
        } else {
            let _ = fs_err::remove_file(&top);
            format!(
                "{} files of kernel-{release} in {} (its devel layer has no compile_commands.json: it was built with devtools off)",
                record.files.len(),
                build.display()
            )
        };
        reporter.event(&Event::Info {
            step: self.name(),
            message: &message,
        });
        Ok(Outcome::Ran)
    }
}

/// Where the build's directories were, and where they are now.
pub struct Moves {
    pub build: (PathBuf, PathBuf),
    pub src: (PathBuf, PathBuf),
}

impl Moves {
    /// Rewrites every mention of an old directory (as a whole path or a path prefix) in
    /// `text`; the build directory first, as it lies inside the source tree.
    fn apply(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for (from, to) in [&self.build, &self.src] {
            out = replace_path(&out, &from.to_string_lossy(), &to.to_string_lossy());
        }
        out
    }
}

/// Replaces `from` where it stands as a path: followed by `/`, a quote, white space, `=`,
/// `,`, `:` or the end, so `/a/linux` never matches inside `/a/linux-next`.
fn replace_path(text: &str, from: &str, to: &str) -> String {
    if from.is_empty() || from == to {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(from) {
        let after = &rest[i + from.len()..];
        let boundary = after
            .chars()
            .next()
            .is_none_or(|c| matches!(c, '/' | '"' | '\'' | '=' | ',' | ':') || c.is_whitespace());
        out.push_str(&rest[..i]);
        out.push_str(if boundary { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

/// The database with every path moved.
pub fn relocate(entries: Vec<Entry>, moves: &Moves) -> Vec<Entry> {
    entries
        .into_iter()
        .map(|e| Entry {
            command: moves.apply(&e.command),
            directory: moves.apply(&e.directory),
            file: moves.apply(&e.file),
            output: e.output.map(|o| moves.apply(&o)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn moves() -> Moves {
        Moves {
            build: ("/w/1/main/linux/build".into(), "/home/d/wt/build".into()),
            src: ("/w/1/main/linux".into(), "/home/d/wt".into()),
        }
    }

    #[test]
    fn paths_move_and_lookalikes_stay() {
        let e = Entry {
            command: "gcc -I../include -fdebug-prefix-map=/w/1/main/linux/build=. -c -o kernel/fork.o /w/1/main/linux/kernel/fork.c /w/1/main/linux-next/x.c".into(),
            directory: "/w/1/main/linux/build".into(),
            file: "/w/1/main/linux/kernel/fork.c".into(),
            output: Some("/w/1/main/linux/build/kernel/fork.o".into()),
        };
        let out = relocate(vec![e], &moves()).remove(0);
        assert_eq!(out.directory, "/home/d/wt/build");
        assert_eq!(out.file, "/home/d/wt/kernel/fork.c");
        assert_eq!(
            out.output.as_deref(),
            Some("/home/d/wt/build/kernel/fork.o")
        );
        assert_eq!(
            out.command,
            "gcc -I../include -fdebug-prefix-map=/home/d/wt/build=. -c -o kernel/fork.o /home/d/wt/kernel/fork.c /w/1/main/linux-next/x.c"
        );
    }
}
