//! When a secondary syncs what it stored, and so acknowledges it.
//!
//! Every node of a cluster on one machine (or one disk) shares that disk's cache
//! flushes. A secondary that syncs each batch of write-concern-1 writes the moment it
//! arrives takes flushes from the master, which is the only node those writes wait
//! for: with three nodes on this machine's disk, the master's `fdatasync` took about
//! 0.5 ms instead of 0.12 (docs/benchmarks.md). So the master marks each live batch
//! `urgent` or not ([`crate::protocol::MasterFrame::AddMessages`]), and a secondary
//! gathers non-urgent batches for up to [`SYNC_DEFER`] before one sync, the way a
//! MongoDB secondary groups its journal commits unless a write asks for `j: true`.
//! Anything urgent syncs at once, with whatever was stored before it.
//!
//! What may be acknowledged is not decided here: [`super::SecondaryCore`] acknowledges
//! only what its store synced, and asks for a sync
//! ([`super::SecondaryCore::wants_sync`]). This schedule only says when.

use crate::protocol::MasterFrame;
use std::time::{Duration, Instant};

/// The longest a secondary holds entries that no write waits for before it syncs and
/// acknowledges them: what write-concern-1 traffic adds to the secondaries' lag.
pub const SYNC_DEFER: Duration = Duration::from_millis(10);

/// The secondary's sync schedule. Plain state, time passed in.
#[derive(Debug, Default)]
pub struct SyncSchedule {
    due: Option<Instant>,
}

impl SyncSchedule {
    /// Frames arrived and left entries to sync (`urgent`: one of them was, see
    /// [`is_urgent`]). True: sync now, then tell the core. False: wait until
    /// [`Self::due`].
    ///
    /// `defer_allowed` is false when a sync is cheap anyway (relaxed durability only
    /// writes to the page cache): then nothing waits.
    pub fn stored(&mut self, now: Instant, urgent: bool, defer_allowed: bool) -> bool {
        let urgent = !defer_allowed || urgent;
        if urgent || self.due.is_some_and(|due| now >= due) {
            self.due = None;
            return true;
        }
        self.due.get_or_insert(now + SYNC_DEFER);
        false
    }

    /// When the sync put off is due (None: none is).
    pub fn due(&self) -> Option<Instant> {
        self.due
    }

    /// The shell's timer fired: true if it is time to sync.
    pub fn timer(&mut self, now: Instant) -> bool {
        match self.due {
            Some(due) if now >= due => {
                self.due = None;
                true
            }
            _ => false,
        }
    }
}

/// Whether a frame asks for prompt acknowledgement: all but non-urgent live batches.
pub fn is_urgent(f: &MasterFrame) -> bool {
    !matches!(f, MasterFrame::AddMessages { urgent: false, .. })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(urgent: bool) -> MasterFrame {
        MasterFrame::AddMessages {
            entries: vec![],
            commit_id: 0,
            urgent,
            term: 1,
        }
    }

    #[test]
    fn non_urgent_batches_wait_together_until_due() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::default();
        assert!(!s.stored(t0, false, true));
        assert_eq!(s.due(), Some(t0 + SYNC_DEFER));
        // A later batch joins the same sync: the deadline does not move.
        let t1 = t0 + SYNC_DEFER / 2;
        assert!(!s.stored(t1, false, true));
        assert_eq!(s.due(), Some(t0 + SYNC_DEFER));
        assert!(!s.timer(t1), "not yet");
        assert!(s.timer(t0 + SYNC_DEFER));
        assert_eq!(s.due(), None);
        assert!(!s.timer(t0 + SYNC_DEFER * 2), "nothing held");
    }

    #[test]
    fn a_batch_arriving_after_the_deadline_syncs_at_once() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::default();
        assert!(!s.stored(t0, false, true));
        // The timer has not run yet (a busy loop): the next batch takes it along.
        assert!(s.stored(t0 + SYNC_DEFER, false, true));
        assert_eq!(s.due(), None);
    }

    #[test]
    fn urgent_frames_sync_at_once_with_what_waits() {
        let t0 = Instant::now();
        let mut s = SyncSchedule::default();
        assert!(!s.stored(t0, false, true));
        assert!(s.stored(t0, [add(false), add(true)].iter().any(is_urgent), true));
        assert_eq!(s.due(), None);

        let heartbeat = MasterFrame::Heartbeat {
            last_id: 2,
            commit_id: 0,
            term: 1,
        };
        assert!(is_urgent(&heartbeat), "not a live batch");
        assert!(!is_urgent(&add(false)));
        assert!(
            s.stored(t0, false, false),
            "no deferring when syncs are cheap"
        );
    }

    #[test]
    fn a_batch_from_an_older_master_is_urgent() {
        let old = rmp_serde::to_vec_named(&serde_json::json!({
            "AddMessages": {"entries": [], "commit_id": 3}
        }))
        .unwrap();
        let frame: MasterFrame = rmp_serde::from_slice(&old).unwrap();
        assert!(is_urgent(&frame), "{frame:?}");
    }
}
