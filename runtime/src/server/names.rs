//! Name reservation with kubelet's retry in mind: a create that timed out on kubelet's
//! side is retried with the same metadata while the first may still run. The retry
//! waits for the first and answers with its result; a name held by a finished create
//! of the same config answers with that object; any other holder is a conflict.

use std::fmt::Display;
use std::future::Future;

use super::error::{Error, Result};
use crate::store::{Phase, Registrar};

/// What reserving a name found.
pub enum Reservation<K> {
    /// The name is now held for the new object.
    Reserved,
    /// The name is held by an object created from the same request.
    Existing(K),
}

/// Reserves `name` for `key`. When another create holds it, waits for that create
/// to settle; `same` tells whether the object it made was asked for with the same
/// config (then its key is the answer).
pub async fn reserve<K>(
    names: &Registrar<K>,
    name: &str,
    key: K,
    same: impl Fn(&K) -> bool,
) -> Result<Reservation<K>>
where
    K: Clone + PartialEq + Display,
{
    loop {
        let err = match names.reserve(name, key.clone()) {
            Ok(()) => return Ok(Reservation::Reserved),
            Err(err) => err,
        };
        let Some(holder) = names.watch(name) else {
            continue;
        };
        let other = holder.key.clone();
        let phase = match holder.phase() {
            Phase::Pending => holder.settled().await,
            p => p,
        };
        match phase {
            Phase::Committed if same(&other) => return Ok(Reservation::Existing(other)),
            Phase::Committed => return Err(err.into()),
            Phase::Released | Phase::Pending => continue,
        }
    }
}

/// Runs a create whose name is reserved to its end, in a task of its own: a client that
/// gives up must not cut it short (its retry waits for this result). Commits the name
/// when the create succeeds and releases it when it fails.
pub async fn run_to_end<K>(
    names: &Registrar<K>,
    name: &str,
    key: &K,
    what: &'static str,
    work: impl Future<Output = Result<()>> + Send + 'static,
) -> Result<()>
where
    K: Clone + PartialEq + Display,
{
    let result = tokio::spawn(work)
        .await
        .map_err(|source| Error::Task { what, source })?;
    match result {
        Ok(()) => {
            names.commit(name, key);
            Ok(())
        }
        Err(err) => {
            names.release_held(name, key);
            Err(err)
        }
    }
}
