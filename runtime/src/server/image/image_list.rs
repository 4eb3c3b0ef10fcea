//! ListImages and StreamImages: every image, or the one a filter names.

use crust_proto::cri::{
    ImageFilter, ListImagesRequest, ListImagesResponse, StreamImagesRequest, StreamImagesResponse,
};

use super::to_cri;
use crate::server::Context;
use crate::server::error::Result;

/// Images per StreamImages message: far below the 16 MiB limit whatever the tags.
const STREAM_CHUNK: usize = 256;

async fn list(ctx: &Context, filter: Option<ImageFilter>) -> Result<Vec<crust_proto::cri::Image>> {
    let filter = filter
        .and_then(|f| f.image)
        .map(|s| s.image)
        .filter(|s| !s.trim().is_empty());
    let images = ctx.images.list(filter.as_deref()).await?;
    Ok(images.iter().map(to_cri).collect())
}

/// All images in one answer.
pub async fn list_images(ctx: &Context, req: ListImagesRequest) -> Result<ListImagesResponse> {
    Ok(ListImagesResponse {
        images: list(ctx, req.filter).await?,
    })
}

/// All images, in messages of at most `STREAM_CHUNK` images each.
pub async fn stream_images(
    ctx: &Context,
    req: StreamImagesRequest,
) -> Result<Vec<StreamImagesResponse>> {
    let images = list(ctx, req.filter).await?;
    Ok(images
        .chunks(STREAM_CHUNK)
        .map(|c| StreamImagesResponse { images: c.to_vec() })
        .collect())
}
