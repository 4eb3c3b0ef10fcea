//! Image metadata in redb. Tables:
//! - `images`: image id -> [`Image`] as JSON (the record is the truth for its tags and
//!   digests);
//! - `refs`: `name:tag` or `name@digest` -> image id (an index of the records);
//! - `snapshots`: chain id -> bytes written when unpacked;
//! - `holders`: holder id (a container) -> chain ids it uses, as JSON.
//!
//! Every change is one write transaction, so a crash leaves the old or the new state.
//! The functions are synchronous: call them on a blocking thread.

use std::collections::HashSet;
use std::path::Path;

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
        Ok(Self { db })
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<Image>> {
        let tx = self.db.begin_read()?;
        let images = tx.open_table(IMAGES)?;
        let found = images.get(id)?;
        found.map(|v| decode(id, v.value())).transpose()
    }

    pub(crate) fn resolve_ref(&self, reference: &str) -> Result<Option<String>> {
        let tx = self.db.begin_read()?;
        let refs = tx.open_table(REFS)?;
        Ok(refs.get(reference)?.map(|v| v.value().to_owned()))
    }

    pub(crate) fn list(&self) -> Result<Vec<Image>> {
        let tx = self.db.begin_read()?;
        let images = tx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for row in images.iter()? {
            let (k, v) = row?;
            out.push(decode(k.value(), v.value())?);
        }
        Ok(out)
    }

    /// Ids starting with `prefix` (`sha256:` included), at most two.
    pub(crate) fn ids_with_prefix(&self, prefix: &str) -> Result<Vec<String>> {
        let tx = self.db.begin_read()?;
        let images = tx.open_table(IMAGES)?;
        let mut out = Vec::new();
        for row in images.range(prefix..)? {
            let (k, _) = row?;
            if !k.value().starts_with(prefix) || out.len() == 2 {
                break;
            }
            out.push(k.value().to_owned());
        }
        Ok(out)
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
