//! The metadata of sandboxes and containers, in an embedded ACID database
//! (`<root>/meta/crust.redb`, redb as the image store uses), and the reservation of
//! their names.
//!
//! crustd can be SIGKILLed at any moment, so every change is one database
//! transaction: a crash leaves the old or the new record, never half of one. At
//! start [`Store::open`] loads every record into memory and re-reserves its name; a
//! record that can't be decoded is moved to a `quarantine` table and logged, never a
//! reason for crustd to exit.
//!
//! In memory each object is an [`Entry`]: immutable metadata plus a status that only
//! `update_*` changes (containerd's container and sandbox stores). Reads are snapshots
//! (`Arc`s of entries, clones of statuses).
//!
//! Writes are synchronous: a redb commit fsyncs, a few milliseconds. From async code
//! call them inside `spawn_blocking`; never hold an entry across a long await.

mod container;
mod entry;
mod error;
mod ids;
mod names;
mod sandbox;
mod table;
#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadableTable, TableDefinition};

pub use container::{ContainerMetadata, ContainerState, ContainerStatus, Exit, ProcessUser};
pub use entry::{Entry, now_nanos};
pub use error::{Error, ErrorKind, Object, Result};
pub use ids::{ContainerId, ID_LEN, IdError, ResolveError, SandboxId, resolve};
pub use names::{Holder, Phase, Registrar, container_name, sandbox_name};
pub use sandbox::{SandboxMetadata, SandboxState, SandboxStatus};
use table::{Db, DbResult, Keyed, QUARANTINE, Table};

/// A stored sandbox.
pub type Sandbox = Entry<SandboxMetadata, SandboxStatus>;
/// A stored container.
pub type Container = Entry<ContainerMetadata, ContainerStatus>;

const SANDBOXES: TableDefinition<&str, &[u8]> = TableDefinition::new("sandboxes");
const CONTAINERS: TableDefinition<&str, &[u8]> = TableDefinition::new("containers");

impl Keyed for SandboxMetadata {
    type Id = SandboxId;
    type Status = SandboxStatus;
    const WHAT: Object = Object::Sandbox;
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = SANDBOXES;

    fn id(&self) -> &SandboxId {
        &self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl Keyed for ContainerMetadata {
    type Id = ContainerId;
    type Status = ContainerStatus;
    const WHAT: Object = Object::Container;
    const TABLE: TableDefinition<'static, &'static str, &'static [u8]> = CONTAINERS;

    fn id(&self) -> &ContainerId {
        &self.id
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// The sandbox and container store. Share it behind an `Arc`.
pub struct Store {
    db: Database,
    sandboxes: Table<SandboxMetadata>,
    containers: Table<ContainerMetadata>,
    sandbox_names: Registrar<SandboxId>,
    container_names: Registrar<ContainerId>,
}

/// Reserves the names of loaded entries, committed: their creates finished.
fn reserve_loaded<M: Keyed>(names: &Registrar<M::Id>, entries: &[Arc<Entry<M, M::Status>>])
where
    M::Id: PartialEq,
{
    for e in entries {
        let m = e.metadata();
        match names.reserve(m.name(), m.id().clone()) {
            Ok(()) => {
                names.commit(m.name(), m.id());
            }
            Err(err) => {
                tracing::warn!(id = %m.id(), error = %err, "loaded a record whose name is taken")
            }
        }
    }
}

impl Store {
    /// Opens (creating if needed) `<root>/meta/crust.redb` and loads every record.
    pub fn open(root: &Path) -> Result<Self> {
        let dir = root.join("meta");
        std::fs::create_dir_all(&dir).map_err(|source| Error::Dir {
            path: dir.clone(),
            source,
        })?;
        let path = dir.join("crust.redb");
        let open_error = |source| Error::Open {
            path: path.clone(),
            source,
        };
        let db = Database::create(&path).db().map_err(open_error)?;
        create_tables(&db).map_err(open_error)?;
        let sandboxes = Table::load(&db)?;
        let containers = Table::load(&db)?;
        let store = Self {
            db,
            sandboxes,
            containers,
            sandbox_names: Registrar::new(Object::Sandbox),
            container_names: Registrar::new(Object::Container),
        };
        reserve_loaded(&store.sandbox_names, &store.sandboxes.list());
        reserve_loaded(&store.container_names, &store.containers.list());
        Ok(store)
    }

    /// The database file under `root`.
    pub fn path(root: &Path) -> PathBuf {
        root.join("meta").join("crust.redb")
    }

    /// Sandbox name reservations.
    pub fn sandbox_names(&self) -> &Registrar<SandboxId> {
        &self.sandbox_names
    }

    /// Container name reservations.
    pub fn container_names(&self) -> &Registrar<ContainerId> {
        &self.container_names
    }

    /// Persists a new sandbox and makes it visible. Its name is reserved for it (the
    /// caller normally reserved it before any work; the reservation stays `Pending`
    /// until the caller commits it). If the add fails, a reservation made here is
    /// released.
    pub fn add_sandbox(
        &self,
        metadata: SandboxMetadata,
        status: SandboxStatus,
    ) -> Result<Arc<Sandbox>> {
        add(
            &self.db,
            &self.sandboxes,
            &self.sandbox_names,
            metadata,
            status,
        )
    }

    /// The sandbox with the full id `id`.
    pub fn get_sandbox(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        self.sandboxes.get(id)
    }

    /// The sandbox whose id starts with `prefix` (a full id included), as clients see
    /// sandboxes: one still being started is not there yet ([`SandboxStatus::starting`]).
    pub fn resolve_sandbox(&self, prefix: &str) -> Result<Arc<Sandbox>> {
        let sandbox = self.sandboxes.resolve(prefix)?;
        if sandbox.status().starting() {
            return Err(Error::NotFound {
                what: error::Object::Sandbox,
                id: prefix.to_owned(),
            });
        }
        Ok(sandbox)
    }

    /// Every sandbox, in no order, those still being started included: for recovery and
    /// clean-up.
    pub fn list_sandboxes(&self) -> Vec<Arc<Sandbox>> {
        self.sandboxes.list()
    }

    /// The sandboxes clients see, in no order: those whose RunPodSandbox has answered
    /// (or was cut short and is being undone). A pod being started is not listed, as
    /// containerd does: kubelet would take a NOTREADY pod it did not ask for as one
    /// that died.
    pub fn published_sandboxes(&self) -> Vec<Arc<Sandbox>> {
        let mut list = self.sandboxes.list();
        list.retain(|s| !s.status().starting());
        list
    }

    /// Changes a sandbox's status through `f`, atomically: if `f` or the write fails,
    /// nothing changes, in memory or on disk.
    pub fn update_sandbox<T, E: From<Error>>(
        &self,
        id: &SandboxId,
        f: impl FnOnce(&mut SandboxStatus) -> Result<T, E>,
    ) -> Result<T, E> {
        self.sandboxes.update(&self.db, id, f)
    }

    /// Deletes a sandbox that has no containers left, and releases its name.
    pub fn remove_sandbox(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        let count = self.containers_of(id).len();
        if count > 0 {
            return Err(Error::SandboxNotEmpty {
                id: id.to_string(),
                count,
            });
        }
        let entry = self.sandboxes.remove(&self.db, id)?;
        self.sandbox_names.release_held(&entry.metadata().name, id);
        Ok(entry)
    }

    /// Persists a new container of an existing sandbox and makes it visible; its
    /// name is reserved as in [`Store::add_sandbox`].
    pub fn add_container(
        &self,
        metadata: ContainerMetadata,
        status: ContainerStatus,
    ) -> Result<Arc<Container>> {
        self.sandboxes.get(&metadata.sandbox_id)?;
        add(
            &self.db,
            &self.containers,
            &self.container_names,
            metadata,
            status,
        )
    }

    /// The container with the full id `id`.
    pub fn get_container(&self, id: &ContainerId) -> Result<Arc<Container>> {
        self.containers.get(id)
    }

    /// The container whose id starts with `prefix` (a full id included).
    pub fn resolve_container(&self, prefix: &str) -> Result<Arc<Container>> {
        self.containers.resolve(prefix)
    }

    /// Every container, in no order.
    pub fn list_containers(&self) -> Vec<Arc<Container>> {
        self.containers.list()
    }

    /// The containers of one sandbox.
    pub fn containers_of(&self, sandbox: &SandboxId) -> Vec<Arc<Container>> {
        let mut all = self.containers.list();
        all.retain(|c| c.metadata().sandbox_id == *sandbox);
        all
    }

    /// Changes a container's status through `f`, atomically, as
    /// [`Store::update_sandbox`].
    pub fn update_container<T, E: From<Error>>(
        &self,
        id: &ContainerId,
        f: impl FnOnce(&mut ContainerStatus) -> Result<T, E>,
    ) -> Result<T, E> {
        self.containers.update(&self.db, id, f)
    }

    /// Deletes a container and releases its name.
    pub fn remove_container(&self, id: &ContainerId) -> Result<Arc<Container>> {
        let entry = self.containers.remove(&self.db, id)?;
        self.container_names
            .release_held(&entry.metadata().name, id);
        Ok(entry)
    }

    /// Keys of the quarantined records, `<table>/<id>`, for inspection.
    pub fn quarantined(&self) -> Result<Vec<String>> {
        let read = || -> DbResult<Vec<String>> {
            let tx = self.db.begin_read().db()?;
            let table = tx.open_table(QUARANTINE).db()?;
            let mut keys = Vec::new();
            for row in table.iter().db()? {
                keys.push(row.db()?.0.value().to_owned());
            }
            Ok(keys)
        };
        read().map_err(|source| Error::Db {
            what: Object::Sandbox,
            id: "*".into(),
            op: "list quarantine",
            source,
        })
    }
}

fn create_tables(db: &Database) -> DbResult<()> {
    let tx = db.begin_write().db()?;
    tx.open_table(SANDBOXES).db()?;
    tx.open_table(CONTAINERS).db()?;
    tx.open_table(QUARANTINE).db()?;
    tx.commit().db()?;
    Ok(())
}

fn add<M: Keyed>(
    db: &Database,
    table: &Table<M>,
    names: &Registrar<M::Id>,
    metadata: M,
    status: M::Status,
) -> Result<Arc<Entry<M, M::Status>>>
where
    M::Id: PartialEq,
{
    let (name, id) = (metadata.name().to_owned(), metadata.id().clone());
    let held_before = names.watch(&name).is_some_and(|h| h.key == id);
    names.reserve(&name, id.clone())?;
    table.insert(db, metadata, status).inspect_err(|_| {
        if !held_before {
            names.release_held(&name, &id);
        }
    })
}
