//! A container's root filesystem and volume sources, the host side of CreateContainer:
//! the overlayfs mount (the image's layer snapshots as lower dirs, a writable layer of
//! its own) and, in a pod with its own user namespace, the idmapped mounts that make
//! the image's files and the volumes belong to the container's ids (`pod::userns`).
//!
//! The idmapped clones are staged under `<container dir>/idmap/`: the layers' are
//! unmounted as soon as the overlay holds them, the volumes' once the shim has created
//! the container (its mount namespace keeps its own copies). [`remove_staging`] undoes
//! whatever is left, before anything deletes the container dir.

use std::path::{Path, PathBuf};

use super::error::{Error, Result};
use crate::pod::userns::{self, PodUserns};

/// The longest overlayfs option string the kernel takes (one page).
const MAX_MOUNT_DATA: usize = 4095;

/// Where the idmapped clones of the image's layers go.
fn layers_staging(idmap: &Path) -> PathBuf {
    idmap.join("layers")
}

/// Where the idmapped clones of the volumes go.
fn volumes_staging(idmap: &Path) -> PathBuf {
    idmap.join("volumes")
}

/// The rootfs to mount.
pub struct Rootfs<'a> {
    /// The container, for errors (`container <id>`).
    pub what: &'a str,
    /// The mount point.
    pub target: &'a Path,
    /// The image's layers, topmost first (at least one).
    pub lower: &'a [PathBuf],
    /// The writable layer's upper and work dirs (both exist).
    pub upper: &'a Path,
    /// The overlay's work dir.
    pub work: &'a Path,
    /// The pod's user namespace, pinned at the path, if it has one.
    pub userns: Option<(&'a Path, &'a PodUserns)>,
    /// The container's idmap staging dir.
    pub idmap: &'a Path,
}

/// Mounts the rootfs. With a user namespace the layers are idmapped clones and the
/// upper dir belongs to the container's root, so the image's files keep their owners
/// inside and what the container writes lands with its own ids.
pub fn mount(r: &Rootfs) -> Result<()> {
    let Some((pin, ids)) = r.userns else {
        return mount_overlay(r.what, r.target, r.lower, r.upper, r.work);
    };
    let (uid, gid) = ids.root();
    std::os::unix::fs::chown(r.upper, Some(uid), Some(gid))
        .map_err(Error::io(r.what, "chown", r.upper))?;
    let staging = layers_staging(r.idmap);
    let ns = userns::open_userns(pin)?;
    let mut lower = Vec::with_capacity(r.lower.len());
    let made = (|| {
        for (n, layer) in r.lower.iter().enumerate() {
            let target = staging.join(n.to_string());
            std::fs::create_dir_all(&target).map_err(Error::io(r.what, "create", &target))?;
            userns::idmapped_bind(layer, &target, &ns)?;
            lower.push(target);
        }
        mount_overlay(r.what, r.target, &lower, r.upper, r.work)
    })();
    // The overlay holds its own references to the layers.
    let removed = userns::remove_staging(&staging).map_err(Error::io(r.what, "remove", &staging));
    made.and(removed)
}

/// In a pod with a user namespace pinned at `pin`, replaces each mount's host path with
/// an idmapped clone of it staged under `idmap`, so its files keep their owners inside
/// (host root is the container's root) and what the container's root writes lands
/// owned by the host's root.
pub fn idmap_volumes(
    what: &str,
    mounts: &mut [crust_proto::cri::Mount],
    pin: &Path,
    idmap: &Path,
) -> Result<()> {
    // Image volumes are overlays of idmapped layers already (an overlay can't be
    // idmapped itself).
    let mapped =
        |m: &crust_proto::cri::Mount| !m.host_path.is_empty() && !super::image_volumes::is_image(m);
    if !mounts.iter().any(mapped) {
        return Ok(());
    }
    let ns = userns::open_userns(pin)?;
    let staging = volumes_staging(idmap);
    std::fs::create_dir_all(&staging).map_err(Error::io(what, "create", &staging))?;
    for (n, m) in mounts.iter_mut().enumerate() {
        if !mapped(m) {
            continue;
        }
        let source = PathBuf::from(&m.host_path);
        let target = staging.join(n.to_string());
        let is_dir = std::fs::metadata(&source)
            .map_err(Error::io(what, "stat mount source", &source))?
            .is_dir();
        if is_dir {
            std::fs::create_dir(&target)
        } else {
            std::fs::write(&target, b"")
        }
        .map_err(Error::io(what, "create", &target))?;
        userns::idmapped_bind(&source, &target, &ns)?;
        m.host_path = target.display().to_string();
    }
    Ok(())
}

/// Unmounts the volumes' idmapped clones once the container holds its own.
pub fn release_volumes(what: &str, idmap: &Path) -> Result<()> {
    let staging = volumes_staging(idmap);
    userns::remove_staging(&staging).map_err(Error::io(what, "remove", &staging))
}

/// Unmounts and removes every idmapped clone left under `idmap`. Idempotent.
pub fn remove_staging(what: &str, idmap: &Path) -> Result<()> {
    for dir in [layers_staging(idmap), volumes_staging(idmap)] {
        userns::remove_staging(&dir).map_err(Error::io(what, "remove", &dir))?;
    }
    match std::fs::remove_dir(idmap) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(Error::io(what, "remove", idmap)(e))
        }
        _ => Ok(()),
    }
}

/// Mounts the overlay: `lower` topmost first.
fn mount_overlay(
    what: &str,
    target: &Path,
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<()> {
    let lowerdir = lower
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    let data = format!(
        "lowerdir={lowerdir},upperdir={},workdir={}",
        upper.display(),
        work.display()
    );
    if data.len() > MAX_MOUNT_DATA {
        return Err(Error::Unsupported {
            what: what.to_owned(),
            reason: format!(
                "the image has {} layers: their paths exceed the overlayfs option limit",
                lower.len()
            ),
        });
    }
    nix::mount::mount(
        Some("overlay"),
        target,
        Some("overlay"),
        nix::mount::MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| Error::io(what, "mount overlay on", target)(e.into()))
}
