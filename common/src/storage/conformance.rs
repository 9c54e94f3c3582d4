//! A conformance suite every [`LogStore`] implementation runs: `run_all(|| MyStore::new())`.
//! Each case gets a fresh store from the builder.

use super::{LogStore, StorageError};
use crate::protocol::Entry;

fn entry(id: u64) -> Entry {
    Entry {
        term: 1,
        id,
        message: format!("m{id}"),
    }
}

/// Run every case against stores made by `make`. Panics on the first violation.
pub fn run_all<S: LogStore>(make: impl Fn() -> S) {
    empty_store(&make());
    append_and_read(&make());
    refuses_gaps_and_repeats(&make());
    reads_clamp(&make());
    log_identity(&make());
}

fn empty_store<S: LogStore>(s: &S) {
    assert_eq!(s.last_id(), 0);
    assert_eq!(s.read(1, 10).unwrap(), vec![]);
    assert_eq!(s.log_id(), 0);
}

fn append_and_read<S: LogStore>(s: &S) {
    s.append(&[entry(1), entry(2)]).unwrap();
    s.append(&[]).unwrap();
    s.append(&[entry(3)]).unwrap();
    assert_eq!(s.last_id(), 3);
    assert_eq!(s.read(1, 100).unwrap(), vec![entry(1), entry(2), entry(3)]);
    assert_eq!(s.read(2, 1).unwrap(), vec![entry(2)]);
}

fn refuses_gaps_and_repeats<S: LogStore>(s: &S) {
    s.append(&[entry(1)]).unwrap();
    assert_eq!(
        s.append(&[entry(3)]),
        Err(StorageError::NotContiguous {
            expected: 2,
            got: 3
        })
    );
    assert_eq!(
        s.append(&[entry(1)]),
        Err(StorageError::NotContiguous {
            expected: 2,
            got: 1
        })
    );
    // A batch with a hole in the middle writes nothing.
    assert!(s.append(&[entry(2), entry(4)]).is_err());
    assert_eq!(s.last_id(), 1);
}

fn reads_clamp<S: LogStore>(s: &S) {
    s.append(&(1..=5).map(entry).collect::<Vec<_>>()).unwrap();
    assert_eq!(s.read(0, 2).unwrap(), vec![entry(1), entry(2)]);
    assert_eq!(s.read(5, 10).unwrap(), vec![entry(5)]);
    assert_eq!(s.read(6, 10).unwrap(), vec![]);
    assert_eq!(s.read(u64::MAX, 10).unwrap(), vec![]);
    assert_eq!(s.read(1, 0).unwrap(), vec![]);
}

fn log_identity<S: LogStore>(s: &S) {
    s.set_log_id(77).unwrap();
    assert_eq!(s.log_id(), 77);
}
