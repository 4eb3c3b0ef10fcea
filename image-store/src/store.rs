//! The image store: opening it (and cleaning what a crash left), looking images up,
//! removing them, holding their snapshots for containers, garbage collection and disk
//! usage. Pulling is in `pull.rs`.
//!
//! On-disk layout under the root:
//! - `blobs/<algorithm>/<hex>`: verified blobs (configs and layers);
//! - `snapshots/<chain id hex>/fs`: one unpacked layer each, an overlayfs lowerdir;
//! - `tmp/`: downloads and unpacks in progress, and snapshots being deleted; emptied
//!   on open (it is on the same file system, so finished work is renamed out of it);
//! - `meta.redb`: the metadata database (`meta.rs`).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tracing::{info, warn};

use crate::digest::Digest;
use crate::error::{Error, Result};
use crate::image::Image;
use crate::locks::{KeyedLocks, Protected};
use crate::meta::{Index, Meta};
use crate::options::StoreOptions;
use crate::reference::ImageRef;
use crate::usage::{Usage, dir_usage};

/// The node's images. Cheap to clone; clones share everything.
#[derive(Clone)]
pub struct ImageStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) opts: StoreOptions,
    /// The registry endpoints pulls use now: `opts`' mirrors and insecure hosts at
    /// first, replaced by [`ImageStore::set_registry`].
    pub(crate) registry: std::sync::RwLock<Registry>,
    pub(crate) paths: Paths,
    pub(crate) meta: Meta,
    pub(crate) locks: KeyedLocks,
    pub(crate) protected: Protected,
    pub(crate) counters: Counters,
    pub(crate) pinned: HashSet<String>,
    /// A background garbage collection is queued and has not started yet.
    pub(crate) gc_queued: AtomicBool,
}

/// Where pulls go: mirrors per upstream registry, and the hosts reached over plain
/// HTTP (see [`StoreOptions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registry {
    /// Mirror endpoints per upstream registry host, tried in order before it.
    pub mirrors: std::collections::BTreeMap<String, Vec<String>>,
    /// Registry hosts (`host[:port]`) reached over plain HTTP.
    pub insecure: Vec<String>,
}

/// Paths of the on-disk layout.
pub(crate) struct Paths {
    root: PathBuf,
}

impl Paths {
    pub(crate) fn blobs(&self) -> PathBuf {
        self.root.join("blobs")
    }
    pub(crate) fn blob(&self, d: &Digest) -> PathBuf {
        self.blobs().join(d.algorithm()).join(d.hex())
    }
    pub(crate) fn snapshots(&self) -> PathBuf {
        self.root.join("snapshots")
    }
    pub(crate) fn snapshot(&self, chain_id: &Digest) -> PathBuf {
        self.snapshots().join(chain_id.hex())
    }
    pub(crate) fn tmp(&self) -> PathBuf {
        self.root.join("tmp")
    }
}

/// Counters since the store was opened.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) blobs_downloaded: AtomicU64,
    pub(crate) bytes_downloaded: AtomicU64,
    pub(crate) layers_unpacked: AtomicU64,
}

/// Work done by pulls since the store was opened, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PullStats {
    /// Blobs downloaded and verified (configs and layers; not manifests).
    pub blobs_downloaded: u64,
    /// Blob bytes received.
    pub bytes_downloaded: u64,
    /// Layers unpacked into snapshots.
    pub layers_unpacked: u64,
}

/// What a garbage collection removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Blobs deleted.
    pub blobs_removed: u64,
    /// Snapshots deleted.
    pub snapshots_removed: u64,
}

/// Runs `f` on a blocking thread.
pub(crate) async fn blocking<T: Send + 'static>(
    op: &'static str,
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|source| Error::Task { op, source })?
}

/// fsyncs a directory, so a rename into it survives a crash.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(Error::io("fsync", dir))
}

impl ImageStore {
    /// Opens (or creates) the store at `opts.root`: removes leftovers of interrupted
    /// pulls and collects content no image references.
    pub async fn open(opts: StoreOptions) -> Result<Self> {
        opts.validate()?;
        let paths = Paths {
            root: opts.root.clone(),
        };
        let pinned = opts
            .pinned
            .iter()
            .map(|r| ImageRef::parse(r).map(|r| r.to_string()))
            .collect::<Result<_>>()?;
        let meta = {
            let (tmp, dirs) = (paths.tmp(), [paths.blobs(), paths.snapshots()]);
            let db = opts.root.join("meta.redb");
            blocking("open image store", move || {
                for dir in dirs {
                    fs::create_dir_all(&dir).map_err(Error::io("create", &dir))?;
                }
                match fs::remove_dir_all(&tmp) {
                    Err(e) if e.kind() != io::ErrorKind::NotFound => {
                        return Err(Error::io("clean", &tmp)(e));
                    }
                    _ => {}
                }
                fs::create_dir_all(&tmp).map_err(Error::io("create", &tmp))?;
                Meta::open(&db)
            })
            .await?
        };
        let registry = std::sync::RwLock::new(Registry {
            mirrors: opts.mirrors.clone(),
            insecure: opts.insecure.clone(),
        });
        let store = Self {
            inner: Arc::new(Inner {
                registry,
                opts,
                paths,
                meta,
                locks: KeyedLocks::default(),
                protected: Protected::default(),
                counters: Counters::default(),
                pinned,
                gc_queued: AtomicBool::new(false),
            }),
        };
        let report = store.gc().await?;
        info!(root = %store.inner.opts.root.display(), ?report, "image store open");
        Ok(store)
    }

    /// Runs a metadata operation on a blocking thread.
    pub(crate) async fn meta<T: Send + 'static>(
        &self,
        op: &'static str,
        f: impl FnOnce(&Meta) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let inner = self.inner.clone();
        blocking(op, move || f(&inner.meta)).await
    }

    /// Finds an image as containerd does: by full id (`sha256:<hex>`), by reference
    /// (normalised: `busybox` finds `docker.io/library/busybox:latest`; a digest
    /// reference finds the image with that repo digest), or by a unique id prefix
    /// (with or without `sha256:`). `None` if nothing matches.
    pub async fn status(&self, reference_or_id: &str) -> Result<Option<Image>> {
        // From memory when the index is there: no blocking thread needed.
        if let Some(index) = self.inner.meta.cached() {
            return resolve(&index, reference_or_id);
        }
        let key = reference_or_id.to_owned();
        self.meta("image status", move |meta| {
            resolve(meta.index()?.as_ref(), &key)
        })
        .await
    }

    /// All images, or those matching `filter` (a reference or id, as [`Self::status`]).
    pub async fn list(&self, filter: Option<&str>) -> Result<Vec<Image>> {
        match filter.filter(|f| !f.is_empty()) {
            Some(f) => Ok(self.status(f).await?.into_iter().collect()),
            None => match self.inner.meta.cached() {
                Some(index) => Ok(index.list()),
                None => {
                    self.meta("list images", |meta| Ok(meta.index()?.list()))
                        .await
                }
            },
        }
    }

    /// Removes the image `reference_or_id` names, with all its tags and digests, then
    /// collects content no image or holder uses. A missing image is `Ok(None)`;
    /// snapshots held by containers stay until released (as containerd keeps
    /// snapshots used by containers).
    pub async fn remove(&self, reference_or_id: &str) -> Result<Option<Image>> {
        let removed = self.remove_record(reference_or_id).await?;
        if removed.is_some() {
            self.gc().await?;
        }
        Ok(removed)
    }

    /// Removes the image as [`Self::remove`] does, but leaves the collection of its
    /// content to a background task (on the current tokio runtime), so the call
    /// returns once the image's record is gone. The image is gone from lookups and
    /// lists at once; its content goes at the collection, or at the next opening
    /// of the store if the process dies first (opening collects too).
    pub async fn remove_and_collect_later(&self, reference_or_id: &str) -> Result<Option<Image>> {
        let removed = self.remove_record(reference_or_id).await?;
        if removed.is_some() {
            self.collect_later();
        }
        Ok(removed)
    }

    async fn remove_record(&self, reference_or_id: &str) -> Result<Option<Image>> {
        let key = reference_or_id.to_owned();
        let removed = self
            .meta("remove image", move |meta| {
                match resolve(meta.index()?.as_ref(), &key)? {
                    Some(image) => meta.remove(image.id.as_str()),
                    None => Ok(None),
                }
            })
            .await?;
        if let Some(image) = &removed {
            info!(image = %image.id, tags = ?image.repo_tags, "image removed");
        }
        Ok(removed)
    }

    /// Queues one background garbage collection; removals made before it starts
    /// share it.
    fn collect_later(&self) {
        if self.inner.gc_queued.swap(true, Ordering::AcqRel) {
            return;
        }
        let store = self.clone();
        tokio::spawn(async move {
            // Cleared before collecting: a removal from now on queues another run.
            store.inner.gc_queued.store(false, Ordering::Release);
            if let Err(e) = store.gc().await {
                warn!(error = %e, "background garbage collection");
            }
        });
    }

    /// Marks the image `reference_or_id` names as pinned or not.
    pub async fn set_pinned(&self, reference_or_id: &str, pinned: bool) -> Result<Image> {
        let key = reference_or_id.to_owned();
        self.meta("pin image", move |meta| {
            let image = resolve(meta.index()?.as_ref(), &key)?.ok_or(Error::NotFound {
                reference: key.clone(),
            })?;
            meta.set_pinned(image.id.as_str(), pinned)?
                .ok_or(Error::NotFound { reference: key })
        })
        .await
    }

    /// Records that `holder` (a container id) uses the snapshots of image `id`: they
    /// survive the image's removal until [`Self::release`]. Holding again replaces the
    /// holder's previous image. [`Error::NotFound`] if the image is gone.
    pub async fn hold(&self, holder: &str, id: &Digest) -> Result<()> {
        let (holder, id) = (holder.to_owned(), id.clone());
        self.meta("hold image", move |meta| {
            if meta.hold(&holder, id.as_str())? {
                Ok(())
            } else {
                Err(Error::NotFound {
                    reference: id.to_string(),
                })
            }
        })
        .await
    }

    /// Replaces the mirrors and insecure hosts that pulls use from now on (a reload of
    /// crustd's config); pulls already under way keep theirs. Checked as
    /// [`StoreOptions`] are: a bad endpoint changes nothing.
    pub fn set_registry(&self, registry: Registry) -> Result<()> {
        let mut check = self.inner.opts.clone();
        check.mirrors = registry.mirrors.clone();
        check.insecure = registry.insecure.clone();
        check.validate()?;
        *self
            .inner
            .registry
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = registry;
        Ok(())
    }

    /// The options of a pull starting now: the store's, with the registry endpoints
    /// of the moment.
    pub(crate) fn pull_options(&self) -> StoreOptions {
        let registry = self
            .inner
            .registry
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let mut opts = self.inner.opts.clone();
        opts.mirrors = registry.mirrors;
        opts.insecure = registry.insecure;
        opts
    }

    /// Finds the image `reference_or_id` names, as [`Self::status`] does, and holds it
    /// for `holder`, as [`Self::hold`] does, in one step; `Ok(None)` if there is no
    /// such image (or it was removed meanwhile).
    pub async fn status_and_hold(
        &self,
        reference_or_id: &str,
        holder: &str,
    ) -> Result<Option<Image>> {
        let (key, holder) = (reference_or_id.to_owned(), holder.to_owned());
        self.meta("hold image", move |meta| {
            let Some(image) = resolve(meta.index()?.as_ref(), &key)? else {
                return Ok(None);
            };
            Ok(meta.hold(&holder, image.id.as_str())?.then_some(image))
        })
        .await
    }

    /// Ends `holder`'s use of its image's snapshots; releasing an unknown holder is Ok.
    /// The snapshots go at the next garbage collection if nothing else uses them. A
    /// release is not fsynced on its own (it costs the caller no disk flush): a crash
    /// soon after may bring the hold back, so whoever holds releases, at start-up, the
    /// [`Self::holders`] that no longer exist (crustd does, for containers).
    pub async fn release(&self, holder: &str) -> Result<()> {
        let holder = holder.to_owned();
        self.meta("release image", move |meta| meta.release(&holder))
            .await
    }

    /// The holders recorded, so crustd can release those whose containers are gone.
    pub async fn holders(&self) -> Result<Vec<String>> {
        self.meta("list holders", |meta| meta.holders()).await
    }

    /// The image's layer directories as overlayfs `lowerdir` wants them: topmost first.
    pub fn lower_dirs(&self, image: &Image) -> Vec<PathBuf> {
        image
            .chain_ids()
            .rev()
            .map(|c| self.inner.paths.snapshot(c).join("fs"))
            .collect()
    }

    /// Bytes and inodes used by the image file system (blobs, snapshots, metadata),
    /// for ImageFsInfo.
    pub async fn usage(&self) -> Result<Usage> {
        let root = self.inner.opts.root.clone();
        blocking("image fs usage", move || Ok(dir_usage(&root)?)).await
    }

    /// The directory ImageFsInfo reports as the image file system's mount point.
    pub fn root(&self) -> &Path {
        &self.inner.opts.root
    }

    /// Work done by pulls since the store was opened.
    pub fn stats(&self) -> PullStats {
        let c = &self.inner.counters;
        PullStats {
            blobs_downloaded: c.blobs_downloaded.load(Ordering::Relaxed),
            bytes_downloaded: c.bytes_downloaded.load(Ordering::Relaxed),
            layers_unpacked: c.layers_unpacked.load(Ordering::Relaxed),
        }
    }

    /// Deletes blobs and snapshots that no image, holder or pull in progress uses.
    pub async fn gc(&self) -> Result<GcReport> {
        let exclusive = self.inner.protected.gc_lock.write().await;
        let inner = self.inner.clone();
        let (report, trash) = blocking("garbage collection", move || collect(&inner)).await?;
        drop(exclusive);
        if !trash.is_empty() {
            blocking("garbage collection", move || {
                for dir in trash {
                    if let Err(e) = fs::remove_dir_all(&dir) {
                        warn!(path = %dir.display(), error = %e, "cannot delete snapshot");
                    }
                }
                Ok(())
            })
            .await?;
        }
        if report != GcReport::default() {
            info!(?report, "garbage collected");
        }
        Ok(report)
    }
}

fn resolve(index: &Index, key: &str) -> Result<Option<Image>> {
    if let Ok(id) = Digest::parse(key)
        && let Some(image) = index.get(id.as_str())
    {
        return Ok(Some(image));
    }
    if let Ok(r) = ImageRef::parse(key)
        && let Some(id) = index.resolve_ref(&r.to_string())
    {
        return Ok(index.get(&id));
    }
    let hex = key.strip_prefix("sha256:").unwrap_or(key);
    if hex.is_empty() || hex.len() > 64 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Ok(None);
    }
    let ids = index.ids_with_prefix(&format!("sha256:{}", hex.to_ascii_lowercase()));
    match ids.as_slice() {
        [] => Ok(None),
        [id] => Ok(index.get(id)),
        _ => Err(Error::AmbiguousId {
            prefix: key.to_owned(),
        }),
    }
}

/// The collection itself, under the exclusive GC lock: deletes unused blobs, moves
/// unused snapshots to `tmp/` (fast) and returns them for deletion after the lock.
fn collect(inner: &Inner) -> Result<(GcReport, Vec<PathBuf>)> {
    let roots = inner.meta.roots()?;
    let keep =
        |key: &str, set: &HashSet<String>| set.contains(key) || inner.protected.contains(key);
    let mut report = GcReport::default();
    let blobs = inner.paths.blobs();
    for algorithm in read_names(&blobs)? {
        let dir = blobs.join(&algorithm);
        for hex in read_names(&dir)? {
            if !keep(&format!("{algorithm}:{hex}"), &roots.blobs) {
                let path = dir.join(&hex);
                fs::remove_file(&path).map_err(Error::io("delete blob", &path))?;
                report.blobs_removed += 1;
            }
        }
    }
    let snapshots = inner.paths.snapshots();
    let mut trash = Vec::new();
    for hex in read_names(&snapshots)? {
        if keep(&format!("sha256:{hex}"), &roots.snapshots) {
            continue;
        }
        let from = snapshots.join(&hex);
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, Ordering::Relaxed);
        let to = inner.paths.tmp().join(format!("trash-{hex}-{seq}"));
        fs::rename(&from, &to).map_err(Error::io("delete snapshot", &from))?;
        trash.push(to);
        report.snapshots_removed += 1;
    }
    let stale: Vec<String> = inner
        .meta
        .snapshot_ids()?
        .into_iter()
        .filter(|c| !keep(c, &roots.snapshots))
        .collect();
    inner.meta.remove_snapshots(&stale)?;
    Ok((report, trash))
}

fn read_names(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in fs::read_dir(dir).map_err(Error::io("read", dir))? {
        let entry = entry.map_err(Error::io("read", dir))?;
        if let Ok(name) = entry.file_name().into_string() {
            names.push(name);
        }
    }
    Ok(names)
}
