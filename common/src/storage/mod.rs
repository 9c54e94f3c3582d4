//! The log store: the one interface every node keeps its log behind.
//!
//! The replication core reads and appends through [`LogStore`]; HTTP handlers read
//! through the same handle. [`FileStore`] is the durable implementation the nodes use;
//! [`MemStore`] serves tests and the simulated network. Both pass [`conformance`].

pub mod checksum;
pub mod conformance;
mod file;
mod grow;
mod mem;

pub use file::{FileStore, Recovery};
pub use mem::MemStore;

use crate::protocol::Entry;
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Weak};
use std::time::Duration;
use thiserror::Error;

/// When an appended entry counts as durable: acknowledged to a writer, counted toward a
/// write concern, served to readers and replicated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Durability {
    /// Once `fdatasync` returned: an acknowledged write survives a power loss or kernel
    /// crash of every node. Syncs are shared by every write waiting at the time (group
    /// commit). The default.
    Fsync,
    /// Once written to the operating system (`pwrite`, in the page cache); the log is
    /// `fdatasync`'d every interval. A crash or `kill -9` of the process loses nothing;
    /// a power loss or kernel crash loses up to one interval of acknowledged writes on
    /// each node it hits, and when it hits every node at once (one machine, one rack,
    /// one power feed) acknowledged writes are gone whatever the write concern was.
    /// Like MongoDB's `journalCommitInterval` or NATS JetStream's `sync_interval`.
    Interval(Duration),
}

impl Durability {
    /// `fsync` or `relaxed`, as the command line and `/status` say it.
    pub fn mode(&self) -> &'static str {
        match self {
            Durability::Fsync => "fsync",
            Durability::Interval(_) => "relaxed",
        }
    }

    /// The flush interval of relaxed mode.
    pub fn sync_interval_ms(&self) -> Option<u64> {
        match self {
            Durability::Fsync => None,
            Durability::Interval(d) => Some(d.as_millis() as u64),
        }
    }
}

impl std::fmt::Display for Durability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Durability::Fsync => f.write_str("fsync"),
            Durability::Interval(d) => write!(f, "relaxed (fsync every {} ms)", d.as_millis()),
        }
    }
}

/// Open a node's log in `dir` with `durability`, log what recovery found and, in
/// interval mode, start the flusher.
pub fn open_for_node(
    dir: &std::path::Path,
    durability: Durability,
) -> Result<Arc<FileStore>, StorageError> {
    let store = Arc::new(FileStore::open_with(dir, durability)?);
    store.log_recovery();
    tracing::info!(%durability, "durability");
    spawn_flusher(&store);
    Ok(store)
}

/// Start the thread that fdatasyncs `store` every interval of its
/// [`Durability::Interval`] (nothing for [`Durability::Fsync`]). The thread ends when
/// the store is dropped.
pub fn spawn_flusher(store: &Arc<FileStore>) -> Option<std::thread::JoinHandle<()>> {
    let Durability::Interval(every) = store.durability() else {
        return None;
    };
    let weak: Weak<FileStore> = Arc::downgrade(store);
    let spawned = std::thread::Builder::new()
        .name("log-flusher".into())
        .spawn(move || {
            loop {
                std::thread::sleep(every);
                let Some(store) = weak.upgrade() else { return };
                if store.unsynced() > 0
                    && let Err(e) = store.sync_to_disk()
                {
                    tracing::error!(error = %e, "interval fsync failed; retrying next interval");
                }
            }
        });
    match spawned {
        Ok(h) => Some(h),
        Err(e) => {
            tracing::error!(error = %e, "cannot start the log flusher thread");
            None
        }
    }
}

#[derive(Debug, Clone, Error, PartialEq, Eq)]
pub enum StorageError {
    /// An append that does not continue the log exactly.
    #[error("append out of order: the log expects id {expected}, got {got}")]
    NotContiguous { expected: u64, got: u64 },
    /// The underlying medium failed.
    #[error("storage failure: {0}")]
    Io(String),
}

/// Who belongs to the set, as the master saves it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Membership {
    /// The names of the secondaries that have joined.
    pub members: Vec<String>,
    /// Names removed with `DELETE /members/{name}`: refused when they connect, until
    /// the master re-admits them (`POST /members`).
    #[serde(default)]
    pub removed: Vec<String>,
    /// Every member's addresses and priority, as the master last shared them.
    #[serde(default)]
    pub hosts: Vec<crate::protocol::MemberInfo>,
    /// Counts the changes of `hosts` and `members` (MongoDB's `configVersion`).
    #[serde(default)]
    pub config_version: u64,
    /// The term of the master that made this list (MongoDB's `configTerm`). Lists are
    /// ordered by `(config_term, config_version)`: a master newly elected stamps its
    /// list with its term, so it replaces a list that an earlier master changed but did
    /// not get onto a majority, as a new leader's log replaces an uncommitted tail.
    #[serde(default)]
    pub config_term: u64,
}

impl Membership {
    /// The list's place in the order of lists: newer compares greater.
    pub fn stamp(&self) -> ConfigStamp {
        ConfigStamp {
            term: self.config_term,
            version: self.config_version,
        }
    }
}

/// Where a member list stands in the order of lists: by the term of the master that
/// made it, then by its version within that term.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ConfigStamp {
    pub term: u64,
    pub version: u64,
}

impl std::fmt::Display for ConfigStamp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "v{} of term {}", self.version, self.term)
    }
}

/// Entries a member cut from its log because the master of a newer term does not hold
/// them (see `docs/failover.md`), and where they were kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RolledBack {
    pub count: u64,
    /// The JSON-lines file that holds them (None for a store without files).
    pub file: Option<std::path::PathBuf>,
    /// The first id cut.
    pub from_id: u64,
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

    /// Whether [`LogStore::sync`] may block on the medium (and so belongs on a blocking
    /// thread). False when it only updates memory.
    fn sync_blocks(&self) -> bool {
        true
    }

    /// The highest id stored (durable or not), 0 for an empty log.
    fn last_id(&self) -> u64;

    /// The highest id known durable.
    fn durable_id(&self) -> u64;

    /// Up to `limit` entries starting at id `from` (ids below 1 are read from 1), never
    /// past [`LogStore::written_id`]: a reader sees what a crash of the process cannot
    /// take back (a power loss still can until [`LogStore::sync`]).
    fn read(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError>;

    /// Hand every entry appended so far to the operating system (or the medium), without
    /// waiting for it to be durable, so that reads return it; returns the highest id
    /// written. [`LogStore::sync`] does this too, and then makes it durable.
    fn flush(&self) -> Result<u64, StorageError>;

    /// The highest id written (what reads return), durable or not; at least
    /// [`LogStore::durable_id`].
    fn written_id(&self) -> u64;

    /// Remove, durably, every entry after `after` (nothing if the log is not longer).
    /// A secondary does this when it holds entries its master lost (see
    /// `docs/protocol.md`, "One history").
    fn truncate(&self, after: u64) -> Result<(), StorageError>;

    /// The current term of the master that owns this log (0: never set).
    fn term(&self) -> u64;

    /// Save the term (durably).
    fn set_term(&self, term: u64) -> Result<(), StorageError>;

    /// Identity of this log's history (0: not set yet). A secondary only follows a
    /// master whose log has the same identity.
    fn log_id(&self) -> u64;

    /// Set the log identity (durably).
    fn set_log_id(&self, id: u64) -> Result<(), StorageError>;

    /// The member this one voted for in [`LogStore::term`], if any.
    fn voted_for(&self) -> Option<String>;

    /// Save the term and the vote in it together (durably), before the vote is sent.
    fn set_vote(&self, term: u64, voted_for: Option<String>) -> Result<(), StorageError>;

    /// The term starts of this log (see [`crate::replication::election::History`]).
    fn history(&self) -> crate::replication::election::History;

    /// How up to date this log is, for votes: its last id, and the term of the last
    /// term start it holds.
    fn log_position(&self) -> crate::replication::election::LogPosition {
        let last_id = self.last_id();
        crate::replication::election::LogPosition {
            last_term: self.history().last_term(last_id),
            last_id,
        }
    }

    /// Save the term starts (durably).
    fn set_history(
        &self,
        history: &crate::replication::election::History,
    ) -> Result<(), StorageError>;

    /// Cut every entry after `after`, as [`LogStore::truncate`], keeping what is cut
    /// where a person can find it (a file store: `rollback/` in its directory) before
    /// it goes. None if nothing was cut.
    fn rollback(&self, after: u64) -> Result<Option<RolledBack>, StorageError> {
        let last = self.last_id();
        if last <= after {
            return Ok(None);
        }
        self.truncate(after)?;
        Ok(Some(RolledBack {
            count: last - after,
            file: None,
            from_id: after + 1,
        }))
    }

    /// The checksum of the entries `1..=up_to` ([`checksum`]), or None if this store
    /// has not written that far. This default folds the whole prefix; a store that
    /// keeps [`checksum::PrefixHash`] values reads less than a block.
    fn checksum(&self, up_to: u64) -> Result<Option<checksum::Sum>, StorageError> {
        if up_to > self.written_id() {
            return Ok(None);
        }
        let mut sum = checksum::EMPTY;
        let mut next = 1;
        while next <= up_to {
            let batch = self.read(next, (up_to - next + 1).min(10_000) as usize)?;
            let Some(last) = batch.last().map(|e| e.id) else {
                return Ok(None);
            };
            sum = checksum::fold_entries(sum, &batch);
            next = last + 1;
        }
        Ok(Some(sum))
    }

    /// Who belongs to the set, as last saved.
    fn membership(&self) -> Membership;

    /// A power loss, for fault tests (`POST /admin/crash`): the store keeps only what it
    /// knows is on the disk, as a disk that loses what was not fdatasync'd, and the
    /// process ends at once (SIGABRT), with no other write after the cut. The default,
    /// for a store with nothing on a disk, only ends the process.
    fn power_loss(&self) -> ! {
        std::process::abort()
    }

    /// Save the membership (durably, members and removed names together).
    fn set_membership(&self, membership: &Membership) -> Result<(), StorageError>;

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
    fn sync_blocks(&self) -> bool {
        (**self).sync_blocks()
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
    fn flush(&self) -> Result<u64, StorageError> {
        (**self).flush()
    }
    fn written_id(&self) -> u64 {
        (**self).written_id()
    }
    fn truncate(&self, after: u64) -> Result<(), StorageError> {
        (**self).truncate(after)
    }
    fn term(&self) -> u64 {
        (**self).term()
    }
    fn set_term(&self, term: u64) -> Result<(), StorageError> {
        (**self).set_term(term)
    }
    fn log_id(&self) -> u64 {
        (**self).log_id()
    }
    fn set_log_id(&self, id: u64) -> Result<(), StorageError> {
        (**self).set_log_id(id)
    }
    fn membership(&self) -> Membership {
        (**self).membership()
    }
    fn voted_for(&self) -> Option<String> {
        (**self).voted_for()
    }
    fn set_vote(&self, term: u64, voted_for: Option<String>) -> Result<(), StorageError> {
        (**self).set_vote(term, voted_for)
    }
    fn history(&self) -> crate::replication::election::History {
        (**self).history()
    }
    fn set_history(
        &self,
        history: &crate::replication::election::History,
    ) -> Result<(), StorageError> {
        (**self).set_history(history)
    }
    fn rollback(&self, after: u64) -> Result<Option<RolledBack>, StorageError> {
        (**self).rollback(after)
    }
    fn set_membership(&self, membership: &Membership) -> Result<(), StorageError> {
        (**self).set_membership(membership)
    }
    fn power_loss(&self) -> ! {
        (**self).power_loss()
    }
}
