//! The Windmill flows in the repository (the kernel's build and test flows, QEMU's build) are
//! what `kforge windmill-flow` generates now, and they validate offline against Windmill's
//! published flow schema (the npm package windmill-yaml-validator, installed into
//! windmill/node_modules by scripts/test.sh). That they also run their pipelines module by
//! module is tested in `devel` (the kernel's build), `qemu` (QEMU's) and `verdict` (the
//! kernel's tests).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::{BIN, fs, repo_root};

/// Each committed flow, with the `--project` and `--flow` that generate it.
const FLOWS: [(&str, &str, &str); 3] = [
    ("linux", "build", "windmill/f/kernel/build.flow/flow.yaml"),
    ("qemu", "build", "windmill/f/qemu/build.flow/flow.yaml"),
    ("linux", "test", "windmill/f/kernel/test.flow/flow.yaml"),
];

fn flow_path() -> PathBuf {
    repo_root().join(FLOWS[0].2)
}

/// Runs the validator on `file`: (passed, what it printed).
fn validate(file: &Path) -> (bool, String) {
    let dir = repo_root().join("windmill");
    assert!(
        dir.join("node_modules/windmill-yaml-validator").is_dir(),
        "windmill/node_modules is missing: run `npm ci --prefix windmill` (scripts/test.sh does)"
    );
    let out = Command::new("node")
        .arg(dir.join("validate.mjs"))
        .arg(file)
        .output()
        .expect("node (scripts/install-deps.sh installs it)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn the_committed_flows_are_current() {
    for (project, flow, path) in FLOWS {
        let out = Command::new(BIN)
            .args(["windmill-flow", "--project", project, "--flow", flow])
            .output()
            .unwrap();
        assert!(out.status.success());
        let committed = fs::read_string(repo_root().join(path));
        assert!(
            String::from_utf8(out.stdout).unwrap() == committed,
            "{path} is stale: run `kforge windmill-flow --project {project} --flow {flow} > {path}`"
        );
    }
}

#[test]
#[ignore = "needs windmill/node_modules (npm ci --prefix windmill); scripts/test.sh runs it"]
fn the_flow_validates_against_windmills_schema_and_a_broken_one_does_not() {
    for (_, _, path) in FLOWS {
        let (ok, text) = validate(&repo_root().join(path));
        assert!(ok, "{path}: {text}");
        assert!(text.contains("valid"), "{text}");
    }

    let committed = fs::read_string(flow_path());
    let dir = tempfile::tempdir().unwrap();
    for (what, broken) in [
        (
            "an unknown module type",
            committed.replacen("type: branchone", "type: branchsome", 1),
        ),
        (
            "a module without its value",
            committed.replacen(
                "    value:\n      type: rawscript",
                "    valve:\n      type: rawscript",
                1,
            ),
        ),
        (
            "same_worker as a string",
            committed.replacen("same_worker: true", "same_worker: \"yes\"", 1),
        ),
    ] {
        assert_ne!(broken, committed, "{what}: the edit did not apply");
        let file = dir.path().join("flow.yaml");
        fs::write(&file, broken);
        let (ok, text) = validate(&file);
        assert!(!ok, "{what} passed validation:\n{text}");
    }
}

#[test]
fn every_module_calls_its_step_on_the_worker_index_from_the_environment() {
    let committed = fs::read_string(flow_path());
    let list = Command::new(BIN).args(["step", "--list"]).output().unwrap();
    let steps: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(steps.len(), 14, "{steps:?}");
    let mut at = 0;
    for step in &steps {
        let call = if step == "configure" {
            "kforge step configure_preset --wait".to_owned()
        } else {
            format!("kforge step {step} --wait")
        };
        let found = committed[at..]
            .find(&call)
            .unwrap_or_else(|| panic!("`{call}` is missing or out of order"));
        at += found;
    }
    for method in ["make", "fragments"] {
        assert!(committed.contains(&format!("kforge step configure_{method} --wait")));
        assert!(committed.contains(&format!("flow_input.config_method === '{method}'")));
    }
    assert!(committed.contains("same_worker: true"));
    assert_eq!(
        committed.matches("${KFORGE_WORKER_INDEX:?").count(),
        steps.len() + 2
    );
}

#[test]
fn every_qemu_module_calls_its_step_in_order() {
    let committed = fs::read_string(repo_root().join(FLOWS[1].2));
    let list = Command::new(BIN)
        .args(["qemu", "step", "--list"])
        .output()
        .unwrap();
    let steps: Vec<String> = String::from_utf8(list.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        steps,
        [
            "prepare_worktree",
            "build_flags",
            "fetch_identity",
            "reuse_check",
            "configure",
            "compile",
            "install",
            "publish",
            "collect"
        ]
    );
    let mut at = 0;
    for step in &steps {
        let call = format!("kforge qemu step {step} --wait");
        at += committed[at..]
            .find(&call)
            .unwrap_or_else(|| panic!("`{call}` is missing or out of order"));
    }
    assert!(committed.contains("main/qemu"));
    assert_eq!(
        committed.matches("${KFORGE_WORKER_INDEX:?").count(),
        steps.len()
    );
}
