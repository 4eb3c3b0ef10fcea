//! The crate's error type. Every variant names what failed (reference, digest, path);
//! [`Error::kind`] classifies it once, so crustd maps it to a gRPC code in one place.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::digest::Digest;
use crate::unpack::UnpackError;

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The class of an [`Error`], for mapping to gRPC codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The image, manifest or blob does not exist.
    NotFound,
    /// The request is malformed: a bad reference, digest or credentials, an image
    /// that is not a valid image, or a layer that tries to escape its root.
    InvalidArgument,
    /// The registry refused the credentials.
    PermissionDenied,
    /// A size limit or the free-disk guard stopped the work.
    ResourceExhausted,
    /// A pull made no progress in time, or was too slow.
    DeadlineExceeded,
    /// The registry could not be reached; a retry may succeed.
    Unavailable,
    /// The operation was cancelled.
    Cancelled,
    /// Anything else: the node's disk, the database, corrupt data.
    Internal,
}

/// Errors of the image store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reference could not be parsed.
    #[error("invalid image reference \"{reference}\": {reason}")]
    InvalidReference {
        /// The reference as given.
        reference: String,
        /// Why it is invalid.
        reason: String,
    },
    /// A digest could not be parsed.
    #[error("invalid digest \"{digest}\"")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
    },
    /// The options are inconsistent.
    #[error("image store options: {field}: {reason}")]
    InvalidOptions {
        /// The option at fault.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Credentials could not be used.
    #[error("credentials for {reference}: {reason}")]
    InvalidAuth {
        /// The image being pulled.
        reference: String,
        /// What is wrong with them.
        reason: &'static str,
    },
    /// No image matches a reference or id.
    #[error("image {reference}: not found")]
    NotFound {
        /// The reference or id looked up.
        reference: String,
    },
    /// A short id matches more than one image.
    #[error("image id prefix {prefix}: matches more than one image")]
    AmbiguousId {
        /// The prefix looked up.
        prefix: String,
    },
    /// A registry request failed.
    #[error("pull {reference} from {endpoint}: {source}")]
    Registry {
        /// The image being pulled.
        reference: String,
        /// The registry host or mirror endpoint asked.
        endpoint: String,
        /// The client's error.
        source: Box<oci_client::errors::OciDistributionError>,
    },
    /// An image archive is not one crust can import.
    #[error("image archive {archive}: {reason}")]
    Archive {
        /// The archive, as given.
        archive: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Receiving an archive would eat into the free-space reserve.
    #[error("{path}: {free} bytes free, less than the {reserve} bytes kept free")]
    DiskFull {
        /// The file being written.
        path: PathBuf,
        /// Bytes free on its file system.
        free: u64,
        /// [`crate::StoreOptions::min_free_bytes`].
        reserve: u64,
    },
    /// The image was recorded before crust kept manifests: it cannot be exported.
    #[error(
        "image {reference}: recorded without its manifest (pulled by an older crustd); pull it again to export it"
    )]
    NotExportable {
        /// The reference or id given.
        reference: String,
    },
    /// Reading a blob stream failed.
    #[error("pull {reference}: blob {digest}: {source}")]
    BlobStream {
        /// The image being pulled.
        reference: String,
        /// The blob.
        digest: Digest,
        /// The cause.
        source: io::Error,
    },
    /// The manifest is not one we can use.
    #[error("pull {reference}: manifest {digest}: {reason}")]
    BadManifest {
        /// The image being pulled.
        reference: String,
        /// The manifest's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// An index has no manifest for this node's platform.
    #[error("pull {reference}: no manifest for platform {platform} in index {digest}")]
    NoMatchingPlatform {
        /// The image being pulled.
        reference: String,
        /// The index's digest.
        digest: Digest,
        /// `linux/amd64` and the like.
        platform: String,
    },
    /// The image config could not be parsed or does not match the manifest.
    #[error("image config {digest}: {reason}")]
    BadConfig {
        /// The config blob's digest.
        digest: Digest,
        /// What is wrong with it.
        reason: String,
    },
    /// Downloaded content does not match its digest or size.
    #[error("blob {expected}: content does not match: got {actual} ({size} bytes)")]
    DigestMismatch {
        /// The digest the manifest promised.
        expected: Digest,
        /// The digest of what arrived.
        actual: Digest,
        /// How many bytes arrived.
        size: u64,
    },
    /// A registry request made no progress for the stall timeout.
    #[error("pull {reference}: {what}: no progress for {timeout:?}")]
    Stalled {
        /// The image being pulled.
        reference: String,
        /// What was being fetched (`manifest`, `blob sha256:...`).
        what: String,
        /// The configured stall timeout.
        timeout: Duration,
    },
    /// A download fell below the minimum throughput.
    #[error("pull {reference}: {what}: {rate} bytes/s is below the minimum of {min} bytes/s")]
    TooSlow {
        /// The image being pulled.
        reference: String,
        /// What was being fetched.
        what: String,
        /// The measured rate.
        rate: u64,
        /// The configured minimum.
        min: u64,
    },
    /// A layer could not be unpacked.
    #[error("layer {digest}: {source}")]
    Unpack {
        /// The layer blob's digest.
        digest: Digest,
        /// The cause.
        source: UnpackError,
    },
    /// A file system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The path it was done to.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The metadata database failed.
    #[error("image metadata: {0}")]
    Db(Box<redb::Error>),
    /// A stored record could not be decoded.
    #[error("image metadata record {key}: {source}")]
    CorruptRecord {
        /// The record's key.
        key: String,
        /// The cause.
        source: serde_json::Error,
    },
    /// A blocking task panicked or was cancelled.
    #[error("{op}: background task failed: {source}")]
    Task {
        /// What the task was doing.
        op: &'static str,
        /// The cause.
        source: tokio::task::JoinError,
    },
    /// Disk usage could not be measured.
    #[error(transparent)]
    Usage(#[from] crate::usage::Error),
}

impl Error {
    /// The class of this error, for mapping to a gRPC code.
    pub fn kind(&self) -> ErrorKind {
        use oci_client::errors::OciDistributionError as Oci;
        match self {
            Error::InvalidReference { .. }
            | Error::InvalidDigest { .. }
            | Error::InvalidOptions { .. }
            | Error::InvalidAuth { .. }
            | Error::AmbiguousId { .. }
            | Error::BadManifest { .. }
            | Error::BadConfig { .. } => ErrorKind::InvalidArgument,
            Error::NotFound { .. } | Error::NoMatchingPlatform { .. } => ErrorKind::NotFound,
            Error::Registry { source, .. } => match source.as_ref() {
                Oci::ImageManifestNotFoundError(_) => ErrorKind::NotFound,
                Oci::AuthenticationFailure(_) | Oci::UnauthorizedError { .. } => {
                    ErrorKind::PermissionDenied
                }
                Oci::RegistryError { envelope, .. } => registry_kind(envelope),
                Oci::ServerError { code, .. } if *code == 404 => ErrorKind::NotFound,
                Oci::ServerError { code, .. } if *code == 401 || *code == 403 => {
                    ErrorKind::PermissionDenied
                }
                Oci::UnsupportedMediaTypeError(_)
                | Oci::UnsupportedSchemaVersionError(_)
                | Oci::ManifestParsingError(_)
                | Oci::VersionedParsingError(_) => ErrorKind::InvalidArgument,
                _ => ErrorKind::Unavailable,
            },
            Error::BlobStream { .. } => ErrorKind::Unavailable,
            Error::Archive { .. } | Error::NotExportable { .. } => ErrorKind::InvalidArgument,
            Error::DiskFull { .. } => ErrorKind::ResourceExhausted,
            Error::Stalled { .. } | Error::TooSlow { .. } => ErrorKind::DeadlineExceeded,
            Error::Unpack { source, .. } => source.kind(),
            Error::DigestMismatch { .. }
            | Error::Io { .. }
            | Error::Db(_)
            | Error::CorruptRecord { .. }
            | Error::Task { .. }
            | Error::Usage(_) => ErrorKind::Internal,
        }
    }

    /// An [`Error::Io`] for `op` on `path`.
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| Error::Io { op, path, source }
    }
}

fn registry_kind(envelope: &oci_client::errors::OciEnvelope) -> ErrorKind {
    use oci_client::errors::OciErrorCode as Code;
    let codes: Vec<&Code> = envelope.errors.iter().map(|e| &e.code).collect();
    if codes.iter().any(|c| {
        matches!(
            c,
            Code::ManifestUnknown | Code::BlobUnknown | Code::NameUnknown | Code::NotFound
        )
    }) {
        ErrorKind::NotFound
    } else if codes
        .iter()
        .any(|c| matches!(c, Code::Unauthorized | Code::Denied))
    {
        ErrorKind::PermissionDenied
    } else if codes
        .iter()
        .any(|c| matches!(c, Code::NameInvalid | Code::TagInvalid))
    {
        ErrorKind::InvalidArgument
    } else {
        ErrorKind::Unavailable
    }
}

macro_rules! from_redb {
    ($($t:ty),*) => {$(
        impl From<$t> for Error {
            fn from(e: $t) -> Self {
                Error::Db(Box::new(e.into()))
            }
        }
    )*};
}
from_redb!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);
