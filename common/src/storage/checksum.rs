//! Prefix checksums, `GET /checksum?upTo=N`: one hash over the entries 1..N of a log,
//! equal on two members exactly when they hold the same first N entries.
//!
//! The hash is a chain: `c(0)` is 32 zero bytes and
//! `c(n) = SHA-256(c(n-1) || id || term || message length || message)` (integers as
//! 8 bytes little-endian), so the checksum of a prefix does not depend on anything after
//! it, and two logs that differ anywhere in 1..N (an id's term, its text) differ from
//! that entry on. The request id is not part of it: it says how a message arrived, not
//! what the log holds.
//!
//! A store keeps a [`PrefixHash`]: the chain's value after every [`BLOCK`]th entry and
//! after the last one, updated as entries are appended (one SHA-256 compression or two
//! for a short message). Asking for any N then reads at most `BLOCK - 1` entries after
//! the block before it, never the whole log: 32 bytes of memory per 1,024 entries.

use crate::protocol::Entry;
use sha2::{Digest, Sha256};

/// Entries between two kept chain values.
pub const BLOCK: u64 = 1024;

/// A chain value: the checksum of a prefix.
pub type Sum = [u8; 32];

/// The checksum of the empty prefix.
pub const EMPTY: Sum = [0; 32];

/// One step of the chain: the checksum of a prefix extended by one entry.
pub fn fold(prev: &Sum, id: u64, term: u64, message: &[u8]) -> Sum {
    let mut h = Sha256::new();
    h.update(prev);
    h.update(id.to_le_bytes());
    h.update(term.to_le_bytes());
    h.update((message.len() as u64).to_le_bytes());
    h.update(message);
    h.finalize().into()
}

/// Fold `entries` (which must continue the prefix `prev` covers) onto it.
pub fn fold_entries<'a>(prev: Sum, entries: impl IntoIterator<Item = &'a Entry>) -> Sum {
    entries
        .into_iter()
        .fold(prev, |s, e| fold(&s, e.id, e.term, e.message.as_bytes()))
}

/// Lower-case hex, as the API shows a checksum.
pub fn hex(sum: &Sum) -> String {
    sum.iter().map(|b| format!("{b:02x}")).collect()
}

/// Entries folded onto a chain's end: see [`PrefixHash::extend`].
#[derive(Debug)]
pub struct Extension {
    from: u64,
    tip: (u64, Sum),
    blocks: Vec<Sum>,
}

/// The chain values a store keeps for its log.
#[derive(Debug, Clone)]
pub struct PrefixHash {
    /// `blocks[k]` is the checksum of entries `1..=k * BLOCK` (`blocks[0]` = [`EMPTY`]).
    blocks: Vec<Sum>,
    /// The checksum of the whole log, and how many entries that is.
    tip: Sum,
    tip_id: u64,
}

impl Default for PrefixHash {
    fn default() -> Self {
        Self {
            blocks: vec![EMPTY],
            tip: EMPTY,
            tip_id: 0,
        }
    }
}

impl PrefixHash {
    /// The log's length as far as the chain has been folded.
    pub fn len(&self) -> u64 {
        self.tip_id
    }

    pub fn is_empty(&self) -> bool {
        self.tip_id == 0
    }

    /// Extend the chain by the next entry (`id` must be `len() + 1`).
    pub fn push(&mut self, id: u64, term: u64, message: &[u8]) {
        debug_assert_eq!(id, self.tip_id + 1, "the chain grows one id at a time");
        self.tip = fold(&self.tip, id, term, message);
        self.tip_id = id;
        if id.is_multiple_of(BLOCK) {
            self.blocks.push(self.tip);
        }
    }

    /// The chain's end: how many entries it covers and their checksum.
    pub fn tip(&self) -> (u64, Sum) {
        (self.tip_id, self.tip)
    }

    /// Fold `entries` onto the chain's end as [`Self::tip`] gave it, without the chain
    /// itself, so a store can hash outside its lock; [`Self::apply`] adds the result.
    pub fn extend<'a>(tip: (u64, Sum), entries: impl IntoIterator<Item = &'a Entry>) -> Extension {
        let (mut id, mut sum) = tip;
        let mut blocks = Vec::new();
        for e in entries {
            debug_assert_eq!(e.id, id + 1, "the chain grows one id at a time");
            sum = fold(&sum, e.id, e.term, e.message.as_bytes());
            id = e.id;
            if id.is_multiple_of(BLOCK) {
                blocks.push(sum);
            }
        }
        Extension {
            from: tip.0,
            tip: (id, sum),
            blocks,
        }
    }

    /// Add what [`Self::extend`] computed from this chain's current end.
    pub fn apply(&mut self, ext: Extension) {
        debug_assert_eq!(ext.from, self.tip_id, "extended from another end");
        self.blocks.extend(ext.blocks);
        (self.tip_id, self.tip) = ext.tip;
    }

    /// Where computing the checksum of `1..=up_to` starts: the entry after the returned
    /// id, from the returned value; the entries `id + 1 ..= up_to` remain to be folded
    /// (none when `up_to` is the whole log). None if `up_to` is past the log.
    pub fn start_for(&self, up_to: u64) -> Option<(u64, Sum)> {
        if up_to > self.tip_id {
            return None;
        }
        if up_to == self.tip_id {
            return Some((up_to, self.tip));
        }
        let k = up_to / BLOCK;
        Some((k * BLOCK, self.blocks[k as usize]))
    }

    /// Forget everything after entry `after`; returns where to start refolding the
    /// entries `id + 1 ..= after` that the chain then needs (with [`Self::refold`]), or
    /// None when nothing was cut.
    pub fn cut(&mut self, after: u64) -> Option<(u64, Sum)> {
        if after >= self.tip_id {
            return None;
        }
        let k = after / BLOCK;
        self.blocks.truncate(k as usize + 1);
        self.tip = self.blocks[k as usize];
        self.tip_id = k * BLOCK;
        Some((self.tip_id, self.tip))
    }

    /// After [`Self::cut`]: the entries from the returned start on, in order.
    pub fn refold<'a>(&mut self, entries: impl IntoIterator<Item = &'a Entry>) {
        for e in entries {
            self.push(e.id, e.term, e.message.as_bytes());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: u64, term: u64) -> Entry {
        Entry {
            term,
            id,
            message: format!("m{id}"),
            request_id: None,
        }
    }

    fn log(n: u64) -> Vec<Entry> {
        (1..=n).map(|i| entry(i, 1 + i / 700)).collect()
    }

    /// The checksum of `1..=up_to` computed the slow way, from the start.
    fn direct(entries: &[Entry], up_to: u64) -> Sum {
        fold_entries(EMPTY, &entries[..up_to as usize])
    }

    fn via(h: &PrefixHash, entries: &[Entry], up_to: u64) -> Option<Sum> {
        let (from, start) = h.start_for(up_to)?;
        Some(fold_entries(start, &entries[from as usize..up_to as usize]))
    }

    #[test]
    fn any_prefix_matches_the_direct_computation_and_reads_less_than_a_block() {
        let entries = log(3 * BLOCK + 17);
        let mut h = PrefixHash::default();
        h.refold(&entries);
        for up_to in [
            0,
            1,
            2,
            BLOCK - 1,
            BLOCK,
            BLOCK + 1,
            2 * BLOCK + 500,
            3 * BLOCK + 17,
        ] {
            let (from, _) = h.start_for(up_to).unwrap();
            assert!(up_to - from < BLOCK, "{up_to}: starts at {from}");
            assert_eq!(
                via(&h, &entries, up_to),
                Some(direct(&entries, up_to)),
                "{up_to}"
            );
        }
        assert_eq!(h.start_for(3 * BLOCK + 18), None);
        assert_eq!(h.start_for(0), Some((0, EMPTY)));
    }

    #[test]
    fn a_different_term_or_text_anywhere_changes_every_checksum_from_there() {
        let a = log(50);
        let mut b = a.clone();
        b[19].term += 1;
        let mut c = a.clone();
        c[19].message.push('!');
        for up_to in 0..=50 {
            let same = up_to < 20;
            assert_eq!(direct(&a, up_to) == direct(&b, up_to), same, "{up_to}");
            assert_eq!(direct(&a, up_to) == direct(&c, up_to), same, "{up_to}");
        }
        // The request id does not count.
        let mut d = a.clone();
        d[3].request_id = Some("k".into());
        assert_eq!(direct(&a, 50), direct(&d, 50));
        // Field boundaries are not ambiguous: ("ab", then "c") is not ("a", then "bc").
        let x = [entry(1, 1), entry(2, 1)];
        let mut y = x.clone();
        y[0].message = "m".into();
        y[1].message = "1m2".into();
        assert_ne!(fold_entries(EMPTY, &x), fold_entries(EMPTY, &y));
    }

    #[test]
    fn a_cut_and_a_different_continuation_give_the_new_log_s_checksums() {
        let old = log(2 * BLOCK + 40);
        let mut h = PrefixHash::default();
        h.refold(&old);
        for after in [2 * BLOCK + 39, 2 * BLOCK, 2 * BLOCK - 1, BLOCK + 3, 0] {
            let mut h = h.clone();
            let (from, _) = h.cut(after).unwrap();
            h.refold(&old[from as usize..after as usize]);
            assert_eq!(h.len(), after);
            // The new master's entries from `after + 1` on, in a newer term.
            let mut new = old[..after as usize].to_vec();
            new.extend((after + 1..=after + 30).map(|i| entry(i, 9)));
            h.refold(&new[after as usize..]);
            for up_to in [after, after + 1, after + 30, after / 2] {
                assert_eq!(
                    via(&h, &new, up_to),
                    Some(direct(&new, up_to)),
                    "{after}/{up_to}"
                );
            }
        }
        // Extending outside and applying is pushing.
        let mut pushed = h.clone();
        pushed.refold(&old[..0]);
        let more: Vec<Entry> = (h.len() + 1..=h.len() + 2 * BLOCK)
            .map(|i| entry(i, 5))
            .collect();
        let ext = PrefixHash::extend(h.tip(), &more);
        let mut applied = h.clone();
        applied.apply(ext);
        pushed.refold(&more);
        assert_eq!(applied.tip(), pushed.tip());
        assert_eq!(applied.blocks, pushed.blocks);
        let mut h2 = h.clone();
        assert_eq!(h2.cut(h.len()), None);
        assert_eq!(h2.len(), h.len());
    }

    #[test]
    fn hex_is_64_lower_case_digits() {
        let s = hex(&fold(&EMPTY, 1, 1, b"x"));
        assert_eq!(s.len(), 64);
        assert!(
            s.chars()
                .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c))
        );
        assert_eq!(hex(&EMPTY), "0".repeat(64));
    }
}
