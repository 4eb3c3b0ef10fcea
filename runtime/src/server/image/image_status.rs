//! ImageStatus: one image by id, tag or digest; a missing image is an empty answer.

use std::collections::HashMap;

use crust_proto::cri::{ImageStatusRequest, ImageStatusResponse};

use super::{reference, to_cri};
use crate::server::Context;
use crate::server::error::Result;

/// With `verbose`, `info["info"]` holds the image config and layers as JSON.
pub async fn image_status(ctx: &Context, req: ImageStatusRequest) -> Result<ImageStatusResponse> {
    let reference = reference("ImageStatus", &req.image)?;
    let Some(image) = ctx.images.status(reference).await? else {
        return Ok(ImageStatusResponse::default());
    };
    let mut info = HashMap::new();
    if req.verbose {
        let verbose = serde_json::json!({
            "imageSpec": image.config,
            "chainID": image.layers.last().map(|l| l.chain_id.to_string()),
            "layers": image.layers,
        });
        info.insert("info".to_string(), verbose.to_string());
    }
    Ok(ImageStatusResponse {
        image: Some(to_cri(&image)),
        info,
    })
}
