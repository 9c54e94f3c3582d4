//! A conformance suite every [`LogStore`] implementation runs: `run_all(|| MyStore::new())`,
//! each case on a fresh store from the builder; a durable store also runs
//! [`run_reopen`], which closes and reopens it.

use super::{LogStore, Membership, StorageError};
use crate::protocol::Entry;

fn entry(id: u64) -> Entry {
    Entry {
        term: 1,
        id,
        message: format!("m{id}"),
        request_id: None,
    }
}

/// Run every case against stores made by `make`. Panics on the first violation.
pub fn run_all<S: LogStore>(make: impl Fn() -> S) {
    empty_store(&make());
    append_and_read(&make());
    refuses_gaps_and_repeats(&make());
    reads_clamp(&make());
    log_identity(&make());
    sync_covers_every_append(&make());
    membership(&make());
    request_ids(&make());
    flush_makes_appends_readable(&make());
    truncation(&make());
    terms(&make());
    checksums(&make());
}

/// The checksum of `1..=up_to` of `log`, folded from the start.
fn expected_sum(log: &[Entry], up_to: u64) -> super::checksum::Sum {
    super::checksum::fold_entries(super::checksum::EMPTY, &log[..up_to as usize])
}

fn checksums<S: LogStore>(s: &S) {
    use super::checksum::{BLOCK, EMPTY};
    assert_eq!(s.checksum(0).unwrap(), Some(EMPTY));
    assert_eq!(s.checksum(1).unwrap(), None);
    let mut log: Vec<Entry> = (1..=2 * BLOCK + 10).map(entry).collect();
    // Appended in uneven pieces that straddle the blocks.
    for piece in log.chunks(333) {
        s.append(piece).unwrap();
    }
    if s.written_id() < 5 {
        assert_eq!(s.checksum(5).unwrap(), None, "not written yet");
    }
    s.flush().unwrap();
    for up_to in [1, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 10] {
        assert_eq!(
            s.checksum(up_to).unwrap(),
            Some(expected_sum(&log, up_to)),
            "{up_to}"
        );
    }
    assert_eq!(s.checksum(2 * BLOCK + 11).unwrap(), None);
    // Cut inside the second block, with entries appended but not written; another
    // history goes on from the cut.
    s.append(&[entry(2 * BLOCK + 11)]).unwrap();
    let after = BLOCK + 100;
    s.truncate(after).unwrap();
    log.truncate(after as usize);
    assert_eq!(s.checksum(after).unwrap(), Some(expected_sum(&log, after)));
    assert_eq!(s.checksum(after + 1).unwrap(), None);
    let more: Vec<Entry> = (after + 1..=after + BLOCK)
        .map(|id| Entry {
            term: 7,
            ..entry(id)
        })
        .collect();
    s.append(&more).unwrap();
    log.extend(more);
    s.sync().unwrap();
    for up_to in [after, after + 1, 2 * BLOCK, after + BLOCK] {
        assert_eq!(
            s.checksum(up_to).unwrap(),
            Some(expected_sum(&log, up_to)),
            "{up_to}"
        );
    }
    assert_ne!(
        s.checksum(after + 1).unwrap(),
        Some(expected_sum(
            &(1..=after + 1).map(entry).collect::<Vec<_>>(),
            after + 1
        )),
        "another term at the same id is another prefix"
    );
}

fn flush_makes_appends_readable<S: LogStore>(s: &S) {
    s.append(&[entry(1), entry(2)]).unwrap();
    assert_eq!(s.flush().unwrap(), 2);
    assert_eq!(s.written_id(), 2);
    assert!(s.durable_id() <= s.written_id());
    assert_eq!(s.read(1, 10).unwrap(), vec![entry(1), entry(2)]);
    assert_eq!(s.sync().unwrap(), 2);
    assert_eq!(s.durable_id(), 2);
}

fn truncation<S: LogStore>(s: &S) {
    s.append(&(1..=5).map(entry).collect::<Vec<_>>()).unwrap();
    s.sync().unwrap();
    s.append(&[entry(6)]).unwrap(); // appended, not even written yet
    s.truncate(3).unwrap();
    assert_eq!(s.last_id(), 3);
    assert!(s.durable_id() <= 3 && s.written_id() <= 3);
    assert_eq!(
        s.read(1, 10).unwrap(),
        (1..=3).map(entry).collect::<Vec<_>>()
    );
    s.truncate(7).unwrap(); // past the end: nothing to do
    assert_eq!(s.last_id(), 3);
    // The log goes on from the cut, with other contents.
    let mut other = entry(4);
    other.message = "another history".into();
    s.append(std::slice::from_ref(&other)).unwrap();
    assert_eq!(s.sync().unwrap(), 4);
    assert_eq!(s.read(3, 10).unwrap(), vec![entry(3), other]);
    s.truncate(0).unwrap();
    assert_eq!(s.last_id(), 0);
    assert_eq!(s.read(1, 10).unwrap(), vec![]);
}

fn terms<S: LogStore>(s: &S) {
    assert_eq!(s.term(), 0);
    s.set_term(3).unwrap();
    assert_eq!(s.term(), 3);
}

fn request_ids<S: LogStore>(s: &S) {
    let mut keyed = entry(2);
    keyed.request_id = Some("k-2 ✓".into());
    s.append(&[entry(1), keyed.clone(), entry(3)]).unwrap();
    s.sync().unwrap();
    assert_eq!(s.read(2, 1).unwrap(), vec![keyed]);
    assert_eq!(s.request_ids().unwrap(), vec![("k-2 ✓".to_string(), 2)]);
}

fn sync_covers_every_append<S: LogStore>(s: &S) {
    assert_eq!(s.sync().unwrap(), 0);
    s.append(&[entry(1), entry(2)]).unwrap();
    assert_eq!(s.sync().unwrap(), 2);
    assert_eq!(s.durable_id(), 2);
    assert!(s.durable_id() <= s.last_id());
    assert_eq!(s.read(1, 10).unwrap().len(), 2);
}

fn membership<S: LogStore>(s: &S) {
    assert_eq!(s.membership(), Membership::default());
    let m = Membership {
        members: vec!["s1".to_string(), "s2".to_string()],
        removed: vec!["s3".to_string()],
        hosts: vec![crate::protocol::MemberInfo {
            name: "s1".into(),
            comm: "127.0.0.1:4001".into(),
            http: "127.0.0.1:8001".into(),
            priority: 2,
        }],
        config_version: 3,
        config_term: 2,
    };
    s.set_membership(&m).unwrap();
    assert_eq!(s.membership(), m);
}

/// Everything synced, the log identity and the membership survive closing and
/// reopening the store at `dir`.
pub fn run_reopen<S: LogStore>(dir: &std::path::Path, open: impl Fn(&std::path::Path) -> S) {
    {
        let s = open(dir);
        s.set_log_id(9).unwrap();
        s.set_membership(&Membership {
            members: vec!["a".to_string()],
            removed: vec!["b".to_string()],
            ..Membership::default()
        })
        .unwrap();
        s.set_term(4).unwrap();
        let mut entries: Vec<Entry> = (1..=100).map(entry).collect();
        entries[41].request_id = Some("order-42".into());
        s.append(&entries).unwrap();
        assert_eq!(s.sync().unwrap(), 100);
    }
    let s = open(dir);
    assert_eq!(s.last_id(), 100);
    assert_eq!(s.durable_id(), 100, "what was recovered is durable");
    let back = s.read(1, 1000).unwrap();
    let mut want: Vec<Entry> = (1..=100).map(entry).collect();
    want[41].request_id = Some("order-42".into());
    assert_eq!(back, want);
    assert_eq!(s.request_ids().unwrap(), vec![("order-42".to_string(), 42)]);
    assert_eq!(s.log_id(), 9);
    assert_eq!(s.membership().members, vec!["a".to_string()]);
    assert_eq!(s.membership().removed, vec!["b".to_string()]);
    assert_eq!(s.term(), 4);
    // And the log goes on from there.
    s.append(&[entry(101)]).unwrap();
    s.sync().unwrap();
    // A truncation is durable: what was cut stays cut, what follows it survives.
    s.truncate(90).unwrap();
    s.append(&[entry(91)]).unwrap();
    s.sync().unwrap();
    drop(s);
    let s = open(dir);
    assert_eq!(s.last_id(), 91);
    assert_eq!(s.read(90, 10).unwrap(), vec![entry(90), entry(91)]);
    // Checksums are the log's, whatever the store kept of them before it closed.
    let mut want: Vec<Entry> = (1..=91).map(entry).collect();
    want[41].request_id = Some("order-42".into());
    for up_to in [0, 42, 90, 91] {
        assert_eq!(s.checksum(up_to).unwrap(), Some(expected_sum(&want, up_to)));
    }
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
    s.sync().unwrap();
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
    s.sync().unwrap();
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
