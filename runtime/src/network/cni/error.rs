//! Errors of CNI execution. Each names the sandbox; [`Error::kind`] tells the gRPC layer
//! which code to answer with.

use std::fmt;
use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::network::NotReady;

/// A CNI operation, as `CNI_COMMAND` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Attach the sandbox to the network.
    Add,
    /// Detach it and release what ADD took.
    Del,
    /// Verify the attachment is still as ADD left it.
    Check,
}

impl Command {
    /// The `CNI_COMMAND` value.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Add => "ADD",
            Command::Del => "DEL",
            Command::Check => "CHECK",
        }
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What an error means to a CRI client, for the mapping to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No usable network config (FailedPrecondition): the network is not ready.
    FailedPrecondition,
    /// A plugin asked to be tried again later, CNI error code 11 (Unavailable).
    Unavailable,
    /// A plugin ran past the timeout and was killed (DeadlineExceeded).
    DeadlineExceeded,
    /// A plugin failed, or the host did (Internal).
    Internal,
}

/// The CNI error code a plugin uses to ask to be called again later.
pub const CODE_TRY_AGAIN_LATER: u32 = 11;

/// Errors running the CNI plugins for a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// There is no usable network config, or a plugin binary is missing.
    #[error("sandbox {sandbox}: cni: {source}")]
    NoNetwork {
        /// The sandbox id.
        sandbox: String,
        /// Why the network is not ready.
        #[source]
        source: NotReady,
    },
    /// CHECK needs the result ADD cached, and there is none.
    #[error("sandbox {sandbox}: cni CHECK: no cached ADD result")]
    NotAttached {
        /// The sandbox id.
        sandbox: String,
    },
    /// The plugin could not be started or waited for.
    #[error("sandbox {sandbox}: cni {command} plugin {plugin}: run {path}: {source}")]
    Spawn {
        /// The sandbox id.
        sandbox: String,
        /// The operation.
        command: Command,
        /// The plugin type.
        plugin: String,
        /// The binary.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: io::Error,
    },
    /// The plugin exited with an error.
    #[error("sandbox {sandbox}: cni {command} plugin {plugin}: {}", failure_text(.code, .msg, .details, .stderr))]
    Plugin {
        /// The sandbox id.
        sandbox: String,
        /// The operation.
        command: Command,
        /// The plugin type.
        plugin: String,
        /// The CNI error code, when the plugin wrote an error object.
        code: Option<u32>,
        /// The error's `msg` (or the plugin's stdout, or its exit status).
        msg: String,
        /// The error's `details`.
        details: String,
        /// What the plugin wrote to stderr.
        stderr: String,
    },
    /// The plugin ran past the timeout and was killed.
    #[error("sandbox {sandbox}: cni {command} plugin {plugin}: killed after {timeout:?}{}", stderr_text(.stderr))]
    Timeout {
        /// The sandbox id.
        sandbox: String,
        /// The operation.
        command: Command,
        /// The plugin type.
        plugin: String,
        /// The timeout.
        timeout: Duration,
        /// What the plugin wrote to stderr before then.
        stderr: String,
    },
    /// The plugin's ADD result is not a CNI result.
    #[error("sandbox {sandbox}: cni ADD plugin {plugin}: bad result: {message}")]
    BadResult {
        /// The sandbox id.
        sandbox: String,
        /// The plugin type.
        plugin: String,
        /// What is wrong.
        message: String,
    },
    /// Reading, writing or removing the cached ADD result failed.
    #[error("sandbox {sandbox}: cni cache {path}: {op}: {source}")]
    Cache {
        /// The sandbox id.
        sandbox: String,
        /// The cache file.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn stderr_text(stderr: &str) -> String {
    let stderr = stderr.trim();
    if stderr.is_empty() {
        String::new()
    } else {
        format!(" (stderr: {stderr})")
    }
}

fn failure_text(code: &Option<u32>, msg: &str, details: &str, stderr: &str) -> String {
    let mut text = msg.trim().to_owned();
    if !details.trim().is_empty() {
        text.push_str(": ");
        text.push_str(details.trim());
    }
    if let Some(code) = code {
        text.push_str(&format!(" (code {code})"));
    }
    text + &stderr_text(stderr)
}

impl Error {
    /// The class of the error, which the gRPC layer maps to a status code.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NoNetwork { .. } | Error::NotAttached { .. } => ErrorKind::FailedPrecondition,
            Error::Plugin {
                code: Some(CODE_TRY_AGAIN_LATER),
                ..
            } => ErrorKind::Unavailable,
            Error::Timeout { .. } => ErrorKind::DeadlineExceeded,
            Error::Spawn { .. }
            | Error::Plugin { .. }
            | Error::BadResult { .. }
            | Error::Cache { .. } => ErrorKind::Internal,
        }
    }
}

/// A `Result` of CNI execution.
pub type Result<T, E = Error> = std::result::Result<T, E>;
