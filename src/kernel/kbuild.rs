//! What kforge knows about Kbuild: which make flags, goals and targets are safe, how a make
//! command line is built (pure functions returning argv), and how to read back what the
//! build produced (version, release, provenance headers).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::Path;

/// Variables kforge owns or that would send output or installs elsewhere.
const FORBIDDEN_VARS: &[(&str, &str)] = &[
    ("O", "kforge sets the output directory (the slot's build/)"),
    (
        "KBUILD_OUTPUT",
        "kforge sets the output directory (the slot's build/)",
    ),
    ("KCONFIG_CONFIG", "kforge owns build/.config"),
    ("KCONFIG_ALLCONFIG", "use config_method preset or fragments"),
    ("INSTALL_PATH", "kforge installs into the slot's destdir/"),
    (
        "INSTALL_MOD_PATH",
        "kforge installs into the slot's destdir/",
    ),
    (
        "INSTALL_HDR_PATH",
        "kforge installs into the slot's destdir/",
    ),
    (
        "INSTALL_DTBS_PATH",
        "kforge installs into the slot's destdir/",
    ),
    ("INSTALLKERNEL", "kforge installs into the slot's destdir/"),
    ("MODLIB", "kforge installs into the slot's destdir/"),
    ("M", "external module builds are not a kernel build"),
    (
        "KBUILD_EXTMOD",
        "external module builds are not a kernel build",
    ),
    ("ARCH", "use arch (x86_64, arm64 or riscv64)"),
    ("SRCARCH", "use arch (x86_64, arm64 or riscv64)"),
    (
        "CROSS_COMPILE",
        "use arch: kforge picks Debian's cross compiler",
    ),
    ("CC", "use compiler (gcc or clang)"),
    ("LD", "use compiler (gcc or clang)"),
    ("LLVM", "use compiler: clang"),
    ("LLVM_IAS", "use compiler: clang"),
    ("HOSTCC", "use compiler (gcc or clang)"),
    (
        "LOCALVERSION",
        "kforge bakes the build identity into the release",
    ),
    (
        "KERNELRELEASE",
        "kforge bakes the build identity into the release",
    ),
    ("MAKEFLAGS", "it would change how make runs"),
    ("MFLAGS", "it would change how make runs"),
    ("SHELL", "it would change how make runs"),
    ("MAKEFILES", "it would change how make runs"),
    ("CONFIG_SHELL", "it would change how make runs"),
    ("srctree", "kforge sets the source tree"),
    ("objtree", "kforge sets the output directory"),
];

/// Set by `reproducible`; refused then, allowed otherwise.
const REPRODUCIBLE_VARS: &[&str] = &[
    "KBUILD_BUILD_TIMESTAMP",
    "KBUILD_BUILD_USER",
    "KBUILD_BUILD_HOST",
    "KBUILD_BUILD_VERSION",
];

/// Switches that change only how make reports, never what it builds or where.
const ALLOWED_SWITCHES: &[&str] = &[
    "-k",
    "--keep-going",
    "-s",
    "--silent",
    "--quiet",
    "-w",
    "--print-directory",
    "--no-print-directory",
];

/// Checks one extra make flag: `VAR=VALUE` (a plain variable name, no newline) or an
/// allowed switch. Refuses anything that would redirect make or fight what kforge sets.
pub fn validate_make_flag(flag: &str, reproducible: bool) -> Result<(), String> {
    if flag.contains(['\n', '\r', '\0']) {
        return Err(format!("make flag {flag:?} contains a line break or NUL"));
    }
    if flag.starts_with('-') {
        return if ALLOWED_SWITCHES.contains(&flag) {
            Ok(())
        } else {
            Err(format!(
                "make flag `{flag}` is refused: only VAR=VALUE and the switches {} are passed (kforge sets -C, O=, --jobs and the makefile)",
                ALLOWED_SWITCHES.join(" ")
            ))
        };
    }
    let Some((var, _value)) = flag.split_once('=') else {
        return Err(format!(
            "make flag `{flag}` is not VAR=VALUE; extra goals go in targets"
        ));
    };
    let var = var.strip_suffix(['+', ':', '?']).unwrap_or(var);
    let plain = var
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && var.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !plain {
        return Err(format!(
            "make flag `{flag}`: `{var}` is not a plain variable name"
        ));
    }
    if let Some((_, why)) = FORBIDDEN_VARS.iter().find(|(v, _)| *v == var) {
        return Err(format!("make flag `{flag}` is refused: {why}"));
    }
    if reproducible && REPRODUCIBLE_VARS.contains(&var) {
        return Err(format!(
            "make flag `{flag}` is refused: reproducible sets {var}; turn reproducible off to set it yourself"
        ));
    }
    Ok(())
}

/// Goals that configure: the `*config` family and in-tree fragments (`*.config`).
pub fn validate_config_goal(goal: &str) -> Result<(), String> {
    let plain = !goal.is_empty()
        && !goal.starts_with(['-', '.'])
        && goal
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !plain {
        return Err(format!("config goal `{goal}` is not a plain goal name"));
    }
    if matches!(
        goal,
        "config" | "menuconfig" | "nconfig" | "xconfig" | "gconfig" | "oldconfig"
    ) {
        return Err(format!(
            "config goal `{goal}` is interactive; kforge runs without a terminal (use olddefconfig, a defconfig or fragments)"
        ));
    }
    if !goal.ends_with("config") {
        return Err(format!(
            "`{goal}` is not a config goal (defconfig, tinyconfig, <name>_defconfig, <name>.config, ...)"
        ));
    }
    Ok(())
}

/// Config goals built into Kconfig itself (no file in the tree).
pub const BUILTIN_CONFIG_GOALS: &[&str] = &[
    "defconfig",
    "tinyconfig",
    "allnoconfig",
    "allyesconfig",
    "allmodconfig",
    "alldefconfig",
    "randconfig",
    "olddefconfig",
    "localmodconfig",
    "localyesconfig",
    "listnewconfig",
    "helpnewconfig",
    "yes2modconfig",
    "mod2yesconfig",
    "mod2noconfig",
    "savedefconfig",
    "syncconfig",
];

/// Checks an extra make target: a plain goal that builds, never one that installs onto
/// the host, cleans the slot, or reconfigures.
pub fn validate_target(t: &str) -> Result<(), String> {
    let plain = !t.is_empty()
        && !t.starts_with(['-', '/', '.'])
        && !t.contains("..")
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'));
    if !plain {
        return Err(format!("target `{t}` is not a plain make goal"));
    }
    if t.contains("install") {
        return Err(format!(
            "target `{t}` is refused: installing is the install and modules_install steps' job"
        ));
    }
    if matches!(t, "clean" | "mrproper" | "distclean") || t.ends_with("config") {
        return Err(format!(
            "target `{t}` is refused: use wipe_build to clean, config_method to configure"
        ));
    }
    Ok(())
}

/// The pieces of a make command line that are the same for every step of one build.
#[derive(
    Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize, schemars::JsonSchema,
)]
pub struct MakeFlags {
    /// Flags as passed to make, in order (`--jobs`, `LLVM=1`, `CC=ccache gcc`, `KBUILD_*`,
    /// `KCFLAGS=-fdebug-prefix-map=...`, `LOCALVERSION=`, the user's flags).
    pub argv: Vec<String>,
    /// Environment for make (the managed ccache config).
    pub env: Vec<(String, String)>,
}

/// `make O=build <flags> <goals>`, run in the source tree (so `O=` stays relative and the
/// command line holds no slot path).
pub fn make_argv(flags: &MakeFlags, goals: &[String]) -> Vec<OsString> {
    let mut v: Vec<OsString> = vec!["O=build".into()];
    v.extend(flags.argv.iter().map(OsString::from));
    v.extend(goals.iter().map(OsString::from));
    v
}

/// `VERSION.PATCHLEVEL.SUBLEVEL` + `EXTRAVERSION` from the top Makefile.
pub fn kernel_version(makefile: &str) -> Option<String> {
    let mut vars = BTreeMap::new();
    for line in makefile.lines().take(20) {
        if let Some((k, v)) = line.split_once('=') {
            vars.insert(k.trim().to_owned(), v.trim().to_owned());
        }
    }
    let (v, p, s) = (
        vars.get("VERSION")?,
        vars.get("PATCHLEVEL")?,
        vars.get("SUBLEVEL")?,
    );
    if v.is_empty() || p.is_empty() {
        return None;
    }
    let extra = vars.get("EXTRAVERSION").cloned().unwrap_or_default();
    let sub = if s.is_empty() { "0" } else { s };
    Some(format!("{v}.{p}.{sub}{extra}"))
}

/// The `#define NAME "value"` lines of a generated header.
pub fn header_defines(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("#define ") else {
            continue;
        };
        let Some((name, value)) = rest.split_once(char::is_whitespace) else {
            continue;
        };
        let value = value.trim();
        if let Some(v) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
            out.insert(name.to_owned(), v.replace("\\\"", "\""));
        }
    }
    out
}

/// Reads the provenance the kernel baked into its generated headers.
pub fn read_provenance(build: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut all = BTreeMap::new();
    for h in ["utsrelease.h", "compile.h", "utsversion.h"] {
        let p = build.join("include/generated").join(h);
        if p.exists() {
            all.extend(header_defines(&fs_err::read_to_string(p)?));
        }
    }
    Ok(all)
}

/// `hint:` lines for a failed kernel build, from known patterns in its output.
pub fn build_hints(tail: &[String]) -> Option<String> {
    let text = tail.join("\n");
    let table: &[(&str, &str)] = &[
        (
            "gelf.h",
            "libelf headers are missing: apt-get install libelf-dev",
        ),
        (
            "libelf",
            "libelf headers are missing: apt-get install libelf-dev",
        ),
        (
            "openssl/",
            "OpenSSL headers are missing: apt-get install libssl-dev",
        ),
        ("flex: not found", "flex is missing: apt-get install flex"),
        (
            "flex: No such file",
            "flex is missing: apt-get install flex",
        ),
        (
            "bison: not found",
            "bison is missing: apt-get install bison",
        ),
        (
            "bison: No such file",
            "bison is missing: apt-get install bison",
        ),
        ("bc: not found", "bc is missing: apt-get install bc"),
        (
            "pahole",
            "pahole is missing or too old (BTF): apt-get install dwarves, or disable CONFIG_DEBUG_INFO_BTF",
        ),
        ("ld.lld: not found", "lld is missing: apt-get install lld"),
        (
            "No space left on device",
            "the disk is full: free space or run kforge with another workers dir",
        ),
        (
            "Killed signal terminated program",
            "the compiler was killed, probably out of memory",
        ),
    ];
    table
        .iter()
        .find(|(pat, _)| text.contains(pat))
        .map(|(_, hint)| (*hint).to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn make_flags_table() {
        for ok in [
            "W=1",
            "KCFLAGS=-O2 -g",
            "C=1",
            "V=1",
            "-k",
            "--no-print-directory",
            "KCFLAGS+=-x",
        ] {
            assert!(validate_make_flag(ok, true).is_ok(), "{ok}");
        }
        for bad in [
            "-f",
            "-fMakefile",
            "-C",
            "-C/tmp",
            "--eval=all:;touch x",
            "-E",
            "--eval",
            "O=/tmp",
            "KBUILD_OUTPUT=/x",
            "-j8",
            "--jobs=9",
            "-e",
            "-n",
            "INSTALL_MOD_PATH=/",
            "ARCH=arm64",
            "CC=cc",
            "LLVM=1",
            "LOCALVERSION=-x",
            "x",
            "1X=2",
            "A B=1",
            "KBUILD_BUILD_USER=me",
            "W=1\nall:",
            "MAKEFLAGS=-j1",
        ] {
            assert!(validate_make_flag(bad, true).is_err(), "{bad:?}");
        }
        assert!(validate_make_flag("KBUILD_BUILD_USER=me", false).is_ok());
    }

    #[test]
    fn goals_and_targets() {
        for ok in [
            "defconfig",
            "tinyconfig",
            "kvm_guest.config",
            "x86_64_defconfig",
        ] {
            assert!(validate_config_goal(ok).is_ok(), "{ok}");
        }
        for bad in ["menuconfig", "vmlinux", "-f", "../x.config", "a b"] {
            assert!(validate_config_goal(bad).is_err(), "{bad}");
        }
        for ok in ["vmlinux", "bzImage", "modules", "init/main.o", "fs/ext4/"] {
            assert!(validate_target(ok).is_ok(), "{ok}");
        }
        for bad in [
            "install",
            "modules_install",
            "headers_install",
            "clean",
            "mrproper",
            "defconfig",
            "-j",
            "../x",
            "/abs",
            "a b",
        ] {
            assert!(validate_target(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn versions() {
        let mk = "# SPDX\nVERSION = 6\nPATCHLEVEL = 12\nSUBLEVEL = 117\nEXTRAVERSION =\nNAME = x\n";
        assert_eq!(kernel_version(mk).unwrap(), "6.12.117");
        let rc = "VERSION = 7\nPATCHLEVEL = 1\nSUBLEVEL = 0\nEXTRAVERSION = -rc3\n";
        assert_eq!(kernel_version(rc).unwrap(), "7.1.0-rc3");
        assert_eq!(kernel_version("nothing"), None);
    }

    #[test]
    fn headers() {
        let h = "#define UTS_MACHINE \"x86_64\"\n#define LINUX_COMPILER \"gcc (Debian 12.2.0-14) 12.2.0, GNU ld 2.40\"\n#define X 1\n";
        let d = header_defines(h);
        assert_eq!(d["UTS_MACHINE"], "x86_64");
        assert!(d["LINUX_COMPILER"].starts_with("gcc"));
        assert!(!d.contains_key("X"));
    }

    #[test]
    fn argv_has_no_shell_and_relative_output() {
        let f = MakeFlags {
            argv: vec!["--jobs=2".into(), "CC=ccache gcc".into()],
            env: vec![],
        };
        let v = make_argv(&f, &["olddefconfig".into()]);
        assert_eq!(
            v,
            vec!["O=build", "--jobs=2", "CC=ccache gcc", "olddefconfig"]
        );
    }

    #[test]
    fn hints() {
        assert!(
            build_hints(&["fatal error: gelf.h: No such file or directory".into()])
                .unwrap()
                .contains("libelf-dev")
        );
        assert_eq!(build_hints(&["error: foo".into()]), None);
    }
}
