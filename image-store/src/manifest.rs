//! The JSON documents a registry serves for an image, read as untrusted input: the
//! manifest or index a reference names, the platform manifest an index points to, and
//! the image config; and the layer list a manifest and its config make together. Pure
//! functions of the bytes, so they are tested and fuzzed without a registry.

use oci_client::manifest::{
    ImageIndexEntry, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex,
    OciImageManifest,
};
use oci_spec::image::ImageConfiguration;

use crate::digest::{Digest, Hasher, chain_ids};
use crate::error::{Error, Result};
use crate::image::{Layer, Manifests};

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

/// Checks that `body` is the blob `want` names.
pub fn check_digest(want: &Digest, body: &[u8]) -> Result<()> {
    let mut hasher = Hasher::for_digest(want);
    hasher.update(body);
    let actual = hasher.finish();
    if actual != *want {
        return Err(Error::DigestMismatch {
            expected: want.clone(),
            actual,
            size: body.len() as u64,
        });
    }
    Ok(())
}

/// The digest of this node's manifest in `index` (of `reference`, digest `digest`);
/// none is [`Error::NoMatchingPlatform`].
pub fn platform_entry(reference: &str, digest: &Digest, index: &OciImageIndex) -> Result<Digest> {
    let entry = choose_platform(&index.manifests).ok_or_else(|| Error::NoMatchingPlatform {
        reference: reference.to_owned(),
        digest: digest.clone(),
        platform: format!("linux/{}", oci_arch()),
    })?;
    Digest::parse(&entry.digest)
}

/// This node's manifest as reached from what a reference names.
pub enum Platform {
    /// The reference names the manifest itself.
    Same(Box<OciImageManifest>),
    /// The reference names `index`; `body` is the blob of its entry `digest` for this
    /// node, not yet checked.
    Separate {
        /// The entry's digest.
        digest: Digest,
        /// The blob fetched for it.
        body: Vec<u8>,
        /// The index.
        index: OciImageIndex,
    },
}

/// The manifest blobs of one image, verified: what its reference names and, under an
/// index, this node's manifest.
pub struct Fetched {
    /// Digest of what the reference names: the image's repo digest.
    pub top_digest: Digest,
    /// The blob the reference names.
    pub top: Vec<u8>,
    /// Its media type.
    pub top_media_type: String,
    /// This node's manifest blob when the top is an index.
    pub platform: Option<(Digest, Vec<u8>)>,
    /// This node's manifest.
    pub manifest: OciImageManifest,
}

impl Fetched {
    /// Checks and reads `platform` under `top` (digest `top_digest`, of `reference`).
    pub fn new(
        reference: &str,
        top_digest: Digest,
        top: Vec<u8>,
        platform: Platform,
    ) -> Result<Self> {
        let (top_media_type, platform, manifest) = match platform {
            Platform::Same(manifest) => (manifest.media_type.clone(), None, *manifest),
            Platform::Separate {
                digest,
                body,
                index,
            } => {
                check_digest(&digest, &body)?;
                let manifest = parse_manifest(reference, &digest, &body)?;
                let media_type = index
                    .media_type
                    .clone()
                    .or_else(|| Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_owned()));
                (media_type, Some((digest, body)), manifest)
            }
        };
        Ok(Self {
            top_digest,
            top,
            top_media_type: top_media_type.unwrap_or_else(|| OCI_IMAGE_MEDIA_TYPE.to_owned()),
            platform,
            manifest,
        })
    }

    /// Bytes of the index (if any) and the manifest.
    pub fn bytes(&self) -> u64 {
        let platform = self.platform.as_ref().map_or(0, |(_, b)| b.len());
        (self.top.len() + platform) as u64
    }

    /// The record of these blobs kept with the image.
    pub fn record(&self) -> Manifests {
        Manifests {
            top: self.top_digest.clone(),
            top_size: self.top.len() as u64,
            top_media_type: self.top_media_type.clone(),
            platform: self.platform.as_ref().map(|(d, _)| d.clone()),
        }
    }

    /// The blobs to store, top first.
    pub fn blobs(&self) -> impl Iterator<Item = (&Digest, &[u8])> {
        std::iter::once((&self.top_digest, self.top.as_slice()))
            .chain(self.platform.as_ref().map(|(d, b)| (d, b.as_slice())))
    }
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
