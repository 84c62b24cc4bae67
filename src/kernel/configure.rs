//! configure: produce `.config` by `config_method` (preset, make, fragments), then bake the
//! build identity into `CONFIG_LOCALVERSION` with `CONFIG_LOCALVERSION_AUTO=n`.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt::Write as _;

use sha2::{Digest as _, Sha256};

use super::{KernelRun, kbuild, run_make};
use crate::error::Error;
use crate::flow::{Event, Outcome, Reporter, Step};
use crate::identity::{
    IdentityInputs, LabelSource, compose_release, config_for_digest, infer_label, to_hex,
};
use crate::process::Cmd;
use crate::request::ConfigMethod;
use crate::slot::RefKind;

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
                fs_err::write(&file, text)?;
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
                reporter.event(&Event::Warn {
                    step,
                    message: &format!("{miss} (a dependency is not met)"),
                });
            }
        }
        // Bake the identity: no setlocalversion suffix, an empty LOCALVERSION while hashing.
        let text = fs_err::read_to_string(&config_path)?;
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
        let text = fs_err::read_to_string(&config_path)?;
        let config_sha256 = to_hex(&Sha256::digest(config_for_digest(&text).as_bytes()));
        let flags = ctx.flags();
        let inputs = IdentityInputs {
            scheme: IdentityInputs::SCHEME.to_owned(),
            config_sha256,
            toolchain: ctx.plan.toolchain.clone(),
            make_flags: flags.identity_flags.clone(),
            tree: ctx.tree.clone().expect("prepare_worktree ran"),
        };
        let digest = inputs.digest();
        let makefile = fs_err::read_to_string(slot.src.join("Makefile"))?;
        let version = kbuild::kernel_version(&makefile)
            .ok_or_else(|| Error::Build("cannot read the kernel version from Makefile".into()))?;
        let source = if req.custom_label {
            LabelSource::Custom(req.label.as_deref().unwrap_or_default())
        } else if let Some(s) = &ctx.series {
            LabelSource::Series {
                subject: &s.subject,
            }
        } else if ctx.plan.resolved.kind == RefKind::Tag {
            LabelSource::Tag
        } else {
            LabelSource::Ref(&ctx.plan.resolved.name)
        };
        let (base, suffix) = infer_label(&source);
        let uts_release = compose_release(&version, &base, &suffix, &digest)
            .map_err(|e| Error::Input(e.to_string()))?;
        let label = uts_release[version.len() + 1..uts_release.len() - digest.len() - 1].to_owned();
        let localversion = &uts_release[version.len()..];
        fs_err::write(
            &config_path,
            set_symbols(
                &text,
                &[("CONFIG_LOCALVERSION", Some(&format!("\"{localversion}\"")))],
            ),
        )?;
        reporter.event(&Event::Info {
            step,
            message: &format!("identity {uts_release}"),
        });
        ctx.configured = Some(Configured {
            uts_release,
            version,
            label,
            digest,
            inputs,
        });
        Ok(Outcome::Ran)
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
    fn unmet_requests_are_found() {
        let req = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n";
        let fin = "CONFIG_A=y\nCONFIG_C=y\n";
        assert_eq!(unmet(req, fin), vec!["CONFIG_C=m requested, got y"]);
    }
}
