use super::{LogStore, Membership, StorageError};
use crate::protocol::Entry;
use std::sync::RwLock;

/// A log kept in memory: everything appended counts as durable at once. Lost when the
/// process exits. For tests and the simulated network.
#[derive(Debug, Default)]
pub struct MemStore {
    inner: RwLock<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    entries: Vec<Entry>,
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
        Ok(self.last_id())
    }

    fn durable_id(&self) -> u64 {
        self.last_id()
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
}
