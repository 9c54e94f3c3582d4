//! The member: one per process, whatever its role. It owns the member's decisions
//! ([`common::replication::NodeCore`]: the election, the follower's replication, and
//! when to vote, stand, lead or follow) and carries them out, switching the node between
//! its roles: following a master (the [`follower`] thread) or being the master (the
//! [`primary`] replicator).
//!
//! Two shells hand the core their inputs, under one lock: the follower thread (frames
//! from the master, the end of a sync: the hot path, carried out on that thread) and
//! the *driver*, one task on the HTTP worker's event loop, for everything else (the
//! replicator, the comm port and the HTTP API send it [`Event`]s). Each carries out the
//! outputs that are its own and passes the others on: the follower thread sends the
//! driver what the election decided ([`Event::Outputs`]), the driver leaves what
//! concerns the master's connection for the follower thread.

use crate::follower;
use crate::http::Role;
use crate::primary;
use actix::Actor;
use common::protocol::codec::FrameCodec;
use common::protocol::{MasterFrame, MemberInfo, SecondaryFrame};
use common::replication::election::{
    ElectionConfig, ElectionMetrics, ElectionRole, VoteRequest, VoteResponse,
};
use common::replication::{
    HealthPolicy, HttpAddress, Identity, MasterConfig, NodeConfig, NodeCore, NodeInput, NodeOutput,
    VoteId,
};
use common::storage::{LogStore, RolledBack};
use common::stream::Progress;
use futures::{SinkExt, StreamExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};
use tokio_util::codec::Framed;

/// How long a vote request may take (connect, ask, answer).
const VOTE_TIMEOUT: Duration = Duration::from_millis(500);

/// The longest a request waits for a starting node's first role.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What the driver is told.
pub enum Event {
    /// An input for the member's core as it is (a vote answer...).
    Core(NodeInput),
    /// What the core decided while the follower thread or the replicator handed it an
    /// input, and is not theirs to carry out (the election's: a term, votes to ask
    /// for, a new role...).
    Outputs(Vec<NodeOutput>),
    /// A candidate asks for this member's vote.
    VoteRequest(VoteRequest, oneshot::Sender<VoteResponse>),
    /// `POST /stepDown`: stop being master and stand for nothing for that long.
    StepDown(Duration, oneshot::Sender<Option<String>>),
}

/// Where this member is reached, as it tells the set.
#[derive(Clone, Debug, Default)]
pub struct Addresses {
    /// Comm `host:port`.
    pub comm: String,
    /// HTTP `host:port`.
    pub http: String,
}

/// The last rollback, for `/status`.
#[derive(Clone, Debug)]
pub struct LastRollback {
    pub rolled_back: RolledBack,
    pub at: SystemTime,
}

/// One member of the set.
pub struct Node {
    pub cfg: crate::Config,
    pub store: Arc<dyn LogStore>,
    pub progress: Progress,
    pub addresses: Addresses,
    pub started: Instant,
    pub(crate) core: follower::SharedCore,
    /// The election's term, readable without the lock (the follower thread checks it).
    term: AtomicU64,
    role: RwLock<Role>,
    /// False until the driver has made its first decision (a `master-node` starting a
    /// set elects itself first): requests meanwhile wait for it rather than meet the
    /// follower every node starts as.
    settled: tokio::sync::watch::Sender<bool>,
    events: mpsc::UnboundedSender<Event>,
    /// The comm address to dial first (the master, as last heard of).
    hint: Mutex<Option<String>>,
    /// Rotates through the known members while no master is known.
    next_seed: AtomicU64,
    last_rollback: Mutex<Option<LastRollback>>,
    http_port: u16,
    /// `PUT /admin/faults`: drops, delays and partitions per peer.
    pub faults: crate::faults::Faults,
}

impl Node {
    /// A member over `store`, following until an election says otherwise.
    pub fn new(
        cfg: crate::Config,
        store: Arc<dyn LogStore>,
        progress: Progress,
        addresses: Addresses,
        http_port: u16,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Event>) {
        let now = Instant::now();
        let (events, rx) = mpsc::unbounded_channel();
        let core = NodeCore::new(
            NodeConfig {
                election: ElectionConfig {
                    name: cfg.name.clone(),
                    priority: cfg.priority,
                    election_timeout: cfg.election_timeout,
                    seed: rand::random(),
                },
                start_as_master: matches!(cfg.start, crate::Start::Master),
                identity: Identity {
                    comm: Some(addresses.comm.clone()),
                    http: Some(addresses.http.clone()),
                    priority: cfg.priority,
                    delay_ms: cfg.delay.max_ms,
                },
                master: master_config(&cfg, &addresses, http_port),
            },
            now,
            store.clone(),
        );
        let term = AtomicU64::new(core.election().term());
        let core = Arc::new(Mutex::new(core));
        let role = RwLock::new(Role::Secondary(follower::Handle::new(
            core.clone(),
            cfg.seed_address(),
        )));
        // `--delay-ms` and `--drop-rate` are the first fault rules.
        let faults = crate::faults::Faults::with_startup(cfg.delay, cfg.drop_rate, rand::random());
        let node = Arc::new(Node {
            cfg,
            store,
            progress,
            addresses,
            started: now,
            core,
            term,
            role,
            settled: tokio::sync::watch::Sender::new(false),
            events,
            hint: Mutex::new(None),
            next_seed: AtomicU64::new(0),
            last_rollback: Mutex::new(None),
            http_port,
            faults,
        });
        (node, rx)
    }

    /// The member's decisions (`.election()` on it reads the election), for one
    /// synchronous step.
    pub fn core(&self) -> MutexGuard<'_, follower::Core> {
        follower::lock(&self.core)
    }

    /// The newest term this member knows.
    pub fn term(&self) -> u64 {
        self.term.load(Ordering::Acquire)
    }

    /// What the node is now, for the HTTP API.
    pub fn role(&self) -> Role {
        self.role.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The role, once the node has settled its first one (waiting at most
    /// [`SETTLE_TIMEOUT`] for that).
    pub async fn settled_role(&self) -> Role {
        let mut rx = self.settled.subscribe();
        let _ = tokio::time::timeout(SETTLE_TIMEOUT, rx.wait_for(|s| *s)).await;
        self.role()
    }

    fn set_role(&self, role: Role) {
        *self.role.write().unwrap_or_else(|e| e.into_inner()) = role;
    }

    /// Tell the driver.
    pub fn send(&self, e: Event) {
        let _ = self.events.send(e);
    }

    /// The master's comm address was learnt (a refusal naming it, a vote).
    pub fn set_hint(&self, comm: Option<String>) {
        *self.hint.lock().unwrap_or_else(|e| e.into_inner()) = comm;
    }

    /// Whether the master's address was learnt since the last dial.
    pub fn has_hint(&self) -> bool {
        self.hint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Whether the address of a master other than `comm` was learnt since the last
    /// dial (this node voted for another member, say).
    pub fn has_hint_other_than(&self, comm: &str) -> bool {
        self.hint
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_deref()
            .is_some_and(|h| h != comm)
    }

    /// Where the follower thread should dial next: the master if known, else each
    /// known member in turn, and the address it was started with.
    pub fn next_target(&self) -> String {
        if let Some(h) = self.hint.lock().unwrap_or_else(|e| e.into_inner()).take() {
            return h;
        }
        let mut seeds: Vec<String> = self
            .store
            .membership()
            .hosts
            .into_iter()
            .filter(|h| h.name != self.cfg.name && !h.comm.is_empty())
            .map(|h| h.comm)
            .collect();
        let seed = self.cfg.seed_address();
        if !seed.is_empty() && !seeds.contains(&seed) {
            seeds.push(seed);
        }
        if seeds.is_empty() {
            return String::new();
        }
        let i = self.next_seed.fetch_add(1, Ordering::Relaxed) as usize;
        seeds[i % seeds.len()].clone()
    }

    /// The comm address of the master of the current term, if this member knows it.
    pub fn master_comm(&self) -> Option<String> {
        let leader = self.core().election().leader().map(str::to_string)?;
        if leader == self.cfg.name {
            return Some(self.addresses.comm.clone());
        }
        self.host_of(&leader)
            .map(|h| h.comm)
            .filter(|c| !c.is_empty())
    }

    /// The HTTP address of the master of the current term, if this member knows it.
    pub fn master_http(&self) -> Option<String> {
        match self.role() {
            Role::Primary(_) => Some(self.addresses.http.clone()),
            Role::Secondary(f) => f.primary().or_else(|| {
                let leader = self.core().election().leader().map(str::to_string)?;
                self.host_of(&leader)
                    .map(|h| h.http)
                    .filter(|h| !h.is_empty())
            }),
        }
    }

    /// The member whose comm address is `comm`, as the stored member list says.
    pub fn member_at(&self, comm: &str) -> Option<String> {
        self.store
            .membership()
            .hosts
            .into_iter()
            .find(|h| h.comm == comm)
            .map(|h| h.name)
    }

    fn host_of(&self, name: &str) -> Option<MemberInfo> {
        self.store
            .membership()
            .hosts
            .into_iter()
            .find(|h| h.name == name)
    }

    pub fn note_rollback(&self, rolled_back: RolledBack) {
        *self.last_rollback.lock().unwrap_or_else(|e| e.into_inner()) = Some(LastRollback {
            rolled_back,
            at: SystemTime::now(),
        });
    }

    pub fn last_rollback(&self) -> Option<LastRollback> {
        self.last_rollback
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The last election this member stood in, for `/status`.
    pub fn election_metrics(&self) -> Option<ElectionMetrics> {
        self.core().election().metrics().cloned()
    }

    pub fn http_port(&self) -> u16 {
        self.http_port
    }
}

/// The master core's settings for this member (each term sets its own `term`).
fn master_config(cfg: &crate::Config, addresses: &Addresses, http_port: u16) -> MasterConfig {
    let settings = &cfg.master;
    let mut m = MasterConfig::new(cfg.name.clone(), settings.ack_timeout);
    m.seed = rand::random();
    m.http = HttpAddress::new(&cfg.public_host(), http_port);
    m.health = HealthPolicy {
        heartbeat: settings.heartbeat,
        suspect_after: settings.suspect_after,
        unhealthy_after: settings.unhealthy_after,
    };
    m.comm = addresses.comm.clone();
    m.priority = cfg.priority;
    m.quorum_timeout = Some(cfg.election_timeout);
    m.delay = Duration::from_millis(cfg.delay.max_ms);
    m
}

/// The role machinery the driver owns.
struct Driver {
    node: Arc<Node>,
    link: Option<follower::Link>,
    /// The replicator while master.
    replicator: Option<actix::Addr<primary::replicator::Replicator>>,
    /// `stepDown` callers waiting for another master.
    stepping_down: Vec<oneshot::Sender<Option<String>>>,
    /// Vote requests waiting for the core's answer (given once the vote is saved).
    replies: std::collections::HashMap<VoteId, oneshot::Sender<VoteResponse>>,
    next_vote: VoteId,
}

/// Run the member until `stop` resolves: start following (or, for `master-node` on a
/// log that has no other member, stand at once), then carry out every election
/// decision. Runs on the HTTP worker's event loop, where the replicator must run.
pub async fn drive(
    node: Arc<Node>,
    mut events: mpsc::UnboundedReceiver<Event>,
    stop: tokio_util::sync::CancellationToken,
) {
    let start_as_master = matches!(node.cfg.start, crate::Start::Master);
    let mut d = Driver {
        node: node.clone(),
        link: None,
        replicator: None,
        stepping_down: Vec::new(),
        replies: std::collections::HashMap::new(),
        next_vote: 0,
    };
    d.follow();
    if start_as_master {
        // A new set (or one of one member): nobody else to ask.
        d.step(NodeInput::StandAlone);
    }
    d.apply().await;
    node.settled.send_replace(true);
    loop {
        // The election's timer; the replicator keeps the master's.
        let deadline = node.core().election().poll_timeout();
        let sleep = async {
            match deadline {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = stop.cancelled() => break,
            ev = events.recv() => match ev {
                Some(ev) => d.handle(ev).await,
                None => break,
            },
            () = sleep => d.step(NodeInput::Timeout),
        }
        d.apply().await;
    }
    d.shut_down().await;
}

impl Driver {
    /// Hand one input to the core; [`Self::apply`] carries out what it decided.
    fn step(&mut self, input: NodeInput) {
        self.node.core().handle(Instant::now(), input);
    }

    async fn handle(&mut self, ev: Event) {
        let input = match ev {
            Event::Core(input) => input,
            Event::Outputs(outputs) => return self.carry_out(outputs).await,
            Event::VoteRequest(req, reply) => {
                let id = self.next_vote;
                self.next_vote += 1;
                self.replies.insert(id, reply);
                NodeInput::VoteRequest { id, req }
            }
            Event::StepDown(quiet, reply) => {
                self.stepping_down.push(reply);
                NodeInput::StepDown(quiet)
            }
        };
        self.step(input);
    }

    /// Carry out what the core decided, in order (it saved the term and vote before
    /// anything that depends on them).
    async fn apply(&mut self) {
        loop {
            let outputs = self.node.core().take_outputs();
            if outputs.is_empty() {
                break;
            }
            self.carry_out(outputs).await;
        }
        self.answer_step_downs();
    }

    /// Carry out `outputs`, leaving those for the master's connection to the follower
    /// thread, and passing those for the master's connections and clients to the
    /// replicator (before it retires).
    async fn carry_out(&mut self, outputs: Vec<NodeOutput>) {
        let mut master = Vec::new();
        for o in outputs {
            if matches!(
                o,
                NodeOutput::BecomeLeader { .. } | NodeOutput::BecomeFollower { .. }
            ) {
                self.pass_to_replicator(&mut master);
            }
            match o {
                NodeOutput::Term(term) => self.node.term.store(term, Ordering::Release),
                NodeOutput::VoteReply { id, resp } => {
                    if let Some(tx) = self.replies.remove(&id) {
                        let _ = tx.send(resp);
                    }
                }
                NodeOutput::Voted { candidate, comm } => {
                    let term = self.node.term();
                    tracing::info!(%candidate, term, "voting");
                    // The candidate is likely the next master: look there first.
                    self.node.set_hint(comm);
                }
                NodeOutput::RequestVotes { req, voters } => self.request_votes(req, voters),
                NodeOutput::BecomeLeader { term } => self.lead(term).await,
                NodeOutput::BecomeFollower { term } => {
                    tracing::info!(term, "stepping down: following");
                    self.retire().await;
                    self.follow();
                }
                // The only ones an input of the driver causes: the end of a connection
                // to a master whose term is over (the follower stores nothing of it any
                // more). The follower thread ends that connection itself: it checks the
                // term at every step.
                NodeOutput::Link(o) => {
                    tracing::debug!(output = ?o, "left to the follower thread's term check")
                }
                o @ (NodeOutput::Master(_)
                | NodeOutput::Refused { .. }
                | NodeOutput::Removed(_)
                | NodeOutput::Readmitted(_)) => master.push(o),
            }
        }
        self.pass_to_replicator(&mut master);
        self.answer_step_downs();
    }

    /// The master's outputs of an input the driver handed over (`stepDown`'s
    /// `TimeoutNow`, a timer's resends): the replicator carries them out, in order
    /// with what it does itself.
    fn pass_to_replicator(&mut self, outputs: &mut Vec<NodeOutput>) {
        if outputs.is_empty() {
            return;
        }
        let outputs = std::mem::take(outputs);
        match &self.replicator {
            Some(r) => r.do_send(primary::replicator::Carry(outputs)),
            None => tracing::debug!(?outputs, "no replicator to carry out"),
        }
    }

    fn answer_step_downs(&mut self) {
        if self.stepping_down.is_empty() {
            return;
        }
        let node = &self.node;
        let other = {
            let core = node.core();
            let e = core.election();
            e.leader()
                .filter(|l| *l != node.cfg.name && e.role() == ElectionRole::Follower)
                .map(str::to_string)
        };
        if other.is_some() {
            for tx in self.stepping_down.drain(..) {
                let _ = tx.send(other.clone());
            }
        }
        self.stepping_down.retain(|tx| !tx.is_closed());
    }

    /// Ask every other voting member, each on a connection of its own.
    fn request_votes(&self, mut req: VoteRequest, voters: Vec<String>) {
        let node = self.node.clone();
        req.comm = node.addresses.comm.clone();
        let hosts = node.store.membership().hosts;
        tracing::info!(
            term = req.term,
            pre_vote = req.pre_vote,
            voters = voters.len() + 1,
            "asking for votes"
        );
        for name in voters {
            let Some(comm) = hosts
                .iter()
                .find(|h| h.name == name)
                .map(|h| h.comm.clone())
                .filter(|c| !c.is_empty())
            else {
                continue;
            };
            let req = req.clone();
            let node = node.clone();
            actix_web::rt::spawn(async move {
                use crate::faults::{Dir, Frame, Verdict};
                match node.faults.judge(Some(&name), Dir::Out, Frame::Vote) {
                    Verdict::Drop => return,
                    Verdict::Delay(d) => tokio::time::sleep(d).await,
                    Verdict::Pass => {}
                }
                let (key, tls) = (node.cfg.cluster_key.as_ref(), node.cfg.tls.as_ref());
                match tokio::time::timeout(VOTE_TIMEOUT, ask(&comm, req, key, tls)).await {
                    Ok(Ok(resp)) => match node.faults.judge(Some(&name), Dir::In, Frame::Vote) {
                        Verdict::Drop => {}
                        Verdict::Delay(d) => {
                            tokio::time::sleep(d).await;
                            node.send(Event::Core(NodeInput::Vote { from: name, resp }));
                        }
                        Verdict::Pass => {
                            node.send(Event::Core(NodeInput::Vote { from: name, resp }))
                        }
                    },
                    Ok(Err(e)) => tracing::debug!(voter = %name, error = %e, "no vote"),
                    Err(_) => tracing::debug!(voter = %name, "vote request timed out"),
                }
            });
        }
    }

    /// Become the master of `term` (the core holds the master's state already and
    /// ignores the follower's frames): stop the follower thread, then start the
    /// replicator here.
    async fn lead(&mut self, term: u64) {
        self.stop_link().await;
        let node = self.node.clone();
        let addr = primary::replicator::Replicator::for_node(&node).start();
        tracing::info!(term, "elected: this node is the master");
        node.set_role(Role::Primary(addr.clone()));
        self.replicator = Some(addr);
        node.set_hint(None);
    }

    /// Stop being the master, if it is one: waiting writes are answered 503, every
    /// secondary connection closes (they look for the next master).
    async fn retire(&mut self) {
        if let Some(r) = self.replicator.take() {
            let _ = r.send(primary::replicator::Retire).await;
        }
    }

    /// Follow: the thread, for the follower the core holds.
    fn follow(&mut self) {
        if self.link.is_some() {
            return;
        }
        let node = self.node.clone();
        let handle = follower::Handle::new(node.core.clone(), node.cfg.seed_address());
        node.set_role(Role::Secondary(handle));
        match follower::Link::start(node.clone()) {
            Ok(link) => self.link = Some(link),
            Err(e) => tracing::error!(error = %e, "cannot start the replication thread"),
        }
    }

    async fn stop_link(&mut self) {
        if let Some(link) = self.link.take() {
            // It ends once its current step does (a step is bounded by the socket's
            // write timeout); the log must have one writer at a time.
            let stopped = tokio::task::spawn_blocking(move || link.stop_and_join()).await;
            if let Err(e) = stopped {
                tracing::error!(error = %e, "waiting for the replication thread failed");
            }
        }
    }

    async fn shut_down(&mut self) {
        if let Some(r) = self.replicator.take() {
            let failed = r
                .send(primary::replicator::Shutdown)
                .await
                .unwrap_or_default();
            if failed > 0 {
                tracing::warn!(
                    failed,
                    "writes still waiting for their write concern were answered 503"
                );
            }
        }
        self.stop_link().await;
    }
}

/// Ask the member at `comm` for a vote.
async fn ask(
    comm: &str,
    req: VoteRequest,
    key: Option<&common::protocol::auth::ClusterKey>,
    tls: Option<&common::tls::Tls>,
) -> anyhow::Result<VoteResponse> {
    let stream = crate::wire::dial(comm, tls).await?;
    let mut framed = Framed::new(stream, FrameCodec::<MasterFrame, SecondaryFrame>::new());
    if let Some(key) = key {
        // Both sides prove they know the cluster key first (common::protocol::auth).
        let client = common::protocol::auth::nonce();
        framed
            .send(SecondaryFrame::AuthHello {
                nonce: client.clone(),
            })
            .await?;
        let reply = match framed.next().await {
            Some(frame) => frame?,
            None => anyhow::bail!("closed during authentication"),
        };
        let proof =
            common::protocol::auth::answer(key, &client, reply).map_err(anyhow::Error::msg)?;
        framed.send(proof).await?;
    }
    framed.send(SecondaryFrame::RequestVote(req)).await?;
    match framed.next().await {
        Some(Ok(MasterFrame::Vote(resp))) => Ok(resp),
        Some(Ok(MasterFrame::Error(e))) => anyhow::bail!("refused: {e}"),
        Some(Ok(_)) => anyhow::bail!("unexpected answer"),
        Some(Err(e)) => Err(e.into()),
        None => anyhow::bail!("closed without an answer"),
    }
}
