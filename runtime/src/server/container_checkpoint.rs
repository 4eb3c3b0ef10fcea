//! CheckpointContainer: the container's shim checkpoints it with CRIU (it goes on
//! running), then crustd writes the archive at the location kubelet gives, in the
//! layout CRI-O and containerd write and checkpointctl reads: `checkpoint/` (CRIU's
//! images), `config.dump` (which container, from which image, when), `spec.dump` (its
//! OCI spec), `rootfs-diff.tar` (what its writable layer holds) and `deleted.files`
//! (what it removed from the image).

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crust_proto::cri::{CheckpointContainerRequest, CheckpointContainerResponse};

use super::Context;
use super::error::{Error, Result, blocking};
use crate::store::{ContainerMetadata, ContainerState};

/// The archive's parts, as CRI-O and containerd name them.
pub const CHECKPOINT_DIR: &str = "checkpoint";
/// The container's metadata.
pub const CONFIG_DUMP: &str = "config.dump";
/// The container's OCI spec.
pub const SPEC_DUMP: &str = "spec.dump";
/// The writable layer's files.
pub const ROOTFS_DIFF: &str = "rootfs-diff.tar";
/// The image's files the container removed.
pub const DELETED_FILES: &str = "deleted.files";

fn invalid(message: impl Into<String>) -> Error {
    Error::InvalidArgument {
        rpc: "CheckpointContainer",
        message: message.into(),
    }
}

/// Checkpoints a running container into the archive at `location`.
pub async fn checkpoint_container(
    ctx: &Arc<Context>,
    req: CheckpointContainerRequest,
) -> Result<CheckpointContainerResponse> {
    let c = ctx.store.resolve_container(&req.container_id)?;
    let m = c.metadata().clone();
    let id = m.id.clone();
    let what = format!("container {id}");
    if req.location.is_empty() || !req.location.starts_with('/') {
        return Err(invalid(format!(
            "container {id}: location {:?} is not an absolute path",
            req.location
        )));
    }
    if req.timeout < 0 {
        return Err(invalid(format!(
            "container {id}: timeout {} is below 0",
            req.timeout
        )));
    }
    let location = PathBuf::from(&req.location);
    let status = c.status();
    let socket = match (status.state, status.shim_socket) {
        (ContainerState::Running, Some(s)) => s,
        (state, _) => {
            return Err(Error::FailedPrecondition {
                what,
                message: format!(
                    "cannot checkpoint a container in state {}",
                    state.cri().as_str_name()
                ),
            });
        }
    };
    let work = m
        .state_dir
        .join(format!("checkpoint-{}", crate::store::now_nanos()));
    let images = work.join(CHECKPOINT_DIR);
    let made = async {
        let (w, what2) = (work.clone(), what.clone());
        blocking("make checkpoint dir", move || {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&w)
                .map_err(Error::io(what2, "create", &w))
        })
        .await?;
        let mut shim = ctx.shims.get(id.as_str(), &socket);
        let dump = shim.checkpoint(&images);
        if req.timeout > 0 {
            tokio::time::timeout(Duration::from_secs(req.timeout as u64), dump)
                .await
                .map_err(|_| Error::DeadlineExceeded {
                    what: what.clone(),
                    message: format!("checkpoint took over {} s", req.timeout),
                })??;
        } else {
            dump.await?;
        }
        let (layer, work, m) = (
            ctx.paths.layer_dir(&id).join("upper"),
            work.clone(),
            m.clone(),
        );
        blocking("write checkpoint archive", move || {
            write_archive(&m, &layer, &work, &location)
        })
        .await
    }
    .await;
    // CRIU's images can be large: removed off the async thread.
    let gone = blocking(
        "remove checkpoint work dir",
        move || match std::fs::remove_dir_all(&work) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(Error::io("checkpoint", "remove", &work)(e))
            }
            _ => Ok(()),
        },
    )
    .await;
    if let Err(e) = gone {
        tracing::warn!(%id, error = %e, "remove the checkpoint's work dir");
    }
    made?;
    tracing::info!(container_id = %id, location = %req.location, "container checkpointed");
    Ok(CheckpointContainerResponse {})
}

/// Nanoseconds since the epoch as RFC 3339 with nanoseconds, as Go's time.Time
/// marshals.
fn rfc3339(nanos: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(nanos)
        .to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}

/// `config.dump`: the fields checkpointctl reads (its `metadata.ContainerConfig`).
fn config_dump(m: &ContainerMetadata, checkpointed_at: i64) -> serde_json::Value {
    serde_json::json!({
        "id": m.id.as_str(),
        "name": m.container_name,
        "rootfsImage": m.image_name,
        "rootfsImageRef": m.image_id,
        "rootfsImageName": m.image_name,
        "runtime": "crust",
        "createdTime": rfc3339(m.created_at),
        "checkpointedTime": rfc3339(checkpointed_at),
        "restoredTime": "0001-01-01T00:00:00Z",
        "restored": false,
    })
}

/// Adds the writable layer `upper` to `tar` (relative paths); answers the paths of its
/// whiteouts, the image's files the container removed.
fn add_layer<W: Write>(
    tar: &mut tar::Builder<W>,
    upper: &Path,
    rel: &Path,
    deleted: &mut Vec<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> =
        std::fs::read_dir(upper.join(rel))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let path = rel.join(e.file_name());
        let meta = std::fs::symlink_metadata(e.path())?;
        let ft = meta.file_type();
        if ft.is_char_device() && std::os::unix::fs::MetadataExt::rdev(&meta) == 0 {
            deleted.push(path.display().to_string());
            continue;
        }
        tar.append_path_with_name(e.path(), &path)?;
        if ft.is_dir() {
            add_layer(tar, upper, &path, deleted)?;
        }
    }
    Ok(())
}

/// Writes the archive of the checkpoint in `work` (CRIU's images already in
/// `work/checkpoint`) to `location`, through a temporary file beside it.
fn write_archive(m: &ContainerMetadata, upper: &Path, work: &Path, location: &Path) -> Result<()> {
    let what = format!("container {}", m.id);
    let io = |op, path: &Path| Error::io(what.clone(), op, path.to_owned());
    let config = config_dump(m, crate::store::now_nanos());
    let file = work.join(CONFIG_DUMP);
    std::fs::write(&file, config.to_string()).map_err(io("write", &file))?;
    let spec = m.bundle_dir.join("config.json");
    std::fs::copy(&spec, work.join(SPEC_DUMP)).map_err(io("copy", &spec))?;
    let diff = work.join(ROOTFS_DIFF);
    let mut deleted = Vec::new();
    {
        let out = std::fs::File::create(&diff).map_err(io("create", &diff))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        tar.follow_symlinks(false);
        if upper.is_dir() {
            add_layer(&mut tar, upper, Path::new(""), &mut deleted)
                .map_err(io("archive", upper))?;
        }
        tar.into_inner()
            .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
            .map_err(io("write", &diff))?;
    }
    if !deleted.is_empty() {
        let file = work.join(DELETED_FILES);
        let json = serde_json::to_string(&deleted).unwrap_or_default();
        std::fs::write(&file, json).map_err(io("write", &file))?;
    }
    let name = location.file_name().ok_or_else(|| {
        invalid(format!(
            "{what}: location {} names no file",
            location.display()
        ))
    })?;
    let tmp = location.with_file_name(format!(".{}.tmp", name.to_string_lossy()));
    let written = (|| -> std::io::Result<()> {
        let out = std::fs::File::create(&tmp)?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(out));
        tar.follow_symlinks(false);
        tar.append_dir_all(".", work)?;
        let out = tar.into_inner()?.into_inner().map_err(|e| e.into_error())?;
        out.sync_all()?;
        std::fs::rename(&tmp, location)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(io("write", location)(e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_as_go_marshals_them() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_764_807_000_123_456_789),
            "2025-12-04T00:10:00.123456789Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }

    #[test]
    fn the_layer_s_whiteouts_become_deleted_files() {
        let tmp = tempfile::tempdir().unwrap();
        let upper = tmp.path().join("upper");
        std::fs::create_dir_all(upper.join("etc/sub")).unwrap();
        std::fs::write(upper.join("etc/sub/new"), "x").unwrap();
        std::os::unix::fs::symlink("new", upper.join("etc/sub/link")).unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/gone"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        let mut deleted = Vec::new();
        add_layer(&mut tar, &upper, Path::new(""), &mut deleted).unwrap();
        assert_eq!(deleted, ["etc/gone"]);
        let bytes = tar.into_inner().unwrap();
        let mut names: Vec<String> = tar::Archive::new(bytes.as_slice())
            .entries()
            .unwrap()
            .map(|e| e.unwrap().path().unwrap().display().to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["etc", "etc/sub", "etc/sub/link", "etc/sub/new"]);
    }
}
