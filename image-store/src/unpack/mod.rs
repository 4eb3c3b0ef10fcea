//! Unpacking one layer (a tar stream, gzip- or zstd-compressed or plain) into an empty
//! directory, as an overlayfs lower layer: OCI whiteouts become 0:0 character devices
//! and opaque directories get `trusted.overlay.opaque=y`. Synchronous: run it on a
//! blocking thread.
//!
//! Security rules, whatever the layer contains:
//! - a leading `/` or `./` is normalised away (as Docker does); a `..` that would
//!   climb above the layer root is refused;
//! - no entry is ever written through a symlink: a parent component that is a symlink
//!   is refused, and an existing entry at the final path is removed and replaced,
//!   never opened (files are created with `O_EXCL | O_NOFOLLOW`);
//! - hardlink targets and whiteouts obey the same path rules, and a hardlink's target
//!   must already be in this layer;
//! - overlayfs' own `trusted.overlay.*` xattrs are never taken from a tar header;
//! - the uncompressed stream and the bytes written are bounded by
//!   [`UnpackOptions::max_bytes`], and [`UnpackOptions::min_free_bytes`] of the file
//!   system are kept free.
//!
//! The diff ID is the sha256 of the whole uncompressed stream, the tar padding after
//! the last entry included.

use std::cell::Cell;
use std::collections::HashSet;
use std::ffi::OsStr;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use flate2::read::MultiGzDecoder;

use crate::digest::{Digest, Hasher};
use crate::error::ErrorKind;

mod entries;

use entries::Unpacker;

/// How a layer is unpacked.
#[derive(Debug, Clone)]
pub struct UnpackOptions {
    /// The diff ID the image config promises; a different one fails the unpack.
    pub expected_diff_id: Option<Digest>,
    /// Bound on the uncompressed tar stream and on the bytes written to files.
    pub max_bytes: u64,
    /// Bytes that must stay free on the destination's file system.
    pub min_free_bytes: u64,
    /// Set to stop the unpack between entries.
    pub cancel: Option<Arc<AtomicBool>>,
}

/// What an unpack produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unpacked {
    /// sha256 of the uncompressed tar stream.
    pub diff_id: Digest,
    /// Bytes written to regular files.
    pub file_bytes: u64,
}

/// Errors of [`unpack_layer`].
#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    /// An entry would land outside the layer root, or write through a link.
    #[error("unpack: entry \"{entry}\" refused: {reason}")]
    Unsafe {
        /// The entry's path as the tar names it.
        entry: String,
        /// Why it was refused.
        reason: &'static str,
    },
    /// The layer is bigger than [`UnpackOptions::max_bytes`].
    #[error("unpack: layer exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: u64,
    },
    /// The free-disk guard stopped the unpack.
    #[error(
        "unpack: {path}: {free} bytes free, {needed} needed on top of the {reserve} bytes kept free"
    )]
    DiskFull {
        /// The destination.
        path: PathBuf,
        /// Bytes available.
        free: u64,
        /// Bytes the next file needs.
        needed: u64,
        /// [`UnpackOptions::min_free_bytes`].
        reserve: u64,
    },
    /// The layer is not the one the image config names.
    #[error("unpack: diff id is {actual}, image config says {expected}")]
    DiffIdMismatch {
        /// The diff ID from the image config.
        expected: Digest,
        /// The diff ID of the stream.
        actual: Digest,
    },
    /// Creating one entry failed.
    #[error("unpack: entry \"{entry}\": {op}: {source}")]
    Entry {
        /// The entry's path as the tar names it.
        entry: String,
        /// What was being done.
        op: &'static str,
        /// The cause.
        source: io::Error,
    },
    /// Reading or decompressing the stream failed.
    #[error("unpack: read layer: {0}")]
    Read(io::Error),
    /// [`UnpackOptions::cancel`] was set.
    #[error("unpack: cancelled")]
    Cancelled,
}

impl UnpackError {
    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            UnpackError::Unsafe { .. } | UnpackError::DiffIdMismatch { .. } => {
                ErrorKind::InvalidArgument
            }
            UnpackError::TooLarge { .. } | UnpackError::DiskFull { .. } => {
                ErrorKind::ResourceExhausted
            }
            UnpackError::Cancelled => ErrorKind::Cancelled,
            UnpackError::Entry { .. } | UnpackError::Read(_) => ErrorKind::Internal,
        }
    }
}

type Result<T> = std::result::Result<T, UnpackError>;

/// Bytes written between two free-space checks.
const DISK_CHECK_EVERY: u64 = 8 << 20;

/// Unpacks the layer read from `reader` into `dest`, an existing empty directory.
/// On error `dest` holds a partial layer: the caller discards it.
pub fn unpack_layer<R: Read>(reader: R, dest: &Path, opts: &UnpackOptions) -> Result<Unpacked> {
    let mut input = BufReader::with_capacity(256 * 1024, reader);
    let head = input.fill_buf().map_err(UnpackError::Read)?;
    let stream: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(MultiGzDecoder::new(input))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(input).map_err(UnpackError::Read)?)
    } else {
        Box::new(input)
    };
    let exceeded = Rc::new(Cell::new(false));
    let measured = Measured {
        inner: stream,
        hasher: Hasher::sha256(),
        bytes: 0,
        limit: opts.max_bytes,
        exceeded: exceeded.clone(),
    };
    let mut archive = tar::Archive::new(measured);
    let mut unpacker = Unpacker {
        root: dest,
        opts,
        safe_dirs: HashSet::new(),
        dir_times: Vec::new(),
        written: 0,
        unchecked: DISK_CHECK_EVERY,
    };
    let applied = apply_all(&mut archive, &mut unpacker).and_then(|()| {
        // The diff ID covers the end-of-archive blocks and padding too.
        let mut rest = archive.into_inner();
        io::copy(&mut rest, &mut io::sink()).map_err(UnpackError::Read)?;
        Ok(rest.hasher.finish())
    });
    let diff_id = match applied {
        Err(_) if exceeded.get() => {
            return Err(UnpackError::TooLarge {
                limit: opts.max_bytes,
            });
        }
        other => other?,
    };
    if let Some(expected) = &opts.expected_diff_id
        && *expected != diff_id
    {
        return Err(UnpackError::DiffIdMismatch {
            expected: expected.clone(),
            actual: diff_id,
        });
    }
    unpacker.finish()?;
    Ok(Unpacked {
        diff_id,
        file_bytes: unpacker.written,
    })
}

fn apply_all<R: Read>(archive: &mut tar::Archive<R>, unpacker: &mut Unpacker<'_>) -> Result<()> {
    for entry in archive.entries().map_err(UnpackError::Read)? {
        if unpacker
            .opts
            .cancel
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(UnpackError::Cancelled);
        }
        let mut entry = entry.map_err(UnpackError::Read)?;
        unpacker.apply(&mut entry)?;
    }
    Ok(())
}

/// Hashes and counts the uncompressed stream, and stops it past the limit.
struct Measured<R> {
    inner: R,
    hasher: Hasher,
    bytes: u64,
    limit: u64,
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for Measured<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.bytes += n as u64;
        if self.bytes > self.limit {
            self.exceeded.set(true);
            return Err(io::Error::other("layer size limit exceeded"));
        }
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}

/// Normalises a tar path: drops empty and `.` components (so a leading `/` or `./`),
/// resolves `..` lexically, and returns `None` if it climbs above the root.
fn clean(raw: &[u8]) -> Option<PathBuf> {
    let mut parts: Vec<&[u8]> = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    Some(parts.iter().map(|p| OsStr::from_bytes(p)).collect())
}

#[cfg(test)]
mod tests;
