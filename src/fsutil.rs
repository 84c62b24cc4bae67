//! Small file-system helpers: atomic writes and lock files. Every I/O error names its path.

use std::io::Write as _;
use std::os::fd::AsRawFd;
use std::path::Path;

/// Writes `bytes` to `path` so that readers see the old or the new content, never a part:
/// a temporary file beside it, fsync, rename.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp.{}", std::process::id()));
    {
        let mut f = fs_err::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    fs_err::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// `touch`: sets `path`'s modification time, making an empty file where there is none.
pub fn touch(path: &Path, time: std::time::SystemTime) -> std::io::Result<()> {
    fs_err::File::options()
        .create(true)
        .append(true)
        .open(path)?
        .file()
        .set_modified(time)
}

/// An exclusive advisory lock (flock) held for the lifetime of the value; the kernel drops
/// it when the process dies, so a killed build never leaves a slot locked.
#[derive(Debug)]
pub struct FileLock {
    file: std::fs::File,
}

impl FileLock {
    /// Takes the lock without waiting; `Ok(None)` when another process holds it.
    pub fn try_acquire(path: &Path) -> std::io::Result<Option<Self>> {
        Self::acquire_inner(path, libc::LOCK_EX | libc::LOCK_NB)
    }

    /// Waits for the lock.
    pub fn acquire(path: &Path) -> std::io::Result<Self> {
        Ok(Self::acquire_inner(path, libc::LOCK_EX)?.expect("blocking flock returns the lock"))
    }

    /// Takes a shared lock, waiting only while an exclusive holder has it: many readers
    /// (builds and guests using a store entry) at once, none while the collector runs.
    pub fn shared(path: &Path) -> std::io::Result<Self> {
        Ok(Self::acquire_inner(path, libc::LOCK_SH)?.expect("blocking flock returns the lock"))
    }

    fn acquire_inner(path: &Path, op: libc::c_int) -> std::io::Result<Option<Self>> {
        let file = fs_err::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?
            .into_parts()
            .0;
        // SAFETY: flock(2) on a descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), op) };
        if rc == 0 {
            Ok(Some(Self { file }))
        } else {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                Ok(None)
            } else {
                Err(std::io::Error::new(
                    err.kind(),
                    format!("locking {}: {err}", path.display()),
                ))
            }
        }
    }

    /// Lets child processes inherit the lock: flock belongs to the open file, so the lock
    /// then lasts until the last process holding it exits. A make orphaned by a killed
    /// kforge keeps the slot locked until it is gone, instead of racing the next build.
    pub fn inherit_by_children(&self) -> std::io::Result<()> {
        let fd = self.file.as_raw_fd();
        // SAFETY: fcntl on a descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // SAFETY: as above.
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Records who holds the lock (read by a second build to explain why it cannot start).
    pub fn describe_holder(&mut self, text: &str) {
        use std::io::Seek as _;
        let _ = self.file.set_len(0);
        let _ = self.file.seek(std::io::SeekFrom::Start(0));
        let _ = self.file.write_all(text.as_bytes());
    }
}
