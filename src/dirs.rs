//! Where kforge keeps things: workers dir, worker index, system dir, mirrors, ccache.
//!
//! Each setting comes from the command line (a flag, else its `KFORGE_*` variable: the
//! binary's clap definitions read both), else the config file (`--config` or
//! `$XDG_CONFIG_HOME/kforge/config.toml`), else an XDG default.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The config file's keys (all optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub workers_dir: Option<PathBuf>,
    pub worker_index: Option<u32>,
    pub system_dir: Option<PathBuf>,
    pub mirror: Option<PathBuf>,
    pub qemu_mirror: Option<PathBuf>,
    pub library: Option<PathBuf>,
    pub ccache_dir: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub ccache_remote: Option<String>,
}

/// Values given on the command line or in the environment (highest precedence).
#[derive(Debug, Default, Clone)]
pub struct DirFlags {
    pub config: Option<PathBuf>,
    pub workers_dir: Option<PathBuf>,
    pub worker_index: Option<u32>,
    pub system_dir: Option<PathBuf>,
    pub mirror: Option<PathBuf>,
    pub qemu_mirror: Option<PathBuf>,
    pub library: Option<PathBuf>,
    pub store: Option<PathBuf>,
    pub ccache_dir: Option<PathBuf>,
    pub ccache_remote: Option<String>,
}

/// The resolved locations.
#[derive(Debug, Clone)]
pub struct Dirs {
    pub workers_dir: PathBuf,
    pub worker_index: u32,
    pub system_dir: PathBuf,
    /// The kernel's bare mirror.
    pub mirror: PathBuf,
    /// QEMU's bare mirror (`kforge qemu build`).
    pub qemu_mirror: PathBuf,
    /// A user's kconfig library directory, replacing the built-in one.
    pub library: Option<PathBuf>,
    pub ccache_dir: PathBuf,
    /// The build store (`SYSTEM_DIR/store` unless `KFORGE_STORE` or the config file says).
    pub store: PathBuf,
    /// A cache every worker shares, behind the local one: ccache's `remote_storage`
    /// (`KFORGE_CCACHE_REMOTE` or the config file's `ccache_remote`, e.g. `redis://host:6379`).
    pub ccache_remote: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DirsError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {source}")]
    Parse {
        path: PathBuf,
        source: Box<toml::de::Error>,
    },
    #[error("{0}")]
    BadRemote(String),
    #[error("no home directory: set HOME, or --system-dir and --workers-dir")]
    NoHome,
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

fn xdg(var: &str, fallback: &str) -> Result<PathBuf, DirsError> {
    if let Some(p) = env_path(var).filter(|p| p.is_absolute()) {
        return Ok(p);
    }
    let home = env_path("HOME").ok_or(DirsError::NoHome)?;
    Ok(home.join(fallback))
}

/// Makes a path absolute against the current directory (paths end up in make's argv and
/// in manifests, where a relative path would be ambiguous).
pub fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        std::env::current_dir().map_or_else(|_| p.to_owned(), |cwd| cwd.join(p))
    }
}

/// Drops `.` and folds `..` lexically (no file system access, symlinks not followed).
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

impl Dirs {
    pub fn resolve(flags: &DirFlags) -> Result<Self, DirsError> {
        let config_path = flags.config.clone().map_or_else(
            || xdg("XDG_CONFIG_HOME", ".config").map(|d| d.join("kforge/config.toml")),
            Ok,
        )?;
        let file = match fs_err::read_to_string(&config_path) {
            Ok(text) => toml::from_str::<ConfigFile>(&text).map_err(|e| DirsError::Parse {
                path: config_path.clone(),
                source: Box::new(e),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConfigFile::default(),
            Err(e) => {
                return Err(DirsError::Read {
                    path: config_path,
                    source: e,
                });
            }
        };
        let system_dir = match flags.system_dir.clone().or(file.system_dir) {
            Some(p) => p,
            None => xdg("XDG_DATA_HOME", ".local/share")?.join("kforge"),
        };
        let system_dir = absolute(&system_dir);
        let workers_dir = absolute(
            &flags
                .workers_dir
                .clone()
                .or(file.workers_dir)
                .unwrap_or_else(|| system_dir.join("workers")),
        );
        let worker_index = flags.worker_index.or(file.worker_index).unwrap_or(0);
        let mirror = absolute(
            &flags
                .mirror
                .clone()
                .or(file.mirror)
                .unwrap_or_else(|| system_dir.join("mirrors/linux.git")),
        );
        let qemu_mirror = absolute(
            &flags
                .qemu_mirror
                .clone()
                .or(file.qemu_mirror)
                .unwrap_or_else(|| system_dir.join("mirrors/qemu.git")),
        );
        let library = flags.library.clone().or(file.library).map(|p| absolute(&p));
        let ccache_dir = absolute(&flags.ccache_dir.clone().or(file.ccache_dir).map_or_else(
            || xdg("XDG_CACHE_HOME", ".cache").map(|d| d.join("kforge/ccache")),
            Ok,
        )?);
        let store = absolute(
            &flags
                .store
                .clone()
                .or(file.store)
                .unwrap_or_else(|| system_dir.join("store")),
        );
        let ccache_remote = flags.ccache_remote.clone().or(file.ccache_remote);
        if let Some(url) = &ccache_remote {
            crate::toolchain::ccache::validate_remote(url).map_err(DirsError::BadRemote)?;
        }
        Ok(Self {
            workers_dir,
            worker_index,
            system_dir,
            mirror,
            qemu_mirror,
            library,
            ccache_dir,
            store,
            ccache_remote,
        })
    }
}
