//! The JSON documents a registry serves for an image, read as untrusted input: the
//! manifest or index a reference names, the platform manifest an index points to, and
//! the image config; and the layer list a manifest and its config make together. Pure
//! functions of the bytes, so they are tested and fuzzed without a registry.

use oci_client::manifest::{ImageIndexEntry, OciImageIndex, OciImageManifest};
use oci_spec::image::ImageConfiguration;

use crate::digest::{Digest, chain_ids};
use crate::error::{Error, Result};
use crate::image::Layer;

/// What a reference names at a registry.
#[derive(Debug, Clone)]
pub enum TopLevel {
    /// A manifest of one platform's image.
    Manifest(Box<OciImageManifest>),
    /// An OCI index or a Docker manifest list: one manifest per platform.
    Index(OciImageIndex),
}

/// The blobs a manifest names, with the sizes it promises (0: not given).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blobs {
    /// The image config.
    pub config: (Digest, u64),
    /// The layers, bottom first.
    pub layers: Vec<(Digest, u64)>,
}

impl Blobs {
    /// The bytes of the config and the layers, as the manifest gives them (saturating:
    /// the sizes are the registry's to state).
    pub fn size(&self) -> u64 {
        self.layers
            .iter()
            .fold(self.config.1, |sum, (_, size)| sum.saturating_add(*size))
    }
}

fn bad(reference: &str, digest: &Digest, reason: impl ToString) -> Error {
    Error::BadManifest {
        reference: reference.to_owned(),
        digest: digest.clone(),
        reason: reason.to_string(),
    }
}

/// Reads what `reference` names (`body`, whose digest is `digest`): a schema 2
/// manifest, or an index when it lists `manifests`. Anything else is
/// [`Error::BadManifest`].
pub fn parse_top(reference: &str, digest: &Digest, body: &[u8]) -> Result<TopLevel> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| bad(reference, digest, e))?;
    if value.get("schemaVersion").and_then(|v| v.as_i64()) != Some(2) {
        return Err(bad(
            reference,
            digest,
            "only schema version 2 manifests are supported",
        ));
    }
    if value.get("manifests").is_none() {
        let manifest = serde_json::from_value(value).map_err(|e| bad(reference, digest, e))?;
        return Ok(TopLevel::Manifest(manifest));
    }
    let index = serde_json::from_value(value).map_err(|e| bad(reference, digest, e))?;
    Ok(TopLevel::Index(index))
}

/// Reads the platform manifest an index entry pointed to (`body`, whose digest is
/// `digest`).
pub fn parse_manifest(reference: &str, digest: &Digest, body: &[u8]) -> Result<OciImageManifest> {
    serde_json::from_slice(body).map_err(|e| bad(reference, digest, e))
}

/// The blobs `manifest` names; a malformed digest is [`Error::InvalidDigest`].
pub fn blobs(manifest: &OciImageManifest) -> Result<Blobs> {
    let blob =
        |digest: &str, size: i64| Ok((Digest::parse(digest)?, u64::try_from(size).unwrap_or(0)));
    Ok(Blobs {
        config: blob(&manifest.config.digest, manifest.config.size)?,
        layers: manifest
            .layers
            .iter()
            .map(|l| blob(&l.digest, l.size))
            .collect::<Result<_>>()?,
    })
}

/// Reads the image config blob `digest`; a malformed one is [`Error::BadConfig`].
pub fn parse_config(digest: &Digest, body: &[u8]) -> Result<ImageConfiguration> {
    serde_json::from_slice(body).map_err(|e| Error::BadConfig {
        digest: digest.clone(),
        reason: e.to_string(),
    })
}

/// The image's layers: the manifest's layer blobs (from the manifest `digest` of
/// `reference`) matched in order with the config's diff IDs, each with its chain ID.
/// A count that differs is [`Error::BadManifest`], a malformed diff ID
/// [`Error::InvalidDigest`].
pub fn layers(
    reference: &str,
    digest: &Digest,
    blobs: &[(Digest, u64)],
    config: &ImageConfiguration,
) -> Result<Vec<Layer>> {
    let diff_ids = config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d))
        .collect::<Result<Vec<_>>>()?;
    if diff_ids.len() != blobs.len() {
        return Err(bad(
            reference,
            digest,
            format!(
                "{} layers but the config lists {} diff ids",
                blobs.len(),
                diff_ids.len()
            ),
        ));
    }
    let chains = chain_ids(&diff_ids);
    Ok(blobs
        .iter()
        .cloned()
        .zip(diff_ids)
        .zip(chains)
        .map(|(((digest, size), diff_id), chain_id)| Layer {
            digest,
            size,
            diff_id,
            chain_id,
        })
        .collect())
}

/// This node's architecture, as OCI names it.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The first `linux/<arch>` entry of an index for this node; for arm, the v7 variant
/// (or none) first.
pub fn choose_platform(entries: &[ImageIndexEntry]) -> Option<&ImageIndexEntry> {
    let arch = oci_arch();
    let matching: Vec<&ImageIndexEntry> = entries
        .iter()
        .filter(|e| {
            e.platform
                .as_ref()
                .is_some_and(|p| p.os.to_string() == "linux" && p.architecture.to_string() == arch)
        })
        .collect();
    let preferred = match arch {
        "arm" => Some("v7"),
        "arm64" => Some("v8"),
        _ => None,
    };
    matching
        .iter()
        .find(|e| {
            let variant = e.platform.as_ref().and_then(|p| p.variant.as_deref());
            variant.is_none() || variant == preferred
        })
        .or(matching.first())
        .copied()
}

#[cfg(test)]
mod tests;
