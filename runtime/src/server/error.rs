//! The error every RPC returns. Each variant names what failed and the id; the gRPC
//! code for it is chosen in one place, `instrument::code`.

use std::path::PathBuf;

/// An RPC's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RPC is part of CRI v1 but crust does not serve it yet.
    #[error("{rpc}: not implemented by crust yet")]
    NotBuilt {
        /// The RPC's name, as in api.proto.
        rpc: &'static str,
    },
    /// The RPC is served, but what it asks for is not supported.
    #[error("{what}: {reason}")]
    Unsupported {
        /// What was asked for, with its id.
        what: String,
        /// Why crust can't do it.
        reason: String,
    },
    /// The request is malformed.
    #[error("{rpc}: {message}")]
    InvalidArgument {
        /// The RPC's name.
        rpc: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The object is in a state that does not allow the request.
    #[error("{what}: {message}")]
    FailedPrecondition {
        /// The object, with its id.
        what: String,
        /// Why the request can't proceed.
        message: String,
    },
    /// A thing the request names does not exist.
    #[error("{what}: not found")]
    NotFound {
        /// The thing, with its id or reference.
        what: String,
    },
    /// The request's own timeout passed.
    #[error("{what}: {message}")]
    DeadlineExceeded {
        /// The object, with its id.
        what: String,
        /// What did not finish in time.
        message: String,
    },
    /// The image store failed; its error names the reference or digest.
    #[error(transparent)]
    Image(#[from] crust_image_store::Error),
    /// Measuring the image or container filesystem failed.
    #[error("image filesystem info: {0}")]
    FsUsage(#[from] crust_image_store::usage::Error),
    /// The metadata store failed or refused; its error names the object.
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    /// The container's spec could not be built; its error names the container.
    #[error(transparent)]
    Spec(#[from] crate::spec::Error),
    /// A shim could not be started or called; its error names the container.
    #[error(transparent)]
    Shim(#[from] crate::shims::Error),
    /// CNI failed; its error names the sandbox.
    #[error(transparent)]
    Cni(#[from] Box<crate::network::cni::Error>),
    /// A pod's network, UTS or IPC namespace could not be pinned or removed.
    #[error(transparent)]
    PodNamespace(#[from] crate::pod::namespaces::Error),
    /// A pod's /dev/shm could not be mounted or removed.
    #[error(transparent)]
    Shm(#[from] crate::pod::shm::Error),
    /// A pod's shared PID namespace could not be started or stopped.
    #[error(transparent)]
    PidHolder(#[from] crate::pod::infra::Error),
    /// A pod's user namespace or a container's idmapped mount could not be made.
    #[error(transparent)]
    Userns(#[from] crate::pod::userns::Error),
    /// A file system operation failed.
    #[error("{what}: {op} {}: {source}", path.display())]
    Io {
        /// The object, with its id.
        what: String,
        /// What was being done.
        op: &'static str,
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// An NRI plugin refused the event, or its adjustment can't be applied.
    #[error(transparent)]
    Nri(#[from] crate::nri::Error),
    /// Something failed beyond the request's control.
    #[error("{what}: {message}")]
    Internal {
        /// The object, with its id.
        what: String,
        /// What failed.
        message: String,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{what}: background task failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
}

impl Error {
    /// A failed file system operation on `what`.
    pub fn io(
        what: impl Into<String>,
        op: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let (what, path) = (what.into(), path.into());
        move |source| Error::Io {
            what,
            op,
            path,
            source,
        }
    }
}

impl From<crate::network::cni::Error> for Error {
    fn from(e: crate::network::cni::Error) -> Error {
        Error::Cni(Box::new(e))
    }
}

/// The result of an RPC body.
pub type Result<T> = std::result::Result<T, Error>;

/// Runs blocking work (store writes, file system walks) off the async thread.
pub async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task { what, source })?
}
