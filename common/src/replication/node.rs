//! One member's decisions, whatever its role: [`NodeCore`].
//!
//! A member follows a master, stands for election, or leads. This core holds its
//! election ([`ElectionCore`]) and its replication in the role it has: the replication
//! core of its link to the master while it follows or stands ([`SecondaryCore`]), the
//! master's ([`MasterCore`]) while it leads; and the rules between them. They are as
//! much a part of the safety argument as the votes themselves, and they live here,
//! once, for the node (`node/src/member.rs`, `node/src/follower.rs`,
//! `node/src/primary/replicator.rs`) and for the set simulation alike:
//!
//! - a newer term is adopted by the follower *before* the log position a vote compares
//!   is read, so no entry of an older master is stored or acknowledged after the vote
//!   counted the log without it (found by the simulation, seed 426);
//! - the term and vote are saved before any answer or action that depends on them;
//!   if saving fails, the votes are answered "not granted" and nothing else goes out;
//! - the voters are the member list the node holds now (a master changes it itself,
//!   a secondary takes it from its master);
//! - a member stands only once it belongs to a set; asked to stand by its master, it
//!   says why (`priorityTakeover` when that master has a lower priority);
//! - the election hears of the master the follower accepted (and its term, saved
//!   before anything else goes out), and how recently it was heard, so a timeout
//!   never runs from an older contact;
//! - the durability rule is the replication cores': a follower acknowledges nothing
//!   before the store synced it ([`SecondaryCore::synced`]), a master counts itself
//!   only for what it synced ([`MasterCore::persisted`]);
//! - roles change inside one step: the master core is made when the election is won
//!   (and the follower dropped: frames still in flight are ignored), dropped when the
//!   election is lost (a new follower starts over the log as it is), and what the
//!   master sees that ends its term (a newer term, a lost majority, a hand-over) steps
//!   the election down at once. The log has one writer at a time, always this core.
//!
//! Everything arrives through [`NodeCore::handle`] (votes, timers, frames from the
//! master or from the secondaries, client writes, the end of a write or sync) and
//! everything to do leaves through [`NodeCore::take_outputs`]: no sockets, no clock.
//! [`NodeCore::poll_timeout`] says when the next timer is due.

use super::ConnId;
use super::election::{ElectionConfig, ElectionCore, ElectionOutput, VoteRequest, VoteResponse};
use super::master::{
    MasterConfig, MasterCore, MasterOutput, MembershipError, Rejected, Token, WriteRequest,
};
use super::secondary::{Identity, SecondaryCore, SecondaryOutput, SecondaryStatus};
use crate::protocol::{MasterFrame, SecondaryFrame};
use crate::storage::LogStore;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// The shell's name for a vote request it was sent, to route the answer back.
pub type VoteId = u64;

/// A member's settings.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub election: ElectionConfig,
    /// `master-node`: may stand alone on a log no other member shares yet.
    pub start_as_master: bool,
    /// How the follower introduces itself to masters.
    pub identity: Identity,
    /// The master core's settings; each term gets its own `term` (and `seed ^ term`).
    pub master: MasterConfig,
}

/// What happened, as the shell tells it.
#[derive(Clone, Debug)]
pub enum NodeInput {
    /// A member starting a new set (`master-node` on a log of its own): stand at once
    /// if it is the only voter.
    StandAlone,
    /// The follower's connection to the member at `host` is open (the host it was
    /// dialled by: the master's HTTP host where the master listens on every address).
    Connected { host: String },
    /// The follower's connection closed.
    Disconnected,
    /// Frames from the master on the follower's connection, in the order they came.
    Frames(Vec<MasterFrame>),
    /// The shell synced the store (`LogStore::sync`), as [`NodeCore::wants_sync`]
    /// asked: the follower acknowledges what became durable.
    Synced,
    /// A client write (master), answered by `token`: [`MasterOutput::Reply`] once its
    /// write concern is met or its timeout passed, or [`NodeOutput::Refused`].
    Write { token: Token, write: WriteRequest },
    /// A secondary's connection `conn` is open, from `peer` (its address).
    Opened { conn: ConnId, peer: String },
    /// A frame from the secondary on `conn`.
    FromSecondary { conn: ConnId, frame: SecondaryFrame },
    /// The secondary's connection `conn` closed.
    Closed(ConnId),
    /// The master's store wrote the log up to `upto` to its file (not synced yet).
    Flushed(u64),
    /// The master's store synced the log up to `upto`.
    Persisted(u64),
    /// The master's heartbeat interval passed.
    Heartbeat,
    /// `DELETE /members/{name}`: answered by [`NodeOutput::Removed`].
    RemoveMember(String),
    /// `POST /members`: let a removed name join again; answered by
    /// [`NodeOutput::Readmitted`].
    Readmit(String),
    /// A peer knows a newer term (a vote request's answer, say).
    NewerTerm(u64),
    /// A voter answered.
    Vote { from: String, resp: VoteResponse },
    /// A candidate asks for this member's vote; answer with `id`.
    VoteRequest { id: VoteId, req: VoteRequest },
    /// `POST /stepDown`: hand over to the most caught-up member, stop being master,
    /// stand for nothing for that long.
    StepDown(Duration),
    /// A timer ([`NodeCore::poll_timeout`]) is due: the election's or the master's,
    /// whichever are.
    Timeout,
}

/// What the shell does, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutput {
    /// The term this member knows is `term` now (its vote is saved).
    Term(u64),
    /// Answer the vote request `id`.
    VoteReply { id: VoteId, resp: VoteResponse },
    /// This member voted for `candidate`, likely the next master: look for the master
    /// at `comm` first.
    Voted {
        candidate: String,
        comm: Option<String>,
    },
    /// Send `req` to each of `voters` (this member is not among them) and report the
    /// answers as [`NodeInput::Vote`].
    RequestVotes {
        req: VoteRequest,
        voters: Vec<String>,
    },
    /// This member is the master of `term`: its master core is ready (stop the
    /// follower's connection, whose frames are ignored from now on, and start the
    /// master's shell).
    BecomeLeader { term: u64 },
    /// This member follows: if it was master, its master core is gone (answer the
    /// writes still waiting 503, close every secondary's connection); a follower over
    /// the log as it is now waits for its connection.
    BecomeFollower { term: u64 },
    /// For the master's connections and clients.
    Master(MasterOutput),
    /// The write `token` was refused before it was stored.
    Refused { token: Token, why: Rejected },
    /// The answer to [`NodeInput::RemoveMember`] (Ok(false): no such member).
    Removed(Result<bool, MembershipError>),
    /// The answer to [`NodeInput::Readmit`] (Ok(false): it was not removed).
    Readmitted(Result<bool, MembershipError>),
    /// For the follower's connection to its master: a frame to send, the end of the
    /// connection, the master it follows now, a rollback to note.
    /// (`SecondaryOutput::MembersChanged` and `StandNow` stay inside this core.)
    Link(SecondaryOutput),
}

impl NodeOutput {
    /// Whether the follower's connection carries it out ([`NodeOutput::Link`]).
    pub fn is_link(&self) -> bool {
        matches!(self, NodeOutput::Link(_))
    }
}

/// One member's decisions. See the module docs.
pub struct NodeCore<S> {
    name: String,
    election: ElectionCore,
    store: S,
    /// `master-node`: may stand alone on a log no other member shares yet.
    start_as_master: bool,
    /// How the follower introduces itself to masters.
    identity: Identity,
    /// The master core's settings.
    master: MasterConfig,
    /// While following or standing: the replication core of the link to the master.
    /// None while master.
    follower: Option<SecondaryCore<S>>,
    /// While master: its replication core.
    leader: Option<MasterCore<S>>,
    /// While master: the address of each secondary's connection, for its status.
    peers: HashMap<ConnId, String>,
    /// When the follower last heard from a master that accepted it.
    heard: Option<Instant>,
    /// The master the election was last told of: (term, name, when heard).
    told: Option<(u64, String, Instant)>,
    /// Vote answers waiting for the term and vote to be saved.
    replies: Vec<(VoteId, VoteResponse)>,
    outputs: Vec<NodeOutput>,
}

impl<S: LogStore + Clone> NodeCore<S> {
    /// A member over `store` (its term, vote and member list are the store's),
    /// following until an election says otherwise.
    pub fn new(cfg: NodeConfig, now: Instant, store: S) -> Self {
        let name = cfg.election.name.clone();
        let mut election = ElectionCore::new(cfg.election, now, store.term(), store.voted_for());
        election.set_membership(&store.membership());
        let mut core = Self {
            name,
            election,
            store,
            start_as_master: cfg.start_as_master,
            identity: cfg.identity,
            master: cfg.master,
            follower: None,
            leader: None,
            peers: HashMap::new(),
            heard: None,
            told: None,
            replies: Vec::new(),
            outputs: Vec::new(),
        };
        core.follow();
        core
    }

    /// The election, to read (term, leader, role, metrics).
    pub fn election(&self) -> &ElectionCore {
        &self.election
    }

    /// The follower, while following or standing.
    pub fn follower(&self) -> Option<&SecondaryCore<S>> {
        self.follower.as_ref()
    }

    /// The master core, while this member leads.
    pub fn leader(&self) -> Option<&MasterCore<S>> {
        self.leader.as_ref()
    }

    /// The follower's state; while there is none (this member leads, or is about
    /// to), a new follower's over the log as it is.
    pub fn follower_status(&self, now: Instant) -> SecondaryStatus {
        match &self.follower {
            Some(f) => f.status(now),
            None => SecondaryCore::new(self.name.clone(), self.store.clone()).status(now),
        }
    }

    /// Whether the shell should sync the store, then say [`NodeInput::Synced`]: the
    /// follower holds entries it may acknowledge only once they are durable.
    pub fn wants_sync(&self) -> bool {
        self.follower.as_ref().is_some_and(|f| f.wants_sync())
    }

    /// When to call [`NodeInput::Timeout`] next: the earlier of the election's timer
    /// and the master's (resends, write timeouts).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let master = self.leader.as_ref().and_then(|l| l.poll_timeout());
        match (self.election.poll_timeout(), master) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    pub fn take_outputs(&mut self) -> Vec<NodeOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// Whether this member may stand: once it belongs to a set (its log has an
    /// identity and the stored member list names it), or as `master-node` on a log no
    /// other member shares yet. A new secondary that cannot reach its set never elects
    /// itself master of a set of its own.
    fn eligible(&self) -> bool {
        let m = self.store.membership();
        let joined = self.store.log_id() != 0 && m.members.contains(&self.name);
        let alone = m.members.iter().all(|n| *n == self.name);
        joined || (self.start_as_master && alone)
    }

    fn follow(&mut self) {
        if self.follower.is_none() {
            let mut f = SecondaryCore::new(self.name.clone(), self.store.clone());
            f.set_identity(self.identity.clone());
            self.follower = Some(f);
        }
    }

    /// Take in one input, then carry out what it decided.
    pub fn handle(&mut self, now: Instant, input: NodeInput) {
        let replication = matches!(
            input,
            NodeInput::Frames(_)
                | NodeInput::Synced
                | NodeInput::Write { .. }
                | NodeInput::FromSecondary { .. }
                | NodeInput::Flushed(_)
                | NodeInput::Persisted(_)
        );
        if !replication {
            // The member list may have changed; the replication inputs (the hot path)
            // leave it to the next other input (a master's changes take effect on a
            // majority only, over heartbeats), or say so (the follower).
            self.election.set_membership(&self.store.membership());
            self.refresh_heard();
        }
        match input {
            NodeInput::StandAlone => {
                if self.election.voters().len() == 1 {
                    let pos = self.store.log_position();
                    self.election.stand_now(now, pos, "electionTimeout");
                }
            }
            NodeInput::Connected { host } => {
                // What was left for an earlier connection is not for this one.
                self.outputs.retain(|o| !o.is_link());
                let term = self.election.term();
                if let Some(f) = &mut self.follower {
                    f.set_dialed(&host);
                    f.connected(now, term);
                }
            }
            NodeInput::Disconnected => {
                if let Some(f) = &mut self.follower {
                    f.disconnected();
                }
            }
            NodeInput::Frames(frames) => {
                let Some(f) = &mut self.follower else {
                    return; // leading now: the connection is being closed
                };
                let mut newer = 0;
                for frame in frames {
                    if let MasterFrame::Error(e) = &frame {
                        newer = newer.max(e.term);
                    }
                    f.handle_frame(now, frame);
                }
                // Only a master this member follows counts as heard from (a refusal
                // from a member that is not the master, while hunting, does not).
                if f.master_name().is_some() {
                    self.heard = Some(now);
                }
                if newer > self.election.term() {
                    self.election.saw_term(now, newer);
                }
            }
            NodeInput::Synced => {
                if let Some(f) = &mut self.follower {
                    f.synced();
                }
            }
            NodeInput::Write { token, write } => match &mut self.leader {
                Some(l) => {
                    if let Err(why) = l.submit(now, write, token) {
                        self.outputs.push(NodeOutput::Refused { token, why });
                    }
                }
                None => self.outputs.push(NodeOutput::Refused {
                    token,
                    why: Rejected::SteppingDown,
                }),
            },
            NodeInput::Opened { conn, peer } => {
                if let Some(l) = &mut self.leader {
                    self.peers.insert(conn, peer);
                    l.connection_opened(conn);
                }
            }
            NodeInput::FromSecondary { conn, frame } => {
                if let Some(l) = &mut self.leader {
                    let hello = matches!(frame, SecondaryFrame::Hello { .. });
                    l.handle_frame(now, conn, frame);
                    if hello && let Some(peer) = self.peers.get(&conn) {
                        l.set_address(conn, peer.clone());
                    }
                }
            }
            NodeInput::Closed(conn) => {
                self.peers.remove(&conn);
                if let Some(l) = &mut self.leader {
                    l.connection_closed(conn);
                }
            }
            NodeInput::Flushed(upto) => {
                if let Some(l) = &mut self.leader {
                    l.flushed(now, upto);
                }
            }
            NodeInput::Persisted(upto) => {
                if let Some(l) = &mut self.leader {
                    l.persisted(now, upto);
                }
            }
            NodeInput::Heartbeat => {
                if let Some(l) = &mut self.leader {
                    l.tick_heartbeat(now);
                }
            }
            NodeInput::RemoveMember(name) => {
                let result = match &mut self.leader {
                    Some(l) => l.remove_member(&name),
                    None => Err(MembershipError::NotMaster),
                };
                self.outputs.push(NodeOutput::Removed(result));
            }
            NodeInput::Readmit(name) => {
                let result = match &mut self.leader {
                    Some(l) => l.readmit(&name).map_err(MembershipError::Storage),
                    None => Err(MembershipError::NotMaster),
                };
                self.outputs.push(NodeOutput::Readmitted(result));
            }
            NodeInput::NewerTerm(t) => self.election.saw_term(now, t),
            NodeInput::Vote { from, resp } => {
                let pos = self.store.log_position();
                self.election.handle_vote_response(now, &from, &resp, pos);
            }
            NodeInput::VoteRequest { id, req } => {
                // The log as it is now: a newer term is adopted by the follower in
                // this same step (`apply_election`), before anything else arrives.
                let pos = self.store.log_position();
                let resp = self.election.handle_vote_request(now, &req, pos);
                if resp.granted && !resp.pre_vote {
                    let comm = Some(req.comm.clone())
                        .filter(|c| !c.is_empty())
                        .or_else(|| {
                            let hosts = self.store.membership().hosts;
                            hosts
                                .into_iter()
                                .find(|h| h.name == req.candidate)
                                .map(|h| h.comm)
                        })
                        .filter(|c| !c.is_empty());
                    self.outputs.push(NodeOutput::Voted {
                        candidate: req.candidate.clone(),
                        comm,
                    });
                }
                // Answered once the vote is saved (see `apply`).
                self.replies.push((id, resp));
            }
            NodeInput::StepDown(quiet) => {
                if let Some(l) = &mut self.leader {
                    // Its TimeoutNow goes out before the connections close.
                    match l.hand_over(None) {
                        Some(to) => tracing::info!(%to, "stepping down: handing over"),
                        None => {
                            tracing::info!("stepping down: no caught-up member to hand over to")
                        }
                    }
                }
                self.election.step_down(now, quiet);
            }
            NodeInput::Timeout => {
                if let Some(l) = &mut self.leader
                    && l.poll_timeout().is_some_and(|t| t <= now)
                {
                    l.handle_timeout(now);
                }
                if self.election.poll_timeout().is_some_and(|t| t <= now) {
                    if !self.eligible() {
                        // Not (yet) in a set: never stands.
                        self.election.step_down(now, Duration::ZERO);
                    } else {
                        let pos = self.store.log_position();
                        self.election.handle_timeout(now, pos);
                    }
                }
            }
        }
        self.apply(now);
    }

    /// From now on the follower stores and acknowledges nothing of a master older
    /// than `term` ([`SecondaryCore::advance_term`]).
    fn adopt_term(&mut self, term: u64) {
        if let Some(f) = &mut self.follower {
            f.advance_term(term);
        }
    }

    /// The master asked this member to stand now (a hand-over).
    fn stand_now(&mut self, now: Instant) {
        if !self.eligible() {
            return;
        }
        // Asked to stand by a master of lower priority: MongoDB calls this a priority
        // takeover; otherwise the master stepped down to us.
        let hosts = self.store.membership().hosts;
        let master_priority = (self.told.as_ref())
            .and_then(|(_, m, _)| hosts.iter().find(|h| h.name == *m).map(|h| h.priority));
        let reason = if master_priority.is_some_and(|p| p < self.election.priority()) {
            "priorityTakeover"
        } else {
            "stepUpRequestSkipDryRun"
        };
        let pos = self.store.log_position();
        self.election.stand_now(now, pos, reason);
    }

    /// Tell the election how recently the master was heard (the follower only notes
    /// it, per frame). Once disconnected, the last contact was still with the master
    /// it told of: without this, a timeout ran from an older contact, and a member
    /// whose master just died stood a whole timeout early.
    fn refresh_heard(&mut self) {
        let (Some(f), Some(heard)) = (&self.follower, self.heard) else {
            return;
        };
        let current = f.master_name().map(|m| (f.master_term(), m.to_string()));
        let known = current.or_else(|| self.told.as_ref().map(|t| (t.0, t.1.clone())));
        if let Some((term, master)) = known
            && self.told.as_ref().is_none_or(|t| t.2 < heard)
        {
            self.election.heard_from_leader(heard, term, &master);
            self.told = Some((term, master, heard));
        }
    }

    /// Carry out what the follower and the election decided, until neither has
    /// anything left: the follower's news first (the master it accepted, a new member
    /// list, a hand-over), then the election's (save first, then answer the votes that
    /// waited for it, then act).
    fn apply(&mut self, now: Instant) {
        loop {
            let followed = self.route_follower(now);
            let led = self.route_leader(now);
            let decided = self.apply_election(now);
            if !followed && !led && !decided {
                return;
            }
        }
    }

    /// The master core's outputs: what ends its term steps the election down here, the
    /// rest goes to its shell. False if there were none.
    fn route_leader(&mut self, now: Instant) -> bool {
        let Some(l) = &mut self.leader else {
            return false;
        };
        let outputs = l.take_outputs();
        if outputs.is_empty() {
            return false;
        }
        for o in outputs {
            match o {
                MasterOutput::NewerTerm(t) => self.election.saw_term(now, t),
                MasterOutput::LostQuorum => self.election.step_down(now, Duration::ZERO),
                MasterOutput::HandedOver { to } => {
                    tracing::info!(%to, "handed over; stepping down");
                    let quiet = self.election.election_timeout();
                    self.election.step_down(now, quiet);
                }
                MasterOutput::Close { conn } => {
                    self.peers.remove(&conn);
                    if let Some(l) = &mut self.leader {
                        l.connection_closed(conn);
                    }
                    self.outputs
                        .push(NodeOutput::Master(MasterOutput::Close { conn }));
                }
                o => self.outputs.push(NodeOutput::Master(o)),
            }
        }
        true
    }

    /// The follower's outputs: what concerns the election is handled here, the rest
    /// goes to its connection. False if there were none.
    fn route_follower(&mut self, now: Instant) -> bool {
        let Some(f) = &mut self.follower else {
            return false;
        };
        let outputs = f.take_outputs();
        if outputs.is_empty() {
            return false;
        }
        for o in outputs {
            match o {
                SecondaryOutput::Following { term, master } => {
                    // Frames on this link may be held back on purpose (both sides'
                    // `--delay-ms`): not silence.
                    let slack = (self.follower.as_ref())
                        .map_or(Duration::ZERO, |f| f.master_delay())
                        + Duration::from_millis(self.identity.delay_ms);
                    self.election.set_slack(slack);
                    self.heard = Some(now);
                    if self.election.heard_from_leader(now, term, &master) {
                        self.told = Some((term, master.clone(), now));
                    }
                    // A newer term is saved before anything else goes out.
                    self.apply_election(now);
                    self.outputs
                        .push(NodeOutput::Link(SecondaryOutput::Following {
                            term,
                            master,
                        }));
                }
                SecondaryOutput::MembersChanged => {
                    self.election.set_membership(&self.store.membership());
                }
                SecondaryOutput::StandNow => self.stand_now(now),
                other => self.outputs.push(NodeOutput::Link(other)),
            }
        }
        true
    }

    /// The election's outputs: save first, then answer the votes that waited for it,
    /// then act. False if there were none (and no answer waited).
    fn apply_election(&mut self, now: Instant) -> bool {
        let outputs = self.election.take_outputs();
        let mut saved = true;
        for o in &outputs {
            if let ElectionOutput::Persist { term, voted_for } = o {
                // From here on the follower stores nothing of an older master, so a
                // vote just given counted every entry this member will ever
                // acknowledge to that master (seed 426 of the simulation).
                self.adopt_term(*term);
                if let Err(e) = self.store.set_vote(*term, voted_for.clone()) {
                    tracing::error!(error = %e, "cannot save the term and vote");
                    saved = false;
                }
                self.outputs.push(NodeOutput::Term(*term));
            }
        }
        let answered = !self.replies.is_empty();
        for (id, resp) in self.replies.drain(..) {
            let resp = if saved {
                resp
            } else {
                VoteResponse {
                    granted: false,
                    reason: "this member cannot save its vote".into(),
                    ..resp
                }
            };
            self.outputs.push(NodeOutput::VoteReply { id, resp });
        }
        if outputs.is_empty() {
            return answered;
        }
        if !saved {
            // Nothing that depends on an unsaved term or vote goes out.
            tracing::error!(
                "the election's state could not be saved; waiting for the next timeout"
            );
            return true;
        }
        for o in outputs {
            match o {
                ElectionOutput::Persist { .. } => {}
                ElectionOutput::RequestVotes(req) => {
                    let voters = (self.election.voters().iter())
                        .filter(|v| **v != self.name)
                        .cloned()
                        .collect();
                    self.outputs.push(NodeOutput::RequestVotes { req, voters });
                }
                ElectionOutput::BecomeLeader { term } => {
                    let mut cfg = self.master.clone();
                    cfg.term = term;
                    cfg.seed ^= term;
                    match MasterCore::new(cfg, self.store.clone()) {
                        Ok(l) => {
                            // The follower stops here: from now on only the master writes.
                            self.follower = None;
                            self.peers.clear();
                            self.leader = Some(l);
                            self.outputs.push(NodeOutput::BecomeLeader { term });
                        }
                        Err(e) => {
                            // Follow, and stand again later.
                            tracing::error!(error = %e, "cannot become the master; following");
                            let quiet = self.election.election_timeout();
                            self.election.step_down(now, quiet);
                        }
                    }
                }
                ElectionOutput::BecomeFollower { term } => {
                    // The master core (if any) is gone: a new follower over the log as
                    // it is now.
                    self.leader = None;
                    self.peers.clear();
                    self.follow();
                    self.outputs.push(NodeOutput::BecomeFollower { term })
                }
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Entry, ErrorCode, ErrorFrame, MemberInfo, SecondaryFrame};
    use crate::replication::election::{History, LogPosition, TermStart};
    use crate::storage::{MemStore, Membership};
    use std::sync::Arc;

    type Store = Arc<MemStore>;

    fn set(priorities: &[(&str, u32)]) -> Membership {
        Membership {
            members: priorities.iter().map(|(n, _)| n.to_string()).collect(),
            hosts: (priorities.iter())
                .map(|(n, p)| MemberInfo {
                    name: n.to_string(),
                    comm: format!("{n}:1"),
                    http: format!("{n}:2"),
                    priority: *p,
                })
                .collect(),
            config_version: 1,
            ..Membership::default()
        }
    }

    /// Member `name` of the set `membership`, over a store of its own (a member of
    /// the set's log once `joined`).
    fn member(
        now: Instant,
        name: &str,
        membership: &Membership,
        joined: bool,
    ) -> (NodeCore<Store>, Store) {
        let store = Arc::new(MemStore::volatile());
        if joined {
            store.set_log_id(7).unwrap();
        }
        store.set_membership(membership).unwrap();
        let priority = (membership.hosts.iter())
            .find(|h| h.name == name)
            .map_or(1, |h| h.priority);
        let cfg = NodeConfig {
            election: ElectionConfig {
                name: name.into(),
                priority,
                election_timeout: Duration::from_millis(1000),
                seed: 7,
            },
            start_as_master: false,
            identity: Identity {
                priority,
                ..Identity::default()
            },
            master: MasterConfig::new(name, Duration::from_millis(100)),
        };
        (NodeCore::new(cfg, now, store.clone()), store)
    }

    /// The Welcome of master `master` of `term`, whose log ends at `last_id`.
    fn welcome(master: &str, term: u64, last_id: u64, membership: &Membership) -> MasterFrame {
        MasterFrame::Welcome {
            version: crate::protocol::PROTOCOL_VERSION,
            name: master.into(),
            log_id: 7,
            last_id,
            truncate_after: None,
            http_host: None,
            http_port: 0,
            term,
            history: History(vec![TermStart { term: 1, after: 0 }]),
            members: membership.hosts.clone(),
            removed: Vec::new(),
            config_version: membership.config_version,
            config_term: 0,
            delay_ms: 0,
        }
    }

    fn add(ids: std::ops::RangeInclusive<u64>, term: u64) -> MasterFrame {
        MasterFrame::AddMessages {
            entries: ids
                .map(|id| Entry {
                    term: 1,
                    id,
                    message: format!("m{id}"),
                    request_id: None,
                })
                .collect(),
            commit_id: 0,
            urgent: true,
            term,
        }
    }

    /// Connect `n` to `master` of term 1, which welcomes it.
    fn follow(n: &mut NodeCore<Store>, now: Instant, master: &str, membership: &Membership) {
        n.handle(now, NodeInput::Connected { host: "m".into() });
        n.handle(
            now,
            NodeInput::Frames(vec![welcome(master, 1, 0, membership)]),
        );
    }

    fn request(term: u64, last_id: u64) -> VoteRequest {
        VoteRequest {
            term,
            candidate: "b".into(),
            log: LogPosition {
                last_term: 1,
                last_id,
            },
            pre_vote: false,
            transfer: false,
            comm: String::new(),
            config: Default::default(),
        }
    }

    fn acked(out: &[NodeOutput]) -> Option<u64> {
        (out.iter())
            .filter_map(|o| match o {
                NodeOutput::Link(SecondaryOutput::Send(
                    SecondaryFrame::Ack { upto, .. } | SecondaryFrame::Heartbeat { upto, .. },
                )) => Some(*upto),
                _ => None,
            })
            .max()
    }

    #[test]
    fn after_a_vote_in_a_newer_term_nothing_of_the_old_master_is_stored_or_acknowledged() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("m", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        follow(&mut n, now, "m", &membership);
        n.handle(now, NodeInput::Frames(vec![add(1..=5, 1)]));
        assert!(n.wants_sync());
        store.sync().unwrap();
        n.handle(now, NodeInput::Synced);
        assert_eq!(acked(&n.take_outputs()), Some(5));
        // b stands in term 2 with the same log: granted.
        n.handle(
            now,
            NodeInput::VoteRequest {
                id: 9,
                req: request(2, 5),
            },
        );
        let out = n.take_outputs();
        let reply = out.iter().find_map(|o| match o {
            NodeOutput::VoteReply { id: 9, resp } => Some(resp.clone()),
            _ => None,
        });
        assert!(reply.expect("an answer").granted, "{out:?}");
        assert_eq!(store.term(), 2);
        assert_eq!(store.voted_for().as_deref(), Some("b"));
        // The hint: the candidate's comm address from the member list.
        assert!(out.contains(&NodeOutput::Voted {
            candidate: "b".into(),
            comm: Some("b:1".into())
        }));
        // The answer comes after the term is saved; the link to m closes.
        let term_at = out.iter().position(|o| *o == NodeOutput::Term(2));
        let reply_at = (out.iter()).position(|o| matches!(o, NodeOutput::VoteReply { .. }));
        assert!(term_at < reply_at, "{out:?}");
        assert!(
            out.contains(&NodeOutput::Link(SecondaryOutput::Close)),
            "{out:?}"
        );
        // An entry of m's term still in flight: neither stored nor acknowledged.
        n.handle(now, NodeInput::Frames(vec![add(6..=6, 1)]));
        store.sync().unwrap();
        n.handle(now, NodeInput::Synced);
        assert_eq!(store.last_id(), 5);
        let out = n.take_outputs();
        assert!(acked(&out).is_none_or(|a| a <= 5), "{out:?}");
    }

    #[test]
    fn the_term_of_an_accepted_master_is_saved_before_anything_goes_out() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("m", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        n.handle(now, NodeInput::Connected { host: "m".into() });
        n.take_outputs();
        n.handle(
            now,
            NodeInput::Frames(vec![welcome("m", 3, 4, &membership)]),
        );
        let out = n.take_outputs();
        assert_eq!(out.first(), Some(&NodeOutput::Term(3)), "{out:?}");
        assert_eq!(store.term(), 3);
        let following = NodeOutput::Link(SecondaryOutput::Following {
            term: 3,
            master: "m".into(),
        });
        assert_eq!(out.get(1), Some(&following), "{out:?}");
        // It asks m for what it lacks.
        assert!(
            out.iter().any(|o| matches!(
                o,
                NodeOutput::Link(SecondaryOutput::Send(SecondaryFrame::GetMessages { .. }))
            )),
            "{out:?}"
        );
        assert_eq!(n.election().leader(), Some("m"));
    }

    #[test]
    fn a_newer_term_in_an_error_from_the_master_reaches_the_election() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("m", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        follow(&mut n, now, "m", &membership);
        n.take_outputs();
        let mut e = ErrorFrame::new(ErrorCode::StaleTerm, "m is in term 5");
        e.term = 5;
        n.handle(now, NodeInput::Frames(vec![MasterFrame::Error(e)]));
        assert!(n.take_outputs().contains(&NodeOutput::Term(5)));
        assert_eq!(store.term(), 5);
    }

    #[test]
    fn a_vote_that_cannot_be_saved_is_not_granted_and_nothing_follows() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("c", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        store.fail_votes(true);
        n.handle(
            now,
            NodeInput::VoteRequest {
                id: 1,
                req: request(2, 0),
            },
        );
        let out = n.take_outputs();
        let granted: Vec<bool> = (out.iter())
            .filter_map(|o| match o {
                NodeOutput::VoteReply { resp, .. } => Some(resp.granted),
                _ => None,
            })
            .collect();
        assert_eq!(granted, vec![false], "{out:?}");
        // Standing needs a saved term too: no vote requests go out.
        n.handle(now + Duration::from_secs(5), NodeInput::Timeout);
        let out = n.take_outputs();
        assert!(
            !out.iter()
                .any(|o| matches!(o, NodeOutput::RequestVotes { req, .. } if !req.pre_vote)),
            "{out:?}"
        );
    }

    #[test]
    fn a_member_outside_a_set_never_stands() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("c", 1)]);
        let (mut n, store) = member(now, "a", &membership, false);
        for s in 1..=10 {
            let at = now + Duration::from_secs(s);
            n.handle(at, NodeInput::Timeout);
            n.handle(
                at,
                NodeInput::Frames(vec![MasterFrame::TimeoutNow { term: 0 }]),
            );
        }
        let out = n.take_outputs();
        assert!(!out.iter().any(|o| !o.is_link()), "{out:?}");
        assert_eq!(store.term(), 0);
    }

    #[test]
    fn asked_to_stand_by_a_master_of_lower_priority_is_a_priority_takeover() {
        let now = Instant::now();
        let membership = set(&[("a", 2), ("m", 1), ("c", 1)]);
        let (mut n, _) = member(now, "a", &membership, true);
        follow(&mut n, now, "m", &membership);
        n.handle(
            now,
            NodeInput::Frames(vec![MasterFrame::TimeoutNow { term: 1 }]),
        );
        let out = n.take_outputs();
        assert!(
            out.iter().any(
                |o| matches!(o, NodeOutput::RequestVotes { req, voters } if req.transfer && voters.len() == 2)
            ),
            "{out:?}"
        );
        let reason = n.election().metrics().map(|m| m.reason);
        assert_eq!(reason, Some("priorityTakeover"));
    }

    #[test]
    fn the_timeout_runs_from_the_last_time_the_master_was_heard() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("m", 1), ("c", 1)]);
        let (mut n, _) = member(now, "a", &membership, true);
        follow(&mut n, now, "m", &membership);
        n.take_outputs();
        // The follower kept hearing from m (it only notes it): when the timer fires,
        // the election learns that first and does not stand.
        let due = n.poll_timeout().expect("a timer");
        let beat = MasterFrame::Heartbeat {
            last_id: 0,
            commit_id: 0,
            term: 1,
        };
        n.handle(
            due - Duration::from_millis(10),
            NodeInput::Frames(vec![beat]),
        );
        n.take_outputs();
        n.handle(due, NodeInput::Timeout);
        assert_eq!(n.take_outputs(), vec![], "m was heard 10 ms ago");
        assert!(n.poll_timeout().expect("a timer") > due);
        // Disconnected since: the last contact still counts, then it stands.
        n.handle(due, NodeInput::Disconnected);
        let later = n.poll_timeout().expect("a timer");
        n.handle(later, NodeInput::Timeout);
        let out = n.take_outputs();
        assert!(
            out.iter()
                .any(|o| matches!(o, NodeOutput::RequestVotes { req, .. } if req.pre_vote)),
            "{out:?}"
        );
    }

    #[test]
    fn a_new_connection_carries_nothing_left_for_the_old_one() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("m", 1)]);
        let (mut n, _) = member(now, "a", &membership, true);
        follow(&mut n, now, "m", &membership);
        n.take_outputs();
        // A vote in term 2 ends the link to m: an error and a close, not taken yet
        // when the link breaks and the follower dials again.
        n.handle(
            now,
            NodeInput::VoteRequest {
                id: 1,
                req: request(2, 0),
            },
        );
        n.handle(now, NodeInput::Disconnected);
        n.handle(now, NodeInput::Connected { host: "b".into() });
        let link: Vec<SecondaryOutput> = (n.take_outputs().into_iter())
            .filter_map(|o| match o {
                NodeOutput::Link(o) => Some(o),
                _ => None,
            })
            .collect();
        assert!(
            matches!(
                link.as_slice(),
                [SecondaryOutput::Send(SecondaryFrame::Hello { term: 2, .. })]
            ),
            "{link:?}"
        );
    }

    fn write(token: Token) -> NodeInput {
        NodeInput::Write {
            token,
            write: WriteRequest {
                message: format!("w{token}"),
                write_concern: crate::replication::WriteConcern::Count(1),
                timeout: None,
                request_id: None,
            },
        }
    }

    fn replied(out: &[NodeOutput]) -> Vec<Token> {
        (out.iter())
            .filter_map(|o| match o {
                NodeOutput::Master(MasterOutput::Reply { token, .. }) => Some(*token),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_member_that_leads_writes_alone_and_stops_when_it_follows() {
        let now = Instant::now();
        let membership = set(&[("a", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        n.handle(now, NodeInput::StandAlone);
        let out = n.take_outputs();
        assert!(
            out.contains(&NodeOutput::BecomeLeader { term: 1 }),
            "{out:?}"
        );
        assert!(n.follower().is_none());
        assert_eq!(n.leader().map(|l| l.term()), Some(1));
        // Frames still on the old connection: ignored, the master alone writes.
        n.handle(now, NodeInput::Frames(vec![add(1..=3, 1)]));
        assert_eq!(store.last_id(), 0);
        assert!(!n.wants_sync());
        // A write: stored, answered once the store synced it.
        n.handle(now, write(1));
        assert_eq!(store.last_id(), 1);
        n.handle(now, NodeInput::Flushed(1));
        store.sync().unwrap();
        n.handle(now, NodeInput::Persisted(1));
        assert_eq!(replied(&n.take_outputs()), vec![1]);
        // Stepping down: the master core is gone, a follower waits for a master.
        n.handle(now, NodeInput::StepDown(Duration::from_secs(1)));
        let out = n.take_outputs();
        assert!(
            out.contains(&NodeOutput::BecomeFollower { term: 1 }),
            "{out:?}"
        );
        assert!(n.leader().is_none() && n.follower().is_some());
        n.handle(now, write(2));
        let out = n.take_outputs();
        assert_eq!(
            out,
            vec![NodeOutput::Refused {
                token: 2,
                why: Rejected::SteppingDown
            }]
        );
        assert_eq!(store.last_id(), 1);
    }

    #[test]
    fn a_master_that_meets_a_newer_term_steps_down_in_the_same_step() {
        let now = Instant::now();
        let membership = set(&[("a", 1)]);
        let (mut n, store) = member(now, "a", &membership, true);
        n.handle(now, NodeInput::StandAlone);
        n.take_outputs();
        n.handle(
            now,
            NodeInput::Opened {
                conn: 4,
                peer: "10.0.0.2:5000".into(),
            },
        );
        let hello = SecondaryFrame::Hello {
            version: crate::protocol::PROTOCOL_VERSION,
            name: "b".into(),
            next_expected: 1,
            log_id: 7,
            last_term: 0,
            term: 9,
            history: History::default(),
            comm: None,
            http: None,
            priority: 1,
            delay_ms: 0,
        };
        n.handle(
            now,
            NodeInput::FromSecondary {
                conn: 4,
                frame: hello,
            },
        );
        let out = n.take_outputs();
        // The refusal goes out, the connection closes, the term is saved, and the
        // member follows: all in this one step.
        assert!(
            matches!(
                out.first(),
                Some(NodeOutput::Master(MasterOutput::Send {
                    conn: 4,
                    frame: MasterFrame::Error(_)
                }))
            ),
            "{out:?}"
        );
        let close = NodeOutput::Master(MasterOutput::Close { conn: 4 });
        let at = |o: &NodeOutput| out.iter().position(|x| x == o);
        assert!(at(&close) < at(&NodeOutput::Term(9)), "{out:?}");
        let follow = NodeOutput::BecomeFollower { term: 9 };
        assert!(at(&NodeOutput::Term(9)) < at(&follow), "{out:?}");
        assert_eq!(store.term(), 9);
        assert!(n.leader().is_none() && n.follower().is_some());
    }

    #[test]
    fn membership_changes_are_the_masters_and_answered() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("c", 1)]);
        let (mut n, _) = member(now, "a", &membership, true);
        n.handle(now, NodeInput::RemoveMember("b".into()));
        let out = n.take_outputs();
        assert_eq!(
            out,
            vec![NodeOutput::Removed(Err(MembershipError::NotMaster))]
        );
        n.handle(now, NodeInput::Readmit("b".into()));
        let out = n.take_outputs();
        assert_eq!(
            out,
            vec![NodeOutput::Readmitted(Err(MembershipError::NotMaster))]
        );
    }
}
