//! The image record: what crustd reports in ImageStatus and ListImages and needs to
//! create a container.

use oci_spec::image::{Config, ImageConfiguration};
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{Error, Result};

/// A pulled image.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Image {
    /// The image ID: the digest of its config blob, `sha256:<hex>`.
    pub id: Digest,
    /// Tag references, `registry.k8s.io/pause:3.9`: empty for an image pulled only by
    /// digest, as containerd reports it.
    pub repo_tags: Vec<String>,
    /// Digest references, `registry.k8s.io/pause@sha256:<manifest or index digest>`.
    pub repo_digests: Vec<String>,
    /// Size as containerd reports it: the compressed bytes of the index (if any), the
    /// manifest, the config and the layers for this platform.
    pub size: u64,
    /// The image config (Env, Cmd, Entrypoint, WorkingDir, User, StopSignal, Volumes,
    /// Labels, ExposedPorts under `config()`, plus rootfs and history).
    pub config: ImageConfiguration,
    /// Layers, bottom first.
    pub layers: Vec<Layer>,
    /// Whether kubelet must never garbage collect it.
    pub pinned: bool,
    /// The manifest blobs it was recorded from, kept for export; none for an image
    /// recorded before crust kept them.
    #[serde(default)]
    pub manifests: Option<Manifests>,
}

/// The stored manifest blobs of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifests {
    /// What the image's reference names, an index or this platform's manifest: its
    /// digest is the repo digest.
    pub top: Digest,
    /// The size of the top blob.
    pub top_size: u64,
    /// The media type of the top blob.
    pub top_media_type: String,
    /// This platform's manifest when the top is an index.
    pub platform: Option<Digest>,
}

impl Manifests {
    /// The digests of the stored manifest blobs, top first.
    pub fn digests(&self) -> impl Iterator<Item = &Digest> {
        std::iter::once(&self.top).chain(self.platform.as_ref())
    }
}

/// One layer of an image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layer {
    /// Digest of the (compressed) blob.
    pub digest: Digest,
    /// Size of the blob.
    pub size: u64,
    /// sha256 of the uncompressed tar, from the config's rootfs.diff_ids.
    pub diff_id: Digest,
    /// Chain ID of this layer and all below it: the snapshot's name.
    pub chain_id: Digest,
}

impl Image {
    /// The runtime part of the image config, if the image has one.
    pub fn runtime_config(&self) -> Option<&Config> {
        self.config.config().as_ref()
    }

    /// The `User` of the image config (`1000`, `nobody`, `1000:1000`), if set.
    pub fn user(&self) -> Option<&str> {
        self.runtime_config()
            .and_then(|c| c.user().as_deref())
            .filter(|u| !u.is_empty())
    }

    /// The image as the metadata database stores it.
    pub fn to_record(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an image record always serialises")
    }

    /// An image read back from the record stored under `key`; one that does not
    /// decode is [`Error::CorruptRecord`].
    pub fn from_record(key: &str, bytes: &[u8]) -> Result<Image> {
        serde_json::from_slice(bytes).map_err(|source| Error::CorruptRecord {
            key: key.to_owned(),
            source,
        })
    }

    /// Chain IDs of the layers, bottom first.
    pub fn chain_ids(&self) -> impl DoubleEndedIterator<Item = &Digest> {
        self.layers.iter().map(|l| &l.chain_id)
    }
}
