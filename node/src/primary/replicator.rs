//! The master's shell: it carries the master's I/O (client writes, the secondaries'
//! connections, the log's writes and syncs, timers) to the node's core
//! (`NodeCore`, which holds the `MasterCore` while this member leads) and carries out
//! what the core decides for them.

use crate::member::{Event, Node};
use actix::prelude::*;
use common::protocol::{MasterFrame, SecondaryFrame};
use common::replication::{
    ConnId, MasterOutput, MasterStatus, MembershipError, NodeInput, NodeOutput, Rejected,
    SPIN_MAX_WAITING, SpinPolicy, Token, WriteOutcome, WriteRequest,
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

/// What the core decided for the master while another shell (the member's driver)
/// handed it an input: carry it out.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Carry(pub Vec<NodeOutput>);

/// A snapshot of the replication state, and how many syncs ran (None: this member
/// is not the master any more).
#[derive(Message)]
#[rtype(result = "Option<(MasterStatus, u64)>")]
pub struct GetStatus;

/// The store the master writes to; the binary chooses the implementation.
pub type Store = Arc<dyn LogStore>;

pub struct Replicator {
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
    /// The member this replicator serves: its core holds the master's state, and
    /// what the core decides for the election goes to its driver.
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
        let waiting = act.waiting();
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
    /// The master's shell for `node`, whose core has just become the master; start it
    /// ([`Actor::start`]) on the thread that is to run it (the HTTP worker's).
    pub fn for_node(node: &Arc<Node>) -> Self {
        if let Some(l) = node.core().leader() {
            tracing::info!(
                log_id = format!("{:#x}", l.log_id()),
                last_id = l.last_id(),
                term = l.term(),
                "log opened as the master"
            );
        }
        let settings = &node.cfg.master;
        Replicator {
            store: node.store.clone(),
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
        }
    }

    /// Hand one input to the node's core; what it decided.
    fn step(&self, input: NodeInput) -> Vec<NodeOutput> {
        let mut core = self.node.core();
        core.handle(Instant::now(), input);
        core.take_outputs()
    }

    /// Writes waiting for a secondary's acknowledgement (at most `limit`).
    fn waiting(&self) -> usize {
        (self.node.core().leader()).map_or(0, |l| l.waiting_for_secondaries(SPIN_MAX_WAITING + 1))
    }

    /// Carry out the core's decisions for the master (the others go to the member's
    /// driver), then start a sync, publish progress and re-arm the timer as the master
    /// core's state now asks.
    fn drain(&mut self, ctx: &mut Context<Self>, outputs: Vec<NodeOutput>) {
        let mut theirs = Vec::new();
        for o in outputs {
            match o {
                NodeOutput::Master(o) => self.carry_out(o),
                NodeOutput::Refused { token, why } => {
                    if let Some(reply) = self.pending.remove(&token) {
                        let _ = reply.send(Err(why.into()));
                    }
                }
                // Answered by their handlers, from the same step.
                NodeOutput::Removed(_) | NodeOutput::Readmitted(_) => {}
                o => theirs.push(o),
            }
        }
        if !theirs.is_empty() {
            self.node.send(Event::Outputs(theirs));
        }
        let state = self.node.core().leader().map(|l| {
            (
                l.needs_sync(),
                l.written_id(),
                l.commit_id(),
                l.waiting_for_secondaries(SPIN_MAX_WAITING + 1),
                l.poll_timeout(),
            )
        });
        let Some((needs_sync, written_id, commit_id, waiting, wanted)) = state else {
            return; // not the master any more: the driver retires this shell
        };
        if needs_sync {
            self.maybe_sync(ctx);
        }
        self.progress.publish(written_id, commit_id);
        if !self.spinning
            && !self.stopping
            && let Some(until) = self.spin.start(Instant::now(), waiting)
        {
            self.spinning = true;
            ctx.spawn(Spin {
                until,
                step: Box::pin(tokio::task::yield_now()),
            });
        }
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
                        let outputs = act.step(NodeInput::Timeout);
                        act.drain(ctx, outputs);
                    });
                    self.timer = Some((at, h));
                }
            }
        }
    }

    /// Carry out one of the master core's outputs.
    fn carry_out(&mut self, out: MasterOutput) {
        match out {
            MasterOutput::Send { conn, frame } => match self.sessions.get(&conn) {
                // Fault rules (`PUT /admin/faults`), when any are set.
                Some(c) if self.node.faults.active() => {
                    use crate::faults::{Dir, Frame, Verdict};
                    match self
                        .node
                        .faults
                        .judge(c.member.as_deref(), Dir::Out, Frame::Replication)
                    {
                        Verdict::Drop => {}
                        // The answer to a Hello is never held back: it tells the member
                        // how long this master holds the rest back, and until it comes
                        // the member waits no longer than for any other frame.
                        Verdict::Delay(_) if matches!(frame, MasterFrame::Welcome { .. }) => {
                            c.outbox.send(frame)
                        }
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
            }
            MasterOutput::Reply { token, outcome } => {
                if let Some(tx) = self.pending.remove(&token) {
                    let _ = tx.send(Ok(outcome)); // the client may have gone
                }
            }
            MasterOutput::StorageFailed(e) => {
                tracing::error!(error = %e, "storage failure while replicating");
            }
            // NodeCore's own: they end the term there, and never leave it.
            MasterOutput::NewerTerm(_)
            | MasterOutput::LostQuorum
            | MasterOutput::HandedOver { .. } => {}
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
        if self.syncing {
            return;
        }
        self.syncing = true;
        let start = fut::ready(()).then(|(), act: &mut Self, ctx: &mut Context<Self>| {
            let store = act.store.clone();
            match store.flush() {
                Ok(upto) => {
                    let outputs = act.step(NodeInput::Flushed(upto));
                    act.drain(ctx, outputs);
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
                    let outputs = act.step(NodeInput::Persisted(upto));
                    act.drain(ctx, outputs);
                }
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "sync failed; writes wait until it succeeds");
                    ctx.run_later(Duration::from_millis(200), |act, ctx| {
                        act.drain(ctx, vec![])
                    });
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
            let outputs = act.step(NodeInput::Heartbeat);
            act.drain(ctx, outputs);
        });
        // Whatever the new master already has to do (its timers, a sync).
        self.drain(ctx, vec![]);
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
                member: msg.member,
            },
        );
        let outputs = self.step(NodeInput::Opened {
            conn: msg.conn,
            peer: msg.peer,
        });
        self.drain(ctx, outputs);
    }
}

impl Handler<Inbound> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Inbound, ctx: &mut Context<Self>) {
        if let SecondaryFrame::Hello {
            name,
            next_expected,
            ..
        } = &msg.frame
        {
            tracing::info!(conn = msg.conn, peer = %name, next_expected, "hello");
        }
        let outputs = self.step(NodeInput::FromSecondary {
            conn: msg.conn,
            frame: msg.frame,
        });
        self.drain(ctx, outputs);
    }
}

impl Handler<Unregister> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Unregister, ctx: &mut Context<Self>) {
        if self.sessions.remove(&msg.conn).is_some() {
            tracing::info!(conn = msg.conn, "secondary disconnected");
        }
        let outputs = self.step(NodeInput::Closed(msg.conn));
        self.drain(ctx, outputs);
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
        let outputs = self.step(NodeInput::Write {
            token,
            write: msg.write,
        });
        self.drain(ctx, outputs);
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

impl Handler<Carry> for Replicator {
    type Result = ();
    fn handle(&mut self, msg: Carry, ctx: &mut Context<Self>) {
        self.drain(ctx, msg.0);
    }
}

/// Who holds message `.0` (None: no such message yet).
#[derive(Message)]
#[rtype(result = "Option<common::replication::Receipt>")]
pub struct Holders(pub u64);

impl Handler<Holders> for Replicator {
    type Result = Option<common::replication::Receipt>;
    fn handle(&mut self, msg: Holders, _: &mut Context<Self>) -> Self::Result {
        self.node.core().leader().and_then(|l| l.holders(msg.0))
    }
}

/// Remove a member for good. Ok(false): no such member.
#[derive(Message)]
#[rtype(result = "Result<bool, common::replication::MembershipError>")]
pub struct RemoveMember(pub String);

impl Handler<RemoveMember> for Replicator {
    type Result = Result<bool, common::replication::MembershipError>;
    fn handle(&mut self, msg: RemoveMember, ctx: &mut Context<Self>) -> Self::Result {
        let outputs = self.step(NodeInput::RemoveMember(msg.0));
        let removed = outputs.iter().find_map(|o| match o {
            NodeOutput::Removed(r) => Some(r.clone()),
            _ => None,
        });
        self.drain(ctx, outputs);
        removed.unwrap_or(Err(MembershipError::NotMaster))
    }
}

/// Let a removed name join again. Ok(false): it was not removed.
#[derive(Message)]
#[rtype(result = "Result<bool, MembershipError>")]
pub struct Readmit(pub String);

impl Handler<Readmit> for Replicator {
    type Result = Result<bool, MembershipError>;
    fn handle(&mut self, msg: Readmit, ctx: &mut Context<Self>) -> Self::Result {
        let outputs = self.step(NodeInput::Readmit(msg.0));
        let readmitted = outputs.iter().find_map(|o| match o {
            NodeOutput::Readmitted(r) => Some(r.clone()),
            _ => None,
        });
        self.drain(ctx, outputs);
        readmitted.unwrap_or(Err(MembershipError::NotMaster))
    }
}

impl Handler<GetStatus> for Replicator {
    type Result = MessageResult<GetStatus>;
    fn handle(&mut self, _: GetStatus, _: &mut Context<Self>) -> Self::Result {
        let status = self.node.core().leader().map(|l| l.status(Instant::now()));
        MessageResult(status.map(|st| (st, self.syncs)))
    }
}
