//! Creating the entries of one layer: the path rules, each entry type, metadata.

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::{self, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{Mode, SFlag, UtimensatFlags, makedev, mknod, utimensat};
use nix::sys::time::TimeSpec;
use tar::EntryType;
use tracing::debug;

use super::{DISK_CHECK_EVERY, Result, UnpackError, UnpackOptions, clean};

pub(super) struct Unpacker<'a> {
    pub(super) root: &'a Path,
    pub(super) opts: &'a UnpackOptions,
    /// Relative paths checked to be real directories (not symlinks).
    pub(super) safe_dirs: HashSet<PathBuf>,
    /// Directory mtimes, set last so that creating children does not change them.
    pub(super) dir_times: Vec<(PathBuf, u64)>,
    pub(super) written: u64,
    pub(super) unchecked: u64,
}

fn refused(entry: &str, reason: &'static str) -> UnpackError {
    UnpackError::Unsafe {
        entry: entry.to_owned(),
        reason,
    }
}

fn failed(entry: &str, op: &'static str) -> impl FnOnce(io::Error) -> UnpackError {
    let entry = entry.to_owned();
    move |source| UnpackError::Entry { entry, op, source }
}

impl Unpacker<'_> {
    pub(super) fn apply<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<()> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let raw = entry.path_bytes().into_owned();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = clean(&raw).ok_or_else(|| refused(&name, "path climbs above the layer root"))?;
        let file_name = rel.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        if let Some(target) = file_name.strip_prefix(b".wh.") {
            return self.whiteout(&name, &rel, target);
        }
        if rel.as_os_str().is_empty() && kind != EntryType::Directory {
            return Err(refused(&name, "entry replaces the layer root"));
        }
        self.ensure_parents(&name, &rel)?;
        let path = self.root.join(&rel);
        match kind {
            EntryType::Directory => self.directory(&name, &rel, &path)?,
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.regular(&name, &path, entry)?
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| refused(&name, "symlink without a target"))?
                    .into_owned();
                self.remove_existing(&name, &path, false)?;
                std::os::unix::fs::symlink(OsStr::from_bytes(&target), &path)
                    .map_err(failed(&name, "create symlink"))?;
            }
            EntryType::Link => return self.hardlink(&name, &path, entry),
            EntryType::Char | EntryType::Block | EntryType::Fifo => {
                self.remove_existing(&name, &path, false)?;
                let h = entry.header();
                let (sflag, dev) = match kind {
                    EntryType::Fifo => (SFlag::S_IFIFO, 0),
                    _ => {
                        let major = h.device_major().ok().flatten().unwrap_or(0);
                        let minor = h.device_minor().ok().flatten().unwrap_or(0);
                        let sflag = if kind == EntryType::Char {
                            SFlag::S_IFCHR
                        } else {
                            SFlag::S_IFBLK
                        };
                        (sflag, makedev(major.into(), minor.into()))
                    }
                };
                mknod(&path, sflag, Mode::from_bits_truncate(0o600), dev)
                    .map_err(|e| failed(&name, "mknod")(e.into()))?;
            }
            other => {
                debug!(entry = %name, kind = ?other, "skipping unsupported tar entry");
                return Ok(());
            }
        }
        self.metadata(&name, &path, kind, entry)
    }

    /// Creates missing parents of `rel` and refuses any parent that is a symlink or not
    /// a directory, so nothing is ever written through a link.
    fn ensure_parents(&mut self, name: &str, rel: &Path) -> Result<()> {
        let Some(parent) = rel.parent() else {
            return Ok(());
        };
        let mut cur = PathBuf::new();
        for part in parent.components() {
            cur.push(part);
            if self.safe_dirs.contains(&cur) {
                continue;
            }
            let abs = self.root.join(&cur);
            match fs::symlink_metadata(&abs) {
                Ok(m) if m.file_type().is_symlink() => {
                    return Err(refused(name, "a parent directory is a symlink"));
                }
                Ok(m) if m.is_dir() => {}
                Ok(_) => return Err(refused(name, "a parent is not a directory")),
                Err(e) if e.kind() == io::ErrorKind::NotFound => fs::DirBuilder::new()
                    .mode(0o755)
                    .create(&abs)
                    .map_err(failed(name, "create parent directory"))?,
                Err(e) => return Err(failed(name, "inspect parent")(e)),
            }
            self.safe_dirs.insert(cur.clone());
        }
        Ok(())
    }

    /// Removes what is at `path` so that a new entry replaces it; an existing directory
    /// stays when `keep_dir`. Returns whether a directory was kept.
    fn remove_existing(&mut self, name: &str, path: &Path, keep_dir: bool) -> Result<bool> {
        match fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(failed(name, "inspect")(e)),
            Ok(m) if m.is_dir() && keep_dir => Ok(true),
            Ok(m) if m.is_dir() => {
                self.safe_dirs.clear();
                fs::remove_dir_all(path).map_err(failed(name, "replace directory"))?;
                Ok(false)
            }
            Ok(_) => {
                fs::remove_file(path).map_err(failed(name, "replace"))?;
                Ok(false)
            }
        }
    }

    fn directory(&mut self, name: &str, rel: &Path, path: &Path) -> Result<()> {
        if !rel.as_os_str().is_empty() && !self.remove_existing(name, path, true)? {
            fs::DirBuilder::new()
                .mode(0o755)
                .create(path)
                .map_err(failed(name, "create directory"))?;
        }
        self.safe_dirs.insert(rel.to_owned());
        Ok(())
    }

    fn regular<R: Read>(
        &mut self,
        name: &str,
        path: &Path,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        self.remove_existing(name, path, false)?;
        self.reserve(entry.size())?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(failed(name, "create file"))?;
        let remaining = self.opts.max_bytes.saturating_sub(self.written);
        let copied = io::copy(
            &mut entry.by_ref().take(remaining.saturating_add(1)),
            &mut file,
        )
        .map_err(failed(name, "write file"))?;
        if copied > remaining {
            return Err(UnpackError::TooLarge {
                limit: self.opts.max_bytes,
            });
        }
        self.written += copied;
        Ok(())
    }

    fn hardlink<R: Read>(
        &mut self,
        name: &str,
        path: &Path,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let raw = entry
            .link_name_bytes()
            .ok_or_else(|| refused(name, "hardlink without a target"))?
            .into_owned();
        let target = clean(&raw)
            .ok_or_else(|| refused(name, "hardlink target climbs above the layer root"))?;
        if target.as_os_str().is_empty() {
            return Err(refused(name, "hardlink to the layer root"));
        }
        self.ensure_parents(name, &target)?;
        let target = self.root.join(target);
        match fs::symlink_metadata(&target) {
            Ok(m) if m.is_dir() => return Err(refused(name, "hardlink to a directory")),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(refused(name, "hardlink target is not in this layer"));
            }
            Err(e) => return Err(failed(name, "inspect hardlink target")(e)),
        }
        if target == path {
            return Ok(());
        }
        self.remove_existing(name, path, false)?;
        // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
        fs::hard_link(&target, path).map_err(failed(name, "create hardlink"))
    }

    /// `.wh..wh..opq` marks the parent opaque; `.wh.<name>` hides `<name>` of lower
    /// layers; other `.wh..wh.` entries are aufs bookkeeping and skipped.
    fn whiteout(&mut self, name: &str, rel: &Path, target: &[u8]) -> Result<()> {
        self.ensure_parents(name, rel)?;
        let parent = self.root.join(rel.parent().unwrap_or(Path::new("")));
        if target == b".wh..opq" {
            return xattr::set(&parent, "trusted.overlay.opaque", b"y")
                .map_err(failed(name, "mark directory opaque"));
        }
        if target.starts_with(b".wh.") {
            return Ok(());
        }
        if matches!(target, b"" | b"." | b"..") || target.contains(&b'/') {
            return Err(refused(name, "whiteout names no file in its directory"));
        }
        let path = parent.join(OsStr::from_bytes(target));
        self.remove_existing(name, &path, false)?;
        mknod(&path, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| failed(name, "create whiteout")(e.into()))
    }

    /// Counts `size` more bytes against the limit and checks free space now and then.
    fn reserve(&mut self, size: u64) -> Result<()> {
        if self.written.saturating_add(size) > self.opts.max_bytes {
            return Err(UnpackError::TooLarge {
                limit: self.opts.max_bytes,
            });
        }
        self.unchecked = self.unchecked.saturating_add(size);
        if self.unchecked < DISK_CHECK_EVERY && size < DISK_CHECK_EVERY {
            return Ok(());
        }
        self.unchecked = 0;
        let st = nix::sys::statvfs::statvfs(self.root)
            .map_err(|e| failed(&self.root.display().to_string(), "statvfs")(e.into()))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < self.opts.min_free_bytes.saturating_add(size) {
            return Err(UnpackError::DiskFull {
                path: self.root.to_owned(),
                free,
                needed: size,
                reserve: self.opts.min_free_bytes,
            });
        }
        Ok(())
    }

    fn metadata<R: Read>(
        &mut self,
        name: &str,
        path: &Path,
        kind: EntryType,
        entry: &mut tar::Entry<'_, R>,
    ) -> Result<()> {
        let h = entry.header();
        let mode = h.mode().map_err(failed(name, "read mode"))? & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        let (mut uid, mut gid) = (h.uid().unwrap_or(0), h.gid().unwrap_or(0));
        let mut xattrs = Vec::new();
        if let Ok(Some(pax)) = entry.pax_extensions() {
            for ext in pax.flatten() {
                let (Ok(key), value) = (ext.key(), ext.value_bytes()) else {
                    continue;
                };
                let number = || std::str::from_utf8(value).ok()?.parse::<u64>().ok();
                match key {
                    "uid" => uid = number().unwrap_or(uid),
                    "gid" => gid = number().unwrap_or(gid),
                    k => {
                        if let Some(x) = k.strip_prefix("SCHILY.xattr.") {
                            xattrs.push((x.to_owned(), value.to_vec()));
                        }
                    }
                }
            }
        }
        let (uid, gid) = (u32::try_from(uid).ok(), u32::try_from(gid).ok());
        std::os::unix::fs::lchown(path, uid, gid).map_err(failed(name, "chown"))?;
        if kind != EntryType::Symlink {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
                .map_err(failed(name, "chmod"))?;
        }
        for (key, value) in xattrs {
            if key.starts_with("trusted.overlay.") {
                debug!(entry = %name, xattr = %key, "ignoring overlayfs xattr from layer");
                continue;
            }
            if let Err(e) = xattr::set(path, &key, &value) {
                debug!(entry = %name, xattr = %key, error = %e, "cannot set xattr");
            }
        }
        if kind == EntryType::Directory {
            self.dir_times.push((path.to_owned(), mtime));
            return Ok(());
        }
        set_mtime(path, mtime).map_err(failed(name, "set mtime"))
    }

    pub(super) fn finish(&mut self) -> Result<()> {
        for (path, mtime) in self.dir_times.iter().rev() {
            set_mtime(path, *mtime).map_err(failed(&path.display().to_string(), "set mtime"))?;
        }
        Ok(())
    }
}

fn set_mtime(path: &Path, mtime: u64) -> io::Result<()> {
    let ts = TimeSpec::new(i64::try_from(mtime).unwrap_or(i64::MAX), 0);
    utimensat(None, path, &ts, &ts, UtimensatFlags::NoFollowSymlink).map_err(io::Error::from)
}
