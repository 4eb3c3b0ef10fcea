//! The store's errors. Each names the object and its id (or name); [`Error::kind`]
//! tells the gRPC layer which code to answer with.

use std::fmt;
use std::path::PathBuf;

/// Which kind of object an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Object {
    /// A pod sandbox.
    Sandbox,
    /// A container.
    Container,
}

impl fmt::Display for Object {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Object::Sandbox => "sandbox",
            Object::Container => "container",
        })
    }
}

/// What an error means to a CRI client, for the mapping to a gRPC code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No object has that id (or id prefix).
    NotFound,
    /// The id or the name is taken.
    AlreadyExists,
    /// The request is malformed: a bad id, an ambiguous prefix.
    InvalidArgument,
    /// The object is in the wrong state for the change.
    FailedPrecondition,
    /// The database or the disk failed.
    Internal,
}

/// Errors of the sandbox and container store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A string is not a well-formed id or id prefix.
    #[error("{what} id \"{id}\": {reason}")]
    InvalidId {
        /// What the id was for.
        what: Object,
        /// The string given.
        id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No object has the id.
    #[error("{what} {id}: not found")]
    NotFound {
        /// What was looked up.
        what: Object,
        /// The id or id prefix.
        id: String,
    },
    /// More than one id starts with the prefix.
    #[error("{what} id prefix \"{prefix}\" is ambiguous")]
    Ambiguous {
        /// What was looked up.
        what: Object,
        /// The prefix given.
        prefix: String,
    },
    /// An object with the id is already stored.
    #[error("{what} {id}: already exists")]
    AlreadyExists {
        /// What was added.
        what: Object,
        /// Its id.
        id: String,
    },
    /// The name is reserved by another object.
    #[error("{what} name \"{name}\" is reserved for {holder}")]
    NameReserved {
        /// What the name is for.
        what: Object,
        /// The name.
        name: String,
        /// The id holding it.
        holder: String,
    },
    /// The change is not allowed in the object's current state.
    #[error("{what} {id}: cannot {action} in state {state}")]
    InvalidState {
        /// What was changed.
        what: Object,
        /// Its id.
        id: String,
        /// What was attempted, e.g. "start".
        action: &'static str,
        /// The state it is in, as CRI names it.
        state: &'static str,
    },
    /// The sandbox still has containers, so it cannot be removed.
    #[error("sandbox {id}: still has {count} containers")]
    SandboxNotEmpty {
        /// The sandbox.
        id: String,
        /// How many containers it has.
        count: usize,
    },
    /// The database could not be opened.
    #[error("open metadata database {}: {source}", path.display())]
    Open {
        /// The database file.
        path: PathBuf,
        /// The cause.
        source: Box<redb::Error>,
    },
    /// The metadata directory could not be created.
    #[error("create metadata directory {}: {source}", path.display())]
    Dir {
        /// The directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A database operation failed.
    #[error("{what} {id}: {op}: {source}")]
    Db {
        /// What the operation was about.
        what: Object,
        /// The id, or "*" when loading everything.
        id: String,
        /// What was being done: "persist", "delete", "load".
        op: &'static str,
        /// The cause.
        source: Box<redb::Error>,
    },
}

impl Error {
    /// What the error means to a CRI client.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } | Error::NameReserved { .. } => ErrorKind::AlreadyExists,
            // An id that cannot be one names nothing: NotFound, as containerd answers.
            Error::InvalidId { .. } => ErrorKind::NotFound,
            Error::Ambiguous { .. } => ErrorKind::InvalidArgument,
            Error::InvalidState { .. } | Error::SandboxNotEmpty { .. } => {
                ErrorKind::FailedPrecondition
            }
            Error::Open { .. } | Error::Dir { .. } | Error::Db { .. } => ErrorKind::Internal,
        }
    }
}

/// The store's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;
