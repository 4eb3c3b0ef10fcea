//! Spawning crust-shim processes and talking to them: finding the binary
//! ([`locate`]), launching a shim for a new container ([`launch`]) and clients of the
//! shims over their Unix sockets ([`Shims`]). A shim outlives crustd, so everything here
//! also works on a shim that another crustd process started.

mod client;
mod launch;

use std::path::PathBuf;

pub use client::{ExitFile, Shims, read_exit_file};
pub use launch::{LaunchRequest, launch};

const SHIM_BINARY: &str = "crust-shim";

pub use crust_proto::shim::SOCKET;

/// The crust-shim binary: beside the running crustd (how both are built and
/// installed), else the first in `PATH`.
pub fn locate() -> Option<PathBuf> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(SHIM_BINARY)));
    let in_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(SHIM_BINARY));
    beside.into_iter().chain(in_path).find(|p| p.is_file())
}

/// Errors launching or calling a shim. Each names the container.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The shim could not be started, or it failed to create the container.
    #[error("container {id}: start shim: {message}")]
    Launch {
        /// The container id.
        id: String,
        /// The shim's one-line error, or why it could not run.
        message: String,
    },
    /// The shim's socket does not answer: the shim is gone.
    #[error("container {id}: shim is not running: {message}")]
    Gone {
        /// The container id.
        id: String,
        /// Why the connection failed.
        message: String,
    },
    /// A call to the shim failed.
    #[error("container {id}: {op}: {}", status.message())]
    Call {
        /// The container id.
        id: String,
        /// The call.
        op: &'static str,
        /// The shim's answer.
        status: Box<tonic::Status>,
    },
}

impl Error {
    /// The gRPC code the shim answered with, when it answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }
}

/// A `Result` of this module.
pub type Result<T, E = Error> = std::result::Result<T, E>;
