use super::{LogStore, Membership, StorageError};
use crate::protocol::Entry;
use std::sync::RwLock;

/// A log kept in memory. Lost when the process exits. For tests and the simulated
/// network.
///
/// [`MemStore::new`] counts everything appended as durable at once.
/// [`MemStore::volatile`] behaves like a disk: appends stay an unsynced tail until
/// [`LogStore::sync`] (or [`MemStore::sync_to`]), and [`MemStore::lose_unsynced`] cuts
/// that tail, as a power loss would.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: RwLock<Inner>,
    volatile: bool,
    /// With [`MemStore::fail_votes`]: saving a term and vote fails (a full disk).
    fail_votes: std::sync::atomic::AtomicBool,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
    /// With `volatile`: the highest id synced.
    durable: u64,
    log_id: u64,
    membership: Membership,
    term: u64,
    voted_for: Option<String>,
    history: crate::replication::election::History,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store whose appends are durable only once synced.
    pub fn volatile() -> Self {
        Self {
            volatile: true,
            ..Self::default()
        }
    }

    /// Make entries up to `upto` durable (a sync that began when the log ended there).
    pub fn sync_to(&self, upto: u64) {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let upto = upto.min(inner.entries.len() as u64);
        inner.durable = inner.durable.max(upto);
    }

    /// A power loss: cut every entry that was not synced (and the term starts past
    /// the cut). Returns how many entries were lost.
    pub fn lose_unsynced(&self) -> u64 {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if !self.volatile {
            return 0;
        }
        let keep = inner.durable;
        let lost = inner.entries.len() as u64 - keep;
        inner.entries.truncate(keep as usize);
        if !inner.history.0.is_empty() {
            inner.history.cut(keep);
        }
        lost
    }

    /// From now on, saving a term and vote fails (or works again, with `false`).
    pub fn fail_votes(&self, fail: bool) {
        (self.fail_votes).store(fail, std::sync::atomic::Ordering::Relaxed);
    }
}

impl LogStore for MemStore {
    fn append(&self, entries: &[Entry]) -> Result<(), StorageError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let first = inner.entries.len() as u64 + 1;
        for (expected, e) in (first..).zip(entries) {
            if e.id != expected {
                return Err(StorageError::NotContiguous {
                    expected,
                    got: e.id,
                });
            }
        }
        inner.entries.extend_from_slice(entries);
        Ok(())
    }

    fn sync(&self) -> Result<u64, StorageError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.durable = inner.entries.len() as u64;
        Ok(inner.durable)
    }

    fn durable_id(&self) -> u64 {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if self.volatile {
            inner.durable
        } else {
            inner.entries.len() as u64
        }
    }

    fn flush(&self) -> Result<u64, StorageError> {
        Ok(self.last_id())
    }

    fn written_id(&self) -> u64 {
        self.last_id()
    }

    fn truncate(&self, after: u64) -> Result<(), StorageError> {
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        let keep = (after as usize).min(inner.entries.len());
        inner.entries.truncate(keep);
        inner.durable = inner.durable.min(keep as u64);
        Ok(())
    }

    fn term(&self) -> u64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).term
    }

    fn set_term(&self, term: u64) -> Result<(), StorageError> {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).term = term;
        Ok(())
    }

    fn last_id(&self) -> u64 {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .entries
            .len() as u64
    }

    fn read(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let start = from.max(1) as usize - 1;
        Ok(inner
            .entries
            .iter()
            .skip(start)
            .take(limit)
            .cloned()
            .collect())
    }

    fn log_id(&self) -> u64 {
        self.inner.read().unwrap_or_else(|e| e.into_inner()).log_id
    }

    fn set_log_id(&self, id: u64) -> Result<(), StorageError> {
        self.inner.write().unwrap_or_else(|e| e.into_inner()).log_id = id;
        Ok(())
    }

    fn voted_for(&self) -> Option<String> {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .voted_for
            .clone()
    }

    fn set_vote(&self, term: u64, voted_for: Option<String>) -> Result<(), StorageError> {
        if self.fail_votes.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(StorageError::Io("the disk is full".into()));
        }
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        inner.term = term;
        inner.voted_for = voted_for;
        Ok(())
    }

    fn history(&self) -> crate::replication::election::History {
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if inner.history.0.is_empty() {
            // A log written without term starts: its entries tell them.
            return crate::replication::election::History::from_entry_terms(
                inner.entries.iter().map(|e| (e.id, e.term)),
            );
        }
        inner.history.clone()
    }

    fn set_history(
        &self,
        history: &crate::replication::election::History,
    ) -> Result<(), StorageError> {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .history = history.clone();
        Ok(())
    }

    fn membership(&self) -> Membership {
        self.inner
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .membership
            .clone()
    }

    fn set_membership(&self, membership: &Membership) -> Result<(), StorageError> {
        self.inner
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .membership = membership.clone();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn conformance() {
        super::super::conformance::run_all(super::MemStore::new);
    }

    #[test]
    fn conformance_volatile() {
        super::super::conformance::run_all(super::MemStore::volatile);
    }

    #[test]
    fn a_volatile_store_loses_only_what_was_not_synced() {
        use super::{LogStore, MemStore};
        use crate::protocol::Entry;
        let s = MemStore::volatile();
        let entry = |id| Entry {
            term: 1,
            id,
            message: format!("m{id}"),
            request_id: None,
        };
        s.append(&[entry(1), entry(2)]).unwrap();
        assert_eq!(s.durable_id(), 0);
        assert_eq!(s.sync().unwrap(), 2);
        s.append(&[entry(3), entry(4)]).unwrap();
        s.sync_to(3);
        assert_eq!((s.last_id(), s.durable_id()), (4, 3));
        assert_eq!(s.lose_unsynced(), 1);
        assert_eq!((s.last_id(), s.durable_id()), (3, 3));
        s.truncate(1).unwrap();
        assert_eq!(s.durable_id(), 1, "a cut takes the durable mark along");
        // An eager store loses nothing.
        let eager = MemStore::new();
        eager.append(&[entry(1)]).unwrap();
        assert_eq!((eager.durable_id(), eager.lose_unsynced()), (1, 0));
    }
}
