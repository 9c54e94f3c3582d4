//! The log store: the one interface every node keeps its log behind.
//!
//! The replication core reads and appends through [`LogStore`]; HTTP handlers read
//! through the same handle. [`FileStore`] is the durable implementation the nodes use;
//! [`MemStore`] serves tests and the simulated network. Both pass [`conformance`].

pub mod conformance;
mod file;
mod mem;

pub use file::{FileStore, Recovery};
pub use mem::MemStore;

use crate::protocol::Entry;
use thiserror::Error;

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StorageError {
    /// An append that does not continue the log exactly.
    #[error("append out of order: the log expects id {expected}, got {got}")]
    NotContiguous { expected: u64, got: u64 },
    /// The underlying medium failed.
    #[error("storage failure: {0}")]
    Io(String),
}

/// An append-only log of [`Entry`] with ids 1, 2, 3, ...
///
/// Implementations are internally synchronised: appends come from one owner (the
/// replication core), reads may come from any thread at the same time.
pub trait LogStore: Send + Sync {
    /// Append `entries`, whose ids must be `last_id() + 1`, `+ 2`, ... in order. The
    /// entries are written but not necessarily durable until [`LogStore::sync`].
    ///
    /// # Errors
    /// [`StorageError::NotContiguous`] if the ids do not continue the log (nothing is
    /// written then); [`StorageError::Io`] if the medium failed.
    fn append(&self, entries: &[Entry]) -> Result<(), StorageError>;

    /// Make every entry appended so far durable (fsync or the medium's equivalent) and
    /// return the highest durable id. Safe to call from another thread while appends go
    /// on: it covers at least what was appended before the call.
    fn sync(&self) -> Result<u64, StorageError>;

    /// The highest id stored (durable or not), 0 for an empty log.
    fn last_id(&self) -> u64;

    /// The highest id known durable.
    fn durable_id(&self) -> u64;

    /// Up to `limit` entries starting at id `from` (ids below 1 are read from 1), never
    /// past [`LogStore::durable_id`]: a reader never sees what a crash could take back.
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError>;

    /// Identity of this log's history (0: not set yet). A secondary only follows a
    /// master whose log has the same identity.
    fn log_id(&self) -> u64;

    /// Set the log identity (durably).
    fn set_log_id(&self, id: u64) -> Result<(), StorageError>;

    /// The names of the secondaries that have joined, as last saved.
    fn members(&self) -> Vec<String>;

    /// Save the membership (durably).
    fn set_members(&self, names: &[String]) -> Result<(), StorageError>;

    /// Every request id in the durable log with the id of its message, read back from
    /// the log (the master rebuilds its idempotency index from this when it starts).
    fn request_ids(&self) -> Result<Vec<(String, u64)>, StorageError> {
        let mut out = Vec::new();
        let mut from = 1;
        loop {
            let chunk = self.read(from, 10_000)?;
            let Some(last) = chunk.last().map(|e| e.id) else {
                return Ok(out);
            };
            out.extend(
                chunk
                    .into_iter()
                    .filter_map(|e| e.request_id.map(|k| (k, e.id))),
            );
            from = last + 1;
        }
    }
}

impl<T: LogStore + ?Sized> LogStore for std::sync::Arc<T> {
    fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        (**self).append(entries)
    }
    fn sync(&self) -> Result<u64, StorageError> {
        (**self).sync()
    }
    fn last_id(&self) -> u64 {
        (**self).last_id()
    }
    fn durable_id(&self) -> u64 {
        (**self).durable_id()
    }
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        (**self).read(from, limit)
    }
    fn log_id(&self) -> u64 {
        (**self).log_id()
    }
    fn set_log_id(&self, id: u64) -> Result<(), StorageError> {
        (**self).set_log_id(id)
    }
    fn members(&self) -> Vec<String> {
        (**self).members()
    }
    fn set_members(&self, names: &[String]) -> Result<(), StorageError> {
        (**self).set_members(names)
    }
}
