//! Fault injection at run time (`PUT/GET/DELETE /admin/faults`): per peer, drop,
//! delay or cut (partition) this node's replication and election traffic with that
//! member, in both directions, on the same paths as the frames themselves.
//!
//! A rule names a member (`peer`). Every frame this node sends to it or receives from
//! it asks [`Faults::judge`]: a partition drops it, otherwise it is dropped with
//! probability `drop`, otherwise held back by a delay drawn from `delayMs`. Decisions
//! come from one random generator per peer and direction, seeded from the rules'
//! `seed`, so the same seed and the same traffic give the same drops and delays.
//!
//! Dropping frames is what a lossy network does to chorus's protocol, which is built
//! for it (resends, catch-up, elections retried); the whole-set simulation runs with
//! such links (common/src/replication/set_sim.rs). A partition also hides the peer's
//! frames from failure detection: a follower cut off from its master stops hearing it
//! and stands for election, a master cut off from a majority steps down.
//!
//! While no rule is set, checking costs one atomic load per frame.

use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

/// Which way a frame goes, seen from this node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dir {
    /// This node sends it to the peer.
    Out,
    /// This node received it from the peer.
    In,
}

/// What happens to one frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Pass,
    Drop,
    Delay(Duration),
}

/// One rule, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// The member's name (`--name`).
    pub peer: String,
    /// Probability that a frame is dropped, 0 to 1.
    #[serde(default)]
    pub drop: f64,
    /// `[min, max]` milliseconds a frame is held back (uniform); `[0, 0]`: none.
    #[serde(default)]
    pub delay_ms: [u64; 2],
    /// Drop everything.
    #[serde(default)]
    pub partition: bool,
}

/// A whole rule set, as `PUT /admin/faults` takes it and `GET` shows it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSet {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// The longest delay a rule may ask for.
pub const MAX_DELAY_MS: u64 = 60_000;
/// The most rules in one set.
pub const MAX_RULES: usize = 64;

impl FaultSet {
    /// Parse and check a `PUT /admin/faults` body; the error says what is wrong.
    pub fn parse(body: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("malformed JSON: {e}"))?;
        if !value.is_object() {
            return Err("the body must be an object: {\"seed\", \"rules\"}".into());
        }
        let set: FaultSet =
            serde_json::from_value(value).map_err(|e| format!("invalid fault rules: {e}"))?;
        if set.rules.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules"));
        }
        for (i, r) in set.rules.iter().enumerate() {
            if r.peer.is_empty() || r.peer.len() > 128 {
                return Err(format!(
                    "rule {i}: \"peer\" must be a member name of 1 to 128 bytes"
                ));
            }
            if !(0.0..=1.0).contains(&r.drop) {
                return Err(format!(
                    "rule {i}: \"drop\" must be between 0 and 1, got {}",
                    r.drop
                ));
            }
            let [lo, hi] = r.delay_ms;
            if lo > hi || hi > MAX_DELAY_MS {
                return Err(format!(
                    "rule {i}: \"delayMs\" must be [min, max] with min <= max <= {MAX_DELAY_MS}, got [{lo}, {hi}]"
                ));
            }
            if set.rules[..i].iter().any(|o| o.peer == r.peer) {
                return Err(format!("rule {i}: a second rule for peer {:?}", r.peer));
            }
        }
        Ok(set)
    }
}

/// The rules in force on this node.
#[derive(Debug, Default)]
pub struct Faults {
    active: AtomicBool,
    set: RwLock<FaultSet>,
    /// One generator per (peer, direction), created from the seed on first use.
    rngs: Mutex<HashMap<(String, Dir), StdRng>>,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// Replace the rules (an empty set clears them).
    pub fn set(&self, set: FaultSet) {
        let any = !set.rules.is_empty();
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        self.rngs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.active.store(any, Ordering::Release);
    }

    pub fn get(&self) -> FaultSet {
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether any rule is set (one atomic load).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// What happens to a frame to or from `peer` (None: a peer not known by name,
    /// whose frames pass).
    pub fn judge(&self, peer: Option<&str>, dir: Dir) -> Verdict {
        if !self.active() {
            return Verdict::Pass;
        }
        let Some(peer) = peer else {
            return Verdict::Pass;
        };
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let Some(rule) = set.rules.iter().find(|r| r.peer == peer) else {
            return Verdict::Pass;
        };
        if rule.partition {
            return Verdict::Drop;
        }
        let mut rngs = self.rngs.lock().unwrap_or_else(|e| e.into_inner());
        let rng = rngs
            .entry((peer.to_string(), dir))
            .or_insert_with(|| StdRng::seed_from_u64(stream_seed(set.seed, peer, dir)));
        if rule.drop > 0.0 && rng.random_bool(rule.drop) {
            return Verdict::Drop;
        }
        let [lo, hi] = rule.delay_ms;
        if hi == 0 {
            return Verdict::Pass;
        }
        Verdict::Delay(Duration::from_millis(rng.random_range(lo..=hi)))
    }
}

/// The seed of one (peer, direction) generator: the set's seed mixed with the peer's
/// name and the direction (FNV-1a), so each link has its own replayable sequence.
fn stream_seed(seed: u64, peer: &str, dir: Dir) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64 ^ seed;
    for b in peer.bytes().chain([dir as u8]) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(json: &str) -> FaultSet {
        FaultSet::parse(json.as_bytes()).unwrap()
    }

    #[test]
    fn rules_are_checked() {
        let ok = set(
            r#"{"seed": 42, "rules": [{"peer": "s1", "drop": 0.3, "delayMs": [10, 50], "partition": true}]}"#,
        );
        assert_eq!(ok.seed, 42);
        assert_eq!(ok.rules[0].delay_ms, [10, 50]);
        assert_eq!(set("{}"), FaultSet::default());
        for bad in [
            r#"{"rules": [{"peer": "s1", "drop": 1.5}]}"#,
            r#"{"rules": [{"peer": "s1", "delayMs": [50, 10]}]}"#,
            r#"{"rules": [{"peer": "s1", "delayMs": [0, 600000]}]}"#,
            r#"{"rules": [{"peer": ""}]}"#,
            r#"{"rules": [{"peer": "s1"}, {"peer": "s1"}]}"#,
            r#"{"rules": [{"peer": "s1", "loss": 0.1}]}"#,
            r#"{"rules": [{"drop": 0.1}]}"#,
            r#"{"seed": -1}"#,
            r#"[1, 2]"#,
            r#"[1]"#,
            "not json",
        ] {
            assert!(FaultSet::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn partition_drops_everything_both_ways_and_other_peers_pass() {
        let f = Faults::new();
        assert_eq!(f.judge(Some("s1"), Dir::Out), Verdict::Pass);
        f.set(set(r#"{"rules": [{"peer": "s1", "partition": true}]}"#));
        for dir in [Dir::In, Dir::Out] {
            assert_eq!(f.judge(Some("s1"), dir), Verdict::Drop);
            assert_eq!(f.judge(Some("s2"), dir), Verdict::Pass);
            assert_eq!(f.judge(None, dir), Verdict::Pass);
        }
        f.set(FaultSet::default());
        assert!(!f.active());
        assert_eq!(f.judge(Some("s1"), Dir::Out), Verdict::Pass);
    }

    #[test]
    fn the_same_seed_replays_the_same_decisions() {
        let rules = r#"{"seed": 7, "rules": [{"peer": "s1", "drop": 0.3, "delayMs": [10, 50]}]}"#;
        let run = || {
            let f = Faults::new();
            f.set(set(rules));
            (0..500)
                .map(|i| f.judge(Some("s1"), if i % 3 == 0 { Dir::In } else { Dir::Out }))
                .collect::<Vec<_>>()
        };
        let a = run();
        assert_eq!(a, run());
        let drops = a.iter().filter(|v| **v == Verdict::Drop).count();
        assert!((100..200).contains(&drops), "about 30 % dropped: {drops}");
        assert!(a.iter().all(|v| match v {
            Verdict::Delay(d) => (10..=50).contains(&(d.as_millis() as u64)),
            Verdict::Drop => true,
            Verdict::Pass => false,
        }));
        // Another seed, other decisions.
        let f = Faults::new();
        f.set(set(&rules.replace("\"seed\": 7", "\"seed\": 8")));
        let b: Vec<_> = (0..500)
            .map(|i| f.judge(Some("s1"), if i % 3 == 0 { Dir::In } else { Dir::Out }))
            .collect();
        assert_ne!(a, b);
    }
}
