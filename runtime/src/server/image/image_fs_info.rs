//! ImageFsInfo: real bytes and inodes used by the image filesystem (content and
//! unpacked layers) and the container filesystem (writable layers).

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use crust_image_store::usage::dir_usage;
use crust_proto::cri::{
    FilesystemIdentifier, FilesystemUsage, ImageFsInfoRequest, ImageFsInfoResponse, UInt64Value,
};

use crate::server::Context;
use crate::server::error::{Error, Result};

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

fn measure(dir: PathBuf) -> Result<FilesystemUsage> {
    let usage = dir_usage(&dir)?;
    Ok(FilesystemUsage {
        timestamp: now_nanos(),
        fs_id: Some(FilesystemIdentifier {
            mountpoint: dir.display().to_string(),
        }),
        used_bytes: Some(UInt64Value { value: usage.bytes }),
        inodes_used: Some(UInt64Value {
            value: usage.inodes,
        }),
    })
}

/// Walks both trees on a blocking thread; they can be large.
pub async fn image_fs_info(ctx: &Context, _req: ImageFsInfoRequest) -> Result<ImageFsInfoResponse> {
    let images = ctx.images.root().to_owned();
    let containers = ctx.containers_dir();
    tokio::task::spawn_blocking(move || {
        Ok(ImageFsInfoResponse {
            image_filesystems: vec![measure(images)?],
            container_filesystems: vec![measure(containers)?],
        })
    })
    .await
    .map_err(|source| Error::Task {
        what: "image filesystem info",
        source,
    })?
}
