//! PullImage: fetch an image (through the configured mirrors) into the image store.
//! If the client gives up (its deadline passes), the dropped call cancels the pull and
//! the store keeps nothing of it.

use crust_image_store::Auth;
use crust_proto::cri::{AuthConfig, PullImageRequest, PullImageResponse};

use super::reference;
use crate::server::Context;
use crate::server::error::Result;

fn auth(a: AuthConfig) -> Auth {
    Auth {
        username: a.username,
        password: a.password,
        auth: a.auth,
        server_address: a.server_address,
        identity_token: a.identity_token,
        registry_token: a.registry_token,
    }
}

/// Pulls and answers with the image ID (the config digest), as containerd does.
pub async fn pull_image(ctx: &Context, req: PullImageRequest) -> Result<PullImageResponse> {
    let reference = reference("PullImage", &req.image)?;
    let pull = crate::metrics::Pull::start();
    let image = ctx
        .images
        .pull(reference, req.auth.map(auth))
        .await
        .inspect_err(|_| pull.failed())?;
    Ok(PullImageResponse {
        image_ref: image.id.to_string(),
    })
}
