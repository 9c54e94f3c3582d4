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
//! `--delay-ms` and `--drop-rate` are the first rules of this set, given at start
//! ([`Faults::with_startup`]): `{"peer": "*", "direction": "out", "frames":
//! "replication", "delayMs": [min, max]}` and `{"peer": "*", "direction": "out",
//! "frames": "acks", "drop": r}`. They hold for
//! the node's whole life (`DELETE /admin/faults` clears only what `PUT` set) and add
//! to the rules set at run time: a frame is dropped if any rule drops it, and held back
//! by the sum of the delays.
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

/// What a frame is, for the rules that apply to some frames only.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Frame {
    /// A vote request or answer.
    Vote,
    /// Replication: entries, heartbeats, the handshake, everything on a member's link.
    Replication,
    /// A secondary's acknowledgement (a replication frame too).
    Ack,
}

/// Which frames a rule applies to, by their kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Frames {
    #[default]
    All,
    Replication,
    Acks,
}

impl Frames {
    fn covers(self, frame: Frame) -> bool {
        match self {
            Frames::All => true,
            Frames::Replication => frame != Frame::Vote,
            Frames::Acks => frame == Frame::Ack,
        }
    }
}

/// Which frames a rule applies to, by their direction.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    #[default]
    Both,
    In,
    Out,
}

impl Direction {
    fn covers(self, dir: Dir) -> bool {
        matches!(
            (self, dir),
            (Direction::Both, _) | (Direction::In, Dir::In) | (Direction::Out, Dir::Out)
        )
    }
}

fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}

/// One rule, as the API shows it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// The member's name (`--name`), or `*` for every peer (also one not known by
    /// name yet).
    pub peer: String,
    /// `both` (default), `in` (frames from the peer) or `out` (frames to it).
    /// Shown only when not the default, so that a rule reads back as it was given.
    #[serde(default, skip_serializing_if = "is_default")]
    pub direction: Direction,
    /// `all` (default), `replication` (not votes) or `acks` (a secondary's
    /// acknowledgements only, as `--drop-rate`).
    #[serde(default, skip_serializing_if = "is_default")]
    pub frames: Frames,
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
    /// The rules of `PUT /admin/faults`.
    set: RwLock<FaultSet>,
    /// The rules of `--delay-ms` and `--drop-rate`, for the node's whole life.
    startup: FaultSet,
    /// One generator per (rule set, peer, direction), created from its seed on first
    /// use.
    rngs: Mutex<HashMap<(bool, String, Dir), StdRng>>,
}

/// What `GET /admin/faults` shows: the rules set at run time, and (only when there
/// are any) those of the command line.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Shown {
    #[serde(flatten)]
    pub set: FaultSet,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub startup: Option<FaultSet>,
}

impl Faults {
    pub fn new() -> Self {
        Self::default()
    }

    /// With the rules of `--delay-ms` (every frame this node sends held back) and
    /// `--drop-rate` (every acknowledgement it sends lost with that probability), their
    /// decisions drawn from `seed`.
    pub fn with_startup(delay: common::config::DelaySpec, drop_acks: f64, seed: u64) -> Self {
        let mut rules = Vec::new();
        let everyone = |frames| Rule {
            peer: "*".into(),
            direction: Direction::Out,
            frames,
            drop: 0.0,
            delay_ms: [0, 0],
            partition: false,
        };
        if !delay.is_zero() {
            rules.push(Rule {
                delay_ms: [delay.min_ms, delay.max_ms],
                ..everyone(Frames::Replication)
            });
        }
        if drop_acks > 0.0 {
            rules.push(Rule {
                drop: drop_acks,
                ..everyone(Frames::Acks)
            });
        }
        Faults {
            active: AtomicBool::new(!rules.is_empty()),
            startup: FaultSet { seed, rules },
            ..Faults::default()
        }
    }

    /// Replace the rules set at run time (an empty set clears them).
    pub fn set(&self, set: FaultSet) {
        let any = !set.rules.is_empty() || !self.startup.rules.is_empty();
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = set;
        self.rngs.lock().unwrap_or_else(|e| e.into_inner()).clear();
        self.active.store(any, Ordering::Release);
    }

    pub fn get(&self) -> Shown {
        Shown {
            set: self.set.read().unwrap_or_else(|e| e.into_inner()).clone(),
            startup: (!self.startup.rules.is_empty()).then(|| self.startup.clone()),
        }
    }

    /// Whether any rule is set (one atomic load).
    pub fn active(&self) -> bool {
        self.active.load(Ordering::Acquire)
    }

    /// The longest any rule holds a frame back (what a closing connection waits for).
    pub fn max_delay(&self) -> Duration {
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let ms = (set.rules.iter().chain(&self.startup.rules))
            .map(|r| r.delay_ms[1])
            .max()
            .unwrap_or(0);
        Duration::from_millis(ms)
    }

    /// What happens to a `frame` to or from `peer` (None: a peer not known by name yet,
    /// which only `*` rules name).
    pub fn judge(&self, peer: Option<&str>, dir: Dir, frame: Frame) -> Verdict {
        if !self.active() {
            return Verdict::Pass;
        }
        let set = self.set.read().unwrap_or_else(|e| e.into_inner());
        let mut wait = Duration::ZERO;
        for (startup, rules) in [(false, &*set), (true, &self.startup)] {
            // The peer's own rule, or else the rule for everyone.
            let applies = |r: &&Rule| r.direction.covers(dir) && r.frames.covers(frame);
            let Some(rule) = (rules.rules.iter())
                .find(|r| peer.is_some_and(|p| r.peer == p) && applies(r))
                .or_else(|| rules.rules.iter().find(|r| r.peer == "*" && applies(r)))
            else {
                continue;
            };
            if rule.partition {
                return Verdict::Drop;
            }
            let name = peer.unwrap_or("*");
            let mut rngs = self.rngs.lock().unwrap_or_else(|e| e.into_inner());
            let rng = rngs
                .entry((startup, name.to_string(), dir))
                .or_insert_with(|| StdRng::seed_from_u64(stream_seed(rules.seed, name, dir)));
            if rule.drop > 0.0 && rng.random_bool(rule.drop) {
                return Verdict::Drop;
            }
            let [lo, hi] = rule.delay_ms;
            if hi > 0 {
                wait += Duration::from_millis(rng.random_range(lo..=hi));
            }
        }
        if wait.is_zero() {
            Verdict::Pass
        } else {
            Verdict::Delay(wait)
        }
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
        assert_eq!(
            f.judge(Some("s1"), Dir::Out, Frame::Replication),
            Verdict::Pass
        );
        f.set(set(r#"{"rules": [{"peer": "s1", "partition": true}]}"#));
        for dir in [Dir::In, Dir::Out] {
            assert_eq!(f.judge(Some("s1"), dir, Frame::Replication), Verdict::Drop);
            assert_eq!(f.judge(Some("s2"), dir, Frame::Replication), Verdict::Pass);
            assert_eq!(f.judge(None, dir, Frame::Replication), Verdict::Pass);
        }
        f.set(FaultSet::default());
        assert!(!f.active());
        assert_eq!(
            f.judge(Some("s1"), Dir::Out, Frame::Replication),
            Verdict::Pass
        );
    }

    #[test]
    fn startup_rules_are_delay_ms_and_drop_rate() {
        use common::config::DelaySpec;
        let delay = DelaySpec {
            min_ms: 10,
            max_ms: 20,
        };
        let f = Faults::with_startup(delay, 0.5, 1);
        assert!(f.active());
        // --delay-ms: every replication frame sent, to anyone, known by name or not.
        for peer in [Some("s1"), None] {
            for frame in [Frame::Replication, Frame::Ack] {
                match f.judge(peer, Dir::Out, frame) {
                    Verdict::Delay(d) => assert!((10..=20).contains(&d.as_millis())),
                    Verdict::Drop => assert_eq!(frame, Frame::Ack),
                    Verdict::Pass => panic!("{peer:?} {frame:?} passed"),
                }
            }
            // Not what arrives, not votes.
            assert_eq!(f.judge(peer, Dir::In, Frame::Replication), Verdict::Pass);
            assert_eq!(f.judge(peer, Dir::Out, Frame::Vote), Verdict::Pass);
        }
        // --drop-rate: about half the acks, no other frame.
        let f = Faults::with_startup(DelaySpec::default(), 0.5, 1);
        let drops = (0..1000)
            .filter(|_| f.judge(Some("m"), Dir::Out, Frame::Ack) == Verdict::Drop)
            .count();
        assert!((400..600).contains(&drops), "{drops}");
        assert!(
            (0..100).all(|_| f.judge(Some("m"), Dir::Out, Frame::Replication) == Verdict::Pass)
        );
        // No flags, no rules, nothing shown.
        let none = Faults::with_startup(DelaySpec::default(), 0.0, 1);
        assert!(!none.active());
        assert_eq!(
            serde_json::to_value(none.get()).unwrap(),
            serde_json::json!({"seed": 0, "rules": []})
        );
    }

    #[test]
    fn runtime_rules_add_to_the_startup_ones_and_delete_keeps_them() {
        use common::config::DelaySpec;
        let f = Faults::with_startup(
            DelaySpec {
                min_ms: 5,
                max_ms: 5,
            },
            0.0,
            1,
        );
        f.set(set(r#"{"rules": [{"peer": "s1", "delayMs": [100, 100]}]}"#));
        // Both delays, summed.
        assert_eq!(
            f.judge(Some("s1"), Dir::Out, Frame::Replication),
            Verdict::Delay(Duration::from_millis(105))
        );
        assert_eq!(
            f.judge(Some("s2"), Dir::Out, Frame::Replication),
            Verdict::Delay(Duration::from_millis(5))
        );
        assert_eq!(f.max_delay(), Duration::from_millis(100));
        let shown = serde_json::to_value(f.get()).unwrap();
        assert_eq!(shown["rules"][0]["peer"], "s1");
        assert_eq!(shown["startup"]["rules"][0]["peer"], "*");
        assert_eq!(
            shown["startup"]["rules"][0]["delayMs"],
            serde_json::json!([5, 5])
        );
        // DELETE clears what PUT set; the command line's rules stay.
        f.set(FaultSet::default());
        assert!(f.active() && f.get().set.rules.is_empty());
        assert_eq!(
            f.judge(Some("s1"), Dir::Out, Frame::Replication),
            Verdict::Delay(Duration::from_millis(5))
        );
    }

    #[test]
    fn rules_for_everyone_for_one_direction_or_for_some_frames() {
        let f = Faults::new();
        f.set(set(
            r#"{"rules": [{"peer": "*", "direction": "in", "partition": true},
                          {"peer": "s1", "frames": "acks", "drop": 1.0}]}"#,
        ));
        // s1's own rule first: only its acks are dropped, the rest passes.
        assert_eq!(f.judge(Some("s1"), Dir::Out, Frame::Ack), Verdict::Drop);
        assert_eq!(
            f.judge(Some("s1"), Dir::Out, Frame::Replication),
            Verdict::Pass
        );
        // Where s1's rule does not apply, the rule for everyone does.
        assert_eq!(
            f.judge(Some("s1"), Dir::In, Frame::Replication),
            Verdict::Drop
        );
        assert_eq!(f.judge(Some("s2"), Dir::In, Frame::Vote), Verdict::Drop);
        assert_eq!(f.judge(None, Dir::In, Frame::Replication), Verdict::Drop);
        assert_eq!(
            f.judge(Some("s2"), Dir::Out, Frame::Replication),
            Verdict::Pass
        );
        for bad in [
            r#"{"rules": [{"peer": "s1", "direction": "sideways"}]}"#,
            r#"{"rules": [{"peer": "s1", "frames": "some"}]}"#,
            r#"{"rules": [{"peer": "*"}, {"peer": "*"}]}"#,
        ] {
            assert!(FaultSet::parse(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_same_seed_replays_the_same_decisions() {
        let rules = r#"{"seed": 7, "rules": [{"peer": "s1", "drop": 0.3, "delayMs": [10, 50]}]}"#;
        let run = || {
            let f = Faults::new();
            f.set(set(rules));
            (0..500)
                .map(|i| {
                    f.judge(
                        Some("s1"),
                        if i % 3 == 0 { Dir::In } else { Dir::Out },
                        Frame::Replication,
                    )
                })
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
            .map(|i| {
                f.judge(
                    Some("s1"),
                    if i % 3 == 0 { Dir::In } else { Dir::Out },
                    Frame::Replication,
                )
            })
            .collect();
        assert_ne!(a, b);
    }
}
