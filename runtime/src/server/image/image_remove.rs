//! RemoveImage: the image with all its tags, by id, tag or digest. Removing an image
//! that is not there succeeds, as CRI asks; content a container still uses stays
//! until the container is removed. The image is gone from every lookup when the call
//! returns; its content is garbage collected right after, in the background (as
//! containerd's GC runs after the image's deletion), or at crustd's next start.

use crust_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::reference;
use crate::server::Context;
use crate::server::error::Result;

/// Removes the image; what nothing else uses is collected in the background.
pub async fn remove_image(ctx: &Context, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    let reference = reference("RemoveImage", &req.image)?;
    ctx.images.remove_and_collect_later(reference).await?;
    Ok(RemoveImageResponse {})
}
