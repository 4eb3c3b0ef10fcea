//! What the store keeps per object: an [`Entry`] in memory (immutable metadata and a
//! status behind its own lock) and a versioned record on disk.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// Version of the on-disk record layout; a record of another version is quarantined
/// at load until a migration exists for it.
pub(crate) const RECORD_VERSION: u32 = 1;

/// A stored sandbox or container: metadata that never changes after it is added, and
/// a status changed only through the store's `update_*`, which persists the change
/// before anyone can see it.
#[derive(Debug)]
pub struct Entry<M, S> {
    metadata: M,
    status: Mutex<Slot<S>>,
}

/// The status and whether the entry has been removed, under one lock, so an update
/// that waited for a removal doesn't write the record back.
#[derive(Debug)]
pub(crate) struct Slot<S> {
    pub(crate) status: S,
    pub(crate) removed: bool,
}

impl<M, S: Clone> Entry<M, S> {
    pub(crate) fn new(metadata: M, status: S) -> Self {
        Self {
            metadata,
            status: Mutex::new(Slot {
                status,
                removed: false,
            }),
        }
    }

    /// The immutable metadata.
    pub fn metadata(&self) -> &M {
        &self.metadata
    }

    /// A copy of the status now.
    pub fn status(&self) -> S {
        self.lock().status.clone()
    }

    /// The status lock. Held while an update computes and persists the new status,
    /// so updates of one object are serialised; never held across an await.
    pub(crate) fn lock(&self) -> MutexGuard<'_, Slot<S>> {
        // An update changes a copy and swaps it in with one assignment, so a panic
        // while the lock is held can't leave a half-changed status behind.
        self.status.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The on-disk form of an entry, borrowed for writing.
#[derive(Serialize)]
pub(crate) struct RecordRef<'a, M, S> {
    pub(crate) version: u32,
    pub(crate) metadata: &'a M,
    pub(crate) status: &'a S,
}

/// The on-disk form of an entry, owned for reading.
#[derive(Deserialize)]
pub(crate) struct Record<M, S> {
    pub(crate) version: u32,
    pub(crate) metadata: M,
    pub(crate) status: S,
}

/// Now, in nanoseconds since the Unix epoch, as CRI reports times.
pub fn now_nanos() -> i64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
}

/// Serde for a CRI protobuf message: its protobuf encoding, in base64. Lossless
/// (unknown fields aside) and compact, where prost messages have no serde of their own.
pub(crate) mod proto_base64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<M: prost::Message, S: Serializer>(
        m: &M,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(m.encode_to_vec()))
    }

    pub(crate) fn deserialize<'de, M, D>(d: D) -> Result<M, D::Error>
    where
        M: prost::Message + Default,
        D: Deserializer<'de>,
    {
        let text = String::deserialize(d)?;
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        M::decode(bytes.as_slice()).map_err(D::Error::custom)
    }
}

/// [`proto_base64`] for an optional message: `null` when absent.
pub(crate) mod proto_base64_opt {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<M: prost::Message, S: Serializer>(
        m: &Option<M>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match m {
            Some(m) => s.serialize_some(&STANDARD.encode(m.encode_to_vec())),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, M, D>(d: D) -> Result<Option<M>, D::Error>
    where
        M: prost::Message + Default,
        D: Deserializer<'de>,
    {
        let Some(text) = Option::<String>::deserialize(d)? else {
            return Ok(None);
        };
        let bytes = STANDARD.decode(text).map_err(D::Error::custom)?;
        M::decode(bytes.as_slice())
            .map(Some)
            .map_err(D::Error::custom)
    }
}
