//! Disk usage of a directory tree, as ImageFsInfo reports it: bytes allocated on disk
//! and inodes, each inode counted once however many hard links it has.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Space used by a directory tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    /// Bytes allocated on disk (512-byte blocks), not apparent file sizes.
    pub bytes: u64,
    /// Distinct inodes, the directory itself included.
    pub inodes: u64,
}

/// Errors of [`dir_usage`].
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A directory could not be read.
    #[error("disk usage of {path}: {source}")]
    Read {
        /// The path that failed.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
}

/// Measures `root` without following symlinks and without crossing into other
/// filesystems (a mount below `root` is not ours to count). A missing `root` uses
/// nothing; an entry that vanishes during the walk is skipped.
pub fn dir_usage(root: &Path) -> Result<Usage, Error> {
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Usage::default()),
        Err(source) => {
            return Err(Error::Read {
                path: root.to_owned(),
                source,
            });
        }
    };
    let dev = meta.dev();
    let mut seen = HashSet::new();
    let mut usage = Usage::default();
    count(&meta, &mut seen, &mut usage);
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::Read { path: dir, source }),
        };
        for entry in entries {
            let entry = entry.map_err(|source| Error::Read {
                path: dir.clone(),
                source,
            })?;
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.dev() != dev {
                continue;
            }
            count(&meta, &mut seen, &mut usage);
            if meta.is_dir() {
                dirs.push(entry.path());
            }
        }
    }
    Ok(usage)
}

fn count(meta: &fs::Metadata, seen: &mut HashSet<u64>, usage: &mut Usage) {
    if meta.nlink() > 1 && !meta.is_dir() && !seen.insert(meta.ino()) {
        return;
    }
    usage.inodes += 1;
    usage.bytes += meta.blocks() * 512;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_dir_uses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let usage = dir_usage(&dir.path().join("absent")).unwrap();
        assert_eq!(usage, Usage::default());
    }

    #[test]
    fn counts_files_dirs_and_hard_links_once() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/a"), vec![7u8; 64 * 1024]).unwrap();
        fs::hard_link(root.join("sub/a"), root.join("b")).unwrap();
        std::os::unix::fs::symlink("sub/a", root.join("c")).unwrap();
        let usage = dir_usage(root).unwrap();
        // root, sub, a (= b), c
        assert_eq!(usage.inodes, 4);
        assert!(usage.bytes >= 64 * 1024, "{usage:?}");
        assert!(usage.bytes < 2 * 64 * 1024 + 3 * 8192, "{usage:?}");
    }
}
