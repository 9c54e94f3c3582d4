//! The master's replication state machine.

use super::election::History;
use super::{ConnId, Health, HealthPolicy, RetryPolicy, WriteConcern};
use crate::protocol::{
    Entry, ErrorCode, ErrorFrame, MasterFrame, MemberInfo, PROTOCOL_VERSION, SecondaryFrame,
};
use crate::storage::{ConfigStamp, LogStore, Membership, StorageError};
use rand::{RngExt, SeedableRng, rngs::StdRng};
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// How many refused peers [`MasterCore`] remembers for `/health` (the oldest goes first).
pub const REFUSED_MAX: usize = 16;

/// Bounds of [`MasterCore`]'s cache of recent entries (count, and message bytes).
const RECENT_MAX: usize = 8192;
const RECENT_MAX_BYTES: usize = 8 << 20;

/// Identifies a client write waiting for its write concern, assigned by the shell.
pub type Token = u64;

/// Knobs of the master core.
#[derive(Clone, Debug)]
pub struct MasterConfig {
    /// The master's name; it counts as a member under this name.
    pub name: String,
    /// Resend schedule for unacknowledged messages (`--ack-timeout-ms`).
    pub retry: RetryPolicy,
    /// Most entries in one frame.
    pub batch_max_entries: usize,
    /// Most payload bytes in one frame (a single larger message still goes alone).
    pub batch_max_bytes: usize,
    /// Most unacknowledged entries in flight to one secondary.
    pub window: usize,
    /// Seed of the jitter generator.
    pub seed: u64,
    /// When silent members turn Suspected and Unhealthy (and stop counting for quorum).
    pub health: HealthPolicy,
    /// The master's HTTP API, told to secondaries in the `Welcome` so that they can send
    /// clients there.
    pub http: HttpAddress,
    /// The term this master was elected in (saved by the election before). 0: take the
    /// next term after the store's, as a master that needs no election does.
    pub term: u64,
    /// How other members reach this one (comm `host:port`; empty: not listening).
    pub comm: String,
    /// This member's priority (a caught-up member of higher priority takes over).
    pub priority: u32,
    /// Check-quorum: a master that has not heard from a majority of the members for
    /// this long says so ([`MasterOutput::LostQuorum`]). None: never.
    pub quorum_timeout: Option<Duration>,
    /// The longest this master holds back a frame on purpose (`--delay-ms`): silence
    /// that long (plus the member's own) is not counted against a member.
    pub delay: Duration,
    /// The most writes waiting for their write concern at once (distinct ids); a write
    /// over it is refused before it is stored ([`Rejected::Overloaded`]).
    pub max_pending_writes: usize,
}

/// The default of [`MasterConfig::max_pending_writes`]: far above what the benchmark's
/// 64 clients keep in flight, far below what would exhaust memory (a waiting write
/// costs about 100 bytes here, plus its message until it is sent).
pub const MAX_PENDING_WRITES: usize = 65_536;

/// Where a node's HTTP API listens, as others should reach it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HttpAddress {
    /// `None` when it listens on every address (`0.0.0.0`): a peer then uses the host
    /// it reached this node by.
    pub host: Option<String>,
    pub port: u16,
}

impl HttpAddress {
    /// From the host the node was told to listen on and the port it got.
    pub fn new(listen_host: &str, port: u16) -> Self {
        let unspecified = listen_host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        Self {
            host: (!unspecified).then(|| listen_host.to_string()),
            port,
        }
    }

    /// `host:port`, with `fallback_host` where the host is not known (None for port 0:
    /// a peer that did not say).
    pub fn with_fallback(&self, fallback_host: &str) -> Option<String> {
        (self.port != 0).then(|| {
            let host = self.host.as_deref().unwrap_or(fallback_host);
            if host.contains(':') {
                format!("[{host}]:{}", self.port)
            } else {
                format!("{host}:{}", self.port)
            }
        })
    }
}

impl MasterConfig {
    pub fn new(name: impl Into<String>, ack_timeout: Duration) -> Self {
        Self {
            name: name.into(),
            retry: RetryPolicy::for_ack_timeout(ack_timeout),
            batch_max_entries: 512,
            batch_max_bytes: 4 * 1024 * 1024,
            window: 4096,
            seed: 0,
            health: HealthPolicy::new(Duration::from_secs(1)),
            http: HttpAddress::default(),
            term: 0,
            comm: String::new(),
            priority: 1,
            quorum_timeout: None,
            delay: Duration::ZERO,
            max_pending_writes: MAX_PENDING_WRITES,
        }
    }
}

/// A client write.
#[derive(Clone, Debug)]
pub struct WriteRequest {
    pub message: String,
    pub write_concern: WriteConcern,
    /// Give up waiting after this long (the message stays and keeps replicating).
    pub timeout: Option<Duration>,
    /// Idempotency key.
    pub request_id: Option<String>,
}

/// Who held a message when a write was answered; serialised as the 201 body of a write
/// (`{"ackedBy": [...], "acks": n, "id": n}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Receipt {
    #[serde(rename = "ackedBy")]
    pub acked_by: Vec<String>,
    pub acks: usize,
    pub id: u64,
    /// The term of the master that accepted the message.
    pub term: u64,
}

/// Why a write was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Rejected {
    /// The master cannot reach a majority of its members.
    #[error(
        "no quorum: this master reaches {reachable} of its {members} members (itself included) and needs {needed}; writes resume when enough members are back"
    )]
    NoQuorum {
        reachable: usize,
        members: usize,
        needed: usize,
    },
    /// The master is handing over to another member (`stepDown`, priority takeover).
    #[error("this master is stepping down; send writes to the next one")]
    SteppingDown,
    /// Too many writes are waiting for their write concern (a client that asks for
    /// more members than answer, with no timeout, for instance).
    #[error(
        "{pending} writes are waiting for their write concern, the most this master holds; try again shortly"
    )]
    Overloaded { pending: usize },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How a write ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The write concern was met.
    Committed(Receipt),
    /// The timeout passed first; the message is stored and still replicating.
    TimedOut(Receipt),
}

/// Why the voting members cannot change now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MembershipError {
    /// This member stopped being the master meanwhile.
    #[error("this member is not the master any more")]
    NotMaster,
    #[error(
        "a change of the members is still in progress: the last one is not yet held by a majority; try again shortly"
    )]
    InProgress,
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the core asks its shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MasterOutput {
    /// Write `frame` on connection `conn`.
    Send { conn: ConnId, frame: MasterFrame },
    /// Close connection `conn` (after writing what was sent before).
    Close { conn: ConnId },
    /// Answer the client write `token`.
    Reply { token: Token, outcome: WriteOutcome },
    /// The store failed; the shell reports it.
    StorageFailed(StorageError),
    /// A peer knows a newer term: this master must step down.
    NewerTerm(u64),
    /// No majority heard from for the quorum timeout: this master must step down.
    LostQuorum,
    /// The master asked `to` to stand for election at once (a caught-up member of
    /// higher priority): it stops taking writes and steps down.
    HandedOver { to: String },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    /// Hello accepted, waiting for GetMessages.
    Handshaken,
    /// Streaming the answer to GetMessages.
    CatchingUp,
    /// The last catch-up batch is sent; waiting for Ready.
    AwaitingReady,
    /// Live traffic.
    Live,
}

impl Phase {
    fn name(self) -> &'static str {
        match self {
            Phase::Disconnected => "disconnected",
            Phase::Handshaken => "handshaken",
            Phase::CatchingUp => "catching_up",
            Phase::AwaitingReady => "awaiting_ready",
            Phase::Live => "live",
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Retry {
    deadline: Instant,
    attempt: u32,
}

#[derive(Debug)]
struct Member {
    name: String,
    address: String,
    conn: Option<ConnId>,
    phase: Phase,
    /// Highest id this member holds with every earlier one.
    upto: u64,
    /// Next id to send for the first time on this connection.
    next_send: u64,
    /// Sent, not yet acknowledged.
    inflight: BTreeMap<u64, Retry>,
    last_heard: Option<Instant>,
    resends: u64,
    /// Entries sent for the first time (resends not counted).
    sent: u64,
    /// Where the last catch-up started (the secondary's `GetMessages`).
    catch_up_from: Option<u64>,
    /// When the current connection was handshaken.
    connected_at: Option<Instant>,
    /// When the last heartbeat was sent and not yet answered.
    heartbeat_sent: Option<Instant>,
    /// Round trip of the last answered heartbeat.
    rtt: Option<Duration>,
    /// Last time the member held everything the master had made durable.
    caught_up_at: Option<Instant>,
    /// It acknowledged on this connection, so it holds this term's start and counts
    /// toward write concerns and the commit id (see `election`).
    confirmed: bool,
    /// The member list its `Welcome` carried on this connection, and the newest list
    /// it is known to hold (its `GetMessages` proves it took the Welcome; heartbeats
    /// say the rest).
    welcome_stamp: ConfigStamp,
    config_stamp: ConfigStamp,
    /// The longest it holds back a frame on purpose (its `--delay-ms`).
    delay: Duration,
}

impl Member {
    fn new(name: String) -> Self {
        Self {
            name,
            address: String::new(),
            conn: None,
            phase: Phase::Disconnected,
            upto: 0,
            next_send: 1,
            inflight: BTreeMap::new(),
            last_heard: None,
            resends: 0,
            sent: 0,
            catch_up_from: None,
            connected_at: None,
            heartbeat_sent: None,
            rtt: None,
            caught_up_at: None,
            confirmed: false,
            delay: Duration::ZERO,
            welcome_stamp: ConfigStamp::default(),
            config_stamp: ConfigStamp::default(),
        }
    }
}

/// A handshake refused, as remembered for [`RefusedPeer`].
#[derive(Debug)]
struct Refusal {
    name: String,
    code: ErrorCode,
    reason: String,
    at: Instant,
    times: u64,
}

#[derive(Debug)]
struct Waiter {
    token: Token,
    concern: WriteConcern,
    deadline: Option<Instant>,
}

impl Waiter {
    /// Members needed now, for a set of `members` (master included). "majority" is of
    /// the set as it is when the acknowledgements are counted, not when the write came
    /// in: a member that joined meanwhile counts (found by the set simulation: a
    /// majority of five answered after a sixth had joined was not one of six).
    fn need(&self, members: usize) -> usize {
        self.concern.required(members)
    }
}

/// A secondary as the master sees it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MemberStatus {
    pub name: String,
    pub address: String,
    pub connected: bool,
    pub health: Health,
    pub phase: &'static str,
    pub last_acked_id: u64,
    pub lag: u64,
    /// Milliseconds since the last frame from this member (None: never heard).
    pub last_heard_ms_ago: Option<u64>,
    pub in_flight: usize,
    pub resends: u64,
    /// Entries sent for the first time, over all connections.
    pub sent: u64,
    /// The id the member's last catch-up started from.
    pub catch_up_from: Option<u64>,
    /// How long the member has been behind (0 when it holds everything); None if it
    /// never held everything yet.
    pub lag_ms: Option<u64>,
    /// Round trip of the last heartbeat, in milliseconds.
    pub rtt_ms: Option<f64>,
    /// How long the current connection has been up.
    pub uptime_ms: Option<u64>,
}

/// A peer the master refused at its handshake and has not accepted since: a secondary
/// holding another log, or one removed from the set.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RefusedPeer {
    pub name: String,
    /// The error code it was sent (`LogMismatch`, `Removed`).
    pub code: ErrorCode,
    /// Why, in words, as it was told.
    pub reason: String,
    /// Milliseconds since the last refusal.
    pub last_refused_ms_ago: u64,
    /// How many times it was refused.
    pub times: u64,
}

/// A snapshot of the master's replication state.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MasterStatus {
    pub name: String,
    pub log_id: u64,
    /// This run's term (one more than the last run's).
    pub term: u64,
    /// Highest id durable on the master.
    pub last_id: u64,
    /// Highest id written to the operating system: what readers see and what has been
    /// sent to secondaries.
    pub written_id: u64,
    /// Highest id appended, durable or not.
    pub appended_id: u64,
    /// Members reachable now (connected secondaries plus the master).
    pub reachable: usize,
    /// All members, the master included.
    pub member_count: usize,
    pub has_quorum: bool,
    /// The highest id a majority of the members holds.
    pub commit_id: u64,
    pub pending_writes: usize,
    pub members: Vec<MemberStatus>,
    /// Names removed from the set and refused until re-admitted.
    pub removed: Vec<String>,
    /// Peers refused at their handshake since they last got in, newest first.
    pub refused: Vec<RefusedPeer>,
    /// Every member's addresses and priority, this one first.
    pub hosts: Vec<MemberInfo>,
    pub config_version: u64,
    /// The term of the master that made the member list (this one's, once elected).
    pub config_term: u64,
    /// The term of the last entry written.
    pub last_term: u64,
}

/// The master's replication state machine. See the module docs of
/// [`crate::replication`].
pub struct MasterCore<S> {
    cfg: MasterConfig,
    store: S,
    log_id: u64,
    /// This run's term: entries appended now carry it.
    term: u64,
    /// The log's term starts, this term's last: its `after` is where this term began.
    history: History,
    /// Every member's addresses and priority (this one included), and their version.
    hosts: Vec<MemberInfo>,
    config_version: u64,
    /// The term of the master that made the list: this one's from its first change on
    /// (see [`Membership::config_term`]).
    config_term: u64,
    /// The member list of the last change of the voting members: the next change
    /// waits until a majority holds it (Raft's one-server-at-a-time rule).
    voters_stamp: ConfigStamp,
    /// Set while a handshake adds a member, until its version is known.
    voters_changed: bool,
    /// Check-quorum: when this master first checked (members get one quorum timeout
    /// to connect), and whether a lost majority was reported.
    led_since: Option<Instant>,
    quorum_lost: bool,
    /// Handing over to another member: no new writes.
    handing_over: bool,
    /// Highest id appended to the store.
    last_id: u64,
    /// Highest id the store has written to the operating system: readable, sent to
    /// secondaries, safe from a crash of this process but not from a power loss.
    written_id: u64,
    /// Highest id the store has made durable. The master counts itself as holding an
    /// entry, and answers its writer, only from here on; a write concern is therefore
    /// never met by secondaries alone.
    durable_id: u64,
    members: Vec<Member>,
    /// Names removed from the set: refused until re-admitted.
    removed: Vec<String>,
    /// Recent handshake refusals by name (at most [`REFUSED_MAX`]): when, why, how often.
    refused: Vec<Refusal>,
    /// Open connections and the member each one belongs to, once handshaken.
    conns: HashMap<ConnId, Option<usize>>,
    waiters: BTreeMap<u64, Vec<Waiter>>,
    /// The latest appended entries, ids `last_id - len + 1 ..= last_id`: frames are
    /// built from here rather than read back from the store (a read, a checksum and a
    /// decode per entry and member). At most [`RECENT_MAX`] entries or bytes.
    recent: VecDeque<Entry>,
    recent_bytes: usize,
    /// At or before the earliest resend or write deadline: exact after
    /// [`Self::handle_timeout`], moved earlier whenever a deadline is set. Acks do not
    /// move it later (the timer then fires once early and finds nothing due), so that
    /// [`Self::poll_timeout`], asked after every event, scans nothing.
    next_timeout: Option<Instant>,
    request_ids: HashMap<String, u64>,
    outputs: Vec<MasterOutput>,
    rng: StdRng,
}

impl<S: LogStore> MasterCore<S> {
    /// A core over `store`, which may already hold a log and a membership. A log without
    /// an identity gets a fresh one. Everything the store holds at this point counts as
    /// durable (a store recovers only what it had made durable). The run takes a new
    /// term, saved before anything is sent: the term of an entry tells this run's
    /// entries from those a crashed run sent but lost.
    pub fn new(cfg: MasterConfig, store: S) -> Result<Self, StorageError> {
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        let mut log_id = store.log_id();
        if log_id == 0 {
            log_id = rng.random_range(1..=u64::MAX);
            store.set_log_id(log_id)?;
        }
        let Membership {
            members,
            removed,
            hosts,
            config_version,
            config_term,
        } = store.membership();
        let members = members
            .into_iter()
            .filter(|n| *n != cfg.name)
            .map(Member::new)
            .collect();
        let durable_id = store.sync()?;
        let last_term = store.read(durable_id, 1)?.first().map_or(0, |e| e.term);
        let term = if cfg.term > 0 {
            cfg.term
        } else {
            let term = store.term().max(last_term) + 1;
            store.set_term(term)?;
            term
        };
        // This term starts after what the log holds durably (a tail not durable is
        // gone after a crash; see the module docs of `election`).
        if durable_id < store.last_id() {
            store.truncate(durable_id)?;
        }
        let mut history = store.history();
        history.start(term, durable_id);
        store.set_history(&history)?;
        let request_ids = store.request_ids()?.into_iter().collect();
        let mut core = Self {
            history,
            hosts,
            config_version,
            config_term,
            voters_stamp: ConfigStamp::default(),
            voters_changed: false,
            led_since: None,
            quorum_lost: false,
            handing_over: false,
            last_id: durable_id,
            written_id: durable_id,
            durable_id,
            term,
            cfg,
            store,
            log_id,
            members,
            removed,
            refused: Vec::new(),
            conns: HashMap::new(),
            waiters: BTreeMap::new(),
            recent: VecDeque::new(),
            recent_bytes: 0,
            next_timeout: None,
            request_ids,
            outputs: Vec::new(),
            rng,
        };
        core.update_host(
            MemberInfo {
                name: core.cfg.name.clone(),
                comm: core.cfg.comm.clone(),
                http: core.cfg.http.with_fallback("127.0.0.1").unwrap_or_default(),
                priority: core.cfg.priority,
            },
            None,
        )?;
        // Stamp the list with this term, as a new leader's first entry supersedes an
        // uncommitted tail: a list an older master changed without getting it onto a
        // majority must give way to the one this master was elected with, or members
        // holding each would refuse the other's candidates for ever (seed 6141). The
        // voting members change again only once a majority holds this list.
        if core.config_term < core.term {
            core.save_hosts(None)?;
        }
        core.voters_stamp = core.stamp();
        Ok(core)
    }

    /// Where this master's member list stands in the order of lists.
    fn stamp(&self) -> ConfigStamp {
        ConfigStamp {
            term: self.config_term,
            version: self.config_version,
        }
    }

    /// The log's term starts.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// Record a member's addresses and priority; when they changed, save and share
    /// the new list with every connected member.
    fn update_host(
        &mut self,
        info: MemberInfo,
        except: Option<ConnId>,
    ) -> Result<(), StorageError> {
        match self.hosts.iter_mut().find(|h| h.name == info.name) {
            Some(h) if *h == info => return Ok(()),
            Some(h) => *h = info,
            None => self.hosts.push(info),
        }
        self.save_hosts(except)
    }

    /// Save the member list with a new version and send it to every member following
    /// (a member handshaking now gets it in its `Welcome`).
    fn save_hosts(&mut self, except: Option<ConnId>) -> Result<(), StorageError> {
        let names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
        self.hosts
            .retain(|h| h.name == self.cfg.name || names.contains(&h.name));
        self.config_version += 1;
        self.config_term = self.term;
        let removed = self.removed.clone();
        self.save_membership(names, removed)?;
        for m in &self.members {
            if let Some(conn) = m.conn
                && m.phase != Phase::Disconnected
                && Some(conn) != except
            {
                self.outputs.push(MasterOutput::Send {
                    conn,
                    frame: MasterFrame::Members {
                        config_version: self.config_version,
                        members: self.hosts.clone(),
                        removed: self.removed.clone(),
                        config_term: self.config_term,
                    },
                });
            }
        }
        Ok(())
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    /// Highest id known durable in the master's store.
    pub fn durable_id(&self) -> u64 {
        self.durable_id
    }

    /// Highest id written by the store (readable, sent to secondaries).
    pub fn written_id(&self) -> u64 {
        self.written_id
    }

    /// This run's term.
    pub fn term(&self) -> u64 {
        self.term
    }

    /// True when entries were appended since the last [`Self::persisted`]: the shell
    /// should `flush` the store and report it with [`Self::flushed`], then run the
    /// store's `sync` (one at a time; each covers everything appended before it
    /// started: group commit) and report it with [`Self::persisted`].
    pub fn needs_sync(&self) -> bool {
        self.last_id > self.durable_id
    }

    /// The store wrote everything up to `upto` to the operating system: send it to the
    /// live secondaries now, so that they store it while the master's own sync runs.
    /// The master does not count itself as holding it yet.
    pub fn flushed(&mut self, now: Instant, upto: u64) {
        let upto = upto.min(self.last_id);
        if upto <= self.written_id {
            return;
        }
        self.written_id = upto;
        self.pump_live(now);
    }

    /// The store made everything up to `upto` durable: count the master as holding it,
    /// answer the writes this completes, and send what is new to the live secondaries.
    pub fn persisted(&mut self, now: Instant, upto: u64) {
        if upto <= self.durable_id {
            return;
        }
        self.durable_id = upto.min(self.last_id);
        self.written_id = self.written_id.max(self.durable_id);
        self.check_waiters();
        self.pump_live(now);
    }

    fn pump_live(&mut self, now: Instant) {
        for idx in 0..self.members.len() {
            if self.members[idx].phase == Phase::Live {
                self.pump(idx, now);
            }
        }
    }

    pub fn log_id(&self) -> u64 {
        self.log_id
    }

    /// Everything decided since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<MasterOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// A connection was accepted.
    pub fn connection_opened(&mut self, conn: ConnId) {
        self.conns.insert(conn, None);
    }

    /// A connection is gone (closed by either side or failed).
    pub fn connection_closed(&mut self, conn: ConnId) {
        if let Some(Some(idx)) = self.conns.remove(&conn) {
            let m = &mut self.members[idx];
            if m.conn == Some(conn) {
                m.conn = None;
                m.phase = Phase::Disconnected;
                m.inflight.clear();
            }
        }
    }

    /// Accept a client write: store it, start replicating it, and answer `token` once its
    /// write concern is met or its timeout passes. Returns the id. A new message is
    /// refused while the master cannot reach a majority of its members.
    pub fn submit(
        &mut self,
        now: Instant,
        req: WriteRequest,
        token: Token,
    ) -> Result<u64, Rejected> {
        let known = req
            .request_id
            .as_ref()
            .and_then(|k| self.request_ids.get(k).copied());
        let id = match known {
            Some(id) => id,
            None => {
                if self.handing_over {
                    return Err(Rejected::SteppingDown);
                }
                if self.waiters.len() >= self.cfg.max_pending_writes {
                    return Err(Rejected::Overloaded {
                        pending: self.waiters.len(),
                    });
                }
                self.check_quorum(now)?;
                let id = self.last_id + 1;
                let entry = Entry {
                    term: self.term,
                    id,
                    message: req.message,
                    request_id: req.request_id.clone(),
                };
                self.store.append(std::slice::from_ref(&entry))?;
                self.last_id = id;
                if let Some(key) = req.request_id {
                    self.request_ids.insert(key, id);
                }
                self.remember(entry);
                id
            }
        };
        let need = req.write_concern.required(self.members.len() + 1);
        if id <= self.durable_id && self.acks(id) >= need {
            let receipt = self.receipt(id);
            self.outputs.push(MasterOutput::Reply {
                token,
                outcome: WriteOutcome::Committed(receipt),
            });
        } else {
            let deadline = req.timeout.map(|t| now + t);
            if let Some(at) = deadline {
                self.note_deadline(at);
            }
            self.waiters.entry(id).or_default().push(Waiter {
                token,
                concern: req.write_concern,
                deadline,
            });
        }
        // New entries go out once written: see `flushed`.
        Ok(id)
    }

    fn health(&self, m: &Member, now: Instant) -> Health {
        // Frames held back on purpose (either side's `--delay-ms`) are not silence.
        let held = m.delay + self.cfg.delay;
        let silent_for = m
            .last_heard
            .map(|t| now.saturating_duration_since(t).saturating_sub(held));
        self.cfg.health.of(m.conn.is_some(), silent_for)
    }

    /// Ok while the master reaches a majority of its members, itself included; a member
    /// counts while it is not Unhealthy.
    pub fn check_quorum(&self, now: Instant) -> Result<(), Rejected> {
        let members = self.members.len() + 1;
        let needed = members / 2 + 1;
        let reachable = 1 + self
            .members
            .iter()
            .filter(|m| self.health(m, now) != Health::Unhealthy)
            .count();
        if reachable >= needed {
            Ok(())
        } else {
            Err(Rejected::NoQuorum {
                reachable,
                members,
                needed,
            })
        }
    }

    /// A frame arrived on `conn`.
    pub fn handle_frame(&mut self, now: Instant, conn: ConnId, frame: SecondaryFrame) {
        let Some(&member) = self.conns.get(&conn) else {
            return; // already closed
        };
        let Some(idx) = member else {
            self.handle_handshake(now, conn, frame);
            return;
        };
        if self.health(&self.members[idx], now) == Health::Unhealthy {
            // Back from silence: resend what is in flight now rather than after the
            // long back-off it was given while Unhealthy.
            tracing::info!(peer = %self.members[idx].name, "member heard from again");
            for r in self.members[idx].inflight.values_mut() {
                r.deadline = now;
            }
            self.note_deadline(now);
        }
        self.members[idx].last_heard = Some(now);
        match frame {
            SecondaryFrame::Hello { .. } => {
                self.refuse(conn, ErrorCode::UnexpectedFrame, "Hello sent twice");
            }
            SecondaryFrame::RequestVote(_) => {
                self.refuse(
                    conn,
                    ErrorCode::UnexpectedFrame,
                    "a vote request belongs on a connection of its own",
                );
            }
            SecondaryFrame::AuthHello { .. } | SecondaryFrame::AuthProof { .. } => {
                self.refuse(
                    conn,
                    ErrorCode::UnexpectedFrame,
                    "authentication comes before the Hello",
                );
            }
            SecondaryFrame::GetMessages { start_id } => {
                if start_id == 0 || start_id > self.written_id + 1 {
                    let msg = format!(
                        "getMessages from id {start_id}, but the master's log holds ids 1..={}",
                        self.written_id
                    );
                    self.refuse(conn, ErrorCode::LogMismatch, msg);
                    return;
                }
                let m = &mut self.members[idx];
                m.config_stamp = m.config_stamp.max(m.welcome_stamp);
                m.phase = Phase::CatchingUp;
                m.inflight.clear();
                m.next_send = start_id;
                m.catch_up_from = Some(start_id);
                // Sent after it took the Welcome: it holds this master's history (and
                // so this term's start, once it holds the entries before it).
                let newly = !m.confirmed;
                m.confirmed = true;
                self.pump(idx, now);
                if newly {
                    self.check_waiters();
                }
            }
            SecondaryFrame::Ready => match self.members[idx].phase {
                Phase::AwaitingReady | Phase::Live => {
                    self.members[idx].phase = Phase::Live;
                    self.outputs.push(MasterOutput::Send {
                        conn,
                        frame: MasterFrame::ReadyAck,
                    });
                    self.pump(idx, now);
                }
                _ => self.refuse(
                    conn,
                    ErrorCode::UnexpectedFrame,
                    "Ready before the end of the catch-up stream",
                ),
            },
            SecondaryFrame::Ack { upto, buffered } => {
                if !self.progress(now, conn, idx, upto) {
                    return;
                }
                let m = &mut self.members[idx];
                for id in buffered {
                    m.inflight.remove(&id);
                }
                self.pump(idx, now);
            }
            SecondaryFrame::Heartbeat {
                upto,
                config_version,
                config_term,
            } => {
                let m = &mut self.members[idx];
                m.config_stamp = m.config_stamp.max(ConfigStamp {
                    term: config_term,
                    version: config_version,
                });
                if let Some(sent) = m.heartbeat_sent.take() {
                    m.rtt = Some(now.saturating_duration_since(sent));
                }
                self.progress(now, conn, idx, upto);
            }
            SecondaryFrame::Error(e) => {
                tracing::warn!(conn, peer = %self.members[idx].name, error = %e, "secondary reported an error");
                self.outputs.push(MasterOutput::Close { conn });
            }
        }
    }

    /// Record that member `idx` holds everything up to `upto`. Returns false (and refuses
    /// the connection) when `upto` is beyond the log.
    fn progress(&mut self, now: Instant, conn: ConnId, idx: usize, upto: u64) -> bool {
        if upto > self.written_id {
            let msg = format!(
                "acknowledged id {upto}, but the master's log ends at {}",
                self.written_id
            );
            self.refuse(conn, ErrorCode::LogMismatch, msg);
            return false;
        }
        let m = &mut self.members[idx];
        if upto >= self.durable_id {
            m.caught_up_at = Some(now);
        }
        // The first acknowledgement on a connection comes after the member took this
        // master's history: from now on it counts.
        let newly = !m.confirmed;
        m.confirmed = true;
        // Acks may arrive out of order: only ever move forward.
        if upto > m.upto {
            m.upto = upto;
            m.inflight = m.inflight.split_off(&(upto + 1));
            self.check_waiters();
        } else if newly {
            self.check_waiters();
        }
        true
    }

    fn handle_handshake(&mut self, now: Instant, conn: ConnId, frame: SecondaryFrame) {
        let SecondaryFrame::Hello {
            version,
            name,
            next_expected,
            log_id,
            last_term,
            term,
            history,
            comm,
            http,
            priority,
            delay_ms,
        } = frame
        else {
            self.refuse(
                conn,
                ErrorCode::HandshakeRequired,
                "the first frame must be Hello",
            );
            return;
        };
        if version != PROTOCOL_VERSION {
            let msg = format!(
                "this master speaks protocol version {PROTOCOL_VERSION}, the peer sent version {version}"
            );
            self.refuse(conn, ErrorCode::VersionMismatch, msg);
            return;
        }
        if name.is_empty() || name.len() > 128 {
            self.refuse(
                conn,
                ErrorCode::MalformedFrame,
                "a secondary's name must be 1 to 128 bytes",
            );
            return;
        }
        if name == self.cfg.name {
            let msg = format!("the name {name:?} is the master's own");
            self.refuse(conn, ErrorCode::NameConflict, msg);
            return;
        }
        if self.removed.contains(&name) {
            let msg = format!(
                "{name} was removed from the set (DELETE /members/{name}); it stays out until the master re-admits it (POST /members {{\"name\": \"{name}\"}})"
            );
            self.refuse_peer(now, conn, &name, ErrorCode::Removed, msg);
            return;
        }
        if term > self.term {
            let mut e = ErrorFrame::new(
                ErrorCode::StaleTerm,
                format!(
                    "{name} knows term {term}, newer than this master's {}: this master steps down",
                    self.term
                ),
            );
            e.term = self.term;
            self.outputs.push(MasterOutput::Send {
                conn,
                frame: MasterFrame::Error(e),
            });
            self.outputs.push(MasterOutput::Close { conn });
            self.outputs.push(MasterOutput::NewerTerm(term));
            return;
        }
        let holds = next_expected.saturating_sub(1);
        if next_expected == 0
            || (log_id != 0 && log_id != self.log_id)
            || (log_id == 0 && holds > 0)
            || (holds > 0 && last_term == 0)
            || last_term > self.term
            || (history.term_of(holds) == self.term && holds > self.written_id)
            || !history.is_valid()
        {
            let msg = format!(
                "{name} holds ids up to {holds} (term {last_term}) of log {log_id:#x}, which is not this master's history: the master holds ids up to {} (term {}) of log {:#x}. Was the master started on another data directory? Start it on the set's data, or give {name} an empty data directory to join this one",
                self.written_id, self.term, self.log_id
            );
            self.refuse_peer(now, conn, &name, ErrorCode::LogMismatch, msg);
            return;
        }
        let keep = self.history.common_prefix(self.written_id, &history, holds);
        let truncate_after = (keep < holds).then_some(keep);
        if let Some(keep) = truncate_after {
            tracing::warn!(peer = %name, holds, last_term, keep, "the secondary holds entries this master lost; it will cut them");
        }
        self.refused.retain(|r| r.name != name);
        let idx = match self.members.iter().position(|m| m.name == name) {
            Some(idx) => idx,
            None if !self.voters_settled() => {
                // It tries again by itself (the secondary reconnects).
                self.refuse(
                    conn,
                    ErrorCode::Other,
                    MembershipError::InProgress.to_string(),
                );
                return;
            }
            None => {
                let mut names: Vec<String> = self.members.iter().map(|m| m.name.clone()).collect();
                names.push(name.clone());
                if let Err(e) = self.save_membership(names.clone(), self.removed.clone()) {
                    self.outputs.push(MasterOutput::StorageFailed(e));
                    self.refuse(
                        conn,
                        ErrorCode::Other,
                        "the master cannot record a new member",
                    );
                    return;
                }
                tracing::info!(peer = %name, members = names.len() + 1, "a new member joined");
                self.members.push(Member::new(name.clone()));
                self.voters_changed = true;
                self.members.len() - 1
            }
        };
        if let Some(old) = self.members[idx].conn {
            let msg = format!("replaced by connection {conn} of the same name");
            self.refuse(old, ErrorCode::Replaced, msg);
            // Whatever still arrives on the old connection is ignored.
            self.conns.remove(&old);
        }
        let m = &mut self.members[idx];
        m.conn = Some(conn);
        m.phase = Phase::Handshaken;
        m.upto = keep;
        m.next_send = keep + 1;
        m.inflight.clear();
        m.last_heard = Some(now);
        m.connected_at = Some(now);
        m.heartbeat_sent = None;
        m.confirmed = false;
        m.delay = Duration::from_millis(delay_ms);
        self.conns.insert(conn, Some(idx));
        let info = MemberInfo {
            name: name.clone(),
            comm: comm.unwrap_or_default(),
            http: http.unwrap_or_default(),
            priority,
        };
        if let Err(e) = self.update_host(info, Some(conn)) {
            self.outputs.push(MasterOutput::StorageFailed(e));
        }
        if std::mem::take(&mut self.voters_changed) {
            self.voters_stamp = self.stamp();
        }
        self.members[idx].welcome_stamp = self.stamp();
        self.outputs.push(MasterOutput::Send {
            conn,
            frame: MasterFrame::Welcome {
                version: PROTOCOL_VERSION,
                name: self.cfg.name.clone(),
                log_id: self.log_id,
                last_id: self.written_id,
                truncate_after,
                http_host: self.cfg.http.host.clone(),
                http_port: self.cfg.http.port,
                term: self.term,
                history: self.history.clone(),
                members: self.hosts.clone(),
                removed: self.removed.clone(),
                config_version: self.config_version,
                config_term: self.config_term,
                delay_ms: self.cfg.delay.as_millis() as u64,
            },
        });
        // A member joining (or coming back holding messages) can complete waiting writes.
        self.check_waiters();
    }

    /// Tell the shell the peer address of a handshaken connection (for status only).
    pub fn set_address(&mut self, conn: ConnId, address: String) {
        if let Some(Some(idx)) = self.conns.get(&conn) {
            self.members[*idx].address = address;
        }
    }

    /// Refuse a handshake from `name`, and remember it for `/health` (a peer that keeps
    /// coming back is one entry, counted).
    fn refuse_peer(
        &mut self,
        now: Instant,
        conn: ConnId,
        name: &str,
        code: ErrorCode,
        reason: String,
    ) {
        let times = match self.refused.iter().position(|r| r.name == name) {
            Some(i) => self.refused.remove(i).times + 1,
            None => {
                if self.refused.len() == REFUSED_MAX {
                    self.refused.remove(0);
                }
                1
            }
        };
        self.refused.push(Refusal {
            name: name.to_string(),
            code,
            reason: reason.clone(),
            at: now,
            times,
        });
        self.refuse(conn, code, reason);
    }

    /// Save who belongs, then take it as the current membership's names.
    fn save_membership(
        &mut self,
        members: Vec<String>,
        removed: Vec<String>,
    ) -> Result<(), StorageError> {
        let mut all = vec![self.cfg.name.clone()];
        all.extend(members);
        let m = Membership {
            members: all,
            removed,
            hosts: self.hosts.clone(),
            config_version: self.config_version,
            config_term: self.config_term,
        };
        self.store.set_membership(&m)?;
        self.removed = m.removed;
        Ok(())
    }

    /// Send the error frame, then close.
    fn refuse(&mut self, conn: ConnId, code: ErrorCode, message: impl Into<String>) {
        let e = ErrorFrame::new(code, message);
        let peer = match self.conns.get(&conn) {
            Some(Some(idx)) => self.members[*idx].name.as_str(),
            _ => "(before handshake)",
        };
        tracing::warn!(conn, peer, error = %e, "closing the connection");
        self.outputs.push(MasterOutput::Send {
            conn,
            frame: MasterFrame::Error(e),
        });
        self.outputs.push(MasterOutput::Close { conn });
    }

    /// Send member `idx` whatever it has not been sent yet, as far as its window allows.
    fn pump(&mut self, idx: usize, now: Instant) {
        let Some(conn) = self.members[idx].conn else {
            return;
        };
        loop {
            let m = &self.members[idx];
            if !matches!(m.phase, Phase::CatchingUp | Phase::Live) {
                return;
            }
            if m.next_send > self.written_id {
                if m.phase == Phase::CatchingUp {
                    // Nothing (left) to stream: close the catch-up with an empty batch.
                    self.members[idx].phase = Phase::AwaitingReady;
                    self.outputs.push(MasterOutput::Send {
                        conn,
                        frame: MasterFrame::Messages {
                            entries: Vec::new(),
                            last: true,
                            term: self.term,
                        },
                    });
                }
                return;
            }
            let room = self.cfg.window.saturating_sub(m.inflight.len());
            if room == 0 {
                return;
            }
            let want = (self.written_id - m.next_send + 1)
                .min(room as u64)
                .min(self.cfg.batch_max_entries as u64) as usize;
            let mut entries = match self.entries(m.next_send, want) {
                Ok(e) if !e.is_empty() => e,
                Ok(_) => {
                    let err = StorageError::Io(format!("entry {} missing", m.next_send));
                    self.outputs.push(MasterOutput::StorageFailed(err));
                    return;
                }
                Err(err) => {
                    self.outputs.push(MasterOutput::StorageFailed(err));
                    return;
                }
            };
            self.trim_to_bytes(&mut entries);
            let first_delay = self.cfg.retry.jittered(0, &mut self.rng);
            self.note_deadline(now + first_delay);
            let m = &mut self.members[idx];
            for e in &entries {
                m.inflight.insert(
                    e.id,
                    Retry {
                        deadline: now + first_delay,
                        attempt: 0,
                    },
                );
            }
            let upto = entries[entries.len() - 1].id;
            m.next_send = upto + 1;
            m.sent += entries.len() as u64;
            let frame = if m.phase == Phase::Live {
                MasterFrame::AddMessages {
                    entries,
                    commit_id: self.commit_id(),
                    urgent: self.awaited(upto),
                    term: self.term,
                }
            } else {
                let last = m.next_send > self.written_id;
                if last {
                    m.phase = Phase::AwaitingReady;
                }
                MasterFrame::Messages {
                    entries,
                    last,
                    term: self.term,
                }
            };
            self.outputs.push(MasterOutput::Send { conn, frame });
        }
    }

    /// How many writes wait only for secondaries' acknowledgements (the master holds
    /// them durably already), counted up to `limit`.
    pub fn waiting_for_secondaries(&self, limit: usize) -> usize {
        self.waiters
            .range(..=self.durable_id)
            .flat_map(|(_, ws)| ws)
            .filter(|w| w.need(self.members.len() + 1) > 1)
            .take(limit)
            .count()
    }

    /// Whether a write waiting for its write concern, at or below `upto`, needs a
    /// secondary's acknowledgement (and so a secondary should sync without delay).
    fn awaited(&self, upto: u64) -> bool {
        self.waiters
            .range(..=upto)
            .any(|(_, ws)| ws.iter().any(|w| w.need(self.members.len() + 1) > 1))
    }

    /// Keep a just-appended entry for the frames that will carry it.
    fn remember(&mut self, entry: Entry) {
        self.recent_bytes += entry.message.len();
        self.recent.push_back(entry);
        while self.recent.len() > RECENT_MAX
            || (self.recent_bytes > RECENT_MAX_BYTES && self.recent.len() > 1)
        {
            if let Some(old) = self.recent.pop_front() {
                self.recent_bytes -= old.message.len();
            }
        }
    }

    /// Up to `limit` entries from `from` on, never past what the store has written:
    /// from the cache of recent entries when it holds `from`, else from the store.
    fn entries(&self, from: u64, limit: usize) -> Result<Vec<Entry>, StorageError> {
        let from = from.max(1);
        let limit = limit.min(self.written_id.saturating_sub(from - 1) as usize);
        let first = self.recent.front().map_or(u64::MAX, |e| e.id);
        if from >= first {
            let skip = ((from - first) as usize).min(self.recent.len());
            return Ok(self.recent.range(skip..).take(limit).cloned().collect());
        }
        self.store.read(from, limit)
    }

    fn trim_to_bytes(&self, entries: &mut Vec<Entry>) {
        let mut bytes = 0;
        let keep = entries
            .iter()
            .position(|e| {
                bytes += e.message.len();
                bytes > self.cfg.batch_max_bytes
            })
            .unwrap_or(entries.len())
            .max(1);
        entries.truncate(keep);
    }

    /// Resend what is overdue and expire waiting writes whose timeout has passed.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.resend_and_expire(now);
        self.next_timeout = self.scan_timeout();
    }

    fn resend_and_expire(&mut self, now: Instant) {
        for idx in 0..self.members.len() {
            if self.health(&self.members[idx], now) == Health::Unhealthy {
                // Silent member: hold its resends at the longest back-off; they go out
                // at once when it is heard from again (see handle_frame).
                let cap = self.cfg.retry.cap;
                for r in self.members[idx].inflight.values_mut() {
                    if r.deadline <= now {
                        r.deadline = now + cap;
                    }
                }
                continue;
            }
            let m = &mut self.members[idx];
            let Some(conn) = m.conn else { continue };
            if !matches!(
                m.phase,
                Phase::CatchingUp | Phase::AwaitingReady | Phase::Live
            ) {
                continue;
            }
            let mut due = Vec::new();
            for (&id, r) in m.inflight.iter_mut() {
                if r.deadline <= now {
                    r.attempt = r.attempt.saturating_add(1);
                    r.deadline = now + self.cfg.retry.jittered(r.attempt, &mut self.rng);
                    due.push(id);
                }
            }
            if due.is_empty() {
                continue;
            }
            m.resends += due.len() as u64;
            let live = m.phase == Phase::Live;
            tracing::debug!(peer = %m.name, count = due.len(), first = due[0], "resending unacknowledged messages");
            let mut batch: Vec<Entry> = Vec::new();
            for run in runs(&due) {
                let entries = match self.entries(run.0, (run.1 - run.0 + 1) as usize) {
                    Ok(e) => e,
                    Err(err) => {
                        self.outputs.push(MasterOutput::StorageFailed(err));
                        return;
                    }
                };
                for e in entries {
                    batch.push(e);
                    if batch.len() >= self.cfg.batch_max_entries {
                        self.send_batch(conn, live, std::mem::take(&mut batch));
                    }
                }
            }
            if !batch.is_empty() {
                self.send_batch(conn, live, batch);
            }
        }
        let expired: Vec<(u64, Token)> = self
            .waiters
            .iter()
            .flat_map(|(&id, ws)| {
                ws.iter()
                    .filter(|w| w.deadline.is_some_and(|d| d <= now))
                    .map(move |w| (id, w.token))
            })
            .collect();
        for (id, token) in expired {
            if let Some(ws) = self.waiters.get_mut(&id) {
                ws.retain(|w| w.token != token);
                if ws.is_empty() {
                    self.waiters.remove(&id);
                }
            }
            let receipt = self.receipt(id);
            self.outputs.push(MasterOutput::Reply {
                token,
                outcome: WriteOutcome::TimedOut(receipt),
            });
        }
    }

    fn send_batch(&mut self, conn: ConnId, live: bool, entries: Vec<Entry>) {
        let frame = if live {
            // A resend: its acknowledgement is overdue already.
            MasterFrame::AddMessages {
                entries,
                commit_id: self.commit_id(),
                urgent: true,
                term: self.term,
            }
        } else {
            MasterFrame::Messages {
                entries,
                last: false,
                term: self.term,
            }
        };
        self.outputs.push(MasterOutput::Send { conn, frame });
    }

    fn note_deadline(&mut self, at: Instant) {
        self.next_timeout = Some(self.next_timeout.map_or(at, |t| t.min(at)));
    }

    /// When [`Self::handle_timeout`] next may have work to do (possibly earlier).
    pub fn poll_timeout(&self) -> Option<Instant> {
        // Early is harmless, late would stall a resend: checked in every debug build
        // (so by every test and simulation), skipped in release.
        debug_assert!(
            match (self.next_timeout, self.scan_timeout()) {
                (Some(hint), Some(exact)) => hint <= exact,
                (None, exact) => exact.is_none(),
                (Some(_), None) => true,
            },
            "the timeout hint is later than a deadline"
        );
        self.next_timeout
    }

    /// The earliest resend or write deadline, exactly.
    fn scan_timeout(&self) -> Option<Instant> {
        let resend = self
            .members
            .iter()
            .filter(|m| m.conn.is_some())
            .flat_map(|m| m.inflight.values().map(|r| r.deadline))
            .min();
        let waiter = self
            .waiters
            .values()
            .flatten()
            .filter_map(|w| w.deadline)
            .min();
        match (resend, waiter) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Heartbeat every handshaken connection; check that a majority is still heard
    /// from, and whether a caught-up member of higher priority should take over.
    pub fn tick_heartbeat(&mut self, now: Instant) {
        let commit_id = self.commit_id();
        for m in &mut self.members {
            if let Some(conn) = m.conn {
                m.heartbeat_sent.get_or_insert(now);
                self.outputs.push(MasterOutput::Send {
                    conn,
                    frame: MasterFrame::Heartbeat {
                        last_id: self.written_id,
                        commit_id,
                        term: self.term,
                    },
                });
            }
        }
        self.check_contact(now);
        self.priority_takeover();
    }

    /// Check-quorum: report once when no majority was heard from for the timeout.
    fn check_contact(&mut self, now: Instant) {
        let Some(timeout) = self.cfg.quorum_timeout else {
            return;
        };
        let heard = 1 + self
            .members
            .iter()
            .filter(|m| {
                m.conn.is_some()
                    && m.last_heard.is_some_and(|t| {
                        now.saturating_duration_since(t) < timeout + m.delay + self.cfg.delay
                    })
            })
            .count();
        let members = self.members.len() + 1;
        // A new master gives its members one timeout to connect.
        let since = *self.led_since.get_or_insert(now);
        let settled = now.saturating_duration_since(since) >= timeout;
        if heard <= members / 2 && settled && !self.quorum_lost {
            self.quorum_lost = true;
            tracing::warn!(
                heard,
                members = self.members.len() + 1,
                "no majority heard from for the election timeout: stepping down"
            );
            self.outputs.push(MasterOutput::LostQuorum);
        }
    }

    /// A live member of higher priority that holds everything durable here takes over
    /// (MongoDB's priority takeover): ask it to stand, and stop taking writes.
    fn priority_takeover(&mut self) {
        if self.handing_over {
            return;
        }
        let best = self
            .members
            .iter()
            .filter(|m| m.phase == Phase::Live && m.confirmed && m.upto >= self.durable_id)
            .filter_map(|m| {
                let p = self.hosts.iter().find(|h| h.name == m.name)?.priority;
                (p > self.cfg.priority).then_some((p, m.name.clone()))
            })
            .max();
        if let Some((priority, name)) = best {
            tracing::info!(to = %name, priority, "a caught-up member of higher priority takes over");
            self.hand_over(Some(&name));
        }
    }

    /// Hand over to `to` (or to the live member holding the most, priority above 0):
    /// send it `TimeoutNow`, and take no more writes. Returns whom, if anyone.
    pub fn hand_over(&mut self, to: Option<&str>) -> Option<String> {
        let priority = |name: &str| {
            self.hosts
                .iter()
                .find(|h| h.name == name)
                .map_or(1, |h| h.priority)
        };
        let pick = self
            .members
            .iter()
            .filter(|m| m.conn.is_some() && m.confirmed && priority(&m.name) > 0)
            .filter(|m| to.is_none_or(|t| t == m.name))
            .max_by_key(|m| (m.upto, priority(&m.name)))?;
        let (conn, name) = (pick.conn?, pick.name.clone());
        self.handing_over = true;
        self.outputs.push(MasterOutput::Send {
            conn,
            frame: MasterFrame::TimeoutNow { term: self.term },
        });
        self.outputs
            .push(MasterOutput::HandedOver { to: name.clone() });
        Some(name)
    }

    /// What a member holds toward write concerns and the commit id: nothing until it
    /// acknowledged on this connection (it then holds this term's start).
    fn held(&self, m: &Member) -> u64 {
        if m.confirmed { m.upto } else { 0 }
    }

    /// Where this term began: an entry counts as committed only once a majority holds
    /// this term's start too (Raft's rule that a master commits only entries of its
    /// own term, without a no-op entry; see `election`).
    fn term_start(&self) -> u64 {
        self.history.0.last().map_or(0, |m| m.after)
    }

    /// The highest id that a majority of the members holds, the master included: never
    /// past what is durable on the master, and 0 until a majority holds this term's
    /// start.
    pub fn commit_id(&self) -> u64 {
        let mut held: Vec<u64> = std::iter::once(self.durable_id)
            .chain(
                self.members
                    .iter()
                    .map(|m| self.held(m).min(self.durable_id)),
            )
            .collect();
        held.sort_unstable_by(|a, b| b.cmp(a));
        let c = held[held.len() / 2];
        if c >= self.term_start() { c } else { 0 }
    }

    /// Who holds message `id` now (None if the log has no such message yet).
    pub fn holders(&self, id: u64) -> Option<Receipt> {
        (id >= 1 && id <= self.written_id).then(|| self.receipt(id))
    }

    /// Remove member `name` for good: it is forgotten, its connection closed, it no
    /// longer counts toward write concerns or the quorum, and it is refused when it
    /// connects again until [`Self::readmit`]. Returns false if unknown.
    pub fn remove_member(&mut self, name: &str) -> Result<bool, MembershipError> {
        let Some(idx) = self.members.iter().position(|m| m.name == name) else {
            return Ok(false);
        };
        if !self.voters_settled() {
            return Err(MembershipError::InProgress);
        }
        let old_removed = self.removed.clone();
        self.removed.push(name.to_string());
        let kept: Vec<String> = self
            .members
            .iter()
            .filter(|m| m.name != name)
            .map(|m| m.name.clone())
            .collect();
        if let Err(e) = self.save_membership(kept, self.removed.clone()) {
            self.removed = old_removed;
            return Err(e.into());
        }
        if let Some(conn) = self.members[idx].conn {
            let msg = format!(
                "{name} was removed from the set; it stays out until the master re-admits it"
            );
            self.refuse(conn, ErrorCode::Removed, msg);
            self.conns.remove(&conn);
        }
        self.members.remove(idx);
        // Connections map to member indexes: shift the ones after the removed member.
        for v in self.conns.values_mut() {
            if let Some(i) = v
                && *i > idx
            {
                *i -= 1;
            }
        }
        tracing::info!(peer = %name, members = self.members.len() + 1, "member removed");
        // The other members learn it (a new master must refuse it too).
        self.save_hosts(None)?;
        self.voters_stamp = self.stamp();
        Ok(true)
    }

    /// Whether the voting members may change now: this master's term start is
    /// committed, and a majority of the members (this one included) holds the last
    /// change. Changing them one at a time, each after the last is on a majority, keeps
    /// every majority of the old list and every majority of the new one overlapping
    /// (Raft's single-server changes, with Ongaro's fix of 2015: a new leader first
    /// commits in its own term). Without it the set simulation found two masters in one
    /// term after two removals made by different masters.
    pub fn voters_settled(&self) -> bool {
        let holding = 1 + self
            .members
            .iter()
            .filter(|m| m.config_stamp >= self.voters_stamp)
            .count();
        let start_committed = self.term_start() == 0 || self.commit_id() >= self.term_start();
        let members = self.members.len() + 1;
        start_committed && holding > members / 2
    }

    /// Let a removed name join again (it becomes a member when it next connects).
    /// Returns false if the name was not removed.
    pub fn readmit(&mut self, name: &str) -> Result<bool, StorageError> {
        if !self.removed.iter().any(|n| n == name) {
            return Ok(false);
        }
        let members = self.members.iter().map(|m| m.name.clone()).collect();
        let removed = self
            .removed
            .iter()
            .filter(|n| *n != name)
            .cloned()
            .collect();
        self.save_membership(members, removed)?;
        self.save_hosts(None)?;
        self.refused.retain(|r| r.name != name);
        tracing::info!(peer = %name, "re-admitted: it joins when it next connects");
        Ok(true)
    }

    /// How many members (the master included) hold `id` (and this term's start).
    fn acks(&self, id: u64) -> usize {
        let master = usize::from(id <= self.durable_id);
        let need = id.max(self.term_start());
        master + self.members.iter().filter(|m| self.held(m) >= need).count()
    }

    fn receipt(&self, id: u64) -> Receipt {
        let mut acked_by = Vec::new();
        if id <= self.durable_id {
            acked_by.push(self.cfg.name.clone());
        }
        let need = id.max(self.term_start());
        acked_by.extend(
            self.members
                .iter()
                .filter(|m| self.held(m) >= need)
                .map(|m| m.name.clone()),
        );
        Receipt {
            id,
            acks: acked_by.len(),
            acked_by,
            term: self.history.term_of(id),
        }
    }

    /// Answer every waiting write whose write concern is now met.
    ///
    /// Runs after every sync and every acknowledgement, so it allocates nothing for the
    /// writes that stay waiting: an id's acks are the holders whose position reaches
    /// it. Only ids durable on the master can be answered: a write concern always
    /// includes the master.
    fn check_waiters(&mut self) {
        let mut held: Vec<u64> = Vec::with_capacity(self.members.len() + 1);
        held.push(self.durable_id);
        held.extend(self.members.iter().map(|m| self.held(m)));
        // A member counts only once it holds this term's start (see `term_start`);
        // the master always does.
        let start = self.term_start();
        let acks = |id: u64| held.iter().filter(|&&at| at >= id.max(start)).count();
        let members = self.members.len() + 1;
        let ready: Vec<u64> = self
            .waiters
            .range(..=self.durable_id)
            .filter(|(id, ws)| {
                let a = acks(**id);
                ws.iter().any(|w| w.need(members) <= a)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in ready {
            let a = acks(id);
            let receipt = self.receipt(id);
            let outputs = &mut self.outputs;
            let Some(ws) = self.waiters.get_mut(&id) else {
                continue;
            };
            ws.retain(|w| {
                if w.need(members) > a {
                    return true;
                }
                outputs.push(MasterOutput::Reply {
                    token: w.token,
                    outcome: WriteOutcome::Committed(receipt.clone()),
                });
                false
            });
            if ws.is_empty() {
                self.waiters.remove(&id);
            }
        }
        if self.waiters.is_empty() && self.members.iter().all(|m| m.inflight.is_empty()) {
            self.next_timeout = None; // nothing left that could be due
        }
    }

    /// A snapshot for `/health`.
    pub fn status(&self, now: Instant) -> MasterStatus {
        let members: Vec<MemberStatus> = self
            .members
            .iter()
            .map(|m| MemberStatus {
                name: m.name.clone(),
                address: m.address.clone(),
                connected: m.conn.is_some(),
                health: self.health(m, now),
                phase: m.phase.name(),
                last_acked_id: m.upto,
                lag: self.durable_id.saturating_sub(m.upto),
                last_heard_ms_ago: m
                    .last_heard
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
                in_flight: m.inflight.len(),
                resends: m.resends,
                sent: m.sent,
                catch_up_from: m.catch_up_from,
                lag_ms: if m.upto >= self.durable_id {
                    Some(0)
                } else {
                    m.caught_up_at
                        .map(|t| now.saturating_duration_since(t).as_millis() as u64)
                },
                rtt_ms: m.rtt.map(|d| d.as_secs_f64() * 1000.0),
                uptime_ms: m
                    .connected_at
                    .filter(|_| m.conn.is_some())
                    .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            })
            .collect();
        let reachable = 1 + members
            .iter()
            .filter(|m| m.health != Health::Unhealthy)
            .count();
        let member_count = 1 + members.len();
        MasterStatus {
            name: self.cfg.name.clone(),
            log_id: self.log_id,
            term: self.term,
            last_id: self.durable_id,
            written_id: self.written_id,
            appended_id: self.last_id,
            reachable,
            member_count,
            has_quorum: reachable > member_count / 2,
            commit_id: self.commit_id(),
            pending_writes: self.waiters.values().map(Vec::len).sum(),
            members,
            removed: self.removed.clone(),
            hosts: self.hosts.clone(),
            config_version: self.config_version,
            config_term: self.config_term,
            last_term: self.history.term_of(self.written_id),
            refused: self
                .refused
                .iter()
                .rev()
                .map(|r| RefusedPeer {
                    name: r.name.clone(),
                    code: r.code,
                    reason: r.reason.clone(),
                    last_refused_ms_ago: now.saturating_duration_since(r.at).as_millis() as u64,
                    times: r.times,
                })
                .collect(),
        }
    }
}

/// Group sorted ids into inclusive runs of consecutive ids.
fn runs(ids: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &id in ids {
        match out.last_mut() {
            Some(r) if r.1 + 1 == id => r.1 = id,
            _ => out.push((id, id)),
        }
    }
    out
}

#[cfg(test)]
mod tests;
