//! The one owner of the master's replication state.

use crate::member::{Event, Node};
use actix::prelude::*;
use common::protocol::{MasterFrame, SecondaryFrame};
use common::replication::{
    ConnId, HealthPolicy, HttpAddress, MasterConfig, MasterCore, MasterOutput, MasterStatus,
    NodeInput, Rejected, SPIN_MAX_WAITING, SpinPolicy, Token, WriteOutcome, WriteRequest,
};
use common::storage::LogStore;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// What the replicator tells a session.
#[derive(Message, Debug)]
#[rtype(result = "()")]
pub enum ToSession {
    /// Write this frame after a while (a fault rule's delay).
    Delayed(Box<MasterFrame>, std::time::Duration),
    /// Close the connection once everything before this is written.
    Close,
}

/// A session's connection completed and is ready for frames.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Register {
    pub conn: ConnId,
    pub peer: String,
    pub session: Recipient<ToSession>,
    /// Where frames are written, directly (those a fault rule holds back go through
    /// the session, which writes them here after their delay).
    pub outbox: Arc<super::session::Outbox>,
    /// The member's name, from its Hello (None before one: fault rules pass it).
    pub member: Option<String>,
}

/// A connection's ways out: its session (delayed frames, closing), and its outbox.
struct Conn {
    session: Recipient<ToSession>,
    outbox: Arc<super::session::Outbox>,
    peer: String,
    member: Option<String>,
}

/// A frame arrived on a session's connection.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Inbound {
    pub conn: ConnId,
    pub frame: SecondaryFrame,
}

/// A session's connection is gone.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Unregister {
    pub conn: ConnId,
}

/// A client write, sent with `do_send`: its one answer (refused, or the outcome once the
/// write concern is met or timed out) comes on `reply`. One hand-off each way between
/// the HTTP worker and the replicator: waiting for actix's own reply as well cost a
/// third wake-up per write (docs/benchmarks.md).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Submit {
    pub write: WriteRequest,
    pub reply: Reply,
}

/// Where a write's answer goes.
pub type Reply = oneshot::Sender<Result<WriteOutcome, SubmitError>>;

/// Why a write was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    #[error(transparent)]
    Rejected(#[from] Rejected),
    #[error("the master is shutting down")]
    ShuttingDown,
    /// This node is no longer the master.
    #[error("this node stepped down and is no longer the master")]
    SteppedDown,
    /// Stopped while the write waited for its write concern: it is stored.
    #[error(
        "the master is shutting down; the message is stored but its write concern was not confirmed"
    )]
    StoppedWaiting,
}

/// Stop taking writes and fail every write still waiting for its write concern (their
/// HTTP requests answer 503 at once instead of being cut off).
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown;

/// Stop being the master (a newer term, a lost majority, a hand-over): fail the writes
/// still waiting (503: they are stored, but their write concern was not confirmed),
/// close every secondary's connection (they look for the next master), and stop.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Retire;

/// `stepDown`: ask the most caught-up secondary to stand at once, and take no more
/// writes.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HandOver;

/// A snapshot of the replication state, and how many syncs ran.
#[derive(Message)]
#[rtype(result = "(MasterStatus, u64)")]
pub struct GetStatus;

/// The store the master writes to; the binary chooses the implementation.
pub type Store = Arc<dyn LogStore>;

pub struct Replicator {
    core: MasterCore<Store>,
    store: Store,
    /// A sync is running on the blocking pool.
    syncing: bool,
    /// Syncs completed (each one a group commit).
    syncs: u64,
    /// Open connections: where to send their frames, and the peer's address.
    sessions: HashMap<ConnId, Conn>,
    pending: HashMap<Token, Reply>,
    next_token: Token,
    timer: Option<(Instant, SpawnHandle)>,
    heartbeat: Duration,
    stopping: bool,
    /// When to poll for acknowledgements instead of sleeping.
    spin: SpinPolicy,
    /// A [`Spin`] runs.
    spinning: bool,
    /// How far the log reaches, for the change streams.
    progress: common::stream::Progress,
    /// The member this replicator serves: election events go there.
    node: Arc<Node>,
    /// Stepped down: writes are refused as "not the master".
    retired: bool,
}

/// The replicator polls for acknowledgements instead of sleeping (see
/// [`SpinPolicy`]): each poll hands the thread back to the event loop with its wake-up
/// deferred, so the loop checks its sockets without blocking and comes straight back.
struct Spin {
    until: Instant,
    step: std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>,
}

impl ActorFuture<Replicator> for Spin {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        act: &mut Replicator,
        _: &mut Context<Replicator>,
        task: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        let waiting = act.core.waiting_for_secondaries(SPIN_MAX_WAITING + 1);
        let now = Instant::now();
        let over = if waiting == 0 {
            Some(true)
        } else if now >= self.until {
            Some(false)
        } else if waiting > SPIN_MAX_WAITING || act.stopping {
            Some(true) // busy now, or stopping: neither a hit nor a miss to learn from
        } else {
            None
        };
        if let Some(answered) = over {
            act.spinning = false;
            act.spin.ended(now, answered);
            return std::task::Poll::Ready(());
        }
        loop {
            match self.step.as_mut().poll(task) {
                std::task::Poll::Ready(()) => self.step = Box::pin(tokio::task::yield_now()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        }
    }
}

impl Replicator {
    /// The master of `term` for `node`, over its log; [`Actor::start`] it on the thread
    /// that is to run it (the HTTP worker's).
    pub fn for_node(node: &Arc<Node>, term: u64) -> anyhow::Result<Self> {
        let cfg = &node.cfg;
        let settings = &cfg.master;
        let mut core_cfg = MasterConfig::new(cfg.name.clone(), settings.ack_timeout);
        core_cfg.seed = rand::random();
        core_cfg.http = HttpAddress::new(&cfg.public_host(), node.http_port());
        core_cfg.health = HealthPolicy {
            heartbeat: settings.heartbeat,
            suspect_after: settings.suspect_after,
            unhealthy_after: settings.unhealthy_after,
        };
        core_cfg.term = term;
        core_cfg.comm = node.addresses.comm.clone();
        core_cfg.priority = cfg.priority;
        core_cfg.quorum_timeout = Some(cfg.election_timeout);
        core_cfg.delay = Duration::from_millis(cfg.delay.max_ms);
        let store = node.store.clone();
        let core = MasterCore::new(core_cfg, store.clone())?;
        tracing::info!(
            log_id = format!("{:#x}", core.log_id()),
            last_id = core.last_id(),
            term,
            "log opened as the master"
        );
        Ok(Replicator {
            core,
            store,
            syncing: false,
            syncs: 0,
            sessions: HashMap::new(),
            pending: HashMap::new(),
            next_token: 0,
            timer: None,
            heartbeat: settings.heartbeat,
            stopping: false,
            spin: SpinPolicy::new(settings.spin),
            spinning: false,
            progress: node.progress.clone(),
            node: node.clone(),
            retired: false,
        })
    }

    /// Carry out the core's decisions, then re-arm the resend/timeout timer.
    fn drain(&mut self, ctx: &mut Context<Self>) {
        for out in self.core.take_outputs() {
            match out {
                MasterOutput::Send { conn, frame } => match self.sessions.get(&conn) {
                    // Fault rules (`PUT /admin/faults`), when any are set.
                    Some(c) if self.node.faults.active() => {
                        use crate::faults::{Dir, Frame, Verdict};
                        match self.node.faults.judge(
                            c.member.as_deref(),
                            Dir::Out,
                            Frame::Replication,
                        ) {
                            Verdict::Drop => {}
                            Verdict::Delay(d) => {
                                c.session.do_send(ToSession::Delayed(Box::new(frame), d))
                            }
                            Verdict::Pass => c.outbox.send(frame),
                        }
                    }
                    Some(c) => c.outbox.send(frame),
                    None => {}
                },
                MasterOutput::Close { conn } => {
                    if let Some(c) = self.sessions.remove(&conn) {
                        c.session.do_send(ToSession::Close);
                    }
                    self.core.connection_closed(conn);
                }
                MasterOutput::Reply { token, outcome } => {
                    if let Some(tx) = self.pending.remove(&token) {
                        let _ = tx.send(Ok(outcome)); // the client may have gone
                    }
                }
                MasterOutput::StorageFailed(e) => {
                    tracing::error!(error = %e, "storage failure while replicating");
                }
                MasterOutput::NewerTerm(t) => self.node.send(Event::Core(NodeInput::NewerTerm(t))),
                MasterOutput::LostQuorum => self.node.send(Event::Core(NodeInput::LostQuorum)),
                MasterOutput::HandedOver { to } => self.node.send(Event::HandedOver(to)),
            }
        }
        self.maybe_sync(ctx);
        self.progress
            .publish(self.core.written_id(), self.core.commit_id());
        if !self.spinning && !self.stopping {
            let waiting = self.core.waiting_for_secondaries(SPIN_MAX_WAITING + 1);
            if let Some(until) = self.spin.start(Instant::now(), waiting) {
                self.spinning = true;
                ctx.spawn(Spin {
                    until,
                    step: Box::pin(tokio::task::yield_now()),
                });
            }
        }
        let wanted = self.core.poll_timeout();
        match (wanted, self.timer) {
            (Some(at), Some((armed, _))) if armed <= at => {}
            (None, None) => {}
            _ => {
                if let Some((_, h)) = self.timer.take() {
                    ctx.cancel_future(h);
                }
                if let Some(at) = wanted {
                    let wait = at.saturating_duration_since(Instant::now());
                    let h = ctx.run_later(wait, |act, ctx| {
                        act.timer = None;
                        act.core.handle_timeout(Instant::now());
                        act.drain(ctx);
                    });
                    self.timer = Some((at, h));
                }
            }
        }
    }
}

impl Replicator {
    /// Group commit: if entries are waiting to be made durable and no sync is running,
    /// start one. It covers everything appended before it starts; whatever arrives
    /// meanwhile waits for the next one.
    ///
    /// It starts once the writes already in the mailbox are appended, so that one write
    /// to the file, one frame per secondary and one sync carry all of them. The entries
    /// are written to the file and sent to the secondaries first, and synced on the
    /// blocking pool while the secondaries store them: a write waits for the slower of
    /// the two syncs, not for one after the other (docs/protocol.md, "One history").
    fn maybe_sync(&mut self, ctx: &mut Context<Self>) {
        if self.syncing || !self.core.needs_sync() {
            return;
        }
        self.syncing = true;
        let start = fut::ready(()).then(|(), act: &mut Self, ctx: &mut Context<Self>| {
            let store = act.store.clone();
            match store.flush() {
                Ok(upto) => {
                    act.core.flushed(Instant::now(), upto);
                    act.drain(ctx);
                }
                // The sync below meets the same failure and reports it.
                Err(e) => tracing::error!(error = %e, "writing the log failed"),
            }
            async move {
                if store.sync_blocks() {
                    tokio::task::spawn_blocking(move || store.sync()).await
                } else {
                    // Relaxed durability: nothing to wait for, no trip to the blocking pool.
                    Ok(store.sync())
                }
            }
            .into_actor(act)
        });
        ctx.spawn(start.map(|result, act, ctx| {
            act.syncing = false;
            match result {
                Ok(Ok(upto)) => {
                    act.syncs += 1;
                    metrics::counter!(common::metrics::SYNCS).increment(1);
                    act.core.persisted(Instant::now(), upto);
                    act.drain(ctx);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "sync failed; writes wait until it succeeds");
                    ctx.run_later(Duration::from_millis(200), |act, ctx| act.drain(ctx));
                }
                Err(e) => tracing::error!(error = %e, "sync task failed"),
            }
        }));
    }
}

impl Actor for Replicator {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Status queries (`send().await`) wait when this many messages are queued. Writes
        // and sessions use `do_send`, which is not bounded by it: writes are bounded by
        // the open HTTP connections (one request each at a time), and the replicator
        // shares their thread, so it drains its mailbox between requests.
        ctx.set_mailbox_capacity(4096);
        ctx.run_interval(self.heartbeat, |act, ctx| {
            act.core.tick_heartbeat(Instant::now());
            act.drain(ctx);
        });
    }
}

impl Handler<Register> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Register, ctx: &mut Context<Self>) {
        tracing::info!(conn = msg.conn, peer = %msg.peer, "secondary connected");
        self.sessions.insert(
            msg.conn,
            Conn {
                session: msg.session,
                outbox: msg.outbox,
                peer: msg.peer,
                member: msg.member,
            },
        );
        self.core.connection_opened(msg.conn);
        self.drain(ctx);
    }
}

impl Handler<Inbound> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        let hello = matches!(&msg.frame, SecondaryFrame::Hello { .. });
        if let SecondaryFrame::Hello {
            name,
            next_expected,
            ..
        } = &msg.frame
        {
            tracing::info!(conn = msg.conn, peer = %name, next_expected, "hello");
        }
        self.core.handle_frame(Instant::now(), msg.conn, msg.frame);
        if hello && let Some(c) = self.sessions.get(&msg.conn) {
            self.core.set_address(msg.conn, c.peer.clone());
        }
        self.drain(ctx);
    }
}

impl Handler<Unregister> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        if self.sessions.remove(&msg.conn).is_some() {
            tracing::info!(conn = msg.conn, "secondary disconnected");
        }
        self.core.connection_closed(msg.conn);
        self.drain(ctx);
    }
}

impl Handler<Submit> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Submit, ctx: &mut Context<Self>) {
        if self.retired {
            let _ = msg.reply.send(Err(SubmitError::SteppedDown));
            return;
        }
        if self.stopping {
            let _ = msg.reply.send(Err(SubmitError::ShuttingDown));
            return;
        }
        let token = self.next_token;
        self.next_token += 1;
        // In the map before the core runs: a repeated requestId is answered at once.
        self.pending.insert(token, msg.reply);
        if let Err(e) = self.core.submit(Instant::now(), msg.write, token)
            && let Some(reply) = self.pending.remove(&token)
        {
            let _ = reply.send(Err(e.into()));
        }
        self.drain(ctx);
    }
}

impl Handler<Shutdown> for Replicator {
    type Result = usize;
    fn handle(&mut self, _: Shutdown, _: &mut Context<Self>) -> usize {
        self.stopping = true;
        self.progress.stop();
        let failed = self.pending.len();
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(SubmitError::StoppedWaiting));
        }
        failed
    }
}

impl Handler<Retire> for Replicator {
    type Result = ();
    fn handle(&mut self, _: Retire, ctx: &mut Context<Self>) {
        self.stopping = true;
        self.retired = true;
        let failed = self.pending.len();
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(SubmitError::StoppedWaiting));
        }
        if failed > 0 {
            tracing::warn!(
                failed,
                "stepped down: writes still waiting for their write concern were answered 503"
            );
        }
        for (_, c) in self.sessions.drain() {
            c.session.do_send(ToSession::Close);
        }
        ctx.stop();
    }
}

impl Handler<HandOver> for Replicator {
    type Result = ();
    fn handle(&mut self, _: HandOver, ctx: &mut Context<Self>) {
        match self.core.hand_over(None) {
            Some(to) => tracing::info!(%to, "stepping down: handing over"),
            None => tracing::info!("stepping down: no caught-up member to hand over to"),
        }
        self.drain(ctx);
    }
}

/// Who holds message `.0` (None: no such message yet).
#[derive(Message)]
#[rtype(result = "Option<common::replication::Receipt>")]
pub struct Holders(pub u64);

impl Handler<Holders> for Replicator {
    type Result = Option<common::replication::Receipt>;
    fn handle(&mut self, msg: Holders, _: &mut Context<Self>) -> Self::Result {
        self.core.holders(msg.0)
    }
}

/// Remove a member for good. Ok(false): no such member.
#[derive(Message)]
#[rtype(result = "Result<bool, common::replication::MembershipError>")]
pub struct RemoveMember(pub String);

impl Handler<RemoveMember> for Replicator {
    type Result = Result<bool, common::replication::MembershipError>;
    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) -> Self::Result {
        let removed = self.core.remove_member(&msg.0);
        self.drain(ctx);
        removed
    }
}

/// Let a removed name join again. Ok(false): it was not removed.
#[derive(Message)]
#[rtype(result = "Result<bool, common::storage::StorageError>")]
pub struct Readmit(pub String);

impl Handler<Readmit> for Replicator {
    type Result = Result<bool, common::storage::StorageError>;
    fn handle(&mut self, msg: Readmit, _: &mut Context<Self>) -> Self::Result {
        self.core.readmit(&msg.0)
    }
}

impl Handler<GetStatus> for Replicator {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        MessageResult((self.core.status(Instant::now()), self.syncs))
    }
}
