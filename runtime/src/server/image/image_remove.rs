//! RemoveImage: the image with all its tags, by id, tag or digest. Removing an image
//! that is not there succeeds, as CRI asks; content a container still uses stays
//! until the container is removed.

use crust_proto::cri::{RemoveImageRequest, RemoveImageResponse};

use super::reference;
use crate::server::Context;
use crate::server::error::Result;

/// Removes and garbage-collects what nothing else uses.
pub async fn remove_image(ctx: &Context, req: RemoveImageRequest) -> Result<RemoveImageResponse> {
    let reference = reference("RemoveImage", &req.image)?;
    ctx.images.remove(reference).await?;
    Ok(RemoveImageResponse {})
}
