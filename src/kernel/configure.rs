//! configure: produce `.config` by `config_method` (preset, make, fragments), then bake the
//! build identity into `CONFIG_LOCALVERSION` with `CONFIG_LOCALVERSION_AUTO=n`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use super::memory::{self, Memory};
use super::{KernelRun, kbuild, run_make};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::identity::{
    IdentityInputs, LabelSource, compose_release, config_for_digest, infer_label,
};
use crate::kernel::request::ConfigMethod;
use crate::process::Cmd;
use crate::slot::RefKind;

#[derive(
    Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct Configured {
    pub uts_release: String,
    pub version: String,
    pub label: String,
    pub digest: String,
    pub inputs: IdentityInputs,
}

/// Sets (`Some(value)`) or unsets (`None`) symbols in a `.config` text, replacing any line
/// that mentions them.
pub fn set_symbols(config: &str, symbols: &[(&str, Option<&str>)]) -> String {
    let mut out = String::with_capacity(config.len() + 128);
    for line in config.lines() {
        let mentions = symbols.iter().any(|(sym, _)| {
            line.strip_prefix(sym).is_some_and(|r| r.starts_with('='))
                || line == format!("# {sym} is not set")
        });
        if !mentions {
            out.push_str(line);
            out.push('\n');
        }
    }
    for (sym, value) in symbols {
        let _ = match value {
            Some(v) => writeln!(out, "{sym}={v}"),
            None => writeln!(out, "# {sym} is not set"),
        };
    }
    out
}

/// Sets one symbol's value on the line where it stands (appending it when absent).
pub fn replace_in_place(config: &str, sym: &str, value: &str) -> String {
    let mut out = String::with_capacity(config.len() + 64);
    let mut found = false;
    for line in config.lines() {
        let mentions = line.strip_prefix(sym).is_some_and(|r| r.starts_with('='))
            || line == format!("# {sym} is not set");
        if mentions && !found {
            let _ = writeln!(out, "{sym}={value}");
            found = true;
        } else if !mentions {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !found {
        let _ = writeln!(out, "{sym}={value}");
    }
    out
}

/// The `CONFIG_X` -> value assignments of a config text (`n` for "is not set").
pub fn assignments(config: &str) -> BTreeMap<String, String> {
    let mut m = BTreeMap::new();
    for line in config.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(sym) = rest.strip_suffix(" is not set")
                && sym.starts_with("CONFIG_")
            {
                m.insert(sym.to_owned(), "n".to_owned());
            }
        } else if let Some((k, v)) = line.split_once('=')
            && k.starts_with("CONFIG_")
        {
            m.insert(k.to_owned(), v.to_owned());
        }
    }
    m
}

/// Requested symbols whose value did not make it into the final config (Kconfig dropped
/// them because a dependency is missing), as `merge_config.sh` reports them.
pub fn unmet(requested: &str, final_config: &str) -> Vec<String> {
    let want = assignments(requested);
    let have = assignments(final_config);
    want.iter()
        .filter(|(k, v)| {
            let got = have.get(*k).map_or("n", String::as_str);
            got != v.as_str()
        })
        .map(|(k, v)| {
            format!(
                "{k}={v} requested, got {}",
                have.get(k).map_or("unset", String::as_str)
            )
        })
        .collect()
}

pub struct Configure;

impl Step<KernelRun> for Configure {
    fn name(&self) -> &'static str {
        "configure"
    }

    fn run(&self, ctx: &mut KernelRun, reporter: &dyn Reporter) -> Result<Outcome, Error> {
        let step = self.name();
        let key = memory::key(
            &ctx.plan,
            ctx.state.tree.as_deref().expect("prepare_worktree ran"),
            &ctx.flags().identity_flags,
            ctx.state.series.as_ref(),
        );
        let memory = Memory::of(&ctx.plan.dirs);
        let config = ctx.plan.slot.build.join(".config");
        // `reuse` off builds anew from Kconfig on (what `kforge repro` asks): nothing recalled.
        let recall = ctx.plan.request.reuse;
        if let Some(found) = memory.recall(&key).filter(|_| recall) {
            found.restore(&config)?;
            for w in &found.entry.warnings {
                reporter.event(&Event::Warn { step, message: w });
            }
            reporter.event(&Event::Info {
                step,
                message: &format!(
                    "identity {} (remembered: the same inputs and tree made this .config before; Kconfig not re-run)",
                    found.entry.configured.uts_release
                ),
            });
            ctx.state.configured = Some(found.entry.configured);
            ctx.state.config = Some(config);
            return Ok(Outcome::Ran);
        }
        // The second level: an edit that Kconfig does not read (a .c file) keeps its
        // inputs, so the base .config of an earlier tree is this tree's too.
        let tree = ctx.state.tree.clone().expect("prepare_worktree ran");
        let base_key = memory::base_key(
            &ctx.plan,
            &memory::kconfig_inputs(&ctx.plan.slot.src, &tree)?,
            &ctx.flags().identity_flags,
        );
        let (text, warnings) = if let Some(base) = memory.recall_base(&base_key).filter(|_| recall)
        {
            for w in &base.warnings {
                reporter.event(&Event::Warn { step, message: w });
            }
            reporter.event(&Event::Info {
                step,
                message: "what Kconfig reads is unchanged since an earlier tree: its .config, Kconfig not re-run",
            });
            (base.text, base.warnings)
        } else {
            let mut warnings = Vec::new();
            let text = kconfig(ctx, reporter, &mut warnings)?;
            memory.remember_base(&memory::BaseEntry {
                key: base_key,
                text: text.clone(),
                warnings: warnings.clone(),
            })?;
            (text, warnings)
        };
        let configured = bake_identity(ctx, &text, reporter)?;
        memory.remember(key, &configured, &fs_err::read(&config)?, warnings)?;
        ctx.state.configured = Some(configured);
        ctx.state.config = Some(config);
        Ok(Outcome::Ran)
    }
}

/// Where the label comes from, in the spec's order: the user's, the series', the developer
/// worktree's branch, `vanilla` for a tag, else the ref's name.
pub(crate) fn label_source<'a>(
    plan: &'a super::Plan,
    series: Option<&'a crate::series::Applied>,
) -> LabelSource<'a> {
    let req = &plan.request;
    if req.custom_label {
        LabelSource::Custom(req.label.as_deref().unwrap_or_default())
    } else if let Some(s) = series {
        LabelSource::Series {
            subject: &s.subject,
        }
    } else if let Some(s) = &plan.snapshot {
        LabelSource::Worktree {
            branch: s.branch.as_deref(),
            dirty: s.local_changes,
        }
    } else if plan.resolved.kind == RefKind::Tag {
        LabelSource::Tag
    } else {
        LabelSource::Ref(&plan.resolved.name)
    }
}

/// What every Kconfig input ends with: no `setlocalversion` suffix, and an empty
/// `CONFIG_LOCALVERSION` while the digest is taken (the identity is baked in afterwards).
const IDENTITY_BASE: &str = "# CONFIG_LOCALVERSION_AUTO is not set\nCONFIG_LOCALVERSION=\"\"\n";

/// Runs Kconfig for the request: the base `.config` (no setlocalversion suffix, an empty
/// LOCALVERSION), its text.
fn kconfig(
    ctx: &mut KernelRun,
    reporter: &dyn Reporter,
    warnings: &mut Vec<String>,
) -> Result<String, Error> {
    {
        let step = "configure";
        let slot = ctx.plan.slot.clone();
        let req = ctx.plan.request.clone();
        let config_path = slot.build.join(".config");
        // Every run configures from scratch, so the result never depends on what an earlier
        // build left; an unchanged result does not trigger rebuilds (Kbuild compares
        // auto.conf symbol by symbol).
        let _ = fs_err::remove_file(&config_path);
        let inputs_dir = slot.state.join("config-inputs");
        if inputs_dir.exists() {
            fs_err::remove_dir_all(&inputs_dir)?;
        }
        fs_err::create_dir_all(&inputs_dir)?;
        let mut requested = String::new();
        match req.config_method {
            ConfigMethod::Preset => {
                let (name, text) = &ctx.plan.config_inputs[0];
                let file = inputs_dir.join(name);
                fs_err::write(&file, format!("{text}\n{IDENTITY_BASE}"))?;
                let mut arg = OsString::from("KCONFIG_ALLCONFIG=");
                arg.push(&file);
                run_make(ctx, step, &[arg, "alldefconfig".into()], reporter)?;
                requested.push_str(text);
            }
            ConfigMethod::Make => {
                let goals: Vec<OsString> = req.config_goals().into_iter().map(Into::into).collect();
                run_make(ctx, step, &goals, reporter)?;
            }
            ConfigMethod::Fragments => {
                let mut files = Vec::new();
                for (i, (id, text)) in ctx.plan.config_inputs.iter().enumerate() {
                    let file = inputs_dir.join(format!("{i:02}-{}.config", id.replace('/', "-")));
                    fs_err::write(&file, text)?;
                    files.push(file);
                    requested.push_str(text);
                    requested.push('\n');
                }
                let merged = inputs_dir.join("merged");
                fs_err::create_dir_all(&merged)?;
                Cmd::new("sh")
                    .arg("scripts/kconfig/merge_config.sh")
                    .args(["-m", "-O"])
                    .arg(&merged)
                    .args(&files)
                    .cwd(&slot.src)
                    .stream(&mut super::forward(step, reporter))?;
                let mut merged_text = fs_err::read_to_string(merged.join(".config"))?;
                merged_text.push_str(IDENTITY_BASE);
                fs_err::write(merged.join(".config"), merged_text)?;
                let mut arg = OsString::from("KCONFIG_ALLCONFIG=");
                arg.push(merged.join(".config"));
                let base = if req.allnoconfig_base {
                    "allnoconfig"
                } else {
                    "alldefconfig"
                };
                run_make(ctx, step, &[arg, base.into()], reporter)?;
                // Later fragments override earlier ones: what was requested is the merge.
                requested = fs_err::read_to_string(merged.join(".config"))?;
            }
        }
        if !requested.is_empty() {
            let produced = fs_err::read_to_string(&config_path)?;
            for miss in unmet(&requested, &produced) {
                if miss.starts_with("CONFIG_LOCALVERSION") {
                    continue;
                }
                let message = format!("{miss} (a dependency is not met)");
                reporter.event(&Event::Warn {
                    step,
                    message: &message,
                });
                warnings.push(message);
            }
        }
        // Bake the identity: no setlocalversion suffix, an empty LOCALVERSION while hashing.
        // Presets and fragments asked Kconfig for both already (one Kconfig run, not two);
        // in-tree goals cannot, so their result is set and normalised by olddefconfig.
        let mut text = fs_err::read_to_string(&config_path)?;
        let based = text
            .lines()
            .any(|l| l == "# CONFIG_LOCALVERSION_AUTO is not set")
            && text.lines().any(|l| l == "CONFIG_LOCALVERSION=\"\"");
        if !based {
            fs_err::write(
                &config_path,
                set_symbols(
                    &text,
                    &[
                        ("CONFIG_LOCALVERSION_AUTO", None),
                        ("CONFIG_LOCALVERSION", Some("\"\"")),
                    ],
                ),
            )?;
            run_make(ctx, step, &["olddefconfig".into()], reporter)?;
            text = fs_err::read_to_string(&config_path)?;
        }
        Ok(text)
    }
}

/// Bakes the identity into a base `.config` (`text`): the digest over it and the tree,
/// the release, and `CONFIG_LOCALVERSION` set to it in the slot's `.config`.
fn bake_identity(
    ctx: &mut KernelRun,
    text: &str,
    reporter: &dyn Reporter,
) -> Result<Configured, Error> {
    {
        let step = "configure";
        let slot = ctx.plan.slot.clone();
        fs_err::create_dir_all(&slot.build)?;
        let config_sha256 = hex::encode(Sha256::digest(config_for_digest(text).as_bytes()));
        let flags = ctx.flags();
        let inputs = IdentityInputs {
            scheme: IdentityInputs::SCHEME.to_owned(),
            config_sha256,
            toolchain: ctx.plan.toolchain.clone(),
            make_flags: flags.identity_flags.clone(),
            tree: ctx.state.tree.clone().expect("prepare_worktree ran"),
        };
        let digest = inputs.digest();
        let makefile = fs_err::read_to_string(slot.src.join("Makefile"))?;
        let version = kbuild::kernel_version(&makefile).ok_or_else(|| {
            crate::error::ProductError::Unusable {
                what: slot.src.join("Makefile").display().to_string(),
                problem: "no kernel version in it".into(),
            }
        })?;
        let source = label_source(&ctx.plan, ctx.state.series.as_ref());
        let (base, suffix) = infer_label(&source);
        let uts_release = compose_release(&version, &base, &suffix, &digest)?;
        let label = uts_release[version.len() + 1..uts_release.len() - digest.len() - 1].to_owned();
        let localversion = &uts_release[version.len()..];
        // In place, as Kconfig itself would write it: the next make's syncconfig then finds
        // nothing to rewrite, and the file stays byte-for-byte what configure produced.
        let brought = super::config_file::write(
            &slot.build,
            replace_in_place(text, "CONFIG_LOCALVERSION", &format!("\"{localversion}\""))
                .as_bytes(),
        )?;
        if brought {
            reporter.event(&Event::Info {
                step,
                message: "only CONFIG_LOCALVERSION changed: Kbuild's synced files brought along, make runs no syncconfig",
            });
        }
        reporter.event(&Event::Info {
            step,
            message: &format!("identity {uts_release}"),
        });
        Ok(Configured {
            uts_release,
            version,
            label,
            digest,
            inputs,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_are_replaced_not_duplicated() {
        let c =
            "CONFIG_A=y\nCONFIG_LOCALVERSION_AUTO=y\nCONFIG_LOCALVERSION=\"-old\"\nCONFIG_B=m\n";
        let out = set_symbols(
            c,
            &[
                ("CONFIG_LOCALVERSION_AUTO", None),
                ("CONFIG_LOCALVERSION", Some("\"-new\"")),
            ],
        );
        assert_eq!(
            out,
            "CONFIG_A=y\nCONFIG_B=m\n# CONFIG_LOCALVERSION_AUTO is not set\nCONFIG_LOCALVERSION=\"-new\"\n"
        );
        // A symbol whose name extends another is left alone.
        let out = set_symbols(
            "CONFIG_LOCALVERSION_AUTO=y\n",
            &[("CONFIG_LOCALVERSION", Some("\"\""))],
        );
        assert!(out.starts_with("CONFIG_LOCALVERSION_AUTO=y\n"));
    }

    #[test]
    fn a_symbol_is_replaced_where_it_stands() {
        let c = "CONFIG_A=y\nCONFIG_LOCALVERSION=\"\"\nCONFIG_LOCALVERSION_AUTO=y\nCONFIG_B=m\n";
        assert_eq!(
            replace_in_place(c, "CONFIG_LOCALVERSION", "\"-x\""),
            "CONFIG_A=y\nCONFIG_LOCALVERSION=\"-x\"\nCONFIG_LOCALVERSION_AUTO=y\nCONFIG_B=m\n"
        );
        assert_eq!(replace_in_place("", "CONFIG_X", "1"), "CONFIG_X=1\n");
    }

    #[test]
    fn unmet_requests_are_found() {
        let req = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let fin = "CONFIG_A=y\nCONFIG_C=y\n";
        assert_eq!(unmet(req, fin), vec!["CONFIG_C=m requested, got y"]);
    }
}
