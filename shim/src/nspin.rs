//! What the shim's namespace modes (`pause` and `userns`) share: their error, making a
//! pin file, bind-mounting a child's namespace onto it, and reading a child's report.
//! Both modes run before anything else of the shim (no tokio, no threads).

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use nix::sys::statfs::{NSFS_MAGIC, statfs};
use nix::unistd::Pid;

/// Why a namespace mode failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line is malformed: the mode's usage, and what is wrong.
    #[error("{0}")]
    Usage(String),
    /// A system call failed.
    #[error("{path}: {op}: {source}")]
    Io {
        /// The pin, or the file being read or written.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pin already holds a namespace.
    #[error("{0}: already pinned")]
    AlreadyPinned(PathBuf),
    /// A child failed to set itself up.
    #[error("{path}: {who}: {message}")]
    Child {
        /// The pin.
        path: PathBuf,
        /// Which child (e.g. "pause process").
        who: &'static str,
        /// What the child said.
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Maps an error of `op` on `path` to [`Error::Io`].
pub fn io_err<'a, E: Into<io::Error>>(
    path: &'a Path,
    op: &'static str,
) -> impl FnOnce(E) -> Error + 'a {
    move |e| Error::Io {
        path: path.to_owned(),
        op,
        source: e.into(),
    }
}

/// Creates the empty file a namespace is bind-mounted onto; refuses a pin that
/// already holds a namespace.
pub fn create_pin(pin: &Path) -> Result<()> {
    if statfs(pin).is_ok_and(|s| s.filesystem_type() == NSFS_MAGIC) {
        return Err(Error::AlreadyPinned(pin.to_owned()));
    }
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(pin)
        .map(drop)
        .map_err(io_err(pin, "create pin file"))
}

/// Bind-mounts `child`'s namespace `name` (as under `/proc/<pid>/ns/`) onto `pin`.
pub fn bind_ns(child: Pid, name: &str, pin: &Path) -> Result<()> {
    let ns = format!("/proc/{child}/ns/{name}");
    nix::mount::mount(
        Some(ns.as_str()),
        pin,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(io_err(pin, "bind mount"))
}

/// The error of a child that sent `msg` instead of what was expected: its own error
/// message, or nothing when it died first.
pub fn child_failed(path: &Path, who: &'static str, msg: &[u8]) -> Error {
    let message = match String::from_utf8_lossy(msg).trim() {
        "" => "exited before it was ready".to_owned(),
        m => m.to_owned(),
    };
    Error::Child {
        path: path.to_owned(),
        who,
        message,
    }
}
