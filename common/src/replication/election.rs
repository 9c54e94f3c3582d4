//! Elections: terms, votes, and which log is the more up to date.
//!
//! The rules are Raft's (Ongaro and Ousterhout, "In Search of an Understandable
//! Consensus Algorithm", section 5), with its pre-vote and check-quorum, and with one
//! change that keeps the ids clients see free of gaps: where a new Raft leader appends
//! a no-op entry of its term, a chorus master records a *term start* instead, a marker
//! between two ids saying "the master of term T took over when the log held `after`
//! entries". The list of term starts, [`History`], travels with the log: a secondary
//! takes its master's history at the handshake. A log holds the marker of term T when
//! it holds the first `after` entries of that master's log, and a log's *last term* is
//! the term of the last marker it holds. Everything Raft says of the no-op entry holds
//! of the marker, because it behaves like an entry that takes no id:
//!
//! - *Log matching*: entries with the same id and term are the same entry, and so is
//!   everything before them (a term has one master, which never writes an id twice).
//!   [`History::common_prefix`] finds the last entry two logs share from their
//!   histories alone, whatever their shape (`[1,1,3]` against `[1,2,2,4]` share one).
//! - *Up to date*: a voter grants its vote only to a candidate whose (last term, last
//!   id) is at least its own ([`LogPosition`]).
//! - *Commit*: a master counts a member toward the commit id only once the member holds
//!   its marker (it was sent at least the master's first `after` entries in this
//!   term). So an entry of an older term is committed only together with the current
//!   term's marker on a majority, and a later candidate lacking it cannot win: Raft's
//!   "Figure 8" case, without a visible no-op.
//!
//! [`ElectionCore`] is the sans-IO state machine of one member: inputs and the time
//! in, [`ElectionOutput`]s out.

use crate::storage::{ConfigStamp, Membership};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The marker of one term: its master took over when its log held `after` entries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermStart {
    pub term: u64,
    pub after: u64,
}

/// The term starts of a log, oldest first: terms increase, `after` never decreases.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct History(pub Vec<TermStart>);

impl History {
    /// The history of a log written before term starts were recorded, from the terms
    /// of its entries (`(id, term)` in id order): a term starts before its first entry.
    pub fn from_entry_terms(terms: impl IntoIterator<Item = (u64, u64)>) -> Self {
        let mut h = History::default();
        for (id, term) in terms {
            if h.0.last().is_none_or(|m| m.term < term) {
                h.0.push(TermStart {
                    term,
                    after: id - 1,
                });
            }
        }
        h
    }

    /// The term of entry `id` (0 before the first marker).
    pub fn term_of(&self, id: u64) -> u64 {
        self.0
            .iter()
            .rev()
            .find(|m| m.after < id)
            .map_or(0, |m| m.term)
    }

    /// The last term of a log of this history holding `last_id` entries: the term of
    /// the last marker it holds.
    pub fn last_term(&self, last_id: u64) -> u64 {
        self.0
            .iter()
            .rev()
            .find(|m| m.after <= last_id)
            .map_or(0, |m| m.term)
    }

    /// The highest term recorded.
    pub fn newest_term(&self) -> u64 {
        self.0.last().map_or(0, |m| m.term)
    }

    /// Forget markers a log of `last_id` entries does not hold.
    pub fn cut(&mut self, last_id: u64) {
        self.0.retain(|m| m.after <= last_id);
    }

    /// Record that the master of `term` takes over a log of `after` entries.
    pub fn start(&mut self, term: u64, after: u64) {
        self.cut(after);
        self.0.retain(|m| m.term < term);
        self.0.push(TermStart { term, after });
    }

    /// How many entries a log of this history holding `mine` entries shares with a log
    /// of history `other` holding `theirs`: the last id at which both hold an entry of
    /// the same term (by log matching, every earlier entry is shared too).
    pub fn common_prefix(&self, mine: u64, other: &History, theirs: u64) -> u64 {
        let end = mine.min(theirs);
        // Terms are constant between markers: compare one id per stretch, from the
        // first, and stop at the first stretch that differs.
        let mut starts: Vec<u64> = self
            .0
            .iter()
            .chain(&other.0)
            .map(|m| m.after)
            .filter(|&a| a < end)
            .collect();
        starts.push(0);
        starts.sort_unstable();
        starts.dedup();
        for &a in &starts {
            if self.term_of(a + 1) != other.term_of(a + 1) {
                return a;
            }
        }
        end
    }

    /// Whether the history is well formed: terms increase, `after` never decreases.
    pub fn is_valid(&self) -> bool {
        self.0
            .windows(2)
            .all(|w| w[0].term < w[1].term && w[0].after <= w[1].after)
    }
}

/// How up to date a log is: compared by last term, then last id.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct LogPosition {
    pub last_term: u64,
    pub last_id: u64,
}

/// A candidate asks for a vote (or, with `pre_vote`, whether it would get one).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteRequest {
    /// The term the candidate stands in (for a pre-vote: the term it would stand in).
    pub term: u64,
    pub candidate: String,
    pub log: LogPosition,
    pub pre_vote: bool,
    /// The master handed over to this candidate (step-down or priority takeover): a
    /// voter that still hears from that master grants anyway.
    #[serde(default)]
    pub transfer: bool,
    /// Where the candidate is reached now (comm `host:port`), which voters may not
    /// know yet (a member restarted on another port).
    #[serde(default)]
    pub comm: String,
    /// The stamp of the member list the candidate holds. A voter whose list does not
    /// name the candidate refuses only if its own list is at least as new: a list made
    /// by an older master and never held by a majority must not stop the set from
    /// electing a member of the newer one (found by the set simulation, seed 6141).
    #[serde(default)]
    pub config: ConfigStamp,
}

/// The answer to a [`VoteRequest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteResponse {
    /// The voter's term (after it saw the request).
    pub term: u64,
    pub granted: bool,
    pub pre_vote: bool,
    /// Why not, in words.
    #[serde(default)]
    pub reason: String,
}

/// What this member is in the election protocol.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum ElectionRole {
    Follower,
    /// Asking whether it would win, without changing any term.
    PreCandidate,
    Candidate,
    Leader,
}

/// What the core asks its shell to do, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ElectionOutput {
    /// Save the term and the vote durably before anything that follows.
    Persist {
        term: u64,
        voted_for: Option<String>,
    },
    /// Send this request to every other voting member and report the answers with
    /// [`ElectionCore::handle_vote_response`].
    RequestVotes(VoteRequest),
    /// This member won the election of `term`: become its master.
    BecomeLeader { term: u64 },
    /// Stop being master, or stop following a master of an older term.
    BecomeFollower { term: u64 },
}

/// Why the last election was held, for `/status` (`electionCandidateMetrics`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ElectionMetrics {
    /// `electionTimeout`, `stepUpRequestSkipDryRun` (handed over) or `priorityTakeover`.
    pub reason: &'static str,
    pub term: u64,
    pub votes_needed: usize,
    pub votes_received: usize,
    pub priority: u32,
    pub election_timeout_ms: u64,
    /// When it started and how long it took, in ms (`duration_ms` once won).
    #[serde(skip)]
    pub started: Option<Instant>,
    pub duration_ms: Option<u64>,
    pub won: bool,
}

/// The settings of one member's elections.
#[derive(Clone, Debug)]
pub struct ElectionConfig {
    pub name: String,
    /// 0: never stands; otherwise higher takes over from lower.
    pub priority: u32,
    /// Silence from the master before an election, randomised up to twice this.
    pub election_timeout: Duration,
    pub seed: u64,
}

/// One member's election state. See the module docs.
pub struct ElectionCore {
    cfg: ElectionConfig,
    term: u64,
    voted_for: Option<String>,
    role: ElectionRole,
    /// The master of the current term, when known.
    leader: Option<String>,
    /// Every voting member's name, this one included.
    voters: Vec<String>,
    /// The stamp of the member list `voters` come from.
    config: ConfigStamp,
    granted: Vec<String>,
    /// When this member stands next (followers and candidates).
    deadline: Instant,
    /// When a master was last heard from (for pre-vote stickiness).
    last_heard: Option<Instant>,
    /// Stands for no election before this (`stepDown`).
    quiet_until: Option<Instant>,
    transfer: bool,
    /// Added to the election timeout: how long frames from the master may be held
    /// back on purpose (`--delay-ms` on either side), so a slow link is not a dead one.
    slack: Duration,
    reason: &'static str,
    metrics: Option<ElectionMetrics>,
    outputs: Vec<ElectionOutput>,
    rng: StdRng,
}

impl ElectionCore {
    /// A follower in `term` (as saved), having voted for `voted_for` in it.
    pub fn new(cfg: ElectionConfig, now: Instant, term: u64, voted_for: Option<String>) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        let mut core = Self {
            voters: vec![cfg.name.clone()],
            config: ConfigStamp::default(),
            cfg,
            term,
            voted_for,
            role: ElectionRole::Follower,
            leader: None,
            granted: Vec::new(),
            deadline: now,
            last_heard: None,
            quiet_until: None,
            transfer: false,
            slack: Duration::ZERO,
            reason: "electionTimeout",
            metrics: None,
            outputs: Vec::new(),
            rng,
        };
        core.reset_deadline(now);
        core
    }

    pub fn term(&self) -> u64 {
        self.term
    }

    pub fn role(&self) -> ElectionRole {
        self.role
    }

    pub fn leader(&self) -> Option<&str> {
        self.leader.as_deref()
    }

    pub fn voted_for(&self) -> Option<&str> {
        self.voted_for.as_deref()
    }

    pub fn priority(&self) -> u32 {
        self.cfg.priority
    }

    pub fn election_timeout(&self) -> Duration {
        self.cfg.election_timeout
    }

    /// The last election this member stood in.
    pub fn metrics(&self) -> Option<&ElectionMetrics> {
        self.metrics.as_ref()
    }

    /// Everything decided since the last call, in order.
    pub fn take_outputs(&mut self) -> Vec<ElectionOutput> {
        std::mem::take(&mut self.outputs)
    }

    /// The voting members (names, this one included, which is added if missing).
    pub fn set_voters(&mut self, mut voters: Vec<String>) {
        if !voters.contains(&self.cfg.name) {
            voters.push(self.cfg.name.clone());
        }
        voters.sort();
        voters.dedup();
        self.voters = voters;
    }

    /// Take the voting members from the stored member list, and its stamp.
    pub fn set_membership(&mut self, membership: &Membership) {
        self.set_voters(membership.members.clone());
        self.config = membership.stamp();
    }

    pub fn voters(&self) -> &[String] {
        &self.voters
    }

    /// Votes that win: a majority of the voting members.
    pub fn majority(&self) -> usize {
        self.voters.len() / 2 + 1
    }

    /// When [`Self::handle_timeout`] is next due (None while leader).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.role != ElectionRole::Leader).then_some(self.deadline)
    }

    fn reset_deadline(&mut self, now: Instant) {
        let base = self.cfg.election_timeout.as_millis() as u64;
        let ms = self.rng.random_range(base..=base * 2);
        self.deadline = now + Duration::from_millis(ms.max(1)) + self.slack;
    }

    /// Allow this much more silence from the master (frames held back on purpose).
    pub fn set_slack(&mut self, slack: Duration) {
        self.slack = slack;
    }

    /// A newer term seen anywhere: adopt it, forget the vote, follow.
    fn adopt(&mut self, term: u64) {
        if term <= self.term {
            return;
        }
        let was_leader = self.role == ElectionRole::Leader;
        self.term = term;
        self.voted_for = None;
        self.leader = None;
        self.role = ElectionRole::Follower;
        self.outputs.push(ElectionOutput::Persist {
            term,
            voted_for: None,
        });
        if was_leader {
            self.outputs.push(ElectionOutput::BecomeFollower { term });
        }
    }

    /// The master of `term`, `leader`, was heard from (a handshake, a frame). A frame
    /// of an older term is the caller's to refuse: this returns false for it.
    pub fn heard_from_leader(&mut self, now: Instant, term: u64, leader: &str) -> bool {
        if term < self.term {
            return false;
        }
        self.adopt(term);
        if self.role != ElectionRole::Follower {
            // A master of this term exists: a candidate of the same term lost.
            self.role = ElectionRole::Follower;
        }
        self.leader = Some(leader.to_string());
        self.last_heard = Some(now);
        self.reset_deadline(now);
        true
    }

    /// A term newer than this member's was seen (a refusal from a peer, for instance).
    pub fn saw_term(&mut self, now: Instant, term: u64) {
        if term > self.term {
            self.adopt(term);
            self.reset_deadline(now);
        }
    }

    /// The election timer: a follower that heard no master for the timeout, or a
    /// candidate whose election found no majority, stands (again).
    pub fn handle_timeout(&mut self, now: Instant, log: LogPosition) {
        if self.role == ElectionRole::Leader || now < self.deadline {
            return;
        }
        if self.cfg.priority == 0 || self.quiet_until.is_some_and(|t| now < t) {
            // Never stands, or asked not to for now: keep waiting.
            self.role = ElectionRole::Follower;
            self.reset_deadline(now);
            return;
        }
        self.reason = "electionTimeout";
        self.transfer = false;
        self.pre_vote(now, log);
    }

    /// Stand at once, without a pre-vote: the master handed over to this member
    /// (`TimeoutNow`, after a step-down or for a priority takeover).
    pub fn stand_now(&mut self, now: Instant, log: LogPosition, reason: &'static str) {
        if self.role == ElectionRole::Leader || self.cfg.priority == 0 {
            return;
        }
        self.reason = reason;
        self.transfer = true;
        self.stand(now, log);
    }

    fn pre_vote(&mut self, now: Instant, log: LogPosition) {
        // Forget the master: otherwise this member would refuse the others' pre-votes
        // while they refuse its own (etcd #8501).
        self.leader = None;
        self.last_heard = None;
        self.role = ElectionRole::PreCandidate;
        self.granted = vec![self.cfg.name.clone()];
        self.start_metrics(now, self.term + 1);
        self.reset_deadline(now);
        if self.granted.len() >= self.majority() {
            return self.stand(now, log);
        }
        self.outputs.push(ElectionOutput::RequestVotes(VoteRequest {
            term: self.term + 1,
            candidate: self.cfg.name.clone(),
            log,
            pre_vote: true,
            transfer: false,
            comm: String::new(),
            config: self.config,
        }));
    }

    fn stand(&mut self, now: Instant, log: LogPosition) {
        self.term += 1;
        self.role = ElectionRole::Candidate;
        self.voted_for = Some(self.cfg.name.clone());
        self.leader = None;
        self.granted = vec![self.cfg.name.clone()];
        self.start_metrics(now, self.term);
        self.outputs.push(ElectionOutput::Persist {
            term: self.term,
            voted_for: self.voted_for.clone(),
        });
        self.reset_deadline(now);
        if self.granted.len() >= self.majority() {
            return self.win(now);
        }
        self.outputs.push(ElectionOutput::RequestVotes(VoteRequest {
            term: self.term,
            candidate: self.cfg.name.clone(),
            log,
            pre_vote: false,
            transfer: self.transfer,
            comm: String::new(),
            config: self.config,
        }));
    }

    fn start_metrics(&mut self, now: Instant, term: u64) {
        self.metrics = Some(ElectionMetrics {
            reason: self.reason,
            term,
            votes_needed: self.majority(),
            votes_received: 1,
            priority: self.cfg.priority,
            election_timeout_ms: self.cfg.election_timeout.as_millis() as u64,
            started: Some(now),
            duration_ms: None,
            won: false,
        });
    }

    fn win(&mut self, now: Instant) {
        self.role = ElectionRole::Leader;
        self.leader = Some(self.cfg.name.clone());
        if let Some(m) = &mut self.metrics {
            m.won = true;
            m.votes_received = self.granted.len();
            m.duration_ms = m
                .started
                .map(|s| now.saturating_duration_since(s).as_millis() as u64);
        }
        self.outputs
            .push(ElectionOutput::BecomeLeader { term: self.term });
    }

    /// Answer a vote request, given this member's log. A granted real vote is
    /// preceded by a [`ElectionOutput::Persist`] the shell must carry out before it
    /// sends the answer.
    pub fn handle_vote_request(
        &mut self,
        now: Instant,
        req: &VoteRequest,
        log: LogPosition,
    ) -> VoteResponse {
        let refuse = |term, reason: String| VoteResponse {
            term,
            granted: false,
            pre_vote: req.pre_vote,
            reason,
        };
        if !self.voters.contains(&req.candidate) && self.config >= req.config {
            return refuse(
                self.term,
                format!(
                    "{} is not a voting member in this member's list ({}, the candidate's is {})",
                    req.candidate, self.config, req.config
                ),
            );
        }
        if req.pre_vote {
            // Changes nothing here: a member cut off and back cannot disturb a
            // working master, which voters still hear from.
            if req.term <= self.term {
                return refuse(self.term, format!("term {} is not newer", req.term));
            }
            let heard_recently = self.last_heard.is_some_and(|t| {
                now.saturating_duration_since(t) < self.cfg.election_timeout + self.slack
            });
            if (heard_recently || self.role == ElectionRole::Leader) && !req.transfer {
                return refuse(self.term, "a master is alive".into());
            }
            if req.log < log {
                return refuse(self.term, "the candidate's log is behind this one".into());
            }
            return VoteResponse {
                term: self.term,
                granted: true,
                pre_vote: true,
                reason: String::new(),
            };
        }
        if req.term < self.term {
            return refuse(self.term, format!("term {} is over", req.term));
        }
        self.adopt(req.term);
        if req.log < log {
            return refuse(self.term, "the candidate's log is behind this one".into());
        }
        if self.voted_for.as_ref().is_some_and(|v| *v != req.candidate) {
            return refuse(
                self.term,
                format!("already voted for another in term {}", self.term),
            );
        }
        self.voted_for = Some(req.candidate.clone());
        self.outputs.push(ElectionOutput::Persist {
            term: self.term,
            voted_for: self.voted_for.clone(),
        });
        // Give the candidate its chance before standing here.
        self.reset_deadline(now);
        VoteResponse {
            term: self.term,
            granted: true,
            pre_vote: false,
            reason: String::new(),
        }
    }

    /// A voter answered.
    pub fn handle_vote_response(
        &mut self,
        now: Instant,
        from: &str,
        resp: &VoteResponse,
        log: LogPosition,
    ) {
        if resp.term > self.term && !(resp.pre_vote && resp.granted) {
            self.adopt(resp.term);
            self.reset_deadline(now);
            return;
        }
        let counting = match self.role {
            ElectionRole::PreCandidate => resp.pre_vote,
            ElectionRole::Candidate => !resp.pre_vote && resp.term == self.term,
            _ => false,
        };
        if !counting || !resp.granted || !self.voters.iter().any(|v| v == from) {
            return;
        }
        if !self.granted.iter().any(|g| g == from) {
            self.granted.push(from.to_string());
        }
        if let Some(m) = &mut self.metrics {
            m.votes_received = self.granted.len();
        }
        if self.granted.len() >= self.majority() {
            match self.role {
                ElectionRole::PreCandidate => self.stand(now, log),
                _ => self.win(now),
            }
        }
    }

    /// The master stops being master (`stepDown`, or it lost its majority): it follows,
    /// and stands for no election for `quiet` (as `replSetStepDown` does).
    pub fn step_down(&mut self, now: Instant, quiet: Duration) {
        if self.role == ElectionRole::Leader {
            self.role = ElectionRole::Follower;
            self.leader = None;
            self.outputs
                .push(ElectionOutput::BecomeFollower { term: self.term });
        }
        // Several reasons may ask for quiet at once: the longest wins.
        let until = now + quiet;
        if !quiet.is_zero() && self.quiet_until.is_none_or(|t| t < until) {
            self.quiet_until = Some(until);
        }
        self.reset_deadline(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(marks: &[(u64, u64)]) -> History {
        History(
            marks
                .iter()
                .map(|&(term, after)| TermStart { term, after })
                .collect(),
        )
    }

    /// A history from a log's entry terms, e.g. `[1, 1, 3]`.
    fn of(terms: &[u64]) -> History {
        History::from_entry_terms(terms.iter().enumerate().map(|(i, &t)| (i as u64 + 1, t)))
    }

    #[test]
    fn histories_from_entry_terms() {
        assert_eq!(of(&[1, 1, 3]), h(&[(1, 0), (3, 2)]));
        assert_eq!(of(&[]), h(&[]));
        let x = of(&[1, 2, 2, 4]);
        assert_eq!(x, h(&[(1, 0), (2, 1), (4, 3)]));
        assert_eq!(
            [1, 2, 3, 4].map(|id| x.term_of(id)),
            [1, 2, 2, 4],
            "term_of gives back the entry terms"
        );
        assert_eq!(x.last_term(4), 4);
        assert_eq!(x.last_term(3), 4, "holds the marker of term 4 (after 3)");
        assert_eq!(x.last_term(2), 2);
    }

    #[test]
    fn the_common_prefix_is_the_last_entry_of_equal_term() {
        // The case: [1,1,3] and [1,2,2,4] share entry 1 only.
        assert_eq!(of(&[1, 1, 3]).common_prefix(3, &of(&[1, 2, 2, 4]), 4), 1);
        assert_eq!(of(&[1, 2, 2, 4]).common_prefix(4, &of(&[1, 1, 3]), 3), 1);
        // A prefix shares all of itself.
        assert_eq!(of(&[1, 1, 2]).common_prefix(3, &of(&[1, 1, 2, 2, 5]), 5), 3);
        // Nothing in common.
        assert_eq!(of(&[2, 2]).common_prefix(2, &of(&[1, 1]), 2), 0);
        assert_eq!(of(&[]).common_prefix(0, &of(&[1]), 1), 0);
        // The same term run cut shorter on one side (a master that crashed before its
        // tail was durable): the shorter one.
        assert_eq!(of(&[1, 1, 1, 1]).common_prefix(4, &of(&[1, 1]), 2), 2);
        // Markers without entries do not matter to the entries shared.
        let a = h(&[(1, 0), (2, 3), (5, 3)]);
        assert_eq!(a.common_prefix(3, &of(&[1, 1, 1, 6]), 4), 3);
    }

    #[test]
    fn starting_a_term_cuts_what_the_log_does_not_hold() {
        let mut x = h(&[(1, 0), (3, 10)]);
        x.start(4, 5); // took over holding 5 entries only: the term-3 marker goes
        assert_eq!(x, h(&[(1, 0), (4, 5)]));
        assert!(x.is_valid());
        assert!(!h(&[(2, 0), (1, 3)]).is_valid());
    }

    fn cfg(name: &str, priority: u32) -> ElectionConfig {
        ElectionConfig {
            name: name.into(),
            priority,
            election_timeout: Duration::from_millis(1000),
            seed: 7,
        }
    }

    fn pos(last_term: u64, last_id: u64) -> LogPosition {
        LogPosition { last_term, last_id }
    }

    fn three(name: &str, priority: u32, now: Instant) -> ElectionCore {
        let mut c = ElectionCore::new(cfg(name, priority), now, 1, None);
        c.set_voters(vec!["a".into(), "b".into(), "c".into()]);
        c
    }

    #[test]
    fn a_follower_that_hears_nothing_pre_votes_then_stands_then_wins() {
        let t0 = Instant::now();
        let mut a = three("a", 1, t0);
        assert!(a.poll_timeout().unwrap() >= t0 + Duration::from_millis(1000));
        assert!(a.poll_timeout().unwrap() <= t0 + Duration::from_millis(2000));
        let t1 = t0 + Duration::from_millis(2001);
        a.handle_timeout(t1, pos(1, 5));
        let out = a.take_outputs();
        let [ElectionOutput::RequestVotes(req)] = &out[..] else {
            panic!("{out:?}")
        };
        assert!(req.pre_vote && req.term == 2);
        assert_eq!(a.term(), 1, "a pre-vote changes no term");
        // b, behind, grants the pre-vote; that is a majority of three.
        let mut b = three("b", 1, t0);
        let resp = b.handle_vote_request(t1, req, pos(1, 4));
        assert!(resp.granted && b.take_outputs().is_empty(), "{resp:?}");
        a.handle_vote_response(t1, "b", &resp, pos(1, 5));
        let out = a.take_outputs();
        assert_eq!(
            out[0],
            ElectionOutput::Persist {
                term: 2,
                voted_for: Some("a".into())
            }
        );
        let ElectionOutput::RequestVotes(req) = &out[1] else {
            panic!("{out:?}")
        };
        assert!(!req.pre_vote && req.term == 2);
        let resp = b.handle_vote_request(t1, req, pos(1, 4));
        assert!(resp.granted);
        assert_eq!(
            b.take_outputs(),
            vec![
                ElectionOutput::Persist {
                    term: 2,
                    voted_for: None
                },
                ElectionOutput::Persist {
                    term: 2,
                    voted_for: Some("a".into())
                }
            ],
            "the vote is saved before it is answered"
        );
        a.handle_vote_response(t1, "b", &resp, pos(1, 5));
        assert_eq!(
            a.take_outputs(),
            vec![ElectionOutput::BecomeLeader { term: 2 }]
        );
        assert_eq!(a.role(), ElectionRole::Leader);
        let m = a.metrics().unwrap();
        assert!(m.won && m.votes_received == 2 && m.votes_needed == 2);
    }

    #[test]
    fn one_vote_per_term() {
        let t0 = Instant::now();
        let mut c = three("c", 1, t0);
        let ask = |who: &str| VoteRequest {
            term: 2,
            candidate: who.into(),
            log: pos(1, 5),
            pre_vote: false,
            transfer: false,
            comm: String::new(),
            config: ConfigStamp::default(),
        };
        assert!(c.handle_vote_request(t0, &ask("a"), pos(1, 5)).granted);
        assert!(!c.handle_vote_request(t0, &ask("b"), pos(1, 5)).granted);
        assert!(
            c.handle_vote_request(t0, &ask("a"), pos(1, 5)).granted,
            "the same candidate asking again gets the same answer"
        );
        // A vote restored after a restart is kept.
        let mut c2 = ElectionCore::new(cfg("c", 1), t0, 2, Some("a".into()));
        c2.set_voters(vec!["a".into(), "b".into(), "c".into()]);
        assert!(!c2.handle_vote_request(t0, &ask("b"), pos(1, 5)).granted);
    }

    #[test]
    fn a_non_member_is_refused_only_by_a_list_at_least_as_new_as_its_own() {
        let t0 = Instant::now();
        // "b" holds a list, made by the master of term 1, that removed "c".
        let mut b = ElectionCore::new(cfg("b", 1), t0, 1, None);
        b.set_membership(&Membership {
            members: vec!["a".into(), "b".into()],
            removed: vec!["c".into()],
            config_version: 3,
            config_term: 1,
            ..Membership::default()
        });
        let ask = |config: ConfigStamp| VoteRequest {
            term: 3,
            candidate: "c".into(),
            log: pos(2, 9),
            pre_vote: false,
            transfer: false,
            comm: String::new(),
            config,
        };
        // The candidate's list is older (it never heard of the removal): refused.
        let older = ConfigStamp {
            term: 1,
            version: 2,
        };
        let answer = b.handle_vote_request(t0, &ask(older), pos(1, 5));
        assert!(!answer.granted);
        assert!(
            answer.reason.contains("not a voting member"),
            "{}",
            answer.reason
        );
        // The same version from a later master: the removal never reached a majority,
        // and the master of term 2 was elected with "c" in its list.
        let newer = ConfigStamp {
            term: 2,
            version: 3,
        };
        assert!(b.handle_vote_request(t0, &ask(newer), pos(1, 5)).granted);
    }

    #[test]
    fn votes_go_only_to_logs_at_least_as_up_to_date() {
        let t0 = Instant::now();
        let mut c = three("c", 1, t0);
        let ask = |log| VoteRequest {
            term: 2,
            candidate: "a".into(),
            log,
            pre_vote: false,
            transfer: false,
            comm: String::new(),
            config: ConfigStamp::default(),
        };
        // Longer log of an older last term loses to a newer last term.
        assert!(
            !c.handle_vote_request(t0, &ask(pos(1, 100)), pos(2, 3))
                .granted
        );
        // Same last term, shorter: refused.
        let mut c = three("c", 1, t0);
        assert!(
            !c.handle_vote_request(t0, &ask(pos(2, 2)), pos(2, 3))
                .granted
        );
        let mut c = three("c", 1, t0);
        assert!(
            c.handle_vote_request(t0, &ask(pos(2, 3)), pos(2, 3))
                .granted
        );
    }

    #[test]
    fn a_member_that_hears_its_master_refuses_pre_votes() {
        let t0 = Instant::now();
        let mut b = three("b", 1, t0);
        assert!(b.heard_from_leader(t0, 1, "c"));
        let req = VoteRequest {
            term: 2,
            candidate: "a".into(),
            log: pos(1, 9),
            pre_vote: true,
            transfer: false,
            comm: String::new(),
            config: ConfigStamp::default(),
        };
        assert!(
            !b.handle_vote_request(t0 + Duration::from_millis(10), &req, pos(1, 5))
                .granted
        );
        // Once the master has been silent for an election timeout, it grants.
        let later = t0 + Duration::from_millis(1001);
        assert!(b.handle_vote_request(later, &req, pos(1, 5)).granted);
        assert_eq!(b.term(), 1);
        // A handed-over election is granted even while the master is heard.
        assert!(b.heard_from_leader(later, 1, "c"));
        let handed = VoteRequest {
            transfer: true,
            ..req
        };
        assert!(b.handle_vote_request(later, &handed, pos(1, 5)).granted);
    }

    #[test]
    fn a_pre_candidate_forgets_its_master_so_pre_votes_cannot_deadlock() {
        // etcd #8501: two members, each refusing the other's pre-vote because each
        // still remembers a master, would never elect one. Standing forgets it.
        let t0 = Instant::now();
        let mut a = three("a", 1, t0);
        let mut b = three("b", 1, t0);
        a.heard_from_leader(t0, 1, "c");
        b.heard_from_leader(t0, 1, "c");
        let t1 = t0 + Duration::from_millis(2001);
        a.handle_timeout(t1, pos(1, 5));
        b.handle_timeout(t1, pos(1, 5));
        let ElectionOutput::RequestVotes(ra) = a.take_outputs().remove(0) else {
            panic!()
        };
        let ElectionOutput::RequestVotes(rb) = b.take_outputs().remove(0) else {
            panic!()
        };
        assert!(a.handle_vote_request(t1, &rb, pos(1, 5)).granted);
        assert!(b.handle_vote_request(t1, &ra, pos(1, 5)).granted);
    }

    #[test]
    fn priority_zero_never_stands() {
        let t0 = Instant::now();
        let mut z = three("a", 0, t0);
        for i in 1..10 {
            z.handle_timeout(t0 + Duration::from_secs(3 * i), pos(1, 5));
            assert!(z.take_outputs().is_empty());
        }
        z.stand_now(t0, pos(1, 5), "stepUpRequestSkipDryRun");
        assert!(z.take_outputs().is_empty());
        assert_eq!(z.role(), ElectionRole::Follower);
        // It still votes.
        let req = VoteRequest {
            term: 2,
            candidate: "b".into(),
            log: pos(1, 5),
            pre_vote: false,
            transfer: false,
            comm: String::new(),
            config: ConfigStamp::default(),
        };
        assert!(z.handle_vote_request(t0, &req, pos(1, 5)).granted);
    }

    #[test]
    fn a_newer_term_turns_a_leader_into_a_follower() {
        let t0 = Instant::now();
        let mut a = ElectionCore::new(cfg("a", 1), t0, 1, None);
        a.handle_timeout(t0 + Duration::from_secs(3), pos(1, 0)); // alone: wins
        assert!(
            a.take_outputs()
                .contains(&ElectionOutput::BecomeLeader { term: 2 })
        );
        a.set_voters(vec!["a".into(), "b".into(), "c".into()]);
        assert!(
            !a.heard_from_leader(t0, 1, "x"),
            "an older master is refused"
        );
        assert!(a.heard_from_leader(t0, 5, "b"));
        assert_eq!(
            a.take_outputs(),
            vec![
                ElectionOutput::Persist {
                    term: 5,
                    voted_for: None
                },
                ElectionOutput::BecomeFollower { term: 5 }
            ]
        );
        assert_eq!(a.leader(), Some("b"));
    }

    #[test]
    fn a_stepped_down_master_stands_for_nothing_while_quiet() {
        let t0 = Instant::now();
        let mut a = ElectionCore::new(cfg("a", 1), t0, 1, None);
        a.handle_timeout(t0 + Duration::from_secs(3), pos(1, 0));
        a.take_outputs();
        a.step_down(t0 + Duration::from_secs(3), Duration::from_secs(60));
        assert_eq!(
            a.take_outputs(),
            vec![ElectionOutput::BecomeFollower { term: 2 }]
        );
        a.handle_timeout(t0 + Duration::from_secs(30), pos(2, 0));
        assert!(a.take_outputs().is_empty());
        a.handle_timeout(t0 + Duration::from_secs(64), pos(2, 0));
        assert!(!a.take_outputs().is_empty());
    }
}
