//! The process that holds a pod's shared PID namespace.
//!
//! CRI's default PID mode is POD: the pod's containers share one PID namespace, which
//! needs a PID 1 that outlives them and reaps orphans. crust has no pause image; it
//! runs `crust-shim pause --pin <pin>`, which forks `crust-pause` (PID 1 of a new PID
//! namespace, blocking in `sigwait`, with no runtime or threads), bind-mounts that namespace
//! onto `<pin>`, writes the holder's host pid to `<pin>.pid` and exits. Containers
//! join the namespace through the pin.
//!
//! A pid alone is never trusted: before signalling, [`stop_pid_holder`] checks that
//! `/proc/<pid>/ns/pid` is the very namespace the pin holds, so a pid recycled after
//! the holder died is never killed.

use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::pod::namespaces::{self, Kind};

/// Errors starting or stopping a pod's PID namespace holder. Each names the pin.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim could not be run.
    #[error("pid holder {pin}: run {shim}: {source}")]
    Spawn {
        /// The pin.
        pin: PathBuf,
        /// The shim binary.
        shim: PathBuf,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// `crust-shim pause` failed; `message` is what it said on stderr.
    #[error("pid holder {pin}: crust-shim pause {status}: {message}")]
    Pause {
        /// The pin.
        pin: PathBuf,
        /// How it exited.
        status: std::process::ExitStatus,
        /// Its error line.
        message: String,
    },
    /// A file of the holder could not be read, written or removed.
    #[error("pid holder {path}: {op}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The pid file holds no pid.
    #[error("pid holder {path}: bad pid file {content:?}")]
    BadPidFile {
        /// The pid file.
        path: PathBuf,
        /// What it holds.
        content: String,
    },
    /// Signalling the holder failed.
    #[error("pid holder {pin}: kill {pid}: {source}")]
    Kill {
        /// The pin.
        pin: PathBuf,
        /// The holder's pid.
        pid: u32,
        /// The error.
        #[source]
        source: Errno,
    },
    /// Preparing the pin dir or removing the pin failed.
    #[error(transparent)]
    Pin(#[from] namespaces::Error),
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The file beside the pin that holds the holder's host pid: `<pin>.pid`.
pub fn pid_file(pin: &Path) -> PathBuf {
    let mut name = pin.as_os_str().to_owned();
    name.push(".pid");
    PathBuf::from(name)
}

/// Starts a PID namespace holder pinned at `pin` (its dir is prepared as a shared pin
/// dir first) by running `<shim> pause --pin <pin>`, and returns the holder's host pid.
/// With `userns` (a pinned user namespace), the PID namespace is owned by it. On
/// failure nothing is left running: the shim kills its child before it fails.
pub async fn start_pid_holder(shim: &Path, pin: &Path, userns: Option<&Path>) -> Result<u32> {
    if let Some(dir) = pin.parent() {
        namespaces::prepare_dir(dir)?;
    }
    let mut cmd = tokio::process::Command::new(shim);
    cmd.arg("pause").arg("--pin").arg(pin);
    if let Some(userns) = userns {
        cmd.arg("--userns").arg(userns);
    }
    let out = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .map_err(|source| Error::Spawn {
            pin: pin.to_owned(),
            shim: shim.to_owned(),
            source,
        })?;
    if !out.status.success() {
        let text = String::from_utf8_lossy(&out.stderr);
        let message = text.trim().lines().last().unwrap_or_default();
        return Err(Error::Pause {
            pin: pin.to_owned(),
            status: out.status,
            message: message.trim_start_matches("crust-shim: ").to_owned(),
        });
    }
    let path = pid_file(pin);
    let content = tokio::fs::read_to_string(&path)
        .await
        .map_err(|source| Error::Io {
            path: path.clone(),
            op: "read",
            source,
        })?;
    parse_pid(&path, &content)
}

fn parse_pid(path: &Path, content: &str) -> Result<u32> {
    match content.trim().parse::<u32>() {
        Ok(pid) if pid > 0 => Ok(pid),
        _ => Err(Error::BadPidFile {
            path: path.to_owned(),
            content: content.to_owned(),
        }),
    }
}

/// The pid in `<pin>.pid`, or None when there is no pid file.
fn read_pid(pin: &Path) -> Result<Option<u32>> {
    let path = pid_file(pin);
    match fs::read_to_string(&path) {
        Ok(content) => parse_pid(&path, &content).map(Some),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(Error::Io {
            path,
            op: "read",
            source,
        }),
    }
}

/// Whether `pid`'s own PID namespace is the one pinned at `pin` (same nsfs dev and
/// inode). False when either is gone or `pin` holds no namespace.
fn holds_pinned_ns(pin: &Path, pid: u32) -> bool {
    let (Ok(pinned), Ok(own)) = (
        fs::metadata(pin),
        fs::metadata(format!("/proc/{pid}/ns/pid")),
    ) else {
        return false;
    };
    namespaces::is_pinned(pin) && pinned.dev() == own.dev() && pinned.ino() == own.ino()
}

/// Whether `pid` exited and waits to be reaped.
fn is_zombie(pid: u32) -> bool {
    let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) state ...`; comm may hold anything, the state follows the last ')'.
    stat.rsplit_once(')')
        .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X']))
}

/// Whether the holder pinned at `pin` still runs: the pin holds a namespace, the pid
/// file names a live process and that process's PID namespace is the pinned one. For
/// recovery after a crustd restart.
pub fn pid_holder_alive(pin: &Path) -> bool {
    match read_pid(pin) {
        Ok(Some(pid)) => holds_pinned_ns(pin, pid) && !is_zombie(pid),
        _ => false,
    }
}

/// Stops the holder pinned at `pin`: SIGKILLs it if the pid file names the process
/// whose PID namespace the pin holds (the kernel then kills everything left in the
/// namespace), then unmounts and removes the pin and the pid file. Idempotent: a
/// missing pid file, pin or process is fine, and a pid that now names another process
/// is left alone.
pub fn stop_pid_holder(pin: &Path) -> Result<()> {
    // A pid file that can't be read or parsed can name no process safely: clean up.
    if let Ok(Some(pid)) = read_pid(pin)
        && holds_pinned_ns(pin, pid)
    {
        match kill(Pid::from_raw(pid as i32), Signal::SIGKILL) {
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(source) => {
                return Err(Error::Kill {
                    pin: pin.to_owned(),
                    pid,
                    source,
                });
            }
        }
    }
    namespaces::remove(Some(Kind::Pid), pin)?;
    let path = pid_file(pin);
    match fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::Io {
            path,
            op: "unlink",
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
#[path = "infra_tests.rs"]
mod tests;
