//! Image volumes (kubelet's ImageVolume, KEP-4639): a CRI mount that names an image
//! shows that image's files, read-only, at its container path. kubelet pulls the image
//! first; CreateContainer holds it for the container (holder `<id>/volume-<n>` for
//! `mounts[n]`, so RemoveImage of it fails while the container exists, and its
//! snapshots outlive a forced removal), then mounts an overlay of its layers without
//! an upper dir at `<container dir>/volumes/<n>`. An `image_sub_path` is opened inside
//! that overlay with openat2's RESOLVE_IN_ROOT, so a symlink in the image can't lead
//! out of it, and what it opens is bound at `<container dir>/volumes/<n>-sub`. The CRI
//! mount's host path becomes that mount in the bundle's copy of the config: the spec
//! binds it as any other mount, read-only. Teardown unmounts them, and releases the
//! holds with the container's own. In a pod with its own user namespace the overlay is
//! made of idmapped clones of the layers (as the rootfs is; an overlay itself can't be
//! idmapped), so the image's files keep their owners inside.

use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crust_proto::cri::Mount;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::mount::MsFlags;

use super::error::{Error, Result};

/// The dir, in the container's state dir, that holds its image volume mounts.
const DIR: &str = "volumes";

/// Whether the CRI mount is an image volume.
pub fn is_image(m: &Mount) -> bool {
    m.image.as_ref().is_some_and(|i| !i.image.is_empty())
}

/// The image hold of the container `id`'s `mounts[n]`.
pub fn holder(id: &str, n: usize) -> String {
    format!("{id}/volume-{n}")
}

/// The container an image hold belongs to: the holder itself for the container's own
/// image, the part before `/` for one of its image volumes.
pub fn container_of_holder(holder: &str) -> &str {
    holder.split_once('/').map_or(holder, |(id, _)| id)
}

/// The indexes of the image volumes among `mounts` (a container's CRI mounts).
pub fn indexes(mounts: &[Mount]) -> Vec<usize> {
    (0..mounts.len())
        .filter(|&n| is_image(&mounts[n]))
        .collect()
}

/// Ends the container `id`'s holds of the images of its image volumes `mounts[n]`, for
/// each n of `indexes`. Releasing a hold that was never made is fine.
pub async fn release(ctx: &super::Context, id: &crate::store::ContainerId, indexes: &[usize]) {
    for &n in indexes {
        let holder = holder(id.as_str(), n);
        if let Err(err) = ctx.images.release(&holder).await {
            tracing::warn!(%id, holder, error = %err, "release an image volume's image");
        }
    }
}

/// One image volume of a container: `mounts[index]`, its image's layer dirs (topmost
/// first) and the sub path to show, if any.
#[derive(Debug, Clone)]
pub struct Volume {
    pub index: usize,
    pub lower: Vec<PathBuf>,
    pub sub_path: String,
}

/// Mounts `volume` under the container dir `dir`, its layers idmapped into the user
/// namespace pinned at `userns` if given; returns the path the container's bind mount
/// takes as its source.
pub fn mount(what: &str, dir: &Path, volume: &Volume, userns: Option<&Path>) -> Result<PathBuf> {
    let base = dir.join(DIR);
    let root = base.join(volume.index.to_string());
    // overlayfs without an upper dir needs two lower dirs: an empty one is the last.
    let empty = base.join("empty");
    for d in [&root, &empty] {
        std::fs::create_dir_all(d).map_err(Error::io(what, "create", d))?;
    }
    let Some(pin) = userns else {
        return mount_layers(what, &root, &base, volume, &volume.lower, &empty);
    };
    let staging = base.join(format!("{}-layers", volume.index));
    let ns = crate::pod::userns::open_userns(pin)?;
    let mut lower = Vec::with_capacity(volume.lower.len());
    let made = (|| {
        for (n, layer) in volume.lower.iter().enumerate() {
            let target = staging.join(n.to_string());
            std::fs::create_dir_all(&target).map_err(Error::io(what, "create", &target))?;
            crate::pod::userns::idmapped_bind(layer, &target, &ns)?;
            lower.push(target);
        }
        mount_layers(what, &root, &base, volume, &lower, &empty)
    })();
    // The overlay holds its own references to the layers.
    let removed =
        crate::pod::userns::remove_staging(&staging).map_err(Error::io(what, "remove", &staging));
    let source = made?;
    removed?;
    Ok(source)
}

/// The overlay of `lower` (then `empty`) at `root`, and the sub path bind if any.
fn mount_layers(
    what: &str,
    root: &Path,
    base: &Path,
    volume: &Volume,
    lower: &[PathBuf],
    empty: &Path,
) -> Result<PathBuf> {
    let lowerdir = lower
        .iter()
        .map(PathBuf::as_path)
        .chain(std::iter::once(empty))
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(":");
    nix::mount::mount(
        Some("overlay"),
        root,
        Some("overlay"),
        MsFlags::MS_RDONLY | MsFlags::MS_NODEV,
        Some(format!("lowerdir={lowerdir}").as_str()),
    )
    .map_err(|e| Error::io(what, "mount image volume on", root)(e.into()))?;
    if volume.sub_path.is_empty() {
        return Ok(root.to_owned());
    }
    bind_sub_path(what, root, base, volume)
}

/// Binds `volume.sub_path`, resolved inside the overlay at `root`, at `<n>-sub`.
fn bind_sub_path(what: &str, root: &Path, base: &Path, volume: &Volume) -> Result<PathBuf> {
    let invalid = |reason: String| Error::InvalidArgument {
        rpc: "CreateContainer",
        message: format!(
            "{what}: mounts[{}].image_sub_path {:?}: {reason}",
            volume.index, volume.sub_path
        ),
    };
    let dir = std::fs::File::open(root).map_err(Error::io(what, "open", root))?;
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd =
        nix::fcntl::openat2(dir.as_raw_fd(), volume.sub_path.as_str(), how).map_err(
            |e| match e {
                nix::errno::Errno::ENOENT => invalid("not in the image".into()),
                e => invalid(e.desc().to_owned()),
            },
        )?;
    let fd = unsafe_owned(fd);
    let source = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
    let is_dir = std::fs::metadata(&source)
        .map_err(Error::io(what, "stat", &source))?
        .is_dir();
    let target = base.join(format!("{}-sub", volume.index));
    if is_dir {
        std::fs::create_dir_all(&target).map_err(Error::io(what, "create", &target))?;
    } else {
        std::fs::File::create(&target).map_err(Error::io(what, "create", &target))?;
    }
    nix::mount::mount(
        Some(&source),
        &target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| Error::io(what, "bind image volume sub path on", &target)(e.into()))?;
    Ok(target)
}

/// openat2 hands back a raw fd; it is ours alone from here.
fn unsafe_owned(fd: std::os::fd::RawFd) -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    // SAFETY: openat2 just returned this descriptor, and nothing else owns it.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }
}

/// Unmounts every image volume under the container dir `dir` (sub path binds first);
/// none is fine.
pub fn unmount(what: &str, dir: &Path) -> Result<()> {
    let base = dir.join(DIR);
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Ok(());
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    // `<n>-sub` (and `<n>-layers`, left by a crash) sort after `<n>`: unmount in
    // reverse; staged layers are unmounted below them.
    paths.sort();
    for p in paths
        .iter()
        .filter(|p| p.to_string_lossy().ends_with("-layers"))
    {
        crate::pod::userns::remove_staging(p).map_err(Error::io(what, "remove", p))?;
    }
    paths.retain(|p| !p.to_string_lossy().ends_with("-layers"));
    for p in paths.iter().rev() {
        super::containers::unmount_all(p).map_err(Error::io(what, "unmount", p))?;
        if super::containers::is_mount_point(p) {
            return Err(Error::Internal {
                what: what.to_owned(),
                message: format!("{} is still mounted", p.display()),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holders_name_their_container() {
        assert_eq!(holder("abc", 2), "abc/volume-2");
        assert_eq!(container_of_holder("abc/volume-2"), "abc");
        assert_eq!(container_of_holder("abc"), "abc");
    }

    #[test]
    fn an_image_mount_names_an_image() {
        let mut m = Mount::default();
        assert!(!is_image(&m));
        m.image = Some(Default::default());
        assert!(!is_image(&m), "an empty image spec is no image");
        m.image.as_mut().unwrap().image = "sha256:abc".into();
        assert!(is_image(&m));
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    /// A layer with an absolute symlink to /etc and one climbing out: a sub path
    /// through either stays in the image.
    #[test]
    fn sub_paths_resolve_inside_the_image() {
        assert!(nix::unistd::geteuid().is_root(), "mount tests need root");
        let tmp = tempfile::tempdir().unwrap();
        let layer = tmp.path().join("layer");
        std::fs::create_dir_all(layer.join("etc")).unwrap();
        std::fs::write(layer.join("etc/marker"), "image").unwrap();
        std::os::unix::fs::symlink("/etc", layer.join("escape")).unwrap();
        std::os::unix::fs::symlink("../../../../../../..", layer.join("up")).unwrap();
        let dir = tmp.path().join("container");
        let volume = |index, sub: &str| Volume {
            index,
            lower: vec![layer.clone()],
            sub_path: sub.into(),
        };

        let whole = mount("test", &dir, &volume(0, ""), None).unwrap();
        assert_eq!(names(&whole), ["escape", "etc", "up"]);
        let err = std::fs::write(whole.join("new"), "x").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::EROFS), "read-only");

        let etc = mount("test", &dir, &volume(1, "escape"), None).unwrap();
        assert_eq!(names(&etc), ["marker"], "the image's /etc, not the host's");
        let top = mount("test", &dir, &volume(2, "up"), None).unwrap();
        assert_eq!(
            names(&top),
            ["escape", "etc", "up"],
            "no way above the image"
        );
        let file = mount("test", &dir, &volume(3, "etc/marker"), None).unwrap();
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "image");

        let err = mount("test", &dir, &volume(4, "missing"), None).unwrap_err();
        assert!(matches!(err, Error::InvalidArgument { .. }), "{err}");
        assert!(
            err.to_string().contains("mounts[4].image_sub_path"),
            "{err}"
        );

        unmount("test", &dir).unwrap();
        for p in [&whole, &etc, &top, &file] {
            assert!(
                !super::super::containers::is_mount_point(p),
                "{}",
                p.display()
            );
        }
        unmount("test", &dir).unwrap();
    }
}
