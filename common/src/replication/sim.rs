//! A seeded simulated network that drives one [`MasterCore`] and several
//! [`SecondaryCore`]s with virtual time: random per-frame delays (which reorder frames),
//! lost acknowledgements, duplicated frames and dropped connections. After every step it
//! checks that each secondary's log is a prefix of the master's, comparing contents.

use super::*;
use crate::protocol::{MasterFrame, SecondaryFrame};
use crate::storage::{LogStore, MemStore};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy)]
struct Faults {
    delay_ms: (u64, u64),
    drop_ack: f64,
    duplicate: f64,
    /// Chance per write that some connection is cut at that moment.
    cut: f64,
}

const CALM: Faults = Faults {
    delay_ms: (0, 5),
    drop_ack: 0.0,
    duplicate: 0.0,
    cut: 0.0,
};

enum Event {
    ToMaster(ConnId, SecondaryFrame),
    ToSecondary(usize, ConnId, MasterFrame),
    Submit(Token, WriteRequest),
    Cut(usize),
    Reconnect(usize),
    /// The master's store finished a sync (group commit) of everything up to `upto`,
    /// started by master run `run`.
    MasterSynced {
        run: u64,
        upto: u64,
    },
    /// The master's machine crashes: it loses what was not durable, then starts again.
    CrashMaster,
}

struct Node {
    core: SecondaryCore<Arc<MemStore>>,
    store: Arc<MemStore>,
    conn: Option<ConnId>,
}

struct Sim {
    seed: u64,
    rng: StdRng,
    now: Instant,
    faults: Faults,
    master: MasterCore<Arc<MemStore>>,
    master_cfg: MasterConfig,
    master_store: Arc<MemStore>,
    /// How many times the master crashed; the durable end of its log at the last crash.
    crashes: u64,
    durable_at_crash: u64,
    /// Writes whose master died before answering them.
    unanswered: HashSet<Token>,
    submitted: HashSet<Token>,
    nodes: Vec<Node>,
    queue: BTreeMap<(Instant, u64), Event>,
    seq: u64,
    next_conn: ConnId,
    dead: HashSet<ConnId>,
    replies: HashMap<Token, WriteOutcome>,
    needs: HashMap<Token, u32>,
    /// Writes refused for lack of quorum (both secondaries cut off at once).
    refused: HashSet<Token>,
    max_buffered: usize,
    syncing: bool,
    syncs: u64,
}

impl Sim {
    fn new(seed: u64, secondaries: usize, faults: Faults, ack_timeout_ms: u64) -> Self {
        let master_store = Arc::new(MemStore::new());
        let mut cfg = MasterConfig::new("m", Duration::from_millis(ack_timeout_ms));
        cfg.seed = seed;
        cfg.batch_max_entries = 7; // small batches exercise batching and reordering
        // No heartbeats here: members turn Unhealthy only by disconnecting.
        cfg.health = HealthPolicy::new(Duration::from_secs(3600));
        let master = MasterCore::new(cfg.clone(), master_store.clone()).unwrap();
        let nodes = (0..secondaries)
            .map(|i| {
                let store = Arc::new(MemStore::new());
                Node {
                    core: SecondaryCore::new(format!("s{}", i + 1), store.clone()),
                    store,
                    conn: None,
                }
            })
            .collect();
        Self {
            seed,
            rng: StdRng::seed_from_u64(seed),
            now: Instant::now(),
            faults,
            master,
            master_cfg: cfg,
            master_store,
            crashes: 0,
            durable_at_crash: 0,
            unanswered: HashSet::new(),
            submitted: HashSet::new(),
            nodes,
            queue: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            dead: HashSet::new(),
            replies: HashMap::new(),
            needs: HashMap::new(),
            refused: HashSet::new(),
            max_buffered: 0,
            syncing: false,
            syncs: 0,
        }
    }

    fn at(&mut self, when: Instant, ev: Event) {
        self.seq += 1;
        self.queue.insert((when, self.seq), ev);
    }

    fn delay(&mut self) -> Duration {
        let (a, b) = self.faults.delay_ms;
        Duration::from_millis(self.rng.random_range(a..=b))
    }

    fn connect(&mut self, i: usize) {
        let conn = self.next_conn;
        self.next_conn += 1;
        self.master.connection_opened(conn);
        self.nodes[i].conn = Some(conn);
        self.nodes[i].core.connected(self.now, 0);
        self.flush();
    }

    fn disconnect(&mut self, conn: ConnId) {
        if !self.dead.insert(conn) {
            return;
        }
        self.master.connection_closed(conn);
        if let Some(i) = self.nodes.iter().position(|n| n.conn == Some(conn)) {
            self.nodes[i].conn = None;
            self.nodes[i].core.disconnected();
            let back = self.now + Duration::from_millis(self.rng.random_range(100..=3000));
            self.at(back, Event::Reconnect(i));
        }
    }

    /// Route every output of every core until none is left.
    fn flush(&mut self) {
        loop {
            let mut any = false;
            for o in self.master.take_outputs() {
                any = true;
                match o {
                    MasterOutput::Send { conn, frame } => {
                        if self.dead.contains(&conn) {
                            continue;
                        }
                        let Some(i) = self.nodes.iter().position(|n| n.conn == Some(conn)) else {
                            continue;
                        };
                        let copies = if self.rng.random_bool(self.faults.duplicate) {
                            2
                        } else {
                            1
                        };
                        for _ in 0..copies {
                            let when = self.now + self.delay();
                            self.at(when, Event::ToSecondary(i, conn, frame.clone()));
                        }
                    }
                    MasterOutput::Close { conn } => self.disconnect(conn),
                    MasterOutput::Reply { token, outcome } => {
                        assert!(
                            self.replies.insert(token, outcome).is_none(),
                            "seed {}: token {token} answered twice",
                            self.seed
                        );
                    }
                    MasterOutput::StorageFailed(e) => panic!("seed {}: {e}", self.seed),
                    // One master with no quorum timeout and equal priorities: these
                    // never come.
                    other @ (MasterOutput::NewerTerm(_)
                    | MasterOutput::LostQuorum
                    | MasterOutput::HandedOver { .. }) => {
                        panic!("seed {}: {other:?}", self.seed)
                    }
                }
            }
            for i in 0..self.nodes.len() {
                for o in self.nodes[i].core.take_outputs() {
                    any = true;
                    let Some(conn) = self.nodes[i].conn else {
                        continue;
                    };
                    match o {
                        SecondaryOutput::Send(frame) => {
                            if matches!(frame, SecondaryFrame::Ack { .. })
                                && self.rng.random_bool(self.faults.drop_ack)
                            {
                                continue;
                            }
                            let when = self.now + self.delay();
                            self.at(when, Event::ToMaster(conn, frame));
                        }
                        SecondaryOutput::Close => self.disconnect(conn),
                        // One master here: no elections to tell.
                        SecondaryOutput::Following { .. }
                        | SecondaryOutput::MembersChanged
                        | SecondaryOutput::StandNow
                        | SecondaryOutput::RolledBack(_) => {}
                    }
                }
            }
            if !self.syncing && self.master.needs_sync() {
                // One sync at a time, taking a few ms; writes arriving meanwhile wait for
                // the next one, as with a real disk. What it covers is written and sent
                // to the secondaries first.
                self.syncing = true;
                let upto = self.master_store.flush().unwrap();
                self.master.flushed(self.now, upto);
                any = true;
                let when = self.now + Duration::from_micros(self.rng.random_range(100..=3000));
                let run = self.crashes;
                self.at(when, Event::MasterSynced { run, upto });
            }
            if !any {
                return;
            }
        }
    }

    fn deliver(&mut self, ev: Event) {
        match ev {
            Event::ToMaster(conn, frame) => {
                if !self.dead.contains(&conn) {
                    self.master.handle_frame(self.now, conn, frame);
                }
            }
            Event::ToSecondary(i, conn, frame) => {
                if !self.dead.contains(&conn) && self.nodes[i].conn == Some(conn) {
                    self.nodes[i].core.handle_frame(self.now, frame);
                    self.max_buffered = self
                        .max_buffered
                        .max(self.nodes[i].core.buffered_ids().len());
                }
            }
            Event::Submit(token, req) => {
                if self.rng.random_bool(self.faults.cut) {
                    let i = self.rng.random_range(0..self.nodes.len());
                    let when = self.now + self.delay();
                    self.at(when, Event::Cut(i));
                }
                self.submitted.insert(token);
                match self.master.submit(self.now, req, token) {
                    Ok(_) => {}
                    Err(Rejected::NoQuorum { .. }) => {
                        self.refused.insert(token);
                    }
                    Err(e) => panic!("seed {}: {e}", self.seed),
                }
            }
            Event::Cut(i) => {
                if let Some(conn) = self.nodes[i].conn {
                    self.disconnect(conn);
                }
            }
            Event::Reconnect(i) => {
                if self.nodes[i].conn.is_none() {
                    self.connect(i);
                }
            }
            Event::MasterSynced { run, upto } => {
                if run == self.crashes {
                    self.syncing = false;
                    self.syncs += 1;
                    self.master.persisted(self.now, upto);
                }
            }
            Event::CrashMaster => self.crash_master(),
        }
        self.flush();
    }

    /// Advance to the next thing that happens. False when nothing is left.
    fn step(&mut self) -> bool {
        let next_event = self.queue.keys().next().map(|k| k.0);
        let next_timer = self.master.poll_timeout();
        let next = match (next_event, next_timer) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => match a.or(b) {
                Some(t) => t,
                None => return false,
            },
        };
        self.now = self.now.max(next);
        if next_timer.is_some_and(|t| t <= self.now) {
            self.master.handle_timeout(self.now);
            self.flush();
        }
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let ev = entry.remove();
            self.deliver(ev);
        }
        self.check_prefixes();
        true
    }

    fn run(&mut self, max_virtual: Duration) {
        let start = self.now;
        while self.step() {
            assert!(
                self.now - start < max_virtual,
                "seed {}: no quiet after {max_virtual:?} of virtual time; status {:?}",
                self.seed,
                self.master.status(self.now)
            );
        }
    }

    /// The master's process dies and its machine loses what it had not made durable;
    /// a new run starts over what is left. Writes still waiting die unanswered.
    fn crash_master(&mut self) {
        let durable = self.master.durable_id();
        self.master_store.truncate(durable).unwrap();
        for i in 0..self.nodes.len() {
            if let Some(conn) = self.nodes[i].conn {
                self.disconnect(conn);
            }
        }
        self.master.take_outputs();
        let answered: HashSet<Token> = self.replies.keys().copied().collect();
        self.unanswered.extend(
            self.submitted
                .iter()
                .filter(|t| !answered.contains(t) && !self.refused.contains(t)),
        );
        self.master = MasterCore::new(self.master_cfg.clone(), self.master_store.clone()).unwrap();
        self.crashes += 1;
        self.durable_at_crash = durable;
        self.syncing = false;
    }

    /// Each secondary's log is a prefix of the master's. After a crash of the master, a
    /// secondary that has not met the new run yet may still hold entries the master
    /// lost: only what the master kept is compared until then.
    fn check_prefixes(&self) {
        let master = self.master_store.read(1, usize::MAX).unwrap();
        let term = self.master.term();
        for n in &self.nodes {
            let mut log = n.store.read(1, usize::MAX).unwrap();
            if self.crashes > 0 && log.last().is_some_and(|e| e.term < term) {
                log.truncate(self.durable_at_crash as usize);
            }
            assert!(
                log.len() <= master.len() && log[..] == master[..log.len()],
                "seed {}: a secondary's log is not a prefix of the master's",
                self.seed
            );
        }
    }

    /// Schedule `count` writes spread over `over`, with random write concerns 1..=max_w.
    fn writes(&mut self, count: u64, over: Duration, max_w: u32) {
        for token in 0..count {
            let when = self.now + over.mul_f64(self.rng.random::<f64>());
            let w = self.rng.random_range(1..=max_w);
            self.needs.insert(token, w);
            let req = WriteRequest {
                message: format!("msg-{token}"),
                write_concern: WriteConcern::Count(w),
                timeout: None,
                request_id: None,
            };
            self.at(when, Event::Submit(token, req));
        }
    }

    /// Everything converged: every log equals the master's, every write was answered
    /// with at least its write concern.
    fn assert_converged(&self, count: u64) {
        let count = count - self.refused.len() as u64;
        let master = self.master_store.read(1, usize::MAX).unwrap();
        if self.crashes == 0 {
            assert_eq!(master.len() as u64, count, "seed {}", self.seed);
        }
        let mut ids: Vec<u64> = master.iter().map(|e| e.id).collect();
        ids.dedup();
        assert_eq!(
            ids,
            (1..=master.len() as u64).collect::<Vec<_>>(),
            "seed {}",
            self.seed
        );
        let messages: HashSet<&str> = master.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(
            messages.len(),
            master.len(),
            "seed {}: a duplicate",
            self.seed
        );
        assert!(
            master.windows(2).all(|w| w[0].term <= w[1].term),
            "seed {}: terms go back",
            self.seed
        );
        for n in &self.nodes {
            assert_eq!(
                n.store.read(1, usize::MAX).unwrap(),
                master,
                "seed {}: a secondary differs",
                self.seed
            );
            assert!(n.core.buffered_ids().is_empty());
        }
        for (token, need) in &self.needs {
            if self.refused.contains(token) || self.unanswered.contains(token) {
                continue;
            }
            match self.replies.get(token) {
                Some(WriteOutcome::Committed(r)) => {
                    assert!(r.acks >= *need as usize, "seed {}: {r:?}", self.seed);
                    assert!(
                        r.acked_by.iter().any(|n| n == "m"),
                        "seed {}: answered before durable on the master: {r:?}",
                        self.seed
                    );
                    let msg = format!("msg-{token}");
                    assert_eq!(
                        master.get(r.id as usize - 1).map(|e| e.message.as_str()),
                        Some(msg.as_str()),
                        "seed {}: an acknowledged write is gone",
                        self.seed
                    );
                }
                other => panic!("seed {}: write {token} ended {other:?}", self.seed),
            }
        }
    }
}

fn run_seeds(faults: Faults, ack_timeout_ms: u64, check: impl Fn(&Sim)) {
    run_seeds_over(Duration::from_secs(30), faults, ack_timeout_ms, check)
}

fn run_seeds_over(over: Duration, faults: Faults, ack_timeout_ms: u64, check: impl Fn(&Sim)) {
    for seed in 0..12 {
        let mut sim = Sim::new(seed, 2, faults, ack_timeout_ms);
        sim.connect(0);
        sim.connect(1);
        sim.writes(150, over, 3);
        sim.run(Duration::from_secs(3600));
        sim.assert_converged(150);
        check(&sim);
    }
}

#[test]
fn calm_network_converges() {
    run_seeds(CALM, 100, |s| {
        let st = s.master.status(s.now);
        assert!(
            st.members.iter().all(|m| m.resends == 0),
            "no resend needed"
        );
    });
}

#[test]
fn seed_homework_delays_reorder_and_still_converge() {
    // Every frame delayed 1000-2000 ms, ack timeout 1500 ms: slower than the acks come.
    let faults = Faults {
        delay_ms: (1000, 2000),
        ..CALM
    };
    run_seeds(faults, 1500, |s| {
        assert!(
            s.max_buffered > 0,
            "seed {}: no reordering happened",
            s.seed
        );
        let resends: u64 = s
            .master
            .status(s.now)
            .members
            .iter()
            .map(|m| m.resends)
            .sum();
        assert!(
            resends > 0,
            "seed {}: RTT above the ack timeout must resend",
            s.seed
        );
    });
}

#[test]
fn half_the_acks_lost() {
    let faults = Faults {
        drop_ack: 0.5,
        delay_ms: (0, 50),
        ..CALM
    };
    run_seeds(faults, 200, |s| {
        let dups: u64 = s
            .nodes
            .iter()
            .map(|n| n.core.status(s.now).duplicates)
            .sum();
        assert!(
            dups > 0,
            "seed {}: resends must arrive as duplicates",
            s.seed
        );
    });
}

#[test]
fn group_commit_covers_a_burst_with_few_syncs() {
    let mut sim = Sim::new(5, 2, CALM, 100);
    sim.connect(0);
    sim.connect(1);
    sim.writes(500, Duration::from_millis(50), 3);
    sim.run(Duration::from_secs(60));
    sim.assert_converged(500);
    assert!(
        sim.syncs < 100,
        "500 writes in 50 ms took {} syncs: no group commit",
        sim.syncs
    );
}

#[test]
fn half_the_acks_lost_in_a_burst() {
    // Many writes in flight at once: every one must still be resent until acknowledged.
    let faults = Faults {
        drop_ack: 0.5,
        delay_ms: (0, 50),
        ..CALM
    };
    run_seeds_over(Duration::from_millis(500), faults, 200, |_| {});
}

#[test]
fn duplicated_frames_are_stored_once() {
    let faults = Faults {
        duplicate: 0.3,
        delay_ms: (0, 300),
        ..CALM
    };
    run_seeds(faults, 200, |_| {});
}

#[test]
fn connections_cut_at_random_catch_up() {
    let faults = Faults {
        cut: 0.05,
        delay_ms: (0, 400),
        drop_ack: 0.2,
        duplicate: 0.1,
    };
    run_seeds(faults, 300, |s| {
        let total_conns = s.next_conn - 1;
        assert!(total_conns > 2, "seed {}: no reconnect happened", s.seed);
    });
}

#[test]
fn a_master_crash_loses_only_unacknowledged_writes_and_secondaries_cut_them() {
    // Secondaries store what the master has written but not yet synced; a crash of the
    // master's machine loses that tail. Its next run must make every secondary cut it,
    // keep every acknowledged write, and converge.
    let faults = Faults {
        delay_ms: (0, 3),
        ..CALM
    };
    let mut cut = 0;
    for seed in 0..16 {
        let mut sim = Sim::new(seed, 2, faults, 100);
        sim.connect(0);
        sim.connect(1);
        sim.writes(400, Duration::from_millis(400), 3);
        let crash = sim.now + Duration::from_millis(200);
        sim.at(crash, Event::CrashMaster);
        sim.run(Duration::from_secs(3600));
        assert_eq!(sim.crashes, 1);
        assert_eq!(sim.master.term(), 2, "a new run takes a new term");
        sim.assert_converged(400);
        cut += sim
            .nodes
            .iter()
            .map(|n| n.core.status(sim.now).truncated)
            .sum::<u64>();
    }
    assert!(
        cut > 0,
        "no seed had a secondary ahead of the crashed master"
    );
}

#[test]
fn a_secondary_joining_late_catches_up_then_goes_live() {
    let mut sim = Sim::new(99, 2, CALM, 100);
    sim.connect(0);
    sim.writes(2000, Duration::from_secs(5), 2);
    sim.run(Duration::from_secs(600));
    assert_eq!(sim.nodes[1].store.last_id(), 0);
    sim.connect(1);
    sim.run(Duration::from_secs(600));
    sim.assert_converged(2000);
    let st = sim.master.status(sim.now);
    assert!(st.members.iter().all(|m| m.phase == "live"));
}

/// The master's answer to a Hello, as the secondary tests need it.
/// Entry `id` of term `term`, with a message naming it.
fn entry(id: u64, term: u64) -> crate::protocol::Entry {
    crate::protocol::Entry {
        term,
        id,
        message: format!("m{id}"),
        request_id: None,
    }
}

fn welcome(log_id: u64, last_id: u64, truncate_after: Option<u64>) -> MasterFrame {
    MasterFrame::Welcome {
        version: crate::protocol::PROTOCOL_VERSION,
        name: "m".into(),
        log_id,
        last_id,
        truncate_after,
        http_host: None,
        http_port: 0,
        term: 1,
        history: crate::replication::election::History(vec![
            crate::replication::election::TermStart { term: 1, after: 0 },
        ]),
        members: Vec::new(),
        removed: Vec::new(),
        config_version: 0,
        config_term: 0,
        delay_ms: 0,
    }
}

#[test]
fn out_of_order_delivery_is_buffered_until_the_gap_fills() {
    let store = Arc::new(MemStore::new());
    let mut s = SecondaryCore::new("s1", store.clone());
    let now = Instant::now();
    s.connected(now, 0);
    s.handle_frame(now, welcome(5, 0, None));
    s.take_outputs();
    let e = |id: u64| crate::protocol::Entry {
        term: 1,
        id,
        message: format!("m{id}"),
        request_id: None,
    };
    let add = |ids: &[u64]| MasterFrame::AddMessages {
        entries: ids.iter().map(|&i| e(i)).collect(),
        commit_id: 0,
        urgent: true,
        term: 1,
    };
    s.handle_frame(now, add(&[3]));
    assert_eq!(store.last_id(), 0);
    assert_eq!(
        s.take_outputs(),
        vec![SecondaryOutput::Send(SecondaryFrame::Ack {
            upto: 0,
            buffered: vec![3]
        })]
    );
    let st = s.status(now);
    assert_eq!(
        (st.held_back.clone(), st.missing.clone()),
        (vec![(3, 3)], vec![(1, 2)])
    );
    s.handle_frame(now, add(&[6, 7]));
    let st = s.status(now);
    assert_eq!(st.held_back, vec![(3, 3), (6, 7)]);
    assert_eq!(st.missing, vec![(1, 2), (4, 5)]);
    s.take_outputs();
    s.handle_frame(now, add(&[1]));
    assert_eq!(store.last_id(), 1);
    s.handle_frame(now, add(&[3, 2]));
    assert_eq!(store.read(1, 10).unwrap(), vec![e(1), e(2), e(3)]);
    let st = s.status(now);
    assert_eq!(
        (st.held_back.clone(), st.missing.clone()),
        (vec![(6, 7)], vec![(4, 5)])
    );
    s.handle_frame(now, add(&[4, 5]));
    s.take_outputs();
    assert_eq!(store.last_id(), 7);
    assert!(s.status(now).held_back.is_empty());
    // A resend of something held is acknowledged again, stored once.
    s.handle_frame(now, add(&[2]));
    assert_eq!(
        s.take_outputs(),
        vec![SecondaryOutput::Send(SecondaryFrame::Ack {
            upto: 7,
            buffered: vec![]
        })]
    );
    assert_eq!(store.last_id(), 7);
    assert_eq!(s.status(now).duplicates, 2);
    // Repeats inside one frame: stored once, a parked id acknowledged once.
    s.handle_frame(now, add(&[8, 8, 11, 9, 11]));
    assert_eq!(
        s.take_outputs(),
        vec![SecondaryOutput::Send(SecondaryFrame::Ack {
            upto: 9,
            buffered: vec![11]
        })]
    );
    assert_eq!(store.read(8, 10).unwrap(), vec![e(8), e(9)]);
    assert_eq!(s.status(now).duplicates, 4);
    // An id absurdly far ahead is a protocol violation, not a memory bomb; nothing of
    // its frame is taken, not even the entry that would continue the log.
    s.handle_frame(now, add(&[10, u64::MAX]));
    assert_eq!(s.take_outputs().last(), Some(&SecondaryOutput::Close));
    assert_eq!(store.last_id(), 9);
}

#[test]
fn a_secondary_refuses_a_master_with_another_log() {
    let store = Arc::new(MemStore::new());
    store.set_log_id(1).unwrap();
    let mut s = SecondaryCore::new("s1", store);
    let now = Instant::now();
    s.connected(now, 0);
    s.take_outputs();
    s.handle_frame(now, welcome(2, 0, None));
    let out = s.take_outputs();
    assert!(matches!(
        &out[..],
        [SecondaryOutput::Send(SecondaryFrame::Error(e)), SecondaryOutput::Close]
            if e.code == crate::protocol::ErrorCode::LogMismatch
    ));
    assert!(s.status(now).last_error.is_some());
}

#[test]
fn a_secondary_knows_when_it_was_removed_and_where_the_masters_http_is() {
    use crate::protocol::{ErrorCode, ErrorFrame};
    let mut s = SecondaryCore::new("s1", Arc::new(MemStore::new()));
    let now = Instant::now();
    s.connected(now, 0);
    s.take_outputs();
    assert_eq!(s.master_http("10.0.0.9"), None, "not following anyone yet");
    s.handle_frame(
        now,
        MasterFrame::Error(ErrorFrame::new(ErrorCode::Removed, "gone")),
    );
    assert_eq!(s.take_outputs(), vec![SecondaryOutput::Close]);
    s.disconnected();
    let st = s.status(now);
    assert!(st.removed);
    assert!(st.last_error.unwrap().contains("gone"));
    // Re-admitted: the next Welcome clears it, and says where the master's HTTP is.
    s.connected(now, 0);
    let MasterFrame::Welcome {
        version,
        name,
        log_id,
        last_id,
        truncate_after,
        ..
    } = welcome(7, 0, None)
    else {
        unreachable!()
    };
    s.handle_frame(
        now,
        MasterFrame::Welcome {
            version,
            name,
            log_id,
            last_id,
            truncate_after,
            http_host: None,
            http_port: 8080,
            term: 1,
            history: Default::default(),
            members: Vec::new(),
            removed: Vec::new(),
            config_version: 0,
            config_term: 0,
            delay_ms: 0,
        },
    );
    assert!(!s.status(now).removed);
    assert_eq!(s.master_http("10.0.0.9").as_deref(), Some("10.0.0.9:8080"));
    s.disconnected();
    assert_eq!(
        s.master_http("10.0.0.9"),
        None,
        "a master it lost is not named"
    );
}

#[test]
fn a_secondary_cuts_what_the_master_lost_then_asks_from_the_cut() {
    let store = Arc::new(MemStore::new());
    store.set_log_id(5).unwrap();
    let e = |id: u64, term: u64| crate::protocol::Entry {
        term,
        id,
        message: format!("m{id}"),
        request_id: None,
    };
    store
        .append(&[e(1, 1), e(2, 1), e(3, 2), e(4, 2), e(5, 2)])
        .unwrap();
    let mut s = SecondaryCore::new("s1", store.clone());
    let now = Instant::now();
    s.connected(now, 0);
    assert_eq!(
        s.take_outputs(),
        vec![SecondaryOutput::Send(SecondaryFrame::Hello {
            version: crate::protocol::PROTOCOL_VERSION,
            name: "s1".into(),
            next_expected: 6,
            log_id: 5,
            last_term: 2,
            term: 0,
            history: crate::replication::election::History(vec![
                crate::replication::election::TermStart { term: 1, after: 0 },
                crate::replication::election::TermStart { term: 2, after: 2 },
            ]),
            comm: None,
            http: None,
            priority: 1,
            delay_ms: 0,
        })]
    );
    s.handle_frame(now, welcome(5, 9, Some(2)));
    assert_eq!(
        s.take_outputs(),
        vec![
            SecondaryOutput::Following {
                term: 1,
                master: "m".into()
            },
            SecondaryOutput::RolledBack(crate::storage::RolledBack {
                count: 3,
                file: None,
                from_id: 3
            }),
            SecondaryOutput::Send(SecondaryFrame::GetMessages { start_id: 3 })
        ]
    );
    assert_eq!(store.read(1, 10).unwrap(), vec![e(1, 1), e(2, 1)]);
    assert_eq!(s.status(now).truncated, 3);
    assert!(s.status(now).rolling_back, "ROLLBACK until caught up again");
    // The next handshake reports the term of the entry now last.
    s.disconnected();
    s.connected(now, 0);
    assert!(matches!(
        &s.take_outputs()[..],
        [SecondaryOutput::Send(SecondaryFrame::Hello {
            next_expected: 3,
            last_term: 1,
            ..
        })]
    ));
    assert!(
        s.status(now).rolling_back,
        "still catching up after the rollback"
    );
    s.handle_frame(now, welcome(5, 2, None));
    s.handle_frame(
        now,
        MasterFrame::Messages {
            entries: vec![],
            last: true,
            term: 1,
        },
    );
    s.handle_frame(now, MasterFrame::ReadyAck);
    assert_eq!(s.status(now).phase, "live");
    assert!(
        !s.status(now).rolling_back,
        "live again: the rollback is over"
    );
}

#[test]
fn after_a_newer_term_nothing_of_the_old_master_is_stored_or_acknowledged() {
    let store = Arc::new(MemStore::new());
    let mut s = SecondaryCore::new("s1", store.clone());
    let now = Instant::now();
    s.connected(now, 0);
    s.handle_frame(now, welcome(5, 0, None));
    s.take_outputs();
    let add = |id: u64| MasterFrame::AddMessages {
        entries: vec![crate::protocol::Entry {
            term: 1,
            id,
            message: format!("m{id}"),
            request_id: None,
        }],
        commit_id: 0,
        urgent: true,
        term: 1,
    };
    s.handle_frame(now, add(1));
    assert!(s.take_outputs().iter().any(|o| matches!(
        o,
        SecondaryOutput::Send(SecondaryFrame::Ack { upto: 1, .. })
    )));
    // The node votes in term 2: the term-1 master's connection is over.
    s.advance_term(2);
    assert!(matches!(
        &s.take_outputs()[..],
        [
            SecondaryOutput::Send(SecondaryFrame::Error(e)),
            SecondaryOutput::Close
        ] if e.code == crate::protocol::ErrorCode::StaleTerm
    ));
    // A frame of term 1 still in flight is neither stored nor acknowledged.
    s.handle_frame(now, add(2));
    assert_eq!(s.take_outputs(), vec![]);
    assert_eq!(store.last_id(), 1);
    // Advancing to a term not newer changes nothing.
    s.advance_term(2);
    assert_eq!(s.take_outputs(), vec![]);
}

#[test]
fn a_secondary_acknowledges_only_what_it_synced() {
    // The durability rule lives in the core: with a store that keeps an unsynced tail,
    // no frame this core sends counts an entry before the store synced it.
    let store = Arc::new(MemStore::volatile());
    let mut s = SecondaryCore::new("s1", store.clone());
    let now = Instant::now();
    s.connected(now, 0);
    s.handle_frame(now, welcome(5, 3, None));
    s.take_outputs();
    let e = |id: u64| entry(id, 1);
    // Catch-up: the last chunk arrives; neither the Ack nor Ready goes before a sync.
    s.handle_frame(
        now,
        MasterFrame::Messages {
            entries: vec![e(1), e(2), e(3)],
            last: true,
            term: 1,
        },
    );
    assert_eq!(s.take_outputs(), vec![]);
    assert!(s.wants_sync());
    assert_eq!(store.last_id(), 3);
    // A heartbeat meanwhile is answered with what is durable: nothing.
    s.handle_frame(
        now,
        MasterFrame::Heartbeat {
            last_id: 3,
            commit_id: 0,
            term: 1,
        },
    );
    assert!(matches!(
        &s.take_outputs()[..],
        [SecondaryOutput::Send(SecondaryFrame::Heartbeat {
            upto: 0,
            ..
        })]
    ));
    store.sync().unwrap();
    s.synced();
    assert_eq!(
        s.take_outputs(),
        vec![
            SecondaryOutput::Send(SecondaryFrame::Ack {
                upto: 3,
                buffered: vec![]
            }),
            SecondaryOutput::Send(SecondaryFrame::Ready),
        ]
    );
    assert!(!s.wants_sync());
    s.synced();
    assert_eq!(s.take_outputs(), vec![], "nothing new: no second Ack");
    s.handle_frame(now, MasterFrame::ReadyAck);
    // Live: a batch with a gap. The parked id is reported with the synced prefix.
    let add = |ids: &[u64]| MasterFrame::AddMessages {
        entries: ids.iter().map(|&i| e(i)).collect(),
        commit_id: 0,
        urgent: false,
        term: 1,
    };
    s.handle_frame(now, add(&[4, 6]));
    assert_eq!(s.take_outputs(), vec![]);
    // Only part of it synced (a sync that began before the last append): that part.
    store.sync_to(3);
    s.synced();
    assert_eq!(s.take_outputs(), vec![]);
    store.sync().unwrap();
    s.synced();
    assert_eq!(
        s.take_outputs(),
        vec![SecondaryOutput::Send(SecondaryFrame::Ack {
            upto: 4,
            buffered: vec![6]
        })]
    );
    // A power loss before the next sync: the entry never acknowledged is gone, and
    // the next Hello says so.
    s.handle_frame(now, add(&[5]));
    assert_eq!(s.take_outputs(), vec![]);
    assert_eq!(store.last_id(), 6);
    assert_eq!(store.lose_unsynced(), 2);
    let mut s = SecondaryCore::new("s1", store.clone());
    s.connected(now, 0);
    assert!(matches!(
        &s.take_outputs()[..],
        [SecondaryOutput::Send(SecondaryFrame::Hello {
            next_expected: 5,
            ..
        })]
    ));
}

#[test]
fn a_secondary_says_hello_only_once_what_it_holds_is_synced() {
    let store = Arc::new(MemStore::volatile());
    let e = |id: u64| entry(id, 1);
    store.append(&[e(1), e(2)]).unwrap();
    store.sync_to(1);
    let mut s = SecondaryCore::new("s1", store.clone());
    let now = Instant::now();
    s.connected(now, 0);
    assert_eq!(s.take_outputs(), vec![]);
    assert!(s.wants_sync());
    store.sync().unwrap();
    s.synced();
    assert!(matches!(
        &s.take_outputs()[..],
        [SecondaryOutput::Send(SecondaryFrame::Hello {
            next_expected: 3,
            ..
        })]
    ));
    assert!(!s.wants_sync());
    // A connection lost before the sync forgets the pending Hello.
    store.append(&[e(3)]).unwrap();
    let mut s = SecondaryCore::new("s1", store.clone());
    s.connected(now, 0);
    assert!(s.wants_sync());
    s.disconnected();
    store.sync().unwrap();
    s.synced();
    assert_eq!(s.take_outputs(), vec![]);
}
