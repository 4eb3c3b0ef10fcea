//! Version: who answers, and which CRI API it speaks.

use crust_proto::cri::{VersionRequest, VersionResponse};

use super::error::Result;

/// The name crust reports as `runtime_name`.
pub const RUNTIME_NAME: &str = "crust";

/// Answers with crust's name and version and CRI API v1.
pub async fn version(_req: VersionRequest) -> Result<VersionResponse> {
    Ok(VersionResponse {
        version: "0.1.0".into(),
        runtime_name: RUNTIME_NAME.into(),
        runtime_version: env!("CARGO_PKG_VERSION").into(),
        runtime_api_version: "v1".into(),
    })
}
