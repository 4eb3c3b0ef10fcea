//! Image archives, for nodes without a registry: importing an OCI image layout or a
//! `docker save` archive (both tar files) into the store, and exporting images as an
//! OCI image layout.
//!
//! An archive is untrusted input, read in place and never extracted: its tar entries
//! are indexed by name, and each blob streams from its offset in the file through the
//! same path as a registry's blob (digest and size verified before it is stored, the
//! layer unpacked with every check and limit of a pull, the image recorded last). A
//! name that leaves the archive's root, a missing blob or a digest that does not match
//! fails the import naming it, and leaves no image.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Component, Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use oci_client::manifest::{
    IMAGE_CONFIG_MEDIA_TYPE, IMAGE_LAYER_GZIP_MEDIA_TYPE, IMAGE_LAYER_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE, OciImageIndex,
};
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tracing::info;

use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::Image;
use crate::locks::ProtectGuard;
use crate::manifest::{self, Fetched, Platform, TopLevel};
use crate::pull::{BlobSource, Progress};
use crate::reference::ImageRef;
use crate::store::{ImageStore, blocking};

/// The largest JSON document (index, manifest, config) read from an archive.
const MAX_DOCUMENT: u64 = 16 << 20;
/// How messages name an archive received in chunks.
const SENT: &str = "(sent)";
/// Bytes spooled between two free-space checks.
const SPOOL_CHECK_EVERY: u64 = 64 << 20;
/// Links followed to reach one entry.
const MAX_LINKS: usize = 16;
/// The annotation containerd writes with an image's full name.
const CONTAINERD_NAME: &str = "io.containerd.image.name";
/// The OCI annotation naming an image in a layout: a full reference or only a tag.
const OCI_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One tar entry, by archive-relative name.
#[derive(Debug, Clone)]
enum Entry {
    File { offset: u64, size: u64 },
    Link(String),
}

/// An archive file, indexed.
pub(crate) struct Archive {
    path: PathBuf,
    /// The archive as messages name it.
    label: String,
    entries: HashMap<String, Entry>,
    /// Entry names of the blobs by digest.
    blobs: HashMap<Digest, String>,
}

/// An image an archive names, with its manifest blobs read and verified.
struct Named {
    name: ImageRef,
    manifests: Fetched,
}

impl Archive {
    fn bad(&self, reason: impl ToString) -> Error {
        Error::Archive {
            archive: self.label.clone(),
            reason: reason.to_string(),
        }
    }

    /// Indexes the tar file at `path`, named `label` in messages.
    fn open(path: &Path, label: &str) -> Result<Archive> {
        let file = File::open(path).map_err(Error::io("open", path))?;
        let mut tar = tar::Archive::new(file);
        let mut entries = HashMap::new();
        let bad = |reason: String| Error::Archive {
            archive: label.to_owned(),
            reason,
        };
        let read = |e: io::Error| bad(format!("not a tar archive: {e}"));
        for entry in tar.entries_with_seek().map_err(read)? {
            let entry = entry.map_err(read)?;
            let name = entry.path().map_err(read)?;
            let Some(name) = normalise(Path::new(""), &name) else {
                continue;
            };
            let header = entry.header();
            let kind = header.entry_type();
            let link = || entry.link_name().ok().flatten();
            let found = if kind.is_file() {
                Entry::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                }
            } else if kind.is_symlink() {
                let parent = Path::new(&name).parent().unwrap_or(Path::new(""));
                match link().and_then(|l| normalise(parent, &l)) {
                    Some(target) => Entry::Link(target),
                    None => continue,
                }
            } else if kind.is_hard_link() {
                match link().and_then(|l| normalise(Path::new(""), &l)) {
                    Some(target) => Entry::Link(target),
                    None => continue,
                }
            } else {
                continue;
            };
            entries.insert(name, found);
        }
        let mut archive = Archive {
            path: path.to_owned(),
            label: label.to_owned(),
            entries,
            blobs: HashMap::new(),
        };
        let names: Vec<String> = archive.entries.keys().cloned().collect();
        for name in names {
            let digest = name
                .strip_prefix("blobs/")
                .and_then(|rest| rest.split_once('/'))
                .and_then(|(algorithm, hex)| Digest::parse(&format!("{algorithm}:{hex}")).ok());
            if let Some(digest) = digest {
                archive.blobs.insert(digest, name);
            }
        }
        Ok(archive)
    }

    /// The offset and size of the file `name`, following links.
    fn find(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = name;
        for _ in 0..MAX_LINKS {
            match self.entries.get(name)? {
                Entry::File { offset, size } => return Some((*offset, *size)),
                Entry::Link(target) => name = target,
            }
        }
        None
    }

    /// A reader of the file `name`.
    fn reader(&self, name: &str) -> Result<(io::Take<File>, u64)> {
        let (offset, size) = self
            .find(name)
            .ok_or_else(|| self.bad(format!("no file {name}")))?;
        let mut file = File::open(&self.path).map_err(Error::io("open", &self.path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(Error::io("read", &self.path))?;
        Ok((file.take(size), size))
    }

    /// The whole of the file `name`, a JSON document.
    fn read(&self, name: &str) -> Result<Vec<u8>> {
        let (mut reader, size) = self.reader(name)?;
        if size > MAX_DOCUMENT {
            return Err(self.bad(format!("{name}: {size} bytes, more than {MAX_DOCUMENT}")));
        }
        let mut body = Vec::with_capacity(size as usize);
        reader
            .read_to_end(&mut body)
            .map_err(Error::io("read", &self.path))?;
        Ok(body)
    }

    /// The blob `digest`, checked.
    fn read_blob(&self, digest: &Digest) -> Result<Vec<u8>> {
        let name = self
            .blobs
            .get(digest)
            .ok_or_else(|| self.bad(format!("no blob {digest}")))?;
        let body = self.read(name)?;
        manifest::check_digest(digest, &body)?;
        Ok(body)
    }

    /// Streams the blob `digest`; the store verifies it as it does a download.
    pub(crate) async fn blob_stream(
        &self,
        digest: &Digest,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>> {
        let (offset, size) = self
            .blobs
            .get(digest)
            .and_then(|name| self.find(name))
            .ok_or_else(|| self.bad(format!("no blob {digest}")))?;
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(Error::io("open", &self.path))?;
        file.seek(SeekFrom::Start(offset))
            .await
            .map_err(Error::io("read", &self.path))?;
        let reader = file.take(size);
        let chunks = futures::stream::try_unfold(reader, |mut reader| async move {
            let mut chunk = vec![0; 256 * 1024];
            let n = reader.read(&mut chunk).await?;
            if n == 0 {
                return Ok(None);
            }
            chunk.truncate(n);
            Ok(Some((Bytes::from(chunk), reader)))
        });
        Ok(chunks.boxed())
    }

    /// The images the archive names, in its order.
    fn images(&mut self) -> Result<Vec<Named>> {
        if self.entries.contains_key("index.json") && self.entries.contains_key("oci-layout") {
            self.layout_images()
        } else if self.entries.contains_key("manifest.json") {
            self.docker_images()
        } else {
            Err(self.bad(
                "neither an OCI image layout (oci-layout, index.json) nor a docker save \
                 archive (manifest.json)",
            ))
        }
    }

    /// The images of an OCI image layout: each entry of `index.json` with a name.
    fn layout_images(&self) -> Result<Vec<Named>> {
        let index: OciImageIndex = serde_json::from_slice(&self.read("index.json")?)
            .map_err(|e| self.bad(format!("index.json: {e}")))?;
        let mut images = Vec::new();
        for entry in &index.manifests {
            let digest = Digest::parse(&entry.digest)?;
            let annotations = entry.annotations.clone().unwrap_or_default();
            let name = image_name(&annotations).ok_or_else(|| {
                self.bad(format!(
                    "index.json: manifest {digest} has no image name ({CONTAINERD_NAME} or a \
                     full reference in {OCI_REF_NAME})"
                ))
            })?;
            let name = ImageRef::parse(&name)?;
            let reference = name.to_string();
            let top = self.read_blob(&digest)?;
            let platform = match manifest::parse_top(&reference, &digest, &top)? {
                TopLevel::Manifest(manifest) => Platform::Same(manifest),
                TopLevel::Index(index) => {
                    let inner = manifest::platform_entry(&reference, &digest, &index)?;
                    let body = self.read_blob(&inner)?;
                    Platform::Separate {
                        digest: inner,
                        body,
                        index,
                    }
                }
            };
            let manifests = Fetched::new(&reference, digest, top, platform)?;
            images.push(Named { name, manifests });
        }
        Ok(images)
    }

    /// The images of a `docker save` archive: `manifest.json` lists each image's
    /// config file, tags and uncompressed layer files; the manifest a registry would
    /// serve is made from their digests (as containerd's import does).
    fn docker_images(&mut self) -> Result<Vec<Named>> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Saved {
            config: String,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
            layers: Vec<String>,
        }
        let saved: Vec<Saved> = serde_json::from_slice(&self.read("manifest.json")?)
            .map_err(|e| self.bad(format!("manifest.json: {e}")))?;
        let mut images = Vec::new();
        for image in saved {
            let config = self.read(&image.config)?;
            let config_digest = Digest::sha256_of(&config);
            self.blobs
                .insert(config_digest.clone(), image.config.clone());
            let mut layers = Vec::new();
            for layer in &image.layers {
                let (digest, size, compressed) = self.hash(layer)?;
                self.blobs.insert(digest.clone(), layer.clone());
                let media_type = if compressed {
                    IMAGE_LAYER_GZIP_MEDIA_TYPE
                } else {
                    IMAGE_LAYER_MEDIA_TYPE
                };
                layers.push(serde_json::json!({
                    "mediaType": media_type,
                    "digest": digest.to_string(),
                    "size": size,
                }));
            }
            let body = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_MEDIA_TYPE,
                "config": {
                    "mediaType": IMAGE_CONFIG_MEDIA_TYPE,
                    "digest": config_digest.to_string(),
                    "size": config.len(),
                },
                "layers": layers,
            }))
            .expect("a manifest always serialises");
            let digest = Digest::sha256_of(&body);
            let tags = image.repo_tags.unwrap_or_default();
            if tags.is_empty() {
                return Err(self.bad(format!(
                    "manifest.json: image {config_digest} has no RepoTags to name it by"
                )));
            }
            for tag in tags {
                let name = ImageRef::parse(&tag)?;
                let manifest = manifest::parse_manifest(&tag, &digest, &body)?;
                let manifests = Fetched::new(
                    &tag,
                    digest.clone(),
                    body.clone(),
                    Platform::Same(manifest.into()),
                )?;
                images.push(Named { name, manifests });
            }
        }
        Ok(images)
    }

    /// The sha256 digest and size of the file `name`, and whether it is gzip.
    fn hash(&self, name: &str) -> Result<(Digest, u64, bool)> {
        let (mut reader, size) = self.reader(name)?;
        let mut hasher = Hasher::sha256();
        let mut chunk = vec![0; 256 * 1024];
        let mut head = None;
        loop {
            let n = reader
                .read(&mut chunk)
                .map_err(Error::io("read", &self.path))?;
            if n == 0 {
                break;
            }
            head.get_or_insert_with(|| chunk[..n].starts_with(&[0x1f, 0x8b]));
            hasher.update(&chunk[..n]);
        }
        Ok((hasher.finish(), size, head.unwrap_or(false)))
    }
}

/// An image's full name from a layout's annotations: containerd's, else the OCI
/// ref name when it is a full reference rather than a bare tag.
fn image_name(annotations: &BTreeMap<String, String>) -> Option<String> {
    if let Some(name) = annotations.get(CONTAINERD_NAME) {
        return Some(name.clone());
    }
    annotations
        .get(OCI_REF_NAME)
        .filter(|r| r.contains('/') || r.contains(':') || r.contains('@'))
        .cloned()
}

/// `name` (relative to `base`) as an archive-relative path without `.` and `..`, or
/// none when it leaves the archive's root or is empty.
fn normalise(base: &Path, name: &Path) -> Option<String> {
    let mut parts: Vec<String> = if name.is_absolute() {
        Vec::new()
    } else {
        base.components()
            .filter_map(|c| match c {
                Component::Normal(p) => Some(p.to_string_lossy().into_owned()),
                _ => None,
            })
            .collect()
    };
    for component in name.components() {
        match component {
            Component::Normal(p) => parts.push(p.to_string_lossy().into_owned()),
            Component::ParentDir => {
                parts.pop()?;
            }
            Component::CurDir | Component::RootDir | Component::Prefix(_) => {}
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

impl ImageStore {
    /// Imports the archive `chunks` bring: spools it to a temp file in the store
    /// (kept no longer than the import, and removed at the next start after a crash),
    /// keeping the store's free-space reserve, then imports it as [`Self::import`].
    pub async fn import_stream<S>(&self, mut chunks: S) -> Result<Vec<Image>>
    where
        S: futures::Stream<Item = io::Result<Bytes>> + Unpin,
    {
        let tmp = self.blob_temp_file()?;
        let mut file =
            tokio::fs::File::from_std(tmp.reopen().map_err(Error::io("open", tmp.path()))?);
        let mut unchecked = 0u64;
        while let Some(chunk) = chunks.next().await {
            let chunk = chunk.map_err(|e| Error::Archive {
                archive: SENT.into(),
                reason: format!("receiving the archive: {e}"),
            })?;
            tokio::io::AsyncWriteExt::write_all(&mut file, &chunk)
                .await
                .map_err(Error::io("write", tmp.path()))?;
            unchecked += chunk.len() as u64;
            if unchecked >= SPOOL_CHECK_EVERY {
                unchecked = 0;
                self.check_free(tmp.path())?;
            }
        }
        tokio::io::AsyncWriteExt::flush(&mut file)
            .await
            .map_err(Error::io("write", tmp.path()))?;
        drop(file);
        self.import_named(tmp.path(), SENT).await
    }

    fn check_free(&self, path: &Path) -> Result<()> {
        let st =
            nix::sys::statvfs::statvfs(path).map_err(|e| Error::io("statvfs", path)(e.into()))?;
        let free = st.blocks_available() as u64 * st.fragment_size() as u64;
        if free < self.inner.opts.min_free_bytes {
            return Err(Error::DiskFull {
                path: path.to_owned(),
                free,
                reserve: self.inner.opts.min_free_bytes,
            });
        }
        Ok(())
    }

    /// Imports the images of the archive at `path` (an OCI image layout or a `docker
    /// save` archive, as tar) with the checks of a pull, and returns them as recorded.
    pub async fn import(&self, path: &Path) -> Result<Vec<Image>> {
        self.import_named(path, &path.display().to_string()).await
    }

    async fn import_named(&self, path: &Path, label: &str) -> Result<Vec<Image>> {
        let path = path.to_owned();
        let label = label.to_owned();
        let (archive, named) = blocking("read archive", move || {
            let mut archive = Archive::open(&path, &label)?;
            let named = archive.images()?;
            Ok((archive, named))
        })
        .await?;
        let mut imported = Vec::new();
        for image in named {
            let source = BlobSource::Archive {
                archive: &archive,
                reference: image.name.to_string(),
            };
            let recorded = self
                .record(&image.name, &image.manifests, &source, &Progress::default())
                .await?;
            info!(reference = %image.name, id = %recorded.id, archive = %archive.label, "image imported");
            imported.push(recorded);
        }
        Ok(imported)
    }

    /// Prepares the export of the images `references` (names or ids): each must
    /// exist and have its manifests kept (an image pulled by an older crustd has not:
    /// pulling it again keeps them). Their blobs are kept from garbage collection until
    /// the [`Export`] is written or dropped.
    pub async fn export(&self, references: &[String]) -> Result<Export> {
        let mut images = Vec::new();
        for reference in references {
            let image = self
                .status(reference)
                .await?
                .ok_or_else(|| Error::NotFound {
                    reference: reference.clone(),
                })?;
            if image.manifests.is_none() {
                return Err(Error::NotExportable {
                    reference: reference.clone(),
                });
            }
            let name = ImageRef::parse(reference)
                .ok()
                .filter(|r| image.repo_tags.contains(&r.to_string()))
                .map(|r| r.to_string())
                .or_else(|| image.repo_tags.first().cloned());
            images.push((name, image));
        }
        let keys = images
            .iter()
            .flat_map(|(_, image)| image_blobs(image))
            .map(|d| d.to_string())
            .collect();
        let kept = self.inner.protected.protect(keys).await;
        Ok(Export {
            store: self.clone(),
            images,
            _kept: kept,
        })
    }
}

/// Images ready to be written as an OCI image layout.
pub struct Export {
    store: ImageStore,
    /// Each image with the name `index.json` gives it.
    images: Vec<(Option<String>, Image)>,
    _kept: ProtectGuard,
}

impl Export {
    /// Writes the images to `out` as an OCI image layout in a tar archive, each named
    /// in `index.json` as containerd names them (`io.containerd.image.name`, and the
    /// tag as `org.opencontainers.image.ref.name`).
    pub async fn write(self, out: Box<dyn Write + Send>) -> Result<()> {
        let inner = self.store.inner.clone();
        let images = self.images;
        let kept = self._kept;
        blocking("export images", move || {
            let _kept = kept;
            let mut tar = tar::Builder::new(out);
            let mut written = std::collections::HashSet::new();
            let mut index = Vec::new();
            let io_err = |e: io::Error| Error::io("write", Path::new("export archive"))(e);
            append(&mut tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#).map_err(io_err)?;
            for (name, image) in &images {
                for digest in image_blobs(image) {
                    if !written.insert(digest.clone()) {
                        continue;
                    }
                    let path = inner.paths.blob(digest);
                    let mut file = File::open(&path).map_err(Error::io("open", &path))?;
                    let size = file.metadata().map_err(Error::io("stat", &path))?.len();
                    let mut header = blob_header(size);
                    let entry = format!("blobs/{}/{}", digest.algorithm(), digest.hex());
                    tar.append_data(&mut header, entry, &mut file)
                        .map_err(io_err)?;
                }
                let manifests = image.manifests.as_ref().expect("checked by export");
                let mut annotations = serde_json::Map::new();
                if let Some(name) = name {
                    annotations.insert(CONTAINERD_NAME.into(), name.clone().into());
                    let tag = ImageRef::parse(name)
                        .ok()
                        .and_then(|r| r.tag().map(str::to_owned));
                    if let Some(tag) = tag {
                        annotations.insert(OCI_REF_NAME.into(), tag.into());
                    }
                }
                index.push(serde_json::json!({
                    "mediaType": manifests.top_media_type,
                    "digest": manifests.top.to_string(),
                    "size": manifests.top_size,
                    "annotations": annotations,
                }));
            }
            let index = serde_json::to_vec(&serde_json::json!({
                "schemaVersion": 2,
                "mediaType": OCI_IMAGE_INDEX_MEDIA_TYPE,
                "manifests": index,
            }))
            .expect("an index always serialises");
            append(&mut tar, "index.json", &index).map_err(io_err)?;
            tar.into_inner()
                .and_then(|mut out| out.flush())
                .map_err(io_err)
        })
        .await
    }
}

/// The blobs of `image`: manifests, config, layers.
fn image_blobs(image: &Image) -> Vec<&Digest> {
    let manifests = image.manifests.iter().flat_map(|m| m.digests());
    manifests
        .chain([&image.id])
        .chain(image.layers.iter().map(|l| &l.digest))
        .collect()
}

fn blob_header(size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header
}

fn append(
    tar: &mut tar::Builder<Box<dyn Write + Send>>,
    name: &str,
    body: &[u8],
) -> io::Result<()> {
    let mut header = blob_header(body.len() as u64);
    tar.append_data(&mut header, name, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_the_archive() {
        let n = |base: &str, name: &str| normalise(Path::new(base), Path::new(name));
        assert_eq!(
            n("", "./blobs/sha256/ab").as_deref(),
            Some("blobs/sha256/ab")
        );
        assert_eq!(n("", "/index.json").as_deref(), Some("index.json"));
        assert_eq!(
            n("abc", "../def/layer.tar").as_deref(),
            Some("def/layer.tar")
        );
        assert_eq!(n("", "../etc/passwd"), None);
        assert_eq!(n("a", "../../x"), None);
        assert_eq!(n("", "."), None);
    }

    #[test]
    fn a_layout_names_images_by_full_references_only() {
        let m = |pairs: &[(&str, &str)]| {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>()
        };
        assert_eq!(
            image_name(&m(&[
                (CONTAINERD_NAME, "docker.io/library/busybox:1"),
                (OCI_REF_NAME, "1")
            ]))
            .as_deref(),
            Some("docker.io/library/busybox:1")
        );
        assert_eq!(
            image_name(&m(&[(OCI_REF_NAME, "registry.k8s.io/pause:3.10")])).as_deref(),
            Some("registry.k8s.io/pause:3.10")
        );
        assert_eq!(image_name(&m(&[(OCI_REF_NAME, "latest")])), None);
        assert_eq!(image_name(&m(&[])), None);
    }
}
