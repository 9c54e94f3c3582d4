//! A seeded simulation of a whole replica set: N equal members, each with its own
//! [`NodeCore`] (its election, its [`SecondaryCore`] while it follows and its
//! [`MasterCore`] while it leads) over its own log, switching roles as elections decide, on a
//! simulated network with virtual time. Faults: partitions (also one-way), crashes and
//! restarts (every member loses what its store had not synced; sometimes all at once),
//! pauses longer than the election timeout, lost, duplicated
//! and reordered frames, `stepDown`s with priorities, a member joining mid-run,
//! removals and re-admissions, and clients writing all along with w=1 and w=majority.
//!
//! After every step it checks:
//! - at most one master per term, and never one of priority 0;
//! - every entry a member knows as committed (up to its commit id) is the same entry on
//!   every member, and none is ever cut (Raft's state machine safety);
//! - every write acknowledged with w=majority is committed at its id;
//! - no member acknowledges an entry its store has not synced, nor loses one it
//!   acknowledged in a crash.
//!
//! After the faults heal: one master, every member with the same log, holding every
//! majority-acknowledged write once at its id.
//!
//! The members' decisions are the real node's ([`NodeCore`], which `node/src/member.rs`
//! and the follower thread drive); the glue here stands for their sockets and threads. A failing seed prints itself and is kept as a test (see the
//! end of this file); `SIM_SEED=n cargo test -p common --lib set_sim::one_seed --
//! --ignored --nocapture` replays one, `SIM_TRACE=<id>` adds its elections and when
//! entry `id` commits. CI runs 512 seeds (two per fault mix); any number:
//! `SIM_SEEDS=100000 cargo test -p common --release --lib set_sim::every -- --nocapture`;
//! for a given time on every core, reporting failing seeds instead of stopping at the
//! first: `scripts/sim-soak.sh SECONDS`.

use super::election::{ElectionConfig, LogPosition};
use super::*;
use crate::protocol::{ErrorCode, MasterFrame, MemberInfo, SecondaryFrame};
use crate::storage::{LogStore, MemStore, Membership};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

const TICK: Duration = Duration::from_millis(10);
const ELECTION: Duration = Duration::from_millis(1000);
const HEARTBEAT: Duration = Duration::from_millis(250);

/// Which faults a run injects (each seed picks a mix).
#[derive(Clone, Copy, Debug)]
struct Mix {
    partitions: bool,
    one_way: bool,
    crashes: bool,
    pauses: bool,
    lossy: bool,
    /// Priorities 0 to 2 (at least one member above 0), `stepDown`s and priority
    /// takeovers.
    handovers: bool,
    /// One more member, with an empty log, joins through a random member at a random
    /// moment of the faults (the member list changes during elections).
    joins: bool,
    /// The master removes a member (`DELETE /members/{name}`) and re-admits it later.
    removals: bool,
}

impl Mix {
    fn from_bits(b: u64) -> Self {
        Mix {
            partitions: b & 1 != 0,
            one_way: b & 2 != 0,
            crashes: b & 4 != 0,
            pauses: b & 8 != 0,
            lossy: b & 16 != 0,
            handovers: b & 32 != 0,
            joins: b & 64 != 0,
            removals: b & 128 != 0,
        }
    }

    fn bits(&self) -> u64 {
        [
            self.partitions,
            self.one_way,
            self.crashes,
            self.pauses,
            self.lossy,
            self.handovers,
            self.joins,
            self.removals,
        ]
        .iter()
        .enumerate()
        .map(|(i, on)| u64::from(*on) << i)
        .sum()
    }
}

type Store = Arc<MemStore>;

/// What the shell runs for the member: the follower's connection, or the master's.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Follower,
    Leader,
}

struct Member {
    name: String,
    /// `--priority`: 0 never stands.
    priority: u32,
    store: Store,
    /// Its election and follower, as the real node runs them.
    node: NodeCore<Store>,
    role: Role,
    up: bool,
    paused_until: Option<Instant>,
    /// Bumped at each crash: events of an earlier life are dropped.
    life: u64,
    /// Whether a sync of its store is running (what a crash keeps is what the store
    /// synced: every store keeps an unsynced tail until then).
    syncing: bool,
    /// The highest id it acknowledged to a master (Ack or Heartbeat) of the entries
    /// it holds now: a crash must never lose one of them.
    acked: u64,
    next_heartbeat: Instant,
    /// As follower: its connection to a master (conn id, member index).
    link: Option<(ConnId, usize)>,
    last_frame: Instant,
    hint: Option<usize>,
    next_dial: Instant,
    rotate: usize,
    /// As master: connection id -> the member at the other end.
    conns: BTreeMap<ConnId, usize>,
    /// Highest id checked against the committed log.
    verified: u64,
}

enum Msg {
    ToLeader(ConnId, SecondaryFrame),
    ToFollower(ConnId, MasterFrame),
    /// The other end of `conn` closed it.
    Closed(ConnId),
    Vote(usize, super::election::VoteRequest),
    VoteReply(usize, super::election::VoteResponse),
    Synced {
        upto: u64,
        term: u64,
    },
}

struct Envelope {
    to: usize,
    from: usize,
    /// The life of the receiver it was meant for (None: any).
    to_life: Option<u64>,
    msg: Msg,
}

struct Sim {
    /// A member to start late (index, at which step), with `Mix::joins`.
    join: Option<(usize, u64)>,
    seed: u64,
    rng: StdRng,
    now: Instant,
    mix: Mix,
    members: Vec<Member>,
    queue: BTreeMap<(Instant, u64), Envelope>,
    seq: u64,
    next_conn: ConnId,
    /// Directed pairs (from, to) that carry nothing now.
    blocked: BTreeSet<(usize, usize)>,
    /// Frames on a connection across a blocked pair: TCP delivers them once the path
    /// is back (or the connection is closed), in order.
    held: Vec<Envelope>,
    leaders: HashMap<u64, String>,
    /// The committed log as members report it: id -> (term, message).
    committed: BTreeMap<u64, (u64, String)>,
    /// For each committed id, a term by which it was committed: the term of the
    /// master that answered its write, or the term of a member that saw it committed
    /// (the smallest such term reported). Leader completeness binds the masters of
    /// that term and later ones only: a member that won an older term's election,
    /// and takes office late (it was paused with the votes in its queue), may lack
    /// what a newer term committed, as in Raft; it cannot commit anything itself, as
    /// every member that moved on refuses its frames.
    commit_term: BTreeMap<u64, u64>,
    /// Writes waiting for an answer: token -> (message, majority?).
    writes: HashMap<Token, (String, bool)>,
    next_token: Token,
    acked_majority: BTreeMap<u64, String>,
    acked_w1: usize,
    rolled_back: u64,
    steps: u64,
}

fn names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("n{i}")).collect()
}

impl Sim {
    fn new(seed: u64, n: usize, mix: Mix) -> Self {
        let now = Instant::now();
        let all = names(n);
        let mut rng = StdRng::seed_from_u64(seed ^ 0x9e37);
        let mut priorities: Vec<u32> = (0..n)
            .map(|_| {
                if mix.handovers {
                    rng.random_range(0..=2)
                } else {
                    1
                }
            })
            .collect();
        if priorities.iter().all(|p| *p == 0) {
            priorities[n - 1] = 1;
        }
        let hosts: Vec<MemberInfo> = all
            .iter()
            .zip(&priorities)
            .map(|(name, &priority)| MemberInfo {
                name: name.clone(),
                comm: name.clone(),
                http: name.clone(),
                priority,
            })
            .collect();
        let mut members: Vec<Member> = all
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let store = Arc::new(MemStore::volatile());
                store.set_log_id(7).unwrap();
                store
                    .set_membership(&Membership {
                        members: all.clone(),
                        removed: vec![],
                        hosts: hosts.clone(),
                        config_version: 1,
                        config_term: 0,
                    })
                    .unwrap();
                let priority = priorities[i];
                let seed = seed.wrapping_mul(31).wrapping_add(i as u64);
                let node = node_core(name, &store, priority, seed, now);
                Member {
                    name: name.clone(),
                    priority,
                    role: Role::Follower,
                    store,
                    node,
                    up: true,
                    paused_until: None,
                    life: 0,
                    syncing: false,
                    acked: 0,
                    next_heartbeat: now,
                    link: None,
                    last_frame: now,
                    hint: None,
                    next_dial: now,
                    rotate: i,
                    conns: BTreeMap::new(),
                    verified: 0,
                }
            })
            .collect();
        let mut join = None;
        if mix.joins {
            // Not started yet: an empty log that knows no member but the one it dials.
            let name = format!("n{n}");
            let store = Arc::new(MemStore::volatile());
            let node_seed = seed.wrapping_mul(31).wrapping_add(n as u64);
            let node = node_core(&name, &store, 1, node_seed, now);
            members.push(Member {
                name: name.clone(),
                priority: 1,
                role: Role::Follower,
                store,
                node,
                up: false,
                paused_until: None,
                life: 0,
                syncing: false,
                acked: 0,
                next_heartbeat: now,
                link: None,
                last_frame: now,
                hint: None,
                next_dial: now,
                rotate: n,
                conns: BTreeMap::new(),
                verified: 0,
            });
            join = Some((n, rng.random_range(100..2500u64)));
        }
        Sim {
            join,
            seed,
            rng: StdRng::seed_from_u64(seed),
            now,
            mix,
            members,
            queue: BTreeMap::new(),
            seq: 0,
            next_conn: 1,
            blocked: BTreeSet::new(),
            held: Vec::new(),
            leaders: HashMap::new(),
            committed: BTreeMap::new(),
            commit_term: BTreeMap::new(),
            writes: HashMap::new(),
            next_token: 1,
            acked_majority: BTreeMap::new(),
            acked_w1: 0,
            rolled_back: 0,
            steps: 0,
        }
    }

    fn fail(&self, what: String) -> ! {
        panic!(
            "seed {} ({:?}), at {:?} of virtual time, step {}: {what}\nreplay: SIM_SEED={} SIM_MIX={} cargo test -p common --lib set_sim::one_seed -- --ignored --nocapture",
            self.seed,
            self.mix,
            self.elapsed(),
            self.steps,
            self.seed,
            self.mix.bits()
        );
    }

    fn elapsed(&self) -> Duration {
        self.now.duration_since(self.queue_origin())
    }

    fn queue_origin(&self) -> Instant {
        self.now - Duration::from_millis(self.steps * TICK.as_millis() as u64)
    }

    fn can_reach(&self, from: usize, to: usize) -> bool {
        !self.blocked.contains(&(from, to))
    }

    /// Send `msg` from `from` to `to` after a network delay (dropped across a
    /// partition, or at random where the mix is lossy and `droppable`; frames may be
    /// duplicated where it is lossy).
    fn send(&mut self, from: usize, to: usize, msg: Msg, droppable: bool) {
        if !self.can_reach(from, to) {
            if !matches!(msg, Msg::Vote(..) | Msg::VoteReply(..)) {
                let to_life = Some(self.members[to].life);
                self.held.push(Envelope {
                    to,
                    from,
                    to_life,
                    msg,
                });
            }
            return;
        }
        if self.mix.lossy && droppable && self.rng.random_bool(0.05) {
            return;
        }
        let twin = match &msg {
            Msg::ToLeader(c, f) if self.mix.lossy && self.rng.random_bool(0.02) => {
                Some(Msg::ToLeader(*c, f.clone()))
            }
            Msg::ToFollower(c, f) if self.mix.lossy && self.rng.random_bool(0.02) => {
                Some(Msg::ToFollower(*c, f.clone()))
            }
            _ => None,
        };
        for msg in std::iter::once(msg).chain(twin) {
            let delay = Duration::from_millis(self.rng.random_range(1..=15));
            self.seq += 1;
            let to_life = Some(self.members[to].life);
            self.queue.insert(
                (self.now + delay, self.seq),
                Envelope {
                    to,
                    from,
                    to_life,
                    msg,
                },
            );
        }
    }

    fn log_position(&self, i: usize) -> LogPosition {
        self.members[i].store.log_position()
    }

    // ---- the shell: what node/src/member.rs and the follower thread do ----

    /// Hand `input` to member `i`'s [`NodeCore`], then carry out what it decided.
    fn node_input(&mut self, i: usize, input: NodeInput) {
        let now = self.now;
        self.members[i].node.handle(now, input);
        self.apply_node(i);
    }

    fn apply_node(&mut self, i: usize) {
        let outputs = self.members[i].node.take_outputs();
        for o in outputs {
            match o {
                NodeOutput::Term(_) => {}
                NodeOutput::VoteReply { id, resp } => {
                    if trace() {
                        eprintln!(
                            "{:?} {} answers {} in term {}: {resp:?}",
                            self.elapsed(),
                            self.members[i].name,
                            self.members[id as usize].name,
                            self.members[i].node.election().term()
                        );
                    }
                    self.send(i, id as usize, Msg::VoteReply(i, resp), false)
                }
                NodeOutput::Voted { candidate, .. } => {
                    self.members[i].hint = Some(self.index(&candidate));
                }
                NodeOutput::RequestVotes { req, voters } => {
                    for v in voters {
                        let j = self.index(&v);
                        self.send(i, j, Msg::Vote(i, req.clone()), false);
                    }
                }
                NodeOutput::BecomeLeader { term } => self.lead(i, term),
                NodeOutput::BecomeFollower { .. } => self.follow(i),
                NodeOutput::Link(o) => self.link_output(i, o),
                NodeOutput::Master(o) => self.master_output(i, o),
                NodeOutput::Refused { token, .. } => {
                    self.writes.remove(&token);
                }
                NodeOutput::Removed(r) => match r {
                    Ok(_) | Err(MembershipError::InProgress | MembershipError::NotMaster) => {}
                    Err(e) => self.fail(format!("removing a member: {e}")),
                },
                NodeOutput::Readmitted(r) => {
                    if let Err(e) = r {
                        self.fail(format!("re-admitting a member: {e}"));
                    }
                }
            }
        }
        let now = self.now;
        if let Some(l) = self.members[i].node.leader() {
            // The master's store writes at once, syncs a little later.
            let (last, term) = (l.last_id(), l.term());
            if l.written_id() < last {
                self.members[i].node.handle(now, NodeInput::Flushed(last));
                return self.apply_node(i);
            }
            if l.needs_sync() && !self.members[i].syncing {
                self.start_sync(i, 5, last, term);
            }
        } else if self.members[i].node.wants_sync() && !self.members[i].syncing {
            // The follower's store syncs a little later (it gathers batches no write
            // waits for, for up to 10 ms): only then are they acknowledged.
            let upto = self.members[i].store.last_id();
            self.start_sync(i, 10, upto, 0);
        }
    }

    fn index(&self, name: &str) -> usize {
        self.members
            .iter()
            .position(|m| m.name == name)
            .expect("a member")
    }

    /// With `SIM_TRACE`, every member's term, log and member list (before a failure).
    fn dump(&self) {
        if !trace() {
            return;
        }
        for m in &self.members {
            let ms = m.store.membership();
            eprintln!(
                "{}: up {} term {} last {} members {:?} removed {:?} v{} voters {:?}",
                m.name,
                m.up,
                m.node.election().term(),
                m.store.last_id(),
                ms.members,
                ms.removed,
                ms.config_version,
                m.node.election().voters()
            );
        }
    }

    fn lead(&mut self, i: usize, term: u64) {
        if let Some(other) = self.leaders.get(&term)
            && *other != self.members[i].name
        {
            self.dump();
            let name = self.members[i].name.clone();
            self.fail(format!("two masters in term {term}: {other} and {name}"));
        }
        self.leaders.insert(term, self.members[i].name.clone());
        if trace() {
            eprintln!(
                "{:?} {} leads term {term} with log {:?} history {:?}",
                self.elapsed(),
                self.members[i].name,
                self.log_position(i),
                self.members[i].store.history()
            );
        }
        self.drop_link(i);
        if self.members[i].priority == 0 {
            let name = self.members[i].name.clone();
            self.fail(format!(
                "{name}, of priority 0, became master of term {term}"
            ));
        }
        let m = &mut self.members[i];
        m.syncing = false;
        m.next_heartbeat = self.now;
        m.role = Role::Leader;
        // Every entry committed by this term is in the new master's log (leader
        // completeness).
        let last = self.members[i].store.last_id();
        let missing = (self.committed.range(last + 1..))
            .map(|(&id, _)| id)
            .find(|id| self.commit_term.get(id).is_some_and(|&t| t <= term));
        if trace()
            && missing.is_none()
            && let Some((&id, _)) = self.committed.range(last + 1..).next()
        {
            eprintln!(
                "{:?} {} leads term {term} without {id}, committed in term {:?}: a later term",
                self.elapsed(),
                self.members[i].name,
                self.commit_term.get(&id)
            );
        }
        if let Some(id) = missing {
            self.dump();
            let name = self.members[i].name.clone();
            self.fail(format!(
                "{name} became master of term {term} without committed entry {id} (its log ends at {last})"
            ));
        }
    }

    /// Stop being master (if it was): close every replication connection; follow.
    fn follow(&mut self, i: usize) {
        if self.members[i].role == Role::Leader {
            let conns: Vec<(ConnId, usize)> = std::mem::take(&mut self.members[i].conns)
                .into_iter()
                .collect();
            for (c, j) in conns {
                self.send(i, j, Msg::Closed(c), false);
            }
            // Writes still waiting are answered 503: their fate is unknown to clients.
            self.members[i].role = Role::Follower;
        }
    }

    fn drop_link(&mut self, i: usize) {
        if let Some((c, j)) = self.members[i].link.take() {
            self.send(i, j, Msg::Closed(c), false);
        }
        if matches!(self.members[i].role, Role::Follower) {
            self.node_input(i, NodeInput::Disconnected);
        }
    }

    /// What the follower thread does with an output for its connection.
    fn link_output(&mut self, i: usize, o: SecondaryOutput) {
        match o {
            SecondaryOutput::Send(frame) => {
                if let SecondaryFrame::Ack { upto, .. } | SecondaryFrame::Heartbeat { upto, .. } =
                    frame
                {
                    let durable = self.members[i].store.durable_id();
                    if upto > durable {
                        let name = self.members[i].name.clone();
                        self.fail(format!(
                            "{name} acknowledged {upto} with its store durable to {durable}"
                        ));
                    }
                    let m = &mut self.members[i];
                    m.acked = m.acked.max(upto);
                }
                if let Some((c, j)) = self.members[i].link {
                    let ack = matches!(frame, SecondaryFrame::Ack { .. });
                    self.send(i, j, Msg::ToLeader(c, frame), ack);
                }
            }
            SecondaryOutput::Close => self.drop_link(i),
            SecondaryOutput::Following { term, master } => {
                if trace() {
                    eprintln!(
                        "{:?} {} follows {master} of term {term}, holding {}",
                        self.elapsed(),
                        self.members[i].name,
                        self.members[i].store.membership().stamp(),
                    );
                }
            }
            // NodeCore's own: they never leave it.
            SecondaryOutput::MembersChanged | SecondaryOutput::StandNow => {}
            SecondaryOutput::RolledBack(r) => {
                self.rolled_back += r.count;
                let m = &mut self.members[i];
                m.acked = m.acked.min(r.from_id - 1);
            }
        }
    }

    /// Member `i`'s store starts a sync of what it holds up to `upto` (for the master
    /// of `term`; 0: for the follower); it is done after 1 to `max_ms` ms.
    fn start_sync(&mut self, i: usize, max_ms: u64, upto: u64, term: u64) {
        self.members[i].syncing = true;
        self.seq += 1;
        let delay = Duration::from_millis(self.rng.random_range(1..=max_ms));
        let life = self.members[i].life;
        self.queue.insert(
            (self.now + delay, self.seq),
            Envelope {
                to: i,
                from: i,
                to_life: Some(life),
                msg: Msg::Synced { upto, term },
            },
        );
    }

    /// What the master's shell does with an output for its connections and clients.
    fn master_output(&mut self, i: usize, o: MasterOutput) {
        match o {
            MasterOutput::Send { conn, frame } => {
                if let Some(&j) = self.members[i].conns.get(&conn) {
                    self.send(i, j, Msg::ToFollower(conn, frame), false);
                }
            }
            MasterOutput::Close { conn } => {
                if let Some(j) = self.members[i].conns.remove(&conn) {
                    self.send(i, j, Msg::Closed(conn), false);
                }
            }
            MasterOutput::Reply { token, outcome } => self.answered(i, token, outcome),
            MasterOutput::StorageFailed(e) => self.fail(format!("storage: {e}")),
            // NodeCore's own: they never leave it.
            MasterOutput::NewerTerm(_)
            | MasterOutput::LostQuorum
            | MasterOutput::HandedOver { .. } => {}
        }
    }

    fn answered(&mut self, i: usize, token: Token, outcome: WriteOutcome) {
        let Some((message, majority)) = self.writes.remove(&token) else {
            return;
        };
        let WriteOutcome::Committed(r) = outcome else {
            return;
        };
        if majority {
            // Acknowledged by a majority: committed at this id for good.
            let entry = (r.term, message.clone());
            let have = self.members[i].store.read(r.id, 1).unwrap();
            if have.first().map(|e| (e.term, e.message.clone())) != Some(entry.clone()) {
                self.fail(format!(
                    "w=majority {message} acknowledged at {} but not there",
                    r.id
                ));
            }
            self.note_committed(r.id, entry, r.term);
            self.acked_majority.insert(r.id, message);
        } else {
            self.acked_w1 += 1;
        }
    }

    fn note_committed(&mut self, id: u64, entry: (u64, String), by_term: u64) {
        let t = self.commit_term.entry(id).or_insert(by_term);
        *t = (*t).min(by_term);
        if let Some(old) = self.committed.get(&id)
            && *old != entry
        {
            self.fail(format!("id {id} committed as {old:?} and as {entry:?}"));
        }
        if trace() && !self.committed.contains_key(&id) && id == trace_id() {
            eprintln!("{:?} committed {id}: {entry:?}", self.elapsed());
            for m in &self.members {
                let commit = match (m.node.leader(), m.node.follower()) {
                    (Some(c), _) => format!(
                        "leader commit {} members {}",
                        c.commit_id(),
                        c.status(self.now).member_count
                    ),
                    (None, f) => {
                        let c = f.map_or(0, |f| f.commit_id());
                        format!("follower commit {c}")
                    }
                };
                eprintln!(
                    "  {} up {} last {} {commit} stored members {:?}",
                    m.name,
                    m.up,
                    m.store.last_id(),
                    m.store.membership().members
                );
            }
        }
        self.committed.insert(id, entry);
    }

    // ---- events ----

    fn deliver(&mut self, env: Envelope) {
        let i = env.to;
        if !self.members[i].up || env.to_life.is_some_and(|l| l != self.members[i].life) {
            return;
        }
        if !self.can_reach(env.from, i) {
            match env.msg {
                Msg::Synced { .. } => {}
                Msg::Vote(..) | Msg::VoteReply(..) => return, // its connection failed
                _ => return self.held.push(env),              // TCP retransmits once healed
            }
        }
        let now = self.now;
        match env.msg {
            Msg::Synced { upto, term } => {
                // The sync ran, whatever the member became since; only the role that
                // asked for it (a master of `term`, or a follower: term 0) hears of it.
                let m = &mut self.members[i];
                m.syncing = false;
                m.store.sync_to(upto);
                match m.node.leader() {
                    Some(l) if l.term() == term => self.node_input(i, NodeInput::Persisted(upto)),
                    Some(_) => self.apply_node(i),
                    None if term == 0 => self.node_input(i, NodeInput::Synced),
                    None => self.apply_node(i),
                }
            }
            Msg::ToLeader(conn, frame) => {
                if self.members[i].conns.contains_key(&conn) {
                    self.node_input(i, NodeInput::FromSecondary { conn, frame });
                }
            }
            Msg::ToFollower(conn, frame) => {
                if self.members[i].link.map(|l| l.0) != Some(conn) {
                    return;
                }
                self.members[i].last_frame = now;
                if self.members[i].role == Role::Leader {
                    return;
                }
                if let MasterFrame::Error(e) = &frame
                    && e.code == ErrorCode::NotMaster
                {
                    let hint = e.master.as_ref().map(|m| self.index(m));
                    self.members[i].hint = hint;
                    self.drop_link(i);
                    return;
                }
                self.node_input(i, NodeInput::Frames(vec![frame]));
            }
            Msg::Closed(conn) => {
                if self.members[i].link.map(|l| l.0) == Some(conn) {
                    self.members[i].link = None;
                    if let Role::Follower = self.members[i].role {
                        self.node_input(i, NodeInput::Disconnected);
                    }
                } else if self.members[i].conns.remove(&conn).is_some() {
                    self.node_input(i, NodeInput::Closed(conn));
                }
            }
            Msg::Vote(from, req) => {
                if trace() {
                    eprintln!(
                        "{:?} {} asked by {} for term {} ({:?} vs own {:?})",
                        self.elapsed(),
                        self.members[i].name,
                        req.candidate,
                        req.term,
                        req.log,
                        self.log_position(i)
                    );
                }
                // Answered (VoteReply) once the vote is saved.
                let id = from as VoteId;
                self.node_input(i, NodeInput::VoteRequest { id, req });
            }
            Msg::VoteReply(from, resp) => {
                let from = self.members[from].name.clone();
                self.node_input(i, NodeInput::Vote { from, resp });
            }
        }
    }

    /// A follower without a master dials one: the member it was told of, else the
    /// next in turn.
    fn dial(&mut self, i: usize) {
        let n = self.members.len();
        let target = match self.members[i].hint.take() {
            Some(t) if t != i => t,
            _ => {
                let m = &mut self.members[i];
                m.rotate = (m.rotate + 1) % n;
                if m.rotate == i {
                    m.rotate = (m.rotate + 1) % n;
                }
                m.rotate
            }
        };
        self.members[i].next_dial =
            self.now + Duration::from_millis(self.rng.random_range(50..=250));
        if !self.members[target].up
            || !self.can_reach(i, target)
            || !self.can_reach(target, i)
            || self.members[target].paused_until.is_some()
        {
            return; // connection refused or timed out
        }
        let conn = self.next_conn;
        self.next_conn += 1;
        match &mut self.members[target].role {
            Role::Leader => {
                self.members[target].conns.insert(conn, i);
                let peer = self.members[i].name.clone();
                self.node_input(target, NodeInput::Opened { conn, peer });
            }
            Role::Follower => {
                // Not the master: it says where the master is and closes.
                let hint = self.members[target]
                    .node
                    .election()
                    .leader()
                    .map(str::to_string);
                self.members[i].hint = hint
                    .filter(|h| *h != self.members[target].name)
                    .map(|h| self.index(&h));
                return;
            }
        }
        self.members[i].link = Some((conn, target));
        self.members[i].last_frame = self.now;
        let host = self.members[target].name.clone();
        self.node_input(i, NodeInput::Connected { host });
    }

    fn timers(&mut self, i: usize) {
        let now = self.now;
        if let Some(at) = self.members[i].node.poll_timeout()
            && at <= now
        {
            self.node_input(i, NodeInput::Timeout);
        }
        match &mut self.members[i].role {
            Role::Leader => {
                if self.members[i].next_heartbeat <= now {
                    self.members[i].next_heartbeat = now + HEARTBEAT;
                    self.node_input(i, NodeInput::Heartbeat);
                }
            }
            Role::Follower => {
                let silent = now.saturating_duration_since(self.members[i].last_frame);
                if self.members[i].link.is_some() && silent > ELECTION * 2 {
                    self.drop_link(i);
                }
                if self.members[i].link.is_none() && self.members[i].next_dial <= now {
                    self.dial(i);
                }
            }
        }
    }

    fn crash(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.up = false;
        m.life += 1;
        // A crash is a power loss: every member loses what its store had not synced.
        // Never a committed entry on a master (it counts itself only for what it
        // synced), nor anything a member acknowledged (it acknowledges only that).
        let keep = m.store.durable_id();
        let last = m.store.last_id();
        if m.role == Role::Leader
            && last > keep
            && let Some((&id, _)) = self.committed.range(keep + 1..=last).next()
        {
            let name = m.name.clone();
            self.fail(format!("{name} lost committed entry {id} in a crash"));
        }
        if m.acked > keep {
            let (name, acked) = (m.name.clone(), m.acked);
            self.fail(format!(
                "{name} acknowledged {acked} but its store synced only {keep}"
            ));
        }
        let m = &mut self.members[i];
        m.store.lose_unsynced();
        m.acked = m.acked.min(keep);
        let link = m.link.take();
        let conns: Vec<(ConnId, usize)> = std::mem::take(&mut m.conns).into_iter().collect();
        // The kernel closes its sockets: the peers hear of it.
        if let Some((c, j)) = link {
            self.send(i, j, Msg::Closed(c), false);
        }
        for (c, j) in conns {
            self.send(i, j, Msg::Closed(c), false);
        }
    }

    fn restart(&mut self, i: usize) {
        let now = self.now;
        let seed = self.rng.random();
        let m = &mut self.members[i];
        m.up = true;
        m.node = node_core(&m.name, &m.store, m.priority, seed, now);
        m.role = Role::Follower;
        m.link = None;
        m.hint = None;
        m.next_dial = now;
        m.last_frame = now;
        m.syncing = false;
        m.verified = m.verified.min(m.store.last_id());
    }

    // ---- the run ----

    fn step(&mut self, faults: bool) {
        self.steps += 1;
        self.now += TICK;
        if let Some((j, at)) = self.join
            && (at <= self.steps || !faults)
        {
            // It starts, pointed at a random member of the set (its --master-ip).
            self.join = None;
            if !self.members[j].up {
                let seed_member = self.rng.random_range(0..j);
                self.restart(j);
                self.members[j].hint = Some(seed_member);
            }
        }
        let n = self.members.len();
        // What TCP held back goes through once its path is open again.
        let held = std::mem::take(&mut self.held);
        for env in held {
            if self.can_reach(env.from, env.to) {
                self.seq += 1;
                self.queue.insert((self.now + TICK, self.seq), env);
            } else {
                self.held.push(env);
            }
        }
        // Deliver what is due.
        while let Some(entry) = self.queue.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let env = entry.remove();
            let to = env.to;
            if let Some(until) = self.members[to].paused_until {
                // A paused process reads nothing: it waits in its socket.
                self.seq += 1;
                self.queue.insert((until + TICK, self.seq), env);
                continue;
            }
            self.deliver(env);
        }
        for i in 0..n {
            if let Some(until) = self.members[i].paused_until
                && until <= self.now
            {
                self.members[i].paused_until = None;
            }
            if self.members[i].up && self.members[i].paused_until.is_none() {
                self.timers(i);
            }
        }
        if faults {
            self.inject();
        }
        self.client();
        self.check();
    }

    fn inject(&mut self) {
        let n = self.members.len();
        if self.mix.partitions && self.rng.random_bool(0.004) {
            self.blocked.clear();
            let cut: Vec<bool> = (0..n).map(|_| self.rng.random_bool(0.4)).collect();
            for a in 0..n {
                for b in 0..n {
                    if cut[a] != cut[b] {
                        self.blocked.insert((a, b));
                    }
                }
            }
        }
        if self.mix.one_way && self.rng.random_bool(0.003) {
            let a = self.rng.random_range(0..n);
            let b = self.rng.random_range(0..n);
            if a != b {
                self.blocked.insert((a, b));
            }
        }
        if (self.mix.partitions || self.mix.one_way) && self.rng.random_bool(0.003) {
            self.blocked.clear();
        }
        if self.mix.crashes && self.rng.random_bool(0.003) {
            let i = self.rng.random_range(0..n);
            if self.members[i].up {
                self.crash(i);
            }
        }
        if self.mix.crashes && self.rng.random_bool(0.0005) {
            // A power cut of the whole site: every member loses its unsynced tail at
            // the same moment, so an entry a majority acknowledged before syncing it
            // would be gone from that majority.
            for i in 0..n {
                if self.members[i].up {
                    self.crash(i);
                }
            }
        }
        if self.mix.crashes && self.rng.random_bool(0.006) {
            let i = self.rng.random_range(0..n);
            if !self.members[i].up {
                self.restart(i);
            }
        }
        if self.mix.handovers && self.rng.random_bool(0.002) {
            // POST /stepDown on whoever is master: hand over, then stay out for a while.
            let leaders: Vec<usize> = (0..n)
                .filter(|&i| self.members[i].up && self.members[i].role == Role::Leader)
                .collect();
            if let Some(&i) = leaders.first() {
                let quiet = Duration::from_millis(self.rng.random_range(0..=3000));
                self.node_input(i, NodeInput::StepDown(quiet));
            }
        }
        if self.mix.removals && self.rng.random_bool(0.003) {
            // DELETE /members/{name} or POST /members on whoever is master.
            let leader = (0..n).find(|&i| {
                self.members[i].up
                    && self.members[i].paused_until.is_none()
                    && self.members[i].role == Role::Leader
            });
            if let Some(i) = leader {
                let now = self.now;
                let remove = self.rng.random_bool(0.5);
                let pick = self.rng.random_range(0..n);
                let at = self.elapsed();
                let mut input = None;
                if let Some(core) = self.members[i].node.leader() {
                    let st = core.status(now);
                    if remove {
                        if let Some(m) = st.members.get(pick % st.members.len().max(1)) {
                            // Refused while the last change is not on a majority.
                            if trace() {
                                eprintln!(
                                    "{:?} master n{i} removes {} (settled {}) v{} members {:?}",
                                    at,
                                    m.name,
                                    core.voters_settled(),
                                    st.config_version,
                                    st.members
                                        .iter()
                                        .map(|m| (m.name.clone(), m.connected))
                                        .collect::<Vec<_>>()
                                );
                            }
                            // Refused while the last change is not on a majority.
                            input = Some(NodeInput::RemoveMember(m.name.clone()));
                        }
                    } else if let Some(name) = st.removed.first() {
                        if trace() {
                            eprintln!("master n{i} readmits {name}");
                        }
                        input = Some(NodeInput::Readmit(name.clone()));
                    }
                }
                if let Some(input) = input {
                    self.node_input(i, input);
                }
            }
        }
        if self.mix.pauses && self.rng.random_bool(0.002) {
            let i = self.rng.random_range(0..n);
            let ms = self.rng.random_range(500..=4000);
            self.members[i]
                .paused_until
                .get_or_insert(self.now + Duration::from_millis(ms));
        }
    }

    fn client(&mut self) {
        if !self.rng.random_bool(0.3) {
            return;
        }
        let leaders: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                self.members[i].up
                    && self.members[i].paused_until.is_none()
                    && self.members[i].role == Role::Leader
            })
            .collect();
        if leaders.is_empty() {
            return;
        }
        let i = leaders[self.rng.random_range(0..leaders.len())];
        let majority = self.rng.random_bool(0.5);
        let token = self.next_token;
        self.next_token += 1;
        let message = format!("w{token}");
        let req = WriteRequest {
            message: message.clone(),
            write_concern: if majority {
                WriteConcern::Majority
            } else {
                WriteConcern::Count(1)
            },
            timeout: Some(Duration::from_secs(5)),
            request_id: None,
        };
        // Refused (NodeOutput::Refused): forgotten again.
        self.writes.insert(token, (message, majority));
        self.node_input(i, NodeInput::Write { token, write: req });
    }

    /// Every member's entries up to its commit id are the committed log's.
    fn check(&mut self) {
        for i in 0..self.members.len() {
            if !self.members[i].up {
                continue;
            }
            let node = &self.members[i].node;
            let commit = match (node.leader(), node.follower()) {
                (Some(c), _) => c.commit_id(),
                (None, f) => f.map_or(0, |f| f.commit_id()),
            };
            let store = self.members[i].store.clone();
            let last = store.last_id();
            if last < self.members[i].verified {
                let name = self.members[i].name.clone();
                let v = self.members[i].verified;
                self.fail(format!(
                    "{name} cut committed entries: its log ends at {last}, {v} were committed"
                ));
            }
            let upto = commit.min(last);
            let from = self.members[i].verified + 1;
            if upto >= from {
                let term = self.members[i].node.election().term();
                for e in store.read(from, (upto - from + 1) as usize).unwrap() {
                    self.note_committed(e.id, (e.term, e.message), term);
                }
                self.members[i].verified = upto;
            }
        }
    }

    fn heal(&mut self) {
        self.blocked.clear();
        for i in 0..self.members.len() {
            self.members[i].paused_until = None;
            if !self.members[i].up {
                self.restart(i);
            }
        }
    }

    /// After the faults: within `within`, one master, all logs equal, every
    /// majority-acknowledged write in them once at its id.
    fn converge(&mut self, within: Duration) {
        let until = self.now + within;
        while self.now < until {
            self.step(false);
            let leaders: Vec<usize> = (0..self.members.len())
                .filter(|&i| self.members[i].role == Role::Leader)
                .collect();
            let [l] = leaders[..] else { continue };
            // Everyone back in: the operator re-admits whoever was removed.
            let now = self.now;
            let removed = (self.members[l].node.leader()).map_or(vec![], |c| c.status(now).removed);
            for name in removed {
                self.node_input(l, NodeInput::Readmit(name));
            }
            let log = self.members[l].store.read(1, usize::MAX).unwrap();
            let commit = (self.members[l].node.leader()).map_or(0, |c| c.commit_id());
            let same = self
                .members
                .iter()
                .all(|m| m.store.read(1, usize::MAX).unwrap() == log);
            if !same || commit < log.len() as u64 || self.members[l].store.durable_id() < commit {
                continue;
            }
            for (id, msg) in &self.acked_majority {
                match log.get(*id as usize - 1) {
                    Some(e) if e.message == *msg => {}
                    other => self.fail(format!("w=majority {msg} at {id} lost: {other:?}")),
                }
            }
            let mut seen = BTreeSet::new();
            for e in &log {
                if !seen.insert(&e.message) {
                    self.fail(format!("{} appended twice", e.message));
                }
            }
            return;
        }
        let state: Vec<String> = self
            .members
            .iter()
            .map(|m| {
                let ms = m.store.membership();
                format!(
                    "{} {} term {} last {} members v{} {:?} removed {:?}",
                    m.name,
                    if m.role == Role::Leader {
                        "master"
                    } else {
                        "follower"
                    },
                    m.node.election().term(),
                    m.store.last_id(),
                    ms.config_version,
                    ms.members,
                    ms.removed
                )
            })
            .collect();
        self.fail(format!(
            "did not converge within {within:?} after healing: {state:?}"
        ));
    }
}

fn trace() -> bool {
    std::env::var("SIM_TRACE").is_ok()
}

fn trace_id() -> u64 {
    std::env::var("SIM_TRACE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Member `name`'s core over `store`, as a restarted node builds it: from what the
/// store holds.
fn node_core(name: &str, store: &Store, priority: u32, seed: u64, now: Instant) -> NodeCore<Store> {
    let cfg = ElectionConfig {
        name: name.to_string(),
        priority,
        election_timeout: ELECTION,
        seed,
    };
    let identity = Identity {
        comm: Some(name.to_string()),
        http: Some(name.to_string()),
        priority,
        delay_ms: 0,
    };
    let mut master = MasterConfig::new(name.to_string(), Duration::from_millis(100));
    master.seed = seed;
    master.health = HealthPolicy {
        heartbeat: HEARTBEAT,
        suspect_after: 2,
        unhealthy_after: 5,
    };
    master.comm = name.to_string();
    master.priority = priority;
    master.quorum_timeout = Some(ELECTION);
    let cfg = NodeConfig {
        election: cfg,
        start_as_master: false,
        identity,
        master,
    };
    NodeCore::new(cfg, now, store.clone())
}

/// What one seed checked.
#[derive(Debug)]
pub struct Report {
    pub steps: u64,
    pub acked_majority: usize,
    pub acked_w1: usize,
    pub rolled_back: u64,
    pub terms: usize,
}

/// Run seed `seed`: members (3 or 5) and the fault mix follow from it.
pub fn replay(seed: u64) -> Report {
    run(seed, seed % 256)
}

/// Run seed `seed` with the fault mix of `mix_bits` (see [`Mix::from_bits`]).
fn run(seed: u64, mix_bits: u64) -> Report {
    let mut pick = StdRng::seed_from_u64(seed ^ 0x5eed);
    let n = if pick.random_bool(0.5) { 3 } else { 5 };
    let mix = Mix::from_bits(mix_bits);
    let mut sim = Sim::new(seed, n, mix);
    let fault_steps = 3000; // 30 s of virtual time
    for _ in 0..fault_steps {
        sim.step(true);
    }
    sim.heal();
    sim.converge(Duration::from_secs(30));
    Report {
        steps: sim.steps,
        acked_majority: sim.acked_majority.len(),
        acked_w1: sim.acked_w1,
        rolled_back: sim.rolled_back,
        terms: sim.leaders.len(),
    }
}

#[test]
fn every_fault_mix_keeps_majority_writes_and_converges() {
    // 256 mixes (every combination of the eight fault kinds), two seeds each.
    let seeds: u64 = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let mut total = Report {
        steps: 0,
        acked_majority: 0,
        acked_w1: 0,
        rolled_back: 0,
        terms: 0,
    };
    for seed in 0..seeds {
        let r = replay(seed);
        total.steps += r.steps;
        total.acked_majority += r.acked_majority;
        total.acked_w1 += r.acked_w1;
        total.rolled_back += r.rolled_back;
        total.terms += r.terms;
    }
    eprintln!("{seeds} seeds: {total:?}");
    assert!(total.acked_majority > 0 && total.terms > seeds as usize);
}

/// The long run: as many seeds as fit in `SIM_SECONDS` (default 60) of wall time on
/// `SIM_THREADS` threads (default: every core), from seed `SIM_FIRST` (default
/// 1,000,000, past the seeds CI runs) on; reports seeds, virtual steps, fault mixes
/// covered and every failing seed with its mix and first line of failure, and fails
/// if there is one. `scripts/sim-soak.sh SECONDS` runs it in release.
#[test]
#[ignore = "a long run: scripts/sim-soak.sh"]
fn soak() {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU64, Ordering};
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let seconds = env("SIM_SECONDS", 60);
    let threads = env(
        "SIM_THREADS",
        std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
    );
    let first = env("SIM_FIRST", 1_000_000);
    let started = std::time::Instant::now();
    let deadline = started + Duration::from_secs(seconds);
    let next = AtomicU64::new(first);
    let (seeds, steps, majority_writes) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let mixes = Mutex::new(std::collections::BTreeSet::new());
    let failing = Mutex::new(Vec::new());
    // Failures are collected, not printed as they happen.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                while std::time::Instant::now() < deadline {
                    let seed = next.fetch_add(1, Ordering::Relaxed);
                    let outcome = std::panic::catch_unwind(|| replay(seed));
                    seeds.fetch_add(1, Ordering::Relaxed);
                    mixes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(seed % 256);
                    match outcome {
                        Ok(r) => {
                            steps.fetch_add(r.steps, Ordering::Relaxed);
                            majority_writes.fetch_add(r.acked_majority as u64, Ordering::Relaxed);
                        }
                        Err(e) => {
                            let why = e
                                .downcast_ref::<String>()
                                .map(String::as_str)
                                .or_else(|| e.downcast_ref::<&str>().copied())
                                .unwrap_or("panic")
                                .lines()
                                .next()
                                .unwrap_or_default()
                                .to_string();
                            failing.lock().unwrap_or_else(|e| e.into_inner()).push((
                                seed,
                                seed % 256,
                                why,
                            ));
                        }
                    }
                }
            });
        }
    });
    std::panic::set_hook(hook);
    let failing = failing.into_inner().unwrap_or_else(|e| e.into_inner());
    let n = seeds.load(Ordering::Relaxed);
    eprintln!(
        "soak: {n} seeds ({first}..{}) in {:.0} s on {threads} threads; {} virtual steps ({:.1} h of simulated time); {} majority-acknowledged writes checked; {} of 256 fault mixes; {} failing",
        first + n,
        started.elapsed().as_secs_f64(),
        steps.load(Ordering::Relaxed),
        steps.load(Ordering::Relaxed) as f64 * TICK.as_secs_f64() / 3600.0,
        majority_writes.load(Ordering::Relaxed),
        mixes.lock().map_or(0, |m| m.len()),
        failing.len()
    );
    for (seed, mix, why) in &failing {
        eprintln!("  FAILING seed {seed} (mix {mix}): {why}");
    }
    assert!(failing.is_empty(), "{} failing seeds", failing.len());
}

/// `SIM_SEED=n cargo test -p common --lib set_sim::one_seed -- --ignored --nocapture`
/// replays one seed (with `SIM_TRACE=<id>` it prints elections and when `id` commits).
#[test]
#[ignore]
fn one_seed() {
    let seed = std::env::var("SIM_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mix = std::env::var("SIM_MIX")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(seed % 256);
    eprintln!("{:?}", run(seed, mix));
}

/// Found by this simulation: a member voted in term 6, then stored and acknowledged
/// entry 307 of the term-4 master over its open connection, which committed it with
/// that ack; the term-6 master, elected with the same member's vote, lacked it.
/// `SecondaryCore::advance_term` closes that window.
#[test]
fn seed_426_no_acknowledgement_of_an_older_master_after_a_vote() {
    // Found when mixes were chosen by `seed % 32`: one-way partitions and pauses.
    run(426, 10);
}

/// A site-wide power cut, with crashes, pauses and lossy links. A secondary that
/// acknowledged entries before syncing them (as before the durability rule moved into
/// `SecondaryCore`, with the checks on acknowledgements switched off) lets this seed
/// elect a master without committed entry 198: the secondary that had acknowledged it
/// lost it in the cut, and the member that never had it won its vote.
#[test]
fn seed_28_a_power_cut_loses_nothing_a_majority_acknowledged() {
    run(28, 28);
}

/// Found by this simulation: a w=majority write came in while the set had five members
/// (three needed) and was answered with three acknowledgements after a sixth had joined;
/// three of six is no majority, and a master elected without the entry followed. A
/// "majority" is now counted against the members when the acknowledgements are.
#[test]
fn seed_203_a_majority_is_of_the_members_when_acknowledged() {
    run(203, 75);
}

/// Found by this simulation once members could be removed: removals applied before
/// the members held the previous change left majorities of different lists that did not
/// overlap (two masters in one term; here, a master elected without a committed
/// entry). The voting members now change one at a time, each once a majority holds the
/// last change (`MasterCore::voters_settled`). (First found as seed 141; after the
/// simulation's own nondeterminism was fixed, seed 440 is the one that fails without it.)
#[test]
fn seed_440_members_change_one_at_a_time() {
    run(440, 184);
}

/// Found by this simulation once members could be removed: a master removed a member
/// that then won an election with a vote from a member that had not heard of the
/// removal (the removal had reached no majority). Each member then refused the other
/// list's candidates because its own list did not name them, and after healing no one
/// could gather a majority of its own list. Lists are now ordered by the term of the
/// master that made them, then their version (MongoDB's configTerm and configVersion):
/// a new master stamps its list with its term, members take a newer one, and a voter
/// refuses a candidate its list does not name only if its list is at least as new.
#[test]
fn seed_6141_member_lists_that_never_converge() {
    run(6141, 253);
}

/// The seeds of `(seed, mix)` whose run still fails.
fn still_failing(seeds: &[(u64, u64)]) -> Vec<u64> {
    seeds
        .iter()
        .filter(|(seed, mix)| std::panic::catch_unwind(|| run(*seed, *mix)).is_err())
        .map(|(seed, _)| *seed)
        .collect()
}

/// The same liveness failure, as the first long run (`scripts/sim-soak.sh 300`) found
/// it: nine seeds of 40,504, every one with removals in its mix, every one ending with
/// all members followers of one term and no master. Each passes since lists are
/// ordered by (term, version).
#[test]
fn soak_seeds_with_member_lists_that_never_converge() {
    let seeds = [
        (1005203, 147),
        (1012137, 169),
        (1013673, 169),
        (1014757, 229),
        (1023931, 187),
        (1024477, 221),
        (1025246, 222),
        (1032171, 235),
        (1036796, 252),
    ];
    let failing = still_failing(&seeds);
    assert!(failing.is_empty(), "still failing: {failing:?}");
}

/// Found by the hour-long run (`scripts/sim-soak.sh 3600`, 608,351 seeds): nine seeds,
/// every one with pauses in its mix, where a member won an election, was paused with
/// the votes in its queue, and took office after a newer term had committed more
/// entries. The checker's leader completeness was stricter than Raft's: it asked every
/// new master for every committed entry, where Raft asks the masters of the terms after
/// the one that committed it. Such a late master of an older term cannot commit (the
/// members that moved on refuse its frames) and steps down at the first newer term it
/// hears; each seed runs to the end with every majority write in place.
#[test]
fn soak_seeds_with_a_master_of_an_older_term_taking_office_late() {
    let seeds = [
        (1078507, 235),
        (1090412, 108),
        (1145881, 25),
        (1325898, 74),
        (1335082, 42),
        (1433596, 252),
        (1508491, 139),
        (1556922, 186),
        (1597033, 105),
    ];
    let failing = still_failing(&seeds);
    assert!(failing.is_empty(), "still failing: {failing:?}");
}

/// Found by this simulation: a master's own election kept the voters it had before
/// the joins and removals it made itself, and won the next term with a majority of a
/// list the set no longer had, while another member won it with the real one. The
/// election's voters now follow the stored member list before every decision.
#[test]
fn seed_476_the_elections_voters_follow_the_member_list() {
    run(476, 220);
}

/// Found by this simulation: a member list held back on a one-way partition arrived
/// after the newer one and replaced it; the master had already counted the member as
/// holding the newer list, shrank the set to itself, and committed alone while the
/// others elected a master with the older list. A secondary now ignores a list older
/// than the last one its master sent.
#[test]
fn seed_2947_an_overtaken_member_list_is_ignored() {
    run(2947, 131);
}
