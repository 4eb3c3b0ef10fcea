//! Deleting a removed container's or pod's directories off the call path. A directory
//! is renamed into a trash dir on its own file system (one rename, atomic), and then
//! deleted in the background; start-up empties the trash dirs, so a crash at any point
//! leaves either the directory where it was (the removal had not happened: recovery
//! finishes it) or in the trash (deleted at the next start). Nothing mounted may be
//! thrown away: the caller unmounts first, as it must before any delete.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Tells apart the names of directories thrown by one process.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// Moves `dir` into `bin` (created if needed; on the same file system as `dir`) and
/// deletes it there in the background. A missing `dir` is fine. If the rename is
/// refused (another file system), `dir` is deleted here and now instead.
pub fn throw(dir: &Path, bin: &Path) -> io::Result<()> {
    if std::fs::symlink_metadata(dir).is_err() {
        return Ok(());
    }
    std::fs::create_dir_all(bin)?;
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let seq = SEQ.fetch_add(1, Ordering::Relaxed);
    let target = bin.join(format!("{name}.{}-{seq}", std::process::id()));
    match std::fs::rename(dir, &target) {
        Ok(()) => {
            delete_later(target);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.raw_os_error() == Some(nix::libc::EXDEV) => remove_all(dir),
        Err(e) => Err(e),
    }
}

/// Deletes everything in `bin`, what a crash left there: at start-up.
pub fn empty(bin: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(bin) else {
        return 0;
    };
    let mut n = 0;
    for e in entries.flatten() {
        match remove_all(&e.path()) {
            Ok(()) => n += 1,
            Err(err) => tracing::warn!(path = %e.path().display(), %err, "empty the trash"),
        }
    }
    n
}

fn delete_later(target: PathBuf) {
    let delete = move || {
        if let Err(err) = remove_all(&target) {
            tracing::warn!(path = %target.display(), %err, "delete a removed directory");
        }
    };
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(delete)),
        Err(_) => delete(),
    }
}

fn remove_all(path: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thrown_dir_leaves_its_place_at_once_and_the_trash_soon() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c1");
        std::fs::create_dir_all(dir.join("a/b")).unwrap();
        std::fs::write(dir.join("a/b/f"), "x").unwrap();
        let bin = tmp.path().join("trash");
        throw(&dir, &bin).unwrap();
        assert!(!dir.exists());
        // without a runtime the delete is done before throw returns
        assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 0);
        throw(&dir, &bin).unwrap();
    }

    #[tokio::test]
    async fn a_thrown_dir_is_deleted_in_the_background() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("c2");
        std::fs::create_dir_all(dir.join("x")).unwrap();
        let bin = tmp.path().join("trash");
        throw(&dir, &bin).unwrap();
        assert!(!dir.exists());
        for _ in 0..100 {
            if std::fs::read_dir(&bin).unwrap().count() == 0 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("{} still holds the thrown dir", bin.display());
    }

    #[test]
    fn empty_deletes_what_a_crash_left() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("trash");
        std::fs::create_dir_all(bin.join("c3.1-0/rootfs")).unwrap();
        std::fs::write(bin.join("c3.1-0/config.json"), "{}").unwrap();
        assert_eq!(empty(&bin), 1);
        assert_eq!(std::fs::read_dir(&bin).unwrap().count(), 0);
        assert_eq!(empty(&tmp.path().join("none")), 0);
    }
}
