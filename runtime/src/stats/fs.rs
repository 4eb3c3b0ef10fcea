//! The filesystem that holds the writable layers: its size and inodes (`statvfs`) and
//! the device it is mounted from (`/proc/self/mountinfo`), for cadvisor's
//! `container_fs_*` metrics.

use std::os::unix::fs::MetadataExt as _;
use std::path::Path;

use super::{Error, Result};

/// The size of a filesystem at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FsCapacity {
    /// What it is mounted from (`/dev/vda1`, `overlay`, ...), else `major:minor`.
    pub device: String,
    /// Bytes it holds.
    pub capacity_bytes: u64,
    /// Inodes it holds.
    pub inodes_total: u64,
    /// Inodes free.
    pub inodes_free: u64,
}

/// The filesystem `path` is on. Blocks.
pub fn filesystem(path: &Path) -> Result<FsCapacity> {
    let fail = |source| Error::Statfs {
        path: path.to_owned(),
        source,
    };
    let st = nix::sys::statvfs::statvfs(path).map_err(|e| fail(e.into()))?;
    let dev = std::fs::metadata(path).map_err(fail)?.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let device = std::fs::read_to_string("/proc/self/mountinfo")
        .ok()
        .and_then(|t| mount_source(&t, major, minor))
        .unwrap_or_else(|| format!("{major}:{minor}"));
    Ok(FsCapacity {
        device,
        capacity_bytes: st.blocks().saturating_mul(st.fragment_size()),
        inodes_total: st.files(),
        inodes_free: st.files_free(),
    })
}

/// The mount source of the first mount of device `major:minor` in a mountinfo text:
/// fields `id parent major:minor root point options [optional...] - type source ...`.
fn mount_source(mountinfo: &str, major: u64, minor: u64) -> Option<String> {
    let want = format!("{major}:{minor}");
    mountinfo.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        if fields.nth(2)? != want {
            return None;
        }
        let mut after = fields.skip_while(|&f| f != "-").skip(2);
        after.next().map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_source_follows_the_separator() {
        let info = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
25 1 254:1 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
31 25 254:1 /var/lib/x /mnt rw master:2 - ext4 /dev/vda1 rw
40 25 0:45 / /run rw - tmpfs tmpfs rw
";
        assert_eq!(mount_source(info, 254, 1).as_deref(), Some("/dev/vda1"));
        assert_eq!(mount_source(info, 0, 45).as_deref(), Some("tmpfs"));
        assert_eq!(mount_source(info, 8, 0), None);
    }

    #[test]
    fn measures_the_filesystem_of_a_dir() {
        let dir = tempfile::tempdir().unwrap();
        let fs = filesystem(dir.path()).unwrap();
        assert!(fs.capacity_bytes > 0, "{fs:?}");
        assert!(!fs.device.is_empty());
        assert!(fs.inodes_free <= fs.inodes_total, "{fs:?}");
        assert!(matches!(
            filesystem(&dir.path().join("gone")),
            Err(Error::Statfs { .. })
        ));
    }
}
