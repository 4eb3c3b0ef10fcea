//! Image metadata in redb. Tables:
//! - `images`: image id -> [`Image`] as JSON (the record is the truth for its tags and
//!   digests);
//! - `refs`: `name:tag` or `name@digest` -> image id (an index of the records);
//! - `snapshots`: chain id -> bytes written when unpacked;
//! - `holders`: holder id (a container) -> chain ids it uses, as JSON.
//!
//! Every change is one write transaction, so a crash leaves the old or the new state.
//! The functions are synchronous: call them on a blocking thread, except the lookups
//! of [`Meta::cached`] are served from memory: the images and their references
//! are also kept decoded (the index), built again by each change, so
//! that ImageStatus and ListImages read no disk and decode no JSON.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{Database, Durability, ReadableTable, TableDefinition};

use crate::error::{Error, Result};
use crate::image::Image;

const IMAGES: TableDefinition<&str, &[u8]> = TableDefinition::new("images");
const REFS: TableDefinition<&str, &str> = TableDefinition::new("refs");
const SNAPSHOTS: TableDefinition<&str, u64> = TableDefinition::new("snapshots");
const HOLDERS: TableDefinition<&str, &[u8]> = TableDefinition::new("holders");

/// What garbage collection must keep.
#[derive(Debug, Default)]
pub(crate) struct Roots {
    /// Blob digests (config and layers) of every image.
    pub(crate) blobs: HashSet<String>,
    /// Chain ids of every image and every holder.
    pub(crate) snapshots: HashSet<String>,
}

pub(crate) struct Meta {
    db: Database,
    /// The decoded images and references, `None` until built after a change.
    index: RwLock<Option<Arc<Index>>>,
    /// Changes of the images table so far: an index built from an older state is not
    /// kept.
    generation: AtomicU64,
}

/// The images table and the references, decoded.
#[derive(Debug, Default)]
pub(crate) struct Index {
    images: BTreeMap<String, Image>,
    refs: HashMap<String, String>,
}

impl Index {
    pub(crate) fn get(&self, id: &str) -> Option<Image> {
        self.images.get(id).cloned()
    }

    pub(crate) fn resolve_ref(&self, reference: &str) -> Option<String> {
        self.refs.get(reference).cloned()
    }

    pub(crate) fn list(&self) -> Vec<Image> {
        self.images.values().cloned().collect()
    }

    /// Ids starting with `prefix` (`sha256:` included), at most two.
    pub(crate) fn ids_with_prefix(&self, prefix: &str) -> Vec<String> {
        self.images
            .range(prefix.to_owned()..)
            .map(|(k, _)| k)
            .take_while(|k| k.starts_with(prefix))
            .take(2)
            .cloned()
            .collect()
    }
}

fn decode(key: &str, bytes: &[u8]) -> Result<Image> {
    Image::from_record(key, bytes)
}

fn encode(image: &Image) -> Vec<u8> {
    image.to_record()
}

impl Meta {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let db = Database::create(path)?;
        let tx = db.begin_write()?;
        tx.open_table(IMAGES)?;
        tx.open_table(REFS)?;
        tx.open_table(SNAPSHOTS)?;
        tx.open_table(HOLDERS)?;
        tx.commit()?;
        let meta = Self {
            db,
            index: RwLock::new(None),
            generation: AtomicU64::new(0),
        };
        // Built now, so that the first lookups are served from memory too.
        if let Err(e) = meta.index() {
            tracing::debug!(error = %e, "build the image index");
        }
        Ok(meta)
    }

    /// Whether lookups are served from memory now (no disk read, no decoding).
    #[cfg(test)]
    pub(crate) fn is_indexed(&self) -> bool {
        self.cached().is_some()
    }

    /// The index if it is built: lookups in it read no disk.
    pub(crate) fn cached(&self) -> Option<Arc<Index>> {
        self.index
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The index, built from the tables if a change dropped it.
    pub(crate) fn index(&self) -> Result<Arc<Index>> {
        if let Some(index) = self.cached() {
            return Ok(index);
        }
        let generation = self.generation.load(Ordering::Acquire);
        let tx = self.db.begin_read()?;
        let mut index = Index::default();
        for row in tx.open_table(IMAGES)?.iter()? {
            let (k, v) = row?;
            index
                .images
                .insert(k.value().to_owned(), decode(k.value(), v.value())?);
        }
        for row in tx.open_table(REFS)?.iter()? {
            let (k, v) = row?;
            index
                .refs
                .insert(k.value().to_owned(), v.value().to_owned());
        }
        let index = Arc::new(index);
        let mut slot = self.index.write().unwrap_or_else(PoisonError::into_inner);
        // A change committed since the read began: this index may miss it.
        if self.generation.load(Ordering::Acquire) == generation {
            *slot = Some(Arc::clone(&index));
        }
        Ok(index)
    }

    /// Drops the index after a committed change of the images or references, and
    /// builds it again at once, on the writer's (blocking) thread: the lookup that
    /// follows a change (ImageStatus after a pull) is then served from memory too.
    /// A failed build is left to the next lookup.
    fn changed(&self) {
        {
            let mut slot = self.index.write().unwrap_or_else(PoisonError::into_inner);
            self.generation.fetch_add(1, Ordering::AcqRel);
            *slot = None;
        }
        if let Err(e) = self.index() {
            tracing::debug!(error = %e, "build the image index");
        }
    }

    #[cfg(test)]
    pub(crate) fn get(&self, id: &str) -> Result<Option<Image>> {
        Ok(self.index()?.get(id))
    }

    #[cfg(test)]
    pub(crate) fn resolve_ref(&self, reference: &str) -> Result<Option<String>> {
        Ok(self.index()?.resolve_ref(reference))
    }

    #[cfg(test)]
    pub(crate) fn list(&self) -> Result<Vec<Image>> {
        Ok(self.index()?.list())
    }

    /// Records `image` under its tags and digests, merged with an existing record of
    /// the same id. A reference that named another image moves here; an image left
    /// with no reference is deleted, as containerd does.
    pub(crate) fn put(&self, image: Image) -> Result<Image> {
        let id = image.id.to_string();
        let tx = self.db.begin_write()?;
        let stored = {
            let mut images = tx.open_table(IMAGES)?;
            let mut refs = tx.open_table(REFS)?;
            let new_refs = image.repo_tags.iter().chain(&image.repo_digests);
            for r in new_refs {
                let old = refs
                    .insert(r.as_str(), id.as_str())?
                    .map(|v| v.value().to_owned());
                let Some(old) = old.filter(|old| *old != id) else {
                    continue;
                };
                let record = images.get(old.as_str())?.map(|v| decode(&old, v.value()));
                let Some(mut record) = record.transpose()? else {
                    continue;
                };
                record.repo_tags.retain(|t| t != r);
                record.repo_digests.retain(|d| d != r);
                if record.repo_tags.is_empty() && record.repo_digests.is_empty() {
                    images.remove(old.as_str())?;
                } else {
                    images.insert(old.as_str(), encode(&record).as_slice())?;
                }
            }
            let existing = images.get(id.as_str())?.map(|v| decode(&id, v.value()));
            let mut stored = image;
            if let Some(old) = existing.transpose()? {
                for t in old.repo_tags {
                    if !stored.repo_tags.contains(&t) {
                        stored.repo_tags.push(t);
                    }
                }
                for d in old.repo_digests {
                    if !stored.repo_digests.contains(&d) {
                        stored.repo_digests.push(d);
                    }
                }
                stored.pinned |= old.pinned;
                // The blobs first recorded stay (the same config can come with other
                // manifests and compressions, say from a docker save archive): an
                // image exports the same bytes whichever of its names brought it again.
                if old.manifests.is_some() {
                    stored.manifests = old.manifests;
                    stored.layers = old.layers;
                    stored.size = old.size;
                }
            }
            images.insert(id.as_str(), encode(&stored).as_slice())?;
            stored
        };
        tx.commit()?;
        self.changed();
        Ok(stored)
    }

    /// Deletes the image `id` and every reference to it.
    pub(crate) fn remove(&self, id: &str) -> Result<Option<Image>> {
        let tx = self.db.begin_write()?;
        let removed = {
            let mut images = tx.open_table(IMAGES)?;
            let mut refs = tx.open_table(REFS)?;
            let removed = images.remove(id)?.map(|v| decode(id, v.value()));
            let removed = removed.transpose()?;
            if let Some(image) = &removed {
                for r in image.repo_tags.iter().chain(&image.repo_digests) {
                    let points_here = refs.get(r.as_str())?.is_some_and(|v| v.value() == id);
                    if points_here {
                        refs.remove(r.as_str())?;
                    }
                }
            }
            removed
        };
        tx.commit()?;
        if removed.is_some() {
            self.changed();
        }
        Ok(removed)
    }

    pub(crate) fn set_pinned(&self, id: &str, pinned: bool) -> Result<Option<Image>> {
        let tx = self.db.begin_write()?;
        let updated = {
            let mut images = tx.open_table(IMAGES)?;
            let found = images.get(id)?.map(|v| decode(id, v.value()));
            match found.transpose()? {
                None => None,
                Some(mut image) => {
                    image.pinned = pinned;
                    images.insert(id, encode(&image).as_slice())?;
                    Some(image)
                }
            }
        };
        tx.commit()?;
        if updated.is_some() {
            self.changed();
        }
        Ok(updated)
    }

    pub(crate) fn put_snapshot(&self, chain_id: &str, bytes: u64) -> Result<()> {
        let tx = self.db.begin_write()?;
        tx.open_table(SNAPSHOTS)?.insert(chain_id, bytes)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn remove_snapshots(&self, chain_ids: &[String]) -> Result<()> {
        let tx = self.db.begin_write()?;
        {
            let mut snapshots = tx.open_table(SNAPSHOTS)?;
            for c in chain_ids {
                snapshots.remove(c.as_str())?;
            }
        }
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn snapshot_ids(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read()?;
        let snapshots = tx.open_table(SNAPSHOTS)?;
        let mut out = Vec::new();
        for row in snapshots.iter()? {
            out.push(row?.0.value().to_owned());
        }
        Ok(out)
    }

    /// Records that `holder` uses the snapshots of image `id`; false if there is no
    /// such image.
    pub(crate) fn hold(&self, holder: &str, id: &str) -> Result<bool> {
        let tx = self.db.begin_write()?;
        let held = {
            let images = tx.open_table(IMAGES)?;
            let found = images.get(id)?.map(|v| decode(id, v.value()));
            match found.transpose()? {
                None => false,
                Some(image) => {
                    let chains: Vec<String> = image.chain_ids().map(|c| c.to_string()).collect();
                    let value = serde_json::to_vec(&chains).expect("strings serialise");
                    tx.open_table(HOLDERS)?.insert(holder, value.as_slice())?;
                    true
                }
            }
        };
        tx.commit()?;
        Ok(held)
    }

    /// Not durable on its own (no fsync): the next durable commit persists it, and a
    /// crash before one leaves the hold, which the holder's owner releases again.
    pub(crate) fn release(&self, holder: &str) -> Result<()> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(Durability::None);
        tx.open_table(HOLDERS)?.remove(holder)?;
        tx.commit()?;
        Ok(())
    }

    pub(crate) fn holders(&self) -> Result<Vec<String>> {
        let tx = self.db.begin_read()?;
        let holders = tx.open_table(HOLDERS)?;
        let mut out = Vec::new();
        for row in holders.iter()? {
            out.push(row?.0.value().to_owned());
        }
        Ok(out)
    }

    pub(crate) fn roots(&self) -> Result<Roots> {
        let tx = self.db.begin_read()?;
        let mut roots = Roots::default();
        for row in tx.open_table(IMAGES)?.iter()? {
            let (k, v) = row?;
            let image = decode(k.value(), v.value())?;
            roots.blobs.insert(image.id.to_string());
            for manifest in image.manifests.iter().flat_map(|m| m.digests()) {
                roots.blobs.insert(manifest.to_string());
            }
            for layer in &image.layers {
                roots.blobs.insert(layer.digest.to_string());
                roots.snapshots.insert(layer.chain_id.to_string());
            }
        }
        for row in tx.open_table(HOLDERS)?.iter()? {
            let (k, v) = row?;
            let chains: Vec<String> =
                serde_json::from_slice(v.value()).map_err(|source| Error::CorruptRecord {
                    key: k.value().to_owned(),
                    source,
                })?;
            roots.snapshots.extend(chains);
        }
        Ok(roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;

    fn image(hex: char, tags: &[&str]) -> Image {
        Image {
            id: Digest::parse(&format!("sha256:{}", hex.to_string().repeat(64))).unwrap(),
            repo_tags: tags.iter().map(|t| t.to_string()).collect(),
            repo_digests: Vec::new(),
            size: 1,
            config: Default::default(),
            layers: Vec::new(),
            pinned: false,
            manifests: None,
        }
    }

    #[test]
    fn the_index_follows_every_change() {
        let dir = tempfile::tempdir().unwrap();
        let meta = Meta::open(&dir.path().join("meta.redb")).unwrap();
        let a = image('a', &["docker.io/library/a:1"]);
        assert!(meta.is_indexed());
        meta.put(a.clone()).unwrap();
        // Built again by the change itself.
        assert!(meta.is_indexed());
        assert_eq!(meta.list().unwrap().len(), 1);
        // A tag moved to another image: both lookups see it at once.
        meta.put(image('b', &["docker.io/library/a:1"])).unwrap();
        assert!(meta.is_indexed());
        let id = meta.resolve_ref("docker.io/library/a:1").unwrap().unwrap();
        assert!(id.starts_with("sha256:bbbb"), "{id}");
        // The image left with no reference went.
        assert_eq!(meta.get(a.id.as_str()).unwrap(), None);
        meta.set_pinned(&id, true).unwrap();
        assert!(meta.get(&id).unwrap().unwrap().pinned);
        assert_eq!(
            meta.index().unwrap().ids_with_prefix("sha256:bb"),
            vec![id.clone()]
        );
        meta.remove(&id).unwrap();
        assert!(meta.list().unwrap().is_empty());
        assert_eq!(meta.resolve_ref("docker.io/library/a:1").unwrap(), None);
    }
}
