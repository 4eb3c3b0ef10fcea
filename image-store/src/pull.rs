//! Pulling an image: resolve the manifest (mirrors first), fetch the config, then
//! fetch and unpack the layers in parallel, and record the image last, in one
//! transaction. Blobs stream into a temp file in `tmp/`, hashed as they arrive, and
//! are renamed into place only once verified; a layer unpacks into a temp dir renamed
//! to its snapshot. So a failed or cancelled pull (its future dropped) leaves no
//! partial blob, no partial snapshot and no image. Two pulls of the same blob or
//! snapshot share the work through per-key locks: the second waits and finds it done.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use oci_spec::image::ImageConfiguration;
use tokio::io::AsyncWriteExt;
use tracing::{debug, info};

use crate::archive::Archive;
use crate::digest::{Digest, Hasher};
use crate::error::{Error, Result};
use crate::image::{Image, Layer};
use crate::manifest;
use crate::options::Auth;
use crate::reference::ImageRef;
use crate::registry::Session;
use crate::store::{ImageStore, blocking, sync_dir};
use crate::unpack::{UnpackOptions, unpack_layer};

/// Progress of one pull, for its log lines.
#[derive(Default)]
pub(crate) struct Progress {
    bytes: AtomicU64,
    layers_done: AtomicU64,
    layers_total: AtomicU64,
}

/// Where an image's blobs come from: the registry endpoint that resolved its
/// manifest, or an archive being imported.
pub(crate) enum BlobSource<'a> {
    Registry {
        session: &'a Session,
        endpoint: usize,
    },
    Archive {
        archive: &'a Archive,
        reference: String,
    },
}

impl BlobSource<'_> {
    /// The reference or archive the blobs are for, for messages.
    fn label(&self) -> String {
        match self {
            BlobSource::Registry { session, endpoint } => {
                session.sources[*endpoint].oci.to_string()
            }
            BlobSource::Archive { reference, .. } => reference.clone(),
        }
    }

    async fn open(
        &self,
        digest: &Digest,
        size: u64,
    ) -> Result<BoxStream<'static, io::Result<Bytes>>> {
        match self {
            BlobSource::Registry { session, endpoint } => {
                Ok(session.blob_stream(*endpoint, digest, size).await?.stream)
            }
            BlobSource::Archive { archive, .. } => archive.blob_stream(digest).await,
        }
    }
}

/// A blob to fetch.
struct Blob<'a> {
    source: &'a BlobSource<'a>,
    digest: &'a Digest,
    size: u64,
    progress: &'a Progress,
}

/// Sets the flag when dropped: tells a blocking unpack its pull is gone.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl ImageStore {
    /// Pulls `reference` (normalised: `busybox` is `docker.io/library/busybox:latest`)
    /// with optional credentials, and returns the recorded image. Pulling an image
    /// already present re-resolves the tag and records it, downloading nothing new.
    pub async fn pull(&self, reference: &str, auth: Option<Auth>) -> Result<Image> {
        let image = ImageRef::parse(reference)?;
        let progress = Progress::default();
        let started = Instant::now();
        let work = self.pull_ref(&image, auth.as_ref(), &progress);
        tokio::pin!(work);
        let every = self.inner.opts.progress_interval;
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                result = &mut work => {
                    match &result {
                        Ok(pulled) => info!(reference = %image, id = %pulled.id, elapsed = ?started.elapsed(), "image pulled"),
                        Err(e) => info!(reference = %image, error = %e, "image pull failed"),
                    }
                    return result;
                }
                _ = tick.tick() => info!(
                    reference = %image,
                    bytes = progress.bytes.load(Ordering::Relaxed),
                    layers_done = progress.layers_done.load(Ordering::Relaxed),
                    layers = progress.layers_total.load(Ordering::Relaxed),
                    elapsed = ?started.elapsed(),
                    "pulling",
                ),
            }
        }
    }

    async fn pull_ref(
        &self,
        image: &ImageRef,
        auth: Option<&Auth>,
        progress: &Progress,
    ) -> Result<Image> {
        let session = Session::new(&self.pull_options(), image, auth)?;
        let resolved = session.resolve(image).await?;
        let source = BlobSource::Registry {
            session: &session,
            endpoint: resolved.source,
        };
        self.record(image, &resolved.manifests, &source, progress)
            .await
    }

    /// Stores the manifest blobs, the config and the layers of `image` from `source`,
    /// unpacks the layers and records the image: the part of a pull after the
    /// manifest, which an import shares.
    pub(crate) async fn record(
        &self,
        image: &ImageRef,
        manifests: &manifest::Fetched,
        source: &BlobSource<'_>,
        progress: &Progress,
    ) -> Result<Image> {
        let blobs = manifest::blobs(&manifests.manifest)?;
        let (config_digest, config_size) = blobs.config.clone();
        let keys = blobs.layers.iter().map(|(d, _)| d.to_string());
        let manifest_keys = manifests.blobs().map(|(d, _)| d.to_string());
        let _blobs_kept = (self.inner.protected)
            .protect(
                keys.chain(manifest_keys)
                    .chain([config_digest.to_string()])
                    .collect(),
            )
            .await;
        for (digest, body) in manifests.blobs() {
            self.store_blob_bytes(digest, body).await?;
        }
        self.fetch_blob(Blob {
            source,
            digest: &config_digest,
            size: config_size,
            progress,
        })
        .await?;
        let config = self.read_config(&config_digest).await?;
        let reference = image.to_string();
        let layers = manifest::layers(&reference, &manifests.top_digest, &blobs.layers, &config)?;
        let _snapshots_kept = (self.inner.protected)
            .protect(layers.iter().map(|l| l.chain_id.to_string()).collect())
            .await;
        progress
            .layers_total
            .store(layers.len() as u64, Ordering::Relaxed);
        // Owned layers and futures built up front: a closure over `&Layer` makes the
        // pull future fail the higher-ranked `Send` check the gRPC server needs.
        let fetches: Vec<_> = layers
            .iter()
            .cloned()
            .map(|layer| async move {
                self.fetch_blob(Blob {
                    source,
                    digest: &layer.digest,
                    size: layer.size,
                    progress,
                })
                .await?;
                self.ensure_snapshot(&layer).await?;
                progress.layers_done.fetch_add(1, Ordering::Relaxed);
                Ok::<_, Error>(())
            })
            .collect();
        futures::stream::iter(fetches)
            .buffer_unordered(self.inner.opts.max_concurrent_downloads)
            .try_collect::<Vec<()>>()
            .await?;
        let size = manifests.bytes().saturating_add(blobs.size());
        let record = Image {
            id: config_digest,
            repo_tags: image.tag().map(|_| image.to_string()).into_iter().collect(),
            repo_digests: vec![image.with_digest(&manifests.top_digest).to_string()],
            size,
            config,
            layers,
            pinned: self.inner.pinned.contains(&image.to_string()),
            manifests: Some(manifests.record()),
        };
        self.meta("record image", move |meta| meta.put(record))
            .await
    }

    /// Stores `body`, already checked to be the blob `digest`, unless it is stored.
    async fn store_blob_bytes(&self, digest: &Digest, body: &[u8]) -> Result<()> {
        let path = self.inner.paths.blob(digest);
        let _one_write = self.inner.locks.lock(digest.as_str()).await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            return Ok(());
        }
        let tmp = self.blob_temp_file()?;
        let body = body.to_vec();
        blocking("store blob", move || {
            let mut file = tmp.as_file();
            std::io::Write::write_all(&mut file, &body).map_err(Error::io("write", tmp.path()))?;
            file.sync_all().map_err(Error::io("fsync", tmp.path()))?;
            persist_blob(tmp, &path)
        })
        .await
    }

    /// A temp file in `tmp/`, removed when dropped unless persisted.
    pub(crate) fn blob_temp_file(&self) -> Result<tempfile::NamedTempFile> {
        let tmp_dir = self.inner.paths.tmp();
        tempfile::Builder::new()
            .prefix("blob-")
            .tempfile_in(&tmp_dir)
            .map_err(Error::io("create temp file in", &tmp_dir))
    }

    async fn read_config(&self, digest: &Digest) -> Result<ImageConfiguration> {
        let path = self.inner.paths.blob(digest);
        let bytes = tokio::fs::read(&path)
            .await
            .map_err(Error::io("read", &path))?;
        manifest::parse_config(digest, &bytes)
    }

    /// Downloads a blob unless it is already stored; verifies digest and size while
    /// streaming; enforces the stall timeout and minimum throughput.
    async fn fetch_blob(&self, blob: Blob<'_>) -> Result<()> {
        let path = self.inner.paths.blob(blob.digest);
        let _one_download = self.inner.locks.lock(blob.digest.as_str()).await;
        if tokio::fs::try_exists(&path).await.unwrap_or(false) {
            debug!(digest = %blob.digest, "blob already present");
            return Ok(());
        }
        // Removed when dropped: a failed or cancelled download leaves nothing.
        let tmp = self.blob_temp_file()?;
        let mut file =
            tokio::fs::File::from_std(tmp.reopen().map_err(Error::io("open", tmp.path()))?);
        let mut stream = blob.source.open(blob.digest, blob.size).await?;
        let opts = &self.inner.opts;
        let what = || format!("blob {}", blob.digest);
        let reference = || blob.source.label();
        let mut hasher = Hasher::for_digest(blob.digest);
        let mut received = 0u64;
        let (mut window_start, mut window_bytes) = (Instant::now(), 0u64);
        loop {
            let next = tokio::time::timeout(opts.stall_timeout, stream.next())
                .await
                .map_err(|_| Error::Stalled {
                    reference: reference(),
                    what: what(),
                    timeout: opts.stall_timeout,
                })?;
            let Some(chunk) = next else { break };
            let chunk = chunk.map_err(|source| Error::BlobStream {
                reference: reference(),
                digest: blob.digest.clone(),
                source,
            })?;
            hasher.update(&chunk);
            file.write_all(&chunk)
                .await
                .map_err(Error::io("write", tmp.path()))?;
            let n = chunk.len() as u64;
            received += n;
            window_bytes += n;
            blob.progress.bytes.fetch_add(n, Ordering::Relaxed);
            self.inner
                .counters
                .bytes_downloaded
                .fetch_add(n, Ordering::Relaxed);
            let elapsed = window_start.elapsed();
            if opts.min_throughput > 0 && elapsed >= opts.throughput_window {
                let rate = rate(window_bytes, elapsed);
                if rate < opts.min_throughput {
                    return Err(Error::TooSlow {
                        reference: reference(),
                        what: what(),
                        rate,
                        min: opts.min_throughput,
                    });
                }
                (window_start, window_bytes) = (Instant::now(), 0);
            }
        }
        let actual = hasher.finish();
        if actual != *blob.digest || (blob.size > 0 && received != blob.size) {
            return Err(Error::DigestMismatch {
                expected: blob.digest.clone(),
                actual,
                size: received,
            });
        }
        file.sync_all()
            .await
            .map_err(Error::io("fsync", tmp.path()))?;
        drop(file);
        blocking("store blob", move || persist_blob(tmp, &path)).await?;
        self.inner
            .counters
            .blobs_downloaded
            .fetch_add(1, Ordering::Relaxed);
        debug!(digest = %blob.digest, bytes = received, "blob stored");
        Ok(())
    }

    /// Unpacks a layer into its snapshot unless it exists. The unpack runs on a
    /// blocking thread that keeps the snapshot's lock until it is done, even if this
    /// future is dropped (it is then told to stop).
    async fn ensure_snapshot(&self, layer: &Layer) -> Result<()> {
        let dir = self.inner.paths.snapshot(&layer.chain_id);
        let lock = self.inner.locks.lock(layer.chain_id.as_str()).await;
        if tokio::fs::try_exists(&dir).await.unwrap_or(false) {
            return Ok(());
        }
        let cancel = Arc::new(AtomicBool::new(false));
        let _cancel_on_drop = CancelOnDrop(cancel.clone());
        let inner = self.inner.clone();
        let layer = layer.clone();
        blocking("unpack layer", move || {
            let _lock = lock;
            let tmp_dir = inner.paths.tmp();
            let tmp = tempfile::Builder::new()
                .prefix("unpack-")
                .tempdir_in(&tmp_dir)
                .map_err(Error::io("create temp dir in", &tmp_dir))?;
            let fs_dir = tmp.path().join("fs");
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(&fs_dir)
                .map_err(Error::io("create", &fs_dir))?;
            let blob = inner.paths.blob(&layer.digest);
            let file = fs::File::open(&blob).map_err(Error::io("open", &blob))?;
            let opts = UnpackOptions {
                expected_diff_id: Some(layer.diff_id.clone()),
                max_bytes: inner.opts.max_layer_bytes,
                min_free_bytes: inner.opts.min_free_bytes,
                cancel: Some(cancel),
            };
            let unpacked = unpack_layer(file, &fs_dir, &opts).map_err(|source| Error::Unpack {
                digest: layer.digest.clone(),
                source,
            })?;
            // Power-loss safety for the files, then an atomic publish.
            let root = fs::File::open(tmp.path()).map_err(Error::io("open", tmp.path()))?;
            nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&root))
                .map_err(|e| Error::io("syncfs", tmp.path())(e.into()))?;
            let tmp = tmp.keep();
            if let Err(e) = fs::rename(&tmp, &dir) {
                let _ = fs::remove_dir_all(&tmp);
                return Err(Error::io("rename into", &dir)(e));
            }
            sync_dir(&inner.paths.snapshots())?;
            inner
                .meta
                .put_snapshot(layer.chain_id.as_str(), unpacked.file_bytes)?;
            inner
                .counters
                .layers_unpacked
                .fetch_add(1, Ordering::Relaxed);
            debug!(chain_id = %layer.chain_id, bytes = unpacked.file_bytes, "layer unpacked");
            Ok(())
        })
        .await
    }
}

/// Renames the verified, synced `tmp` to the blob `path`.
fn persist_blob(tmp: tempfile::NamedTempFile, path: &std::path::Path) -> Result<()> {
    let dir = path.parent().expect("blob paths have a parent");
    fs::create_dir_all(dir).map_err(Error::io("create", dir))?;
    tmp.persist(path)
        .map_err(|e| Error::io("rename into", path)(e.error))?;
    sync_dir(dir)
}

fn rate(bytes: u64, elapsed: Duration) -> u64 {
    (bytes as f64 / elapsed.as_secs_f64().max(0.001)) as u64
}
