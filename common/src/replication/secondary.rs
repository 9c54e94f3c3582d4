//! The secondary's replication state machine: total order and deduplication.

use super::HttpAddress;
use crate::protocol::MemberInfo;
use crate::protocol::{
    Entry, ErrorCode, ErrorFrame, MasterFrame, PROTOCOL_VERSION, SecondaryFrame,
};
use crate::storage::{ConfigStamp, LogStore, Membership, RolledBack};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How far past the next expected id the secondary buffers messages. Anything further is
/// a protocol violation (the master never has that much in flight).
pub const MAX_BUFFER_AHEAD: u64 = 1 << 20;

/// What the core asks its shell to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SecondaryOutput {
    /// Write `frame` to the master.
    Send(SecondaryFrame),
    /// Close the connection (the shell reconnects later).
    Close,
    /// The master of `term`, `master`, accepted this node: the election should know
    /// (it may be a newer term, to save before anything else).
    Following { term: u64, master: String },
    /// The member list changed (saved in the store already).
    MembersChanged,
    /// The master hands over to this node: stand for election now.
    StandNow,
    /// Entries were cut and kept in a rollback file.
    RolledBack(RolledBack),
}

/// How this node introduces itself to a master.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Identity {
    /// Comm `host:port` others reach it at (None: not listening).
    pub comm: Option<String>,
    /// HTTP `host:port`.
    pub http: Option<String>,
    pub priority: u32,
    /// The longest this node holds back a frame (`--delay-ms`).
    pub delay_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Disconnected,
    AwaitingWelcome,
    /// `target`: the id the catch-up stream reaches, once its last batch arrived.
    CatchingUp {
        requested_from: u64,
        target: Option<u64>,
    },
    AwaitingReadyAck,
    Live,
}

/// A snapshot for `/health`.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SecondaryStatus {
    pub name: String,
    pub connected: bool,
    pub phase: &'static str,
    pub master: Option<String>,
    /// Highest id held durably, with every earlier one.
    pub last_id: u64,
    /// Highest id stored with every earlier one, synced or not yet (`missing` starts
    /// after it).
    pub appended_id: u64,
    pub master_last_id: u64,
    /// The master's commit id as last heard.
    pub commit_id: u64,
    pub buffered: usize,
    pub duplicates: u64,
    /// Entries cut because the master had lost them in a crash (see docs/protocol.md).
    pub truncated: u64,
    /// This connection began with a rollback and is not live yet (MongoDB's ROLLBACK
    /// state: the member cut entries the master does not have and is catching up).
    pub rolling_back: bool,
    pub last_heard_ms_ago: Option<u64>,
    /// The last refusal, by either side, in words.
    pub last_error: Option<String>,
    /// The master refused this node because it was removed from the set; it keeps
    /// trying, and gets in once the master re-admits it.
    pub removed: bool,
    /// Ids held back in the buffer (they arrived before an earlier one), as inclusive
    /// ranges.
    pub held_back: Vec<(u64, u64)>,
    /// Ids missing before the highest held-back one, as inclusive ranges: what the
    /// secondary waits for before it can show the held-back ones.
    pub missing: Vec<(u64, u64)>,
}

/// The secondary's replication state machine.
pub struct SecondaryCore<S> {
    name: String,
    store: S,
    next_expected: u64,
    /// The term of the last entry held (0: none).
    last_term: u64,
    /// Messages that arrived before an earlier one, keyed by id.
    buffer: BTreeMap<u64, Entry>,
    phase: Phase,
    master: Option<String>,
    /// Where the master's HTTP API is, as its `Welcome` said.
    master_http: HttpAddress,
    removed: bool,
    master_last_id: u64,
    /// The master's commit id, as last heard: what a majority holds.
    commit_id: u64,
    last_heard: Option<Instant>,
    duplicates: u64,
    /// Entries cut because the master had lost them (over this process's life).
    truncated: u64,
    /// Rolled back on this connection and not live yet.
    rolling_back: bool,
    /// The stamp of the member list this connection's master last sent: an older
    /// one arriving late (frames may overtake each other) is ignored.
    members_stamp: ConfigStamp,
    last_error: Option<String>,
    outputs: Vec<SecondaryOutput>,
    identity: Identity,
    /// The newest term this node knows, as the shell said when it connected.
    known_term: u64,
    /// The term of the master on this connection.
    term: u64,
    /// The host this node dialled its master by.
    dialed: String,
    /// The longest the master holds back a frame on purpose (its `--delay-ms`).
    master_delay: Duration,
    /// The highest id acknowledged on this connection.
    acked: u64,
    /// Ids parked after a gap, not reported yet (an acknowledgement waits for a sync).
    parked: Vec<u64>,
    /// The Hello waits for the store to sync what it holds: the master counts a
    /// member for every entry it says it holds.
    hello_pending: bool,
}

impl<S: LogStore> SecondaryCore<S> {
    /// How this node introduces itself to masters.
    pub fn set_identity(&mut self, identity: Identity) {
        self.identity = identity;
    }

    /// The longest the master holds back a frame on purpose.
    pub fn master_delay(&self) -> Duration {
        self.master_delay
    }

    /// The term of the master this node follows (0: none yet).
    pub fn master_term(&self) -> u64 {
        self.term
    }

    /// The name of the master this node follows now, if any.
    pub fn master_name(&self) -> Option<&str> {
        let following = !matches!(self.phase, Phase::Disconnected | Phase::AwaitingWelcome);
        following.then_some(self.master.as_deref()).flatten()
    }

    pub fn new(name: impl Into<String>, store: S) -> Self {
        let last_id = store.last_id();
        Self {
            name: name.into(),
            next_expected: last_id + 1,
            last_term: term_of(&store, last_id),
            store,
            buffer: BTreeMap::new(),
            phase: Phase::Disconnected,
            master: None,
            master_http: HttpAddress::default(),
            removed: false,
            master_last_id: 0,
            commit_id: 0,
            last_heard: None,
            duplicates: 0,
            truncated: 0,
            rolling_back: false,
            members_stamp: ConfigStamp::default(),
            last_error: None,
            outputs: Vec::new(),
            identity: Identity {
                priority: 1,
                ..Identity::default()
            },
            known_term: 0,
            term: 0,
            dialed: String::new(),
            master_delay: Duration::ZERO,
            acked: 0,
            parked: Vec::new(),
            hello_pending: false,
        }
    }

    /// The highest id held durably with every earlier one: all this node may
    /// acknowledge. An entry acknowledged before it is synced could be lost by a power
    /// failure after a majority was counted with it, so every `upto` this core sends
    /// (Ack, Heartbeat) and the Hello's position stop here.
    fn durable_upto(&self) -> u64 {
        self.last_id().min(self.store.durable_id())
    }

    /// Whether the shell should sync the store and then call [`Self::synced`]: it holds
    /// entries not synced yet (their acknowledgement waits), or the Hello waits.
    pub fn wants_sync(&self) -> bool {
        self.hello_pending || self.store.durable_id() < self.last_id()
    }

    /// The shell synced the store (with [`LogStore::sync`]): acknowledge what became
    /// durable, and say Ready or Hello where they waited for it.
    pub fn synced(&mut self) {
        if self.phase == Phase::Disconnected {
            return;
        }
        if self.hello_pending {
            if self.durable_upto() == self.last_id() {
                self.hello_pending = false;
                self.hello();
            }
            return;
        }
        let upto = self.durable_upto();
        if upto > self.acked || (!self.parked.is_empty() && upto == self.last_id()) {
            self.acknowledge();
        }
        self.maybe_ready();
    }

    /// Send an Ack of what is durable, with the ids parked after a gap.
    fn acknowledge(&mut self) {
        let upto = self.durable_upto();
        let last = self.last_id();
        let mut buffered = std::mem::take(&mut self.parked);
        // Parked ids past the stored prefix are still in the buffer; the rest joined it.
        buffered.retain(|id| *id > last);
        buffered.sort_unstable();
        buffered.dedup();
        self.acked = self.acked.max(upto);
        self.outputs
            .push(SecondaryOutput::Send(SecondaryFrame::Ack {
                upto,
                buffered,
            }));
    }

    pub fn take_outputs(&mut self) -> Vec<SecondaryOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// The master's commit id as last heard (what a majority of the members holds).
    pub fn commit_id(&self) -> u64 {
        self.commit_id
    }

    /// The highest id held with every earlier one.
    pub fn last_id(&self) -> u64 {
        self.next_expected - 1
    }

    pub fn is_connected(&self) -> bool {
        self.phase != Phase::Disconnected
    }

    /// The HTTP address (`host:port`) of the master this node follows now, with
    /// `dialed_host` (the host this node reached it by) where the master listens on
    /// every address. None while not following a master.
    pub fn master_http(&self, dialed_host: &str) -> Option<String> {
        let following = !matches!(self.phase, Phase::Disconnected | Phase::AwaitingWelcome);
        following
            .then(|| self.master_http.with_fallback(dialed_host))
            .flatten()
    }

    /// The host the shell dialled the master by (the master's HTTP host where it
    /// listens on every address).
    pub fn set_dialed(&mut self, host: &str) {
        self.dialed = host.to_string();
    }

    /// The HTTP address of the master this node follows now, if any.
    pub fn primary_http(&self) -> Option<String> {
        self.master_http(&self.dialed)
    }

    /// A connection to a master is open: introduce ourselves. `known_term` is the
    /// newest term this node knows: a master of an older one is refused.
    pub fn connected(&mut self, now: Instant, known_term: u64) {
        self.phase = Phase::AwaitingWelcome;
        self.buffer.clear();
        self.last_heard = Some(now);
        // Never lower: `advance_term` may have raised it meanwhile.
        self.known_term = self.known_term.max(known_term);
        self.term = 0;
        self.acked = 0;
        self.parked.clear();
        // The master counts this node for every entry the Hello says it holds.
        self.hello_pending = self.store.durable_id() < self.last_id();
        if !self.hello_pending {
            self.hello();
        }
    }

    fn hello(&mut self) {
        self.outputs
            .push(SecondaryOutput::Send(SecondaryFrame::Hello {
                version: PROTOCOL_VERSION,
                name: self.name.clone(),
                next_expected: self.next_expected,
                log_id: self.store.log_id(),
                last_term: self.last_term,
                term: self.known_term,
                history: self.store.history(),
                comm: self.identity.comm.clone(),
                http: self.identity.http.clone(),
                priority: self.identity.priority,
                delay_ms: self.identity.delay_ms,
            }));
    }

    /// The connection is gone. The buffer is dropped: catch-up on the next connection
    /// resends whatever it held.
    pub fn disconnected(&mut self) {
        self.phase = Phase::Disconnected;
        self.buffer.clear();
        self.parked.clear();
        self.hello_pending = false;
    }

    /// Close after telling the master why.
    fn fail(&mut self, code: ErrorCode, message: String) {
        tracing::warn!(?code, %message, "closing the connection to the master");
        self.last_error = Some(message.clone());
        self.outputs
            .push(SecondaryOutput::Send(SecondaryFrame::Error(
                ErrorFrame::new(code, message),
            )));
        self.outputs.push(SecondaryOutput::Close);
    }

    /// This node adopted `term` (it is about to vote in it, or heard of a newer
    /// master). From now on nothing of an older master is stored or acknowledged: a
    /// vote counts this node's log as it is when the vote is given, and an entry of
    /// the old term acknowledged after it could be committed by the old master while
    /// the new one, elected with this vote, lacks it. The connection to such a master
    /// closes. Call it before the vote's log position is read.
    pub fn advance_term(&mut self, term: u64) {
        if term <= self.known_term {
            return;
        }
        self.known_term = term;
        if self.phase != Phase::Disconnected && self.term != 0 && self.term < term {
            self.fail(
                ErrorCode::StaleTerm,
                format!(
                    "this node is in term {term}; the master's term {} is over",
                    self.term
                ),
            );
        }
    }

    /// A frame arrived from the master.
    pub fn handle_frame(&mut self, now: Instant, frame: MasterFrame) {
        if self.phase == Phase::Disconnected {
            return;
        }
        if self.term != 0 && self.term < self.known_term {
            return; // an older master's: see `advance_term`
        }
        self.last_heard = Some(now);
        match (self.phase, frame) {
            (_, MasterFrame::Error(e)) => {
                tracing::warn!(error = %e, "the master refused us");
                self.removed = e.code == ErrorCode::Removed;
                self.last_error = Some(format!("master: {e}"));
                self.outputs.push(SecondaryOutput::Close);
            }
            (
                Phase::AwaitingWelcome,
                MasterFrame::Welcome {
                    version,
                    name,
                    log_id,
                    last_id,
                    truncate_after,
                    http_host,
                    http_port,
                    term,
                    history,
                    members,
                    removed,
                    config_version,
                    config_term,
                    delay_ms,
                },
            ) => {
                self.master_delay = Duration::from_millis(delay_ms);
                self.master_http = HttpAddress {
                    host: http_host,
                    port: http_port,
                };
                if term < self.known_term {
                    return self.fail(
                        ErrorCode::StaleTerm,
                        format!(
                            "master {name} is of term {term}, but this node knows term {}",
                            self.known_term
                        ),
                    );
                }
                self.term = term;
                let master = name.clone();
                let at = self.outputs.len();
                self.welcome(version, name, log_id, last_id, truncate_after);
                if self.phase != Phase::AwaitingWelcome {
                    // Accepted: the election hears of this master before anything else.
                    self.outputs
                        .insert(at, SecondaryOutput::Following { term, master });
                    let stamp = ConfigStamp {
                        term: config_term,
                        version: config_version,
                    };
                    self.adopt(history, members, removed, stamp);
                }
            }
            // Frames are delayed independently, so a heartbeat may overtake the Welcome.
            (Phase::AwaitingWelcome, MasterFrame::Heartbeat { .. }) => {}
            (Phase::AwaitingWelcome, other) => self.fail(
                ErrorCode::HandshakeRequired,
                format!("expected Welcome, got {}", other.name()),
            ),
            (_, MasterFrame::Welcome { .. }) => {
                self.fail(ErrorCode::UnexpectedFrame, "Welcome sent twice".into())
            }
            (_, frame) if frame_term(&frame).is_some_and(|t| t != self.term) => {
                let t = frame_term(&frame).unwrap_or_default();
                self.fail(
                    ErrorCode::StaleTerm,
                    format!("a frame of term {t} on a connection of term {}", self.term),
                )
            }
            (
                _,
                MasterFrame::Members {
                    config_version,
                    members,
                    removed,
                    config_term,
                },
            ) => {
                let stamp = ConfigStamp {
                    term: config_term,
                    version: config_version,
                };
                if stamp <= self.members_stamp {
                    return; // overtaken by a newer list (found by the set simulation)
                }
                self.members_stamp = stamp;
                if let Err(e) = self.save_members(members, removed, stamp) {
                    return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
                }
                self.outputs.push(SecondaryOutput::MembersChanged);
            }
            (_, MasterFrame::TimeoutNow { term }) => {
                if term == self.term {
                    self.outputs.push(SecondaryOutput::StandNow);
                }
            }
            (_, MasterFrame::Vote(_)) => self.fail(
                ErrorCode::UnexpectedFrame,
                "a vote on a replication connection".into(),
            ),
            (_, MasterFrame::AuthChallenge { .. }) => self.fail(
                ErrorCode::UnexpectedFrame,
                "authentication comes before the Welcome".into(),
            ),
            (_, MasterFrame::Messages { entries, last, .. }) => {
                if let (
                    Phase::CatchingUp {
                        requested_from,
                        target: None,
                    },
                    true,
                ) = (self.phase, last)
                {
                    let target = entries.last().map_or(requested_from - 1, |e| e.id);
                    self.phase = Phase::CatchingUp {
                        requested_from,
                        target: Some(target),
                    };
                }
                self.accept(entries);
            }
            (
                _,
                MasterFrame::AddMessages {
                    entries, commit_id, ..
                },
            ) => {
                self.commit_id = self.commit_id.max(commit_id);
                self.accept(entries)
            }
            (_, MasterFrame::ReadyAck) => {
                if self.phase == Phase::AwaitingReadyAck {
                    self.phase = Phase::Live;
                    self.rolling_back = false;
                    tracing::info!(last_id = self.last_id(), "caught up; live replication");
                }
            }
            (
                _,
                MasterFrame::Heartbeat {
                    last_id, commit_id, ..
                },
            ) => {
                self.master_last_id = self.master_last_id.max(last_id);
                self.commit_id = self.commit_id.max(commit_id);
                let upto = self.durable_upto();
                self.acked = self.acked.max(upto);
                let stamp = self.store.membership().stamp();
                self.outputs
                    .push(SecondaryOutput::Send(SecondaryFrame::Heartbeat {
                        upto,
                        config_version: stamp.version,
                        config_term: stamp.term,
                    }));
            }
        }
    }

    fn welcome(
        &mut self,
        version: u32,
        name: String,
        log_id: u64,
        last_id: u64,
        truncate_after: Option<u64>,
    ) {
        if version != PROTOCOL_VERSION {
            return self.fail(
                ErrorCode::VersionMismatch,
                format!(
                    "this secondary speaks protocol version {PROTOCOL_VERSION}, the master version {version}"
                ),
            );
        }
        let ours = self.store.log_id();
        if ours == log_id
            && let Some(keep) = truncate_after
            && keep < self.last_id()
        {
            // The master does not hold these (an older master's entries that no
            // majority acknowledged): its log is the history. They go to a rollback
            // file before they are cut.
            let cut = self.last_id() - keep;
            tracing::warn!(master = %name, cut_after = keep, cut, "rolling back entries the master does not have");
            match self.store.rollback(keep) {
                Ok(Some(r)) => self.outputs.push(SecondaryOutput::RolledBack(r)),
                Ok(None) => {}
                Err(e) => return self.fail(ErrorCode::Other, format!("storage failure: {e}")),
            }
            self.next_expected = keep + 1;
            // Entries before the cut may still be in memory only; reads need them written.
            if let Err(e) = self.store.flush() {
                return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
            }
            self.last_term = term_of(&self.store, keep);
            self.truncated += cut;
            self.rolling_back = true;
        }
        if (ours != 0 && ours != log_id) || self.last_id() > last_id {
            return self.fail(
                ErrorCode::LogMismatch,
                format!(
                    "this secondary holds ids up to {} of log {ours:#x}; master {name} holds ids up to {last_id} of log {log_id:#x}",
                    self.last_id()
                ),
            );
        }
        if ours == 0
            && let Err(e) = self.store.set_log_id(log_id)
        {
            return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
        }
        tracing::info!(master = %name, master_last_id = last_id, from = self.next_expected, "handshake done; asking for missed messages");
        self.master = Some(name);
        self.master_last_id = self.master_last_id.max(last_id);
        self.last_error = None;
        self.removed = false;
        self.phase = Phase::CatchingUp {
            requested_from: self.next_expected,
            target: None,
        };
        self.outputs
            .push(SecondaryOutput::Send(SecondaryFrame::GetMessages {
                start_id: self.next_expected,
            }));
        self.maybe_ready();
    }

    /// Take the master's term starts and member list (after the handshake cut what the
    /// master does not hold), durably, before anything is acknowledged.
    fn adopt(
        &mut self,
        history: super::election::History,
        members: Vec<MemberInfo>,
        removed: Vec<String>,
        stamp: ConfigStamp,
    ) {
        if let Err(e) = self.store.set_history(&history) {
            return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
        }
        self.members_stamp = stamp;
        let ours = self.store.membership();
        let changed = ours.hosts != members || ours.removed != removed || ours.stamp() != stamp;
        if changed && !members.is_empty() {
            if let Err(e) = self.save_members(members, removed, stamp) {
                return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
            }
            self.outputs.push(SecondaryOutput::MembersChanged);
        }
    }

    fn save_members(
        &mut self,
        hosts: Vec<MemberInfo>,
        removed: Vec<String>,
        stamp: ConfigStamp,
    ) -> Result<(), crate::storage::StorageError> {
        self.store.set_membership(&Membership {
            members: hosts.iter().map(|h| h.name.clone()).collect(),
            removed,
            hosts,
            config_version: stamp.version,
            config_term: stamp.term,
        })
    }

    /// Take in entries in any order: store the ones that continue the log, buffer the
    /// ones after a gap, drop the ones already held; then acknowledge. A frame with an
    /// id outside the window is refused whole.
    fn accept(&mut self, entries: Vec<Entry>) {
        if entries.is_empty() {
            self.maybe_ready();
            return;
        }
        let window_end = self.next_expected.saturating_add(MAX_BUFFER_AHEAD);
        if let Some(e) = entries.iter().find(|e| e.id == 0 || e.id >= window_end) {
            return self.fail(
                ErrorCode::UnexpectedFrame,
                format!(
                    "message id {} is outside the window starting at {}",
                    e.id, self.next_expected
                ),
            );
        }
        // Entries that continue the log go straight to `run` (the usual case: a live
        // batch or a catch-up chunk, in order); only those after a gap are parked in
        // the buffer, and their ids kept for the acknowledgement.
        let mut run = Vec::with_capacity(entries.len());
        let mut parked = Vec::new();
        let mut next = self.next_expected;
        for e in entries {
            self.master_last_id = self.master_last_id.max(e.id);
            if e.id < next {
                self.duplicates += 1;
            } else if e.id == next {
                run.push(e);
                next += 1;
                while let Some(b) = self.buffer.remove(&next) {
                    run.push(b);
                    next += 1;
                }
            } else {
                parked.push(e.id);
                match self.buffer.entry(e.id) {
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        slot.insert(e);
                    }
                    std::collections::btree_map::Entry::Occupied(_) => self.duplicates += 1,
                }
            }
        }
        if !run.is_empty() {
            if let Err(e) = self.store.append(&run) {
                // Put them back; the master resends what stays unacknowledged.
                for entry in run {
                    self.buffer.insert(entry.id, entry);
                }
                return self.fail(ErrorCode::Other, format!("storage failure: {e}"));
            }
            self.last_term = run[run.len() - 1].term;
            self.next_expected = next;
        }
        self.parked.extend(parked);
        // Acknowledge now if all of it is durable already; otherwise the shell syncs,
        // then `synced` acknowledges.
        if self.durable_upto() == self.last_id() {
            self.acknowledge();
        }
        self.maybe_ready();
    }

    fn maybe_ready(&mut self) {
        if let Phase::CatchingUp {
            target: Some(t), ..
        } = self.phase
            && self.durable_upto() >= t
        {
            self.phase = Phase::AwaitingReadyAck;
            self.outputs
                .push(SecondaryOutput::Send(SecondaryFrame::Ready));
        }
    }

    pub fn status(&self, now: Instant) -> SecondaryStatus {
        SecondaryStatus {
            name: self.name.clone(),
            connected: self.is_connected(),
            phase: match self.phase {
                Phase::Disconnected => "disconnected",
                Phase::AwaitingWelcome => "handshaking",
                Phase::CatchingUp { .. } | Phase::AwaitingReadyAck => "catching_up",
                Phase::Live => "live",
            },
            master: self.master.clone(),
            // What survives a crash: appended entries count once synced.
            last_id: self.store.durable_id(),
            appended_id: self.last_id(),
            master_last_id: self.master_last_id,
            commit_id: self.commit_id,
            buffered: self.buffer.len(),
            duplicates: self.duplicates,
            truncated: self.truncated,
            rolling_back: self.rolling_back,
            last_heard_ms_ago: self
                .last_heard
                .map(|t| now.saturating_duration_since(t).as_millis() as u64),
            last_error: self.last_error.clone(),
            removed: self.removed,
            held_back: ranges(self.buffer.keys().copied()),
            missing: {
                let mut gaps = Vec::new();
                let mut next = self.next_expected;
                for &id in self.buffer.keys() {
                    if id > next {
                        gaps.push((next, id - 1));
                    }
                    next = id + 1;
                }
                gaps
            },
        }
    }

    /// Ids held back in the buffer (for tests and status).
    pub fn buffered_ids(&self) -> Vec<u64> {
        self.buffer.keys().copied().collect()
    }
}

/// The term of entry `id` in `store` (0 for none, or if it cannot be read: the master
/// then refuses the handshake rather than guess).
fn term_of<S: LogStore>(store: &S, id: u64) -> u64 {
    if id == 0 {
        return 0;
    }
    match store.read(id, 1) {
        Ok(e) => e.first().map_or(0, |e| e.term),
        Err(e) => {
            tracing::error!(id, error = %e, "cannot read the last entry's term");
            0
        }
    }
}

/// Sorted ids as inclusive ranges of consecutive ids.
fn ranges(ids: impl Iterator<Item = u64>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for id in ids {
        match out.last_mut() {
            Some(r) if r.1 + 1 == id => r.1 = id,
            _ => out.push((id, id)),
        }
    }
    out
}

/// The master's term a frame carries, for frames that carry one (0: an older peer).
fn frame_term(frame: &MasterFrame) -> Option<u64> {
    match frame {
        MasterFrame::Messages { term, .. }
        | MasterFrame::AddMessages { term, .. }
        | MasterFrame::Heartbeat { term, .. } => Some(*term).filter(|t| *t != 0),
        _ => None,
    }
}
