//! The JSON Schema of every document kforge prints (`kforge schema --output NAME`), from the
//! structs that print them: a consumer checks what it reads against the same types.

use schemars::schema_for;
use serde_json::Value;

/// A document kforge prints, by the name `kforge schema --output` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// A kernel build request (`kforge build`, `--request FILE`).
    Request,
    /// A QEMU build request (`kforge qemu build`).
    QemuRequest,
    /// A kernel build's manifest (`kforge build`, `kforge identity`).
    Manifest,
    /// A QEMU build's manifest (`kforge qemu build`).
    QemuManifest,
    /// `kforge store ls`.
    StoreLs,
    /// `kforge store show`.
    StoreShow,
    /// One line of `kforge store verify`.
    StoreVerify,
    /// `kforge store export`.
    StoreExport,
    /// `kforge store trust`.
    StoreTrust,
    /// `kforge store keys`.
    StoreKeys,
    /// `kforge boot --check`.
    BootReport,
    /// `kforge vm status`.
    VmStatus,
    /// `kforge run --json`.
    RunResult,
    /// `kforge mirror show` and `kforge mirror init`.
    MirrorShow,
    /// `kforge mirror import-tarball`.
    MirrorImport,
    /// `kforge library`.
    Library,
    /// What `kforge step NAME` prints, and each result in a kernel run record.
    StepResult,
    /// What `kforge qemu step NAME` prints, and each result in a QEMU run record.
    QemuStepResult,
    /// `kforge test kunit` and `kforge results show`: a test run with its results.
    TestRun,
    /// `kforge results ls`.
    ResultsLs,
    /// `kforge results diff`.
    ResultsDiff,
    /// `kforge bisect`.
    Bisect,
    /// `kforge repro`.
    Repro,
    /// `kforge log`.
    Log,
    /// `kforge log --compare`.
    LogCompare,
}

impl Output {
    /// The schema (JSON Schema 2020-12) of this document.
    pub fn schema(self) -> Value {
        use crate::store::ops;
        let schema = match self {
            Output::Request => return crate::kernel::request::schema(),
            Output::QemuRequest => schema_for!(crate::qemu::QemuRequest),
            Output::Manifest => schema_for!(crate::kernel::manifest::Manifest),
            Output::QemuManifest => schema_for!(crate::qemu::QemuManifest),
            Output::StoreLs => schema_for!(ops::Listing),
            Output::StoreShow => schema_for!(ops::Shown),
            Output::StoreVerify => schema_for!(ops::Verified),
            Output::StoreExport => schema_for!(ops::Exported),
            Output::StoreTrust => schema_for!(ops::Trusted),
            Output::StoreKeys => schema_for!(ops::Keys),
            Output::BootReport => schema_for!(crate::guest::BootReport),
            Output::VmStatus => schema_for!(crate::guest::vm::VmStatus),
            Output::RunResult => schema_for!(crate::guest::run::RunResult),
            Output::MirrorShow => schema_for!(crate::slot::mirror::Shown),
            Output::MirrorImport => schema_for!(crate::slot::mirror::Imported),
            Output::Library => schema_for!(crate::library::Listing),
            Output::StepResult => {
                schema_for!(crate::flow::StepResultOf<crate::kernel::KernelState>)
            }
            Output::QemuStepResult => {
                schema_for!(crate::flow::StepResultOf<crate::qemu::QemuState>)
            }
            Output::TestRun => schema_for!(crate::verdict::db::Shown),
            Output::ResultsLs => schema_for!(crate::verdict::db::Listing),
            Output::ResultsDiff => schema_for!(crate::verdict::db::Diff),
            Output::Bisect => schema_for!(crate::bisect::Report),
            Output::Repro => schema_for!(crate::kernel::repro::Report),
            Output::Log => schema_for!(crate::runlog::Log),
            Output::LogCompare => schema_for!(crate::runlog::Compared),
        };
        serde_json::to_value(schema).expect("a schema serializes")
    }
}
