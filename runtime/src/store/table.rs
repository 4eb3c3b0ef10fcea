//! One kind of object (sandboxes or containers): a redb table, the in-memory map of
//! its entries, and the load, add, update and remove that keep the two in step.
//!
//! Locks: the map's `RwLock` is taken only to look up, insert or delete an `Arc`,
//! never while the database is written; a change of one object's status takes only
//! that entry's lock.

use std::collections::HashMap;
use std::fmt::Display;
use std::hash::Hash;
use std::str::FromStr;
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use redb::{Database, ReadableTable, TableDefinition, TableHandle};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entry::{Entry, RECORD_VERSION, Record, RecordRef};
use super::error::{Error, Object, Result};
use super::ids::{self, ResolveError};

/// Records of objects that could not be loaded, under `<table>/<key>`, kept as they
/// were for someone to inspect.
pub(crate) const QUARANTINE: TableDefinition<&str, &[u8]> = TableDefinition::new("quarantine");

/// Metadata that knows its table, id and name.
pub(crate) trait Keyed: Serialize + DeserializeOwned + Send + Sync {
    /// The object's id type.
    type Id: Clone + Eq + Hash + Display + AsRef<str> + FromStr + Send + Sync;
    /// Its status type.
    type Status: Clone + Serialize + DeserializeOwned + Send;
    /// What it is, for messages.
    const WHAT: Object;
    /// Its table.
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]>;
    /// Its id.
    fn id(&self) -> &Self::Id;
    /// Its reserved name.
    fn name(&self) -> &str;
}

/// A database result, its large error boxed.
pub(crate) type DbResult<T> = std::result::Result<T, Box<redb::Error>>;

/// Boxes any of redb's errors, so `?` works across them.
pub(crate) trait Db<T> {
    fn db(self) -> DbResult<T>;
}

impl<T, E: Into<redb::Error>> Db<T> for std::result::Result<T, E> {
    fn db(self) -> DbResult<T> {
        self.map_err(|e| Box::new(e.into()))
    }
}

/// Records that load, and those that don't.
type Loaded<M> = (Vec<(M, <M as Keyed>::Status)>, Vec<Bad>);

type Map<M> = HashMap<<M as Keyed>::Id, Arc<Entry<M, <M as Keyed>::Status>>>;

/// A record that could not be loaded, and why.
pub(crate) struct Bad {
    pub(crate) key: String,
    pub(crate) bytes: Vec<u8>,
    pub(crate) reason: String,
}

pub(crate) struct Table<M: Keyed> {
    map: RwLock<Map<M>>,
}

fn db_error<M: Keyed>(
    id: &dyn Display,
    op: &'static str,
) -> impl FnOnce(Box<redb::Error>) -> Error {
    let id = id.to_string();
    move |source| Error::Db {
        what: M::WHAT,
        id,
        op,
        source,
    }
}

fn encode<M: Keyed>(metadata: &M, status: &M::Status) -> Vec<u8> {
    let record = RecordRef {
        version: RECORD_VERSION,
        metadata,
        status,
    };
    serde_json::to_vec(&record).expect("a record of plain data always serialises")
}

fn decode<M: Keyed>(key: &str, bytes: &[u8]) -> Result<(M, M::Status), String> {
    let record: Record<M, M::Status> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if record.version != RECORD_VERSION {
        return Err(format!("unsupported record version {}", record.version));
    }
    if record.metadata.id().as_ref() != key {
        return Err(format!("record holds id {}", record.metadata.id()));
    }
    Ok((record.metadata, record.status))
}

/// Writes `bytes` under `key` in one transaction. With `new`, an existing key is left
/// alone and `Ok(false)` returned.
fn put<M: Keyed>(db: &Database, key: &str, bytes: &[u8], new: bool) -> DbResult<bool> {
    let tx = db.begin_write().db()?;
    {
        let mut table = tx.open_table(M::TABLE).db()?;
        if new && table.get(key).db()?.is_some() {
            return Ok(false);
        }
        table.insert(key, bytes).db()?;
    }
    commit(tx)?;
    Ok(true)
}

fn delete<M: Keyed>(db: &Database, key: &str) -> DbResult<()> {
    let tx = db.begin_write().db()?;
    tx.open_table(M::TABLE).db()?.remove(key).db()?;
    commit(tx)?;
    Ok(())
}

/// Commits a write transaction, timed for the metrics.
fn commit(tx: redb::WriteTransaction) -> DbResult<()> {
    let start = std::time::Instant::now();
    tx.commit().db()?;
    crate::metrics::store_commit(start.elapsed());
    Ok(())
}

fn read_all<M: Keyed>(db: &Database) -> DbResult<Loaded<M>> {
    let tx = db.begin_read().db()?;
    let table = tx.open_table(M::TABLE).db()?;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for row in table.iter().db()? {
        let (k, v) = row.db()?;
        match decode::<M>(k.value(), v.value()) {
            Ok(record) => good.push(record),
            Err(reason) => bad.push(Bad {
                key: k.value().to_owned(),
                bytes: v.value().to_vec(),
                reason,
            }),
        }
    }
    Ok((good, bad))
}

fn quarantine<M: Keyed>(db: &Database, bad: &[Bad]) -> DbResult<()> {
    let tx = db.begin_write().db()?;
    {
        let mut table = tx.open_table(M::TABLE).db()?;
        let mut q = tx.open_table(QUARANTINE).db()?;
        for b in bad {
            let qkey = format!("{}/{}", M::TABLE.name(), b.key);
            q.insert(qkey.as_str(), b.bytes.as_slice()).db()?;
            table.remove(b.key.as_str()).db()?;
        }
    }
    tx.commit().db()?;
    Ok(())
}

impl<M: Keyed> Table<M> {
    /// Loads every record of the table. A record that can't be decoded is moved to
    /// the quarantine table and logged; only a failing database is an error.
    pub(crate) fn load(db: &Database) -> Result<Self> {
        let (good, bad) = read_all::<M>(db).map_err(db_error::<M>(&"*", "load"))?;
        for b in &bad {
            tracing::warn!(
                what = %M::WHAT,
                key = %b.key,
                reason = %b.reason,
                "quarantined a record that can't be loaded"
            );
        }
        if !bad.is_empty() {
            quarantine::<M>(db, &bad).map_err(db_error::<M>(&"*", "quarantine"))?;
        }
        let map = good
            .into_iter()
            .map(|(m, s)| (m.id().clone(), Arc::new(Entry::new(m, s))))
            .collect();
        Ok(Self {
            map: RwLock::new(map),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Map<M>> {
        // Each write under the lock is one map operation: poisoning can't leave it
        // half changed.
        self.map.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Map<M>> {
        self.map.write().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn get(&self, id: &M::Id) -> Result<Arc<Entry<M, M::Status>>> {
        self.read().get(id).cloned().ok_or_else(|| Error::NotFound {
            what: M::WHAT,
            id: id.to_string(),
        })
    }

    pub(crate) fn resolve(&self, prefix: &str) -> Result<Arc<Entry<M, M::Status>>> {
        let map = self.read();
        match ids::resolve(prefix, map.keys()) {
            Ok(id) => Ok(map[&id].clone()),
            Err(ResolveError::NotFound(id)) => Err(Error::NotFound { what: M::WHAT, id }),
            Err(ResolveError::Ambiguous(prefix)) => Err(Error::Ambiguous {
                what: M::WHAT,
                prefix,
            }),
            Err(ResolveError::Invalid(id)) => Err(Error::InvalidId {
                what: M::WHAT,
                id,
                reason: "not a hex id prefix".into(),
            }),
        }
    }

    pub(crate) fn list(&self) -> Vec<Arc<Entry<M, M::Status>>> {
        self.read().values().cloned().collect()
    }

    /// Persists a new record, then makes it visible.
    pub(crate) fn insert(
        &self,
        db: &Database,
        metadata: M,
        status: M::Status,
    ) -> Result<Arc<Entry<M, M::Status>>> {
        let id = metadata.id().clone();
        let exists = || Error::AlreadyExists {
            what: M::WHAT,
            id: id.to_string(),
        };
        if self.read().contains_key(&id) {
            return Err(exists());
        }
        let bytes = encode(&metadata, &status);
        let fresh =
            put::<M>(db, id.as_ref(), &bytes, true).map_err(db_error::<M>(&id, "persist"))?;
        if !fresh {
            return Err(exists());
        }
        let entry = Arc::new(Entry::new(metadata, status));
        self.write().insert(id, entry.clone());
        Ok(entry)
    }

    /// Applies `f` to a copy of the status, persists the copy, and only then swaps it
    /// in. If `f` or the write fails, memory and disk keep the old status.
    pub(crate) fn update<T, E>(
        &self,
        db: &Database,
        id: &M::Id,
        f: impl FnOnce(&mut M::Status) -> Result<T, E>,
    ) -> Result<T, E>
    where
        E: From<Error>,
    {
        let entry = self.get(id)?;
        let mut slot = entry.lock();
        if slot.removed {
            return Err(Error::NotFound {
                what: M::WHAT,
                id: id.to_string(),
            }
            .into());
        }
        let mut next = slot.status.clone();
        let out = f(&mut next)?;
        let bytes = encode(entry.metadata(), &next);
        put::<M>(db, id.as_ref(), &bytes, false).map_err(db_error::<M>(id, "persist"))?;
        slot.status = next;
        Ok(out)
    }

    /// Deletes the record, then the entry; later updates of it find nothing.
    pub(crate) fn remove(&self, db: &Database, id: &M::Id) -> Result<Arc<Entry<M, M::Status>>> {
        let entry = self.get(id)?;
        {
            let mut slot = entry.lock();
            if slot.removed {
                return Err(Error::NotFound {
                    what: M::WHAT,
                    id: id.to_string(),
                });
            }
            delete::<M>(db, id.as_ref()).map_err(db_error::<M>(id, "delete"))?;
            slot.removed = true;
        }
        self.write().remove(id);
        Ok(entry)
    }
}
