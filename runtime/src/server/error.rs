//! The error every RPC returns. Each variant names what failed and the id; the gRPC
//! code for it is chosen in one place, `instrument::code`.

/// An RPC's failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The RPC is part of CRI v1 but crust does not serve it yet.
    #[error("{rpc}: not implemented by crust yet")]
    NotBuilt {
        /// The RPC's name, as in api.proto.
        rpc: &'static str,
    },
    /// The request is malformed.
    #[error("{rpc}: {message}")]
    InvalidArgument {
        /// The RPC's name.
        rpc: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The image store failed; its error names the reference or digest.
    #[error(transparent)]
    Image(#[from] crust_image_store::Error),
    /// Measuring the image or container filesystem failed.
    #[error("image filesystem info: {0}")]
    FsUsage(#[from] crust_image_store::usage::Error),
    /// A blocking task panicked or was cancelled.
    #[error("{what}: background task failed: {source}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
}

/// The result of an RPC body.
pub type Result<T> = std::result::Result<T, Error>;
