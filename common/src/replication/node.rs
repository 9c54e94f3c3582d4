//! One member's role decisions, whatever its role: [`NodeCore`].
//!
//! [`ElectionCore`] decides terms and votes. Around it, a member does a few things
//! that are as much a part of the safety argument as the votes themselves, and they
//! live here, once, for the node's driver (`node/src/member.rs`) and for the set
//! simulation alike:
//!
//! - a newer term is adopted by the replication core *before* the log position a
//!   vote compares is read, so no entry of an older master is stored or acknowledged
//!   after the vote counted the log without it (found by the simulation, seed 426);
//! - the term and vote are saved before any answer or action that depends on them;
//!   if saving fails, the votes are answered "not granted" and nothing else goes out;
//! - the voters are the member list the node holds now (a master changes it itself,
//!   a secondary takes it from its master), read at every step;
//! - a member stands only once it belongs to a set; asked to stand by its master, it
//!   says why (`priorityTakeover` when that master has a lower priority);
//! - the election learns how recently the master was heard from the replication
//!   side, before deciding anything, so a timeout never runs from an older contact.
//!
//! The replication itself stays with [`super::SecondaryCore`] (following) and
//! [`super::MasterCore`] (master), which the shell runs where their I/O is. This core
//! reaches the log and the follower through [`Replica`], and hands the shell what to
//! do as [`NodeOutput`]s: no sockets, no clock.

use super::election::{
    ElectionConfig, ElectionCore, ElectionOutput, LogPosition, VoteRequest, VoteResponse,
};
use crate::storage::{Membership, StorageError};
use std::time::{Duration, Instant};

/// The shell's name for a vote request it was sent, to route the answer back.
pub type VoteId = u64;

/// What [`NodeCore`] reads and changes through its shell: the log, and the
/// replication core while following.
pub trait Replica {
    /// How up to date the log is, for votes.
    fn log_position(&self) -> LogPosition;
    /// The member list stored now.
    fn membership(&self) -> Membership;
    /// Whether this member may stand (it belongs to a set).
    fn eligible(&self) -> bool;
    /// When the replication side last heard from its master, and which (term, name):
    /// None while not following.
    fn last_heard(&self) -> Option<(Instant, Option<(u64, String)>)>;
    /// From now on the replication core stores and acknowledges nothing of a master
    /// older than `term` (`SecondaryCore::advance_term`).
    fn adopt_term(&mut self, term: u64);
    /// Save the term and vote durably.
    fn save_vote(&mut self, term: u64, voted_for: Option<String>) -> Result<(), StorageError>;
}

/// What happened, as the shell tells it.
#[derive(Clone, Debug)]
pub enum NodeInput {
    /// A member starting a new set (`master-node` on a log of its own): stand at once
    /// if it is the only voter.
    StandAlone,
    /// The master of `term` accepted this member; frames on its link may be held
    /// back on purpose for up to `slack`.
    Following {
        term: u64,
        master: String,
        slack: Duration,
    },
    /// The master asked this member to stand now (a hand-over).
    StandNow,
    /// The stored member list changed.
    MembersChanged,
    /// A peer knows a newer term.
    NewerTerm(u64),
    /// As master, lost the majority for an election timeout.
    LostQuorum,
    /// As master, handed over to another member.
    HandedOver,
    /// A voter answered.
    Vote { from: String, resp: VoteResponse },
    /// A candidate asks for this member's vote; answer with `id`.
    VoteRequest { id: VoteId, req: VoteRequest },
    /// `POST /stepDown`: stop being master, stand for nothing for that long.
    StepDown(Duration),
    /// This member won, but could not become master: follow, and stand again later.
    CannotLead,
    /// The election's timer ([`NodeCore::poll_timeout`]) is due.
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
    /// Become the master of `term`.
    BecomeLeader { term: u64 },
    /// Stop being master (if it is one) and follow.
    BecomeFollower { term: u64 },
}

/// One member's role decisions. See the module docs.
pub struct NodeCore {
    name: String,
    election: ElectionCore,
    /// The master the election was last told of: (term, name, when heard).
    told: Option<(u64, String, Instant)>,
    /// Vote answers waiting for the term and vote to be saved.
    replies: Vec<(VoteId, VoteResponse)>,
    outputs: Vec<NodeOutput>,
}

impl NodeCore {
    /// A member whose stored term and vote are `term` and `voted_for`, with the
    /// member list `membership`.
    pub fn new(
        cfg: ElectionConfig,
        now: Instant,
        term: u64,
        voted_for: Option<String>,
        membership: &Membership,
    ) -> Self {
        let name = cfg.name.clone();
        let mut election = ElectionCore::new(cfg, now, term, voted_for);
        election.set_membership(membership);
        Self {
            name,
            election,
            told: None,
            replies: Vec::new(),
            outputs: Vec::new(),
        }
    }

    /// The election, to read (term, leader, role, metrics).
    pub fn election(&self) -> &ElectionCore {
        &self.election
    }

    /// When to call [`NodeInput::Timeout`] next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.election.poll_timeout()
    }

    pub fn take_outputs(&mut self) -> Vec<NodeOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// Take in one input, then carry out what the election decided.
    pub fn handle(&mut self, now: Instant, input: NodeInput, replica: &mut impl Replica) {
        self.election.set_membership(&replica.membership());
        self.refresh_heard(replica);
        match input {
            NodeInput::StandAlone => {
                if self.election.voters().len() == 1 {
                    let pos = replica.log_position();
                    self.election.stand_now(now, pos, "electionTimeout");
                }
            }
            NodeInput::Following {
                term,
                master,
                slack,
            } => {
                self.election.set_slack(slack);
                if self.election.heard_from_leader(now, term, &master) {
                    self.told = Some((term, master, now));
                }
            }
            NodeInput::StandNow => {
                if replica.eligible() {
                    // Asked to stand by a master of lower priority: MongoDB calls this a
                    // priority takeover; otherwise the master stepped down to us.
                    let hosts = replica.membership().hosts;
                    let master_priority = self.told.as_ref().and_then(|(_, m, _)| {
                        hosts.iter().find(|h| h.name == *m).map(|h| h.priority)
                    });
                    let reason = if master_priority.is_some_and(|p| p < self.election.priority()) {
                        "priorityTakeover"
                    } else {
                        "stepUpRequestSkipDryRun"
                    };
                    let pos = replica.log_position();
                    self.election.stand_now(now, pos, reason);
                }
            }
            NodeInput::MembersChanged => {} // read at every step
            NodeInput::NewerTerm(t) => self.election.saw_term(now, t),
            NodeInput::LostQuorum => self.election.step_down(now, Duration::ZERO),
            NodeInput::HandedOver => {
                let quiet = self.election.election_timeout();
                self.election.step_down(now, quiet);
            }
            NodeInput::Vote { from, resp } => {
                let pos = replica.log_position();
                self.election.handle_vote_response(now, &from, &resp, pos);
            }
            NodeInput::VoteRequest { id, req } => {
                // A newer term is adopted before the log position is read: from here on
                // the replication core stores nothing of an older master, so the vote
                // counts every entry this member will ever acknowledge to that master.
                if !req.pre_vote && req.term > self.election.term() {
                    replica.adopt_term(req.term);
                }
                let pos = replica.log_position();
                let resp = self.election.handle_vote_request(now, &req, pos);
                if resp.granted && !resp.pre_vote {
                    let comm = Some(req.comm.clone())
                        .filter(|c| !c.is_empty())
                        .or_else(|| {
                            let hosts = replica.membership().hosts;
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
            NodeInput::StepDown(quiet) => self.election.step_down(now, quiet),
            NodeInput::CannotLead => {
                let quiet = self.election.election_timeout();
                self.election.step_down(now, quiet);
            }
            NodeInput::Timeout => {
                if !replica.eligible() {
                    // Not (yet) in a set: never stands.
                    if self.election.poll_timeout().is_some_and(|t| t <= now) {
                        self.election.step_down(now, Duration::ZERO);
                    }
                } else {
                    let pos = replica.log_position();
                    self.election.handle_timeout(now, pos);
                }
            }
        }
        self.apply(replica);
    }

    /// Tell the election how recently the master was heard (the replication side
    /// only notes it). Once disconnected, the last contact was still with the master
    /// it told of: without this, a timeout ran from an older contact, and a member
    /// whose master just died stood a whole timeout early.
    fn refresh_heard(&mut self, replica: &impl Replica) {
        let Some((heard, current)) = replica.last_heard() else {
            return;
        };
        let known = current.or_else(|| self.told.as_ref().map(|t| (t.0, t.1.clone())));
        if let Some((term, master)) = known
            && self.told.as_ref().is_none_or(|t| t.2 < heard)
        {
            self.election.heard_from_leader(heard, term, &master);
            self.told = Some((term, master, heard));
        }
    }

    /// Carry out what the election decided: save first, then answer the votes that
    /// waited for it, then act.
    fn apply(&mut self, replica: &mut impl Replica) {
        loop {
            let outputs = self.election.take_outputs();
            let mut saved = true;
            for o in &outputs {
                if let ElectionOutput::Persist { term, voted_for } = o {
                    replica.adopt_term(*term);
                    if let Err(e) = replica.save_vote(*term, voted_for.clone()) {
                        tracing::error!(error = %e, "cannot save the term and vote");
                        saved = false;
                    }
                    self.outputs.push(NodeOutput::Term(*term));
                }
            }
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
                return;
            }
            if !saved {
                // Nothing that depends on an unsaved term or vote goes out.
                tracing::error!(
                    "the election's state could not be saved; waiting for the next timeout"
                );
                return;
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
                        self.outputs.push(NodeOutput::BecomeLeader { term })
                    }
                    ElectionOutput::BecomeFollower { term } => {
                        self.outputs.push(NodeOutput::BecomeFollower { term })
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MemberInfo;

    /// A log and follower that record what the core did to them, in order.
    #[derive(Default)]
    struct Fake {
        pos: LogPosition,
        membership: Membership,
        eligible: bool,
        heard: Option<(Instant, Option<(u64, String)>)>,
        fail_saves: bool,
        calls: Vec<String>,
    }

    impl Replica for Fake {
        fn log_position(&self) -> LogPosition {
            self.pos
        }
        fn membership(&self) -> Membership {
            self.membership.clone()
        }
        fn eligible(&self) -> bool {
            self.eligible
        }
        fn last_heard(&self) -> Option<(Instant, Option<(u64, String)>)> {
            self.heard.clone()
        }
        fn adopt_term(&mut self, term: u64) {
            self.calls.push(format!("adopt {term}"));
            // What the follower holds once it stops taking the old master's entries.
            self.pos.last_id = self.pos.last_id.min(5);
        }
        fn save_vote(&mut self, term: u64, voted_for: Option<String>) -> Result<(), StorageError> {
            self.calls.push(format!("save {term} {voted_for:?}"));
            if self.fail_saves {
                return Err(StorageError::Io("the disk is full".into()));
            }
            Ok(())
        }
    }

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

    /// A log and follower of a member holding `membership`.
    fn fake(membership: &Membership, eligible: bool) -> Fake {
        Fake {
            membership: membership.clone(),
            eligible,
            ..Fake::default()
        }
    }

    /// The follower's handshake with `master` of term 1.
    fn following(master: &str) -> NodeInput {
        NodeInput::Following {
            term: 1,
            master: master.into(),
            slack: Duration::ZERO,
        }
    }

    fn core(now: Instant, name: &str, priority: u32, membership: &Membership) -> NodeCore {
        let cfg = ElectionConfig {
            name: name.into(),
            priority,
            election_timeout: Duration::from_millis(1000),
            seed: 7,
        };
        NodeCore::new(cfg, now, 0, None, membership)
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

    #[test]
    fn a_newer_term_is_adopted_before_the_vote_reads_the_log() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut r = Fake {
            // The follower has stored entries 6 and 7 of the old master, which it
            // would stop at once: the vote must compare the log without them.
            pos: LogPosition {
                last_term: 1,
                last_id: 7,
            },
            membership: membership.clone(),
            eligible: true,
            ..Fake::default()
        };
        let mut n = core(now, "a", 1, &membership);
        n.handle(
            now,
            NodeInput::VoteRequest {
                id: 9,
                req: request(2, 6),
            },
            &mut r,
        );
        assert_eq!(r.calls[0], "adopt 2", "{:?}", r.calls);
        let out = n.take_outputs();
        let reply = out.iter().find_map(|o| match o {
            NodeOutput::VoteReply { id: 9, resp } => Some(resp.clone()),
            _ => None,
        });
        assert!(reply.expect("an answer").granted, "{out:?}");
        assert!(r.calls.iter().any(|c| c == "save 2 Some(\"b\")"));
        // The hint: the candidate's comm address from the member list.
        assert!(out.contains(&NodeOutput::Voted {
            candidate: "b".into(),
            comm: Some("b:1".into())
        }));
        // The answer comes after the term is saved.
        let term_at = out.iter().position(|o| *o == NodeOutput::Term(2));
        let reply_at = out
            .iter()
            .position(|o| matches!(o, NodeOutput::VoteReply { .. }));
        assert!(term_at < reply_at, "{out:?}");
    }

    #[test]
    fn a_vote_that_cannot_be_saved_is_not_granted_and_nothing_follows() {
        let now = Instant::now();
        let membership = set(&[("a", 1), ("b", 1), ("c", 1)]);
        let mut r = Fake {
            fail_saves: true,
            ..fake(&membership, true)
        };
        let mut n = core(now, "a", 1, &membership);
        n.handle(
            now,
            NodeInput::VoteRequest {
                id: 1,
                req: request(2, 0),
            },
            &mut r,
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
        n.handle(now + Duration::from_secs(5), NodeInput::Timeout, &mut r);
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
        let mut r = fake(&membership, false);
        let mut n = core(now, "a", 1, &membership);
        for s in 1..=10 {
            n.handle(now + Duration::from_secs(s), NodeInput::Timeout, &mut r);
            n.handle(now + Duration::from_secs(s), NodeInput::StandNow, &mut r);
        }
        assert_eq!(n.take_outputs(), vec![]);
        assert!(r.calls.is_empty(), "{:?}", r.calls);
    }

    #[test]
    fn asked_to_stand_by_a_master_of_lower_priority_is_a_priority_takeover() {
        let now = Instant::now();
        let membership = set(&[("a", 2), ("m", 1), ("c", 1)]);
        let mut r = fake(&membership, true);
        let mut n = core(now, "a", 2, &membership);
        n.handle(now, following("m"), &mut r);
        n.handle(now, NodeInput::StandNow, &mut r);
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
        let mut r = fake(&membership, true);
        let mut n = core(now, "a", 1, &membership);
        n.handle(now, following("m"), &mut r);
        n.take_outputs();
        // The replication side kept hearing from m (it tells only by `last_heard`):
        // when the timer fires, the election learns that first and does not stand.
        let due = n.poll_timeout().expect("a timer");
        r.heard = Some((due - Duration::from_millis(10), Some((1, "m".into()))));
        n.handle(due, NodeInput::Timeout, &mut r);
        assert_eq!(n.take_outputs(), vec![], "m was heard 10 ms ago");
        assert!(n.poll_timeout().expect("a timer") > due);
        // Disconnected since: the last contact still counts, then it stands.
        r.heard = Some((due - Duration::from_millis(10), None));
        let later = n.poll_timeout().expect("a timer");
        n.handle(later, NodeInput::Timeout, &mut r);
        let out = n.take_outputs();
        assert!(
            out.iter()
                .any(|o| matches!(o, NodeOutput::RequestVotes { req, .. } if req.pre_vote)),
            "{out:?}"
        );
    }
}
