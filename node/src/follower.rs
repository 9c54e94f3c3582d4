//! The secondary's side of the replication connection, on a thread of its own.
//!
//! Plain blocking I/O on a thread that does nothing else: read what the master sent,
//! hand it to the node's core (`NodeCore`, whose follower stores it), sync the store
//! when the core asks, write the answers. One connection has nothing to multiplex, and
//! an event loop between the socket and the core cost more than the rest of the
//! secondary's work per frame (docs/benchmarks.md):
//! a blocking `read` wakes up with the data, where a loop wakes up, asks which socket
//! is ready, then reads.

use crate::member::{Event, Node};
use crate::wire::Conn;
use bytes::BytesMut;
use common::protocol::codec::{CodecError, FrameCodec};
use common::protocol::{ErrorCode, ErrorFrame, MasterFrame, SecondaryFrame};
use common::replication::{NodeCore, SecondaryStatus};
use common::replication::{NodeInput, NodeOutput, SecondaryOutput, SyncSchedule, is_urgent};
use common::storage::LogStore;
use common::stream::Progress;
use rand::RngExt;
use std::collections::BinaryHeap;
use std::io;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio_util::codec::{Decoder, Encoder};

type Codec = FrameCodec<MasterFrame, SecondaryFrame>;

/// The store the secondary keeps its log in.
pub type Store = Arc<dyn LogStore>;

/// The member's decisions over its store, its follower among them.
pub type Core = NodeCore<Store>;

/// The core, shared by the replication thread, the member's driver and the HTTP
/// handlers. The lock is only held for a single synchronous step of the core.
pub type SharedCore = Arc<Mutex<Core>>;

/// What the HTTP API asks a secondary.
#[derive(Clone)]
pub struct Handle {
    core: SharedCore,
    /// The address this node was started with to find its set.
    pub master: String,
}

impl Handle {
    pub fn new(core: SharedCore, seed: String) -> Self {
        Self { core, master: seed }
    }

    /// The follower's state (a new follower's, over the log as it is, for the moment
    /// between an election won and the replicator's start).
    pub fn status(&self, now: Instant) -> SecondaryStatus {
        lock(&self.core).follower_status(now)
    }

    /// The master's commit id as the follower last heard it (0: not following).
    pub fn commit_id(&self) -> u64 {
        lock(&self.core).follower().map_or(0, |f| f.commit_id())
    }

    /// The master's HTTP address (`host:port`), while this node follows a master.
    pub fn primary(&self) -> Option<String> {
        lock(&self.core).follower().and_then(|f| f.primary_http())
    }
}

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// A master that takes nothing from this connection for this long is treated as gone
/// (the connection is dropped and made again).
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// One `read` takes up to this much of what has arrived: everything, in practice, so
/// that the frames it holds share one sync (group commit).
const READ_CHUNK: usize = 1 << 20;

/// The replication thread, and the means to stop it.
pub struct Link {
    shared: Arc<Shared>,
    done: mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

struct Shared {
    stopping: AtomicBool,
    /// The connection in use, so that [`Link::stop`] can cut a blocked read short.
    conn: Mutex<Option<Conn>>,
    /// Wakes the reconnect back-off when stopping.
    wake: Condvar,
}

impl Shared {
    fn conn(&self) -> MutexGuard<'_, Option<Conn>> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Sleep for `d`, or less if stopping.
    fn sleep(&self, d: Duration) {
        let guard = self.conn();
        if !self.stopping() {
            let _ = self.wake.wait_timeout(guard, d);
        }
    }
}

impl Link {
    /// Start following the master: keep a connection to it for as long as the process
    /// runs, reconnecting with jittered exponential back-off.
    /// `progress` is told how far the log reaches after every step (change streams).
    pub fn start(node: Arc<Node>) -> io::Result<Link> {
        let shared = Arc::new(Shared {
            stopping: AtomicBool::new(false),
            conn: Mutex::new(None),
            wake: Condvar::new(),
        });
        let (done_tx, done) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("replication".into())
            .spawn({
                let shared = shared.clone();
                move || {
                    follow(&node, &shared);
                    let _ = done_tx.send(());
                }
            })?;
        Ok(Link {
            shared,
            done,
            thread: Some(thread),
        })
    }

    /// Stop following, and wait for the thread to end, however long its current step
    /// takes (a write to the master is bounded by the socket's write timeout). The log
    /// has one writer at a time: a master starts only after this.
    pub fn stop_and_join(mut self) {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(conn) = self.shared.conn().as_ref() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Cut the current connection (the thread dials again, maybe elsewhere).
    pub fn reconnect(&self) {
        if let Some(conn) = self.shared.conn().as_ref() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
    }

    /// Stop following: close the connection and wait (at most `within`) for the thread
    /// to finish what it was doing. Returns false if it did not finish in time.
    pub fn stop(mut self, within: Duration) -> bool {
        self.shared.stopping.store(true, Ordering::Release);
        if let Some(conn) = self.shared.conn().as_ref() {
            let _ = conn.shutdown(Shutdown::Both);
        }
        self.shared.wake.notify_all();
        match self.done.recv_timeout(within) {
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            _ => {
                if let Some(t) = self.thread.take() {
                    let _ = t.join();
                }
                true
            }
        }
    }
}

/// While no master answers, dial again after at most this long (a new master needs
/// its members back to take writes).
const MAX_HUNT_BACKOFF: Duration = Duration::from_millis(250);

fn follow(node: &Arc<Node>, shared: &Shared) {
    let core = &node.core;
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    while !shared.stopping() {
        let master = node.next_target();
        if master.is_empty() {
            // Nobody to ask yet (a member that knows no other): wait for a hint.
            shared.sleep(MAX_BACKOFF);
            continue;
        }
        let tls = node.cfg.tls.as_ref();
        match Conn::connect(&master, tls, CONNECT_TIMEOUT, AUTH_TIMEOUT) {
            Ok(mut stream) => {
                tracing::debug!(%master, "connected");
                warned = false;
                let started = Instant::now();
                if let Ok(clone) = stream.try_clone() {
                    *shared.conn() = Some(clone);
                }
                if shared.stopping() {
                    // Stopped while connecting: the clone above was not there to cut.
                    break;
                }
                let host = master
                    .rsplit_once(':')
                    .map_or(master.as_str(), |(h, _)| h)
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string();
                if let Some(key) = &node.cfg.cluster_key
                    && let Err(e) = authenticate(&mut stream, key)
                {
                    *shared.conn() = None;
                    tracing::warn!(%master, error = %e, "authentication with a member failed");
                    let _ = stream.shutdown(Shutdown::Both);
                    shared.sleep(MAX_BACKOFF);
                    continue;
                }
                let followed = {
                    let _span = tracing::info_span!("link", master = %master).entered();
                    let peer = node.member_at(&master);
                    Session::new(stream, node, peer, &master).run(host)
                };
                *shared.conn() = None;
                let outputs = {
                    let mut c = lock(core);
                    c.handle(Instant::now(), NodeInput::Disconnected);
                    c.take_outputs()
                };
                pass_on(node, outputs); // nothing more goes to that connection
                if followed {
                    tracing::info!(%master, "disconnected from the master");
                }
                if started.elapsed() > MAX_BACKOFF || node.has_hint() {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(%master, error = %e, "cannot reach a member; retrying");
                    warned = true;
                }
            }
        }
        if node.has_hint() {
            continue; // told where the master is: go there now
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        shared.sleep(backoff + Duration::from_millis(jitter));
        backoff = (backoff * 2).min(MAX_HUNT_BACKOFF);
    }
}

/// How long the authentication of a connection may take.
const AUTH_TIMEOUT: Duration = Duration::from_secs(5);

/// With `--cluster-key-file`: prove to the member just dialled that this node knows
/// the key, and check that it does too (`common::protocol::auth`), before the Hello.
fn authenticate(stream: &mut Conn, key: &common::protocol::auth::ClusterKey) -> io::Result<()> {
    use common::protocol::auth;
    let fail = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    stream.tcp().set_read_timeout(Some(AUTH_TIMEOUT))?;
    stream.tcp().set_write_timeout(Some(AUTH_TIMEOUT))?;
    let mut codec = Codec::new();
    let client = auth::nonce();
    let mut out = BytesMut::new();
    codec
        .encode(
            SecondaryFrame::AuthHello {
                nonce: client.clone(),
            },
            &mut out,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
    stream.write_all(&out)?;
    let mut buf = BytesMut::new();
    let mut chunk = [0u8; 4096];
    let frame = loop {
        match codec.decode(&mut buf) {
            Ok(Some(f)) => break f,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("bad frame: {e}"))),
        }
        match stream.read(&mut chunk)? {
            0 => return Err(fail("closed during authentication".into())),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let proof = auth::answer(key, &client, frame).map_err(fail)?;
    out.clear();
    codec
        .encode(proof, &mut out)
        .map_err(|e| io::Error::other(e.to_string()))?;
    stream.write_all(&out)?;
    stream.tcp().set_read_timeout(None)?;
    Ok(())
}

pub(crate) fn lock(core: &SharedCore) -> MutexGuard<'_, Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// Send the driver what the core decided that is not for the master's connection;
/// return what is.
fn pass_on(node: &Node, outputs: Vec<NodeOutput>) -> Vec<SecondaryOutput> {
    let mut link = Vec::with_capacity(outputs.len());
    let mut theirs = Vec::new();
    for o in outputs {
        match o {
            NodeOutput::Link(o) => link.push(o),
            o => theirs.push(o),
        }
    }
    if !theirs.is_empty() {
        node.send(Event::Outputs(theirs));
    }
    link
}

/// Make what the core appended durable (no-op when nothing is pending).
fn sync(store: &Store) -> anyhow::Result<()> {
    if store.last_id() > store.durable_id() {
        store.sync()?;
        metrics::counter!(common::metrics::SYNCS).increment(1);
    }
    Ok(())
}

/// How a session ended.
enum End {
    /// The master closed the connection (or it broke): nothing left worth writing.
    Gone,
    /// This side closes: let what is queued (an error frame, delayed frames) go out.
    Close,
}

/// One connection, from handshake to close.
struct Session<'a> {
    stream: Conn,
    node: &'a Arc<Node>,
    cfg: &'a crate::Config,
    core: &'a SharedCore,
    store: &'a Store,
    progress: &'a Progress,
    /// The master accepted this node (a Welcome came).
    followed: bool,
    /// The master's term on this connection, once welcomed.
    term: u64,
    /// The address dialled.
    address: &'a str,
    /// When a frame last arrived.
    last_frame: Instant,
    /// How long frames may be held back on purpose on this link (both sides'
    /// `--delay-ms`): not silence.
    slack: Duration,
    codec: Codec,
    out: BytesMut,
    /// Frames held back by `--delay-ms` go through this thread.
    delayer: Option<Delayer>,
    /// When to sync what the core stored (the core acknowledges it only then).
    schedule: SyncSchedule,
    /// The read timeout set on the socket (None: block).
    timeout: Option<Duration>,
    /// The master's member name, for fault rules: from the member list when
    /// connecting, from the Welcome once accepted (None: rules pass its frames).
    peer: Option<String>,
}

impl<'a> Session<'a> {
    fn new(stream: Conn, node: &'a Arc<Node>, peer: Option<String>, address: &'a str) -> Self {
        let cfg = &node.cfg;
        let _ = stream.tcp().set_nodelay(true);
        let _ = stream.tcp().set_write_timeout(Some(WRITE_TIMEOUT));
        Session {
            stream,
            node,
            cfg,
            core: &node.core,
            store: &node.store,
            progress: &node.progress,
            followed: false,
            term: 0,
            address,
            last_frame: Instant::now(),
            // Its own frames are held back too: answers come that much later.
            slack: Duration::from_millis(cfg.delay.max_ms),
            codec: Codec::new(),
            out: BytesMut::new(),
            delayer: None,
            schedule: SyncSchedule::default(),
            timeout: None,
            peer,
        }
    }

    /// Serve the connection to `host` until it ends; true if a master accepted this
    /// node.
    fn run(mut self, host: String) -> bool {
        let (outputs, wants_sync) = {
            let mut c = lock(self.core);
            c.handle(Instant::now(), NodeInput::Connected { host });
            (c.take_outputs(), c.wants_sync())
        };
        // The Hello waits for what the store holds to be synced.
        let started = self.send_out(outputs).and_then(|close| {
            if !close && wants_sync {
                self.sync_and_acknowledge()
            } else {
                Ok(close)
            }
        });
        let end = match started {
            Ok(false) => self.serve(),
            Ok(true) => End::Close,
            Err(end) => end,
        };
        match end {
            End::Gone => {
                let _ = self.stream.shutdown(Shutdown::Both);
            }
            End::Close => {
                if let Some(d) = self.delayer.take() {
                    // Let it write what is queued, bounded, then close.
                    d.finish(self.node.faults.max_delay() + Duration::from_secs(1));
                }
                let _ = self.stream.shutdown(Shutdown::Write);
            }
        }
        self.followed
    }

    /// Read, store and answer until the connection ends.
    fn serve(&mut self) -> End {
        let mut buf = BytesMut::with_capacity(64 << 10);
        let mut chunk = vec![0u8; READ_CHUNK];
        loop {
            // Frames already in the buffer first; read only when none is complete.
            let mut frames = Vec::new();
            loop {
                match self.codec.decode(&mut buf) {
                    Ok(Some(f)) => frames.push(f),
                    Ok(None) => break,
                    Err(e) => return self.refuse(e),
                }
            }
            if !frames.is_empty() && self.node.faults.active() {
                // Fault rules (`PUT /admin/faults`): dropped frames never arrived (they
                // do not count as hearing the master); delayed ones arrive that late.
                use crate::faults::{Dir, Frame, Verdict};
                let (faults, peer) = (&self.node.faults, self.peer.as_deref());
                let mut wait = Duration::ZERO;
                frames.retain(|_| match faults.judge(peer, Dir::In, Frame::Replication) {
                    Verdict::Drop => false,
                    Verdict::Delay(d) => {
                        wait = wait.max(d);
                        true
                    }
                    Verdict::Pass => true,
                });
                if !wait.is_zero() {
                    std::thread::sleep(wait);
                }
                // All dropped: as quiet as no frame at all, though the socket is not
                // (a partition rule drops every heartbeat of a master that goes on
                // sending them).
                if frames.is_empty()
                    && let Some(end) = self.between_frames()
                {
                    return end;
                }
            }
            if frames.is_empty() {
                match self.read(&mut chunk) {
                    Ok(0) => {
                        if !buf.is_empty() {
                            let e = CodecError::Truncated(buf.len());
                            tracing::warn!(error = %e, "bad frame from the master; closing");
                        }
                        return End::Gone;
                    }
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        continue;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) =>
                    {
                        if let Some(end) = self.between_frames() {
                            return end;
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        if e.kind() == io::ErrorKind::InvalidData {
                            // TLS: a bad record, or the master refused this node's
                            // certificate (TLS 1.3 tells the client after the handshake).
                            tracing::warn!(error = %e, "the connection to the master failed");
                        }
                        return End::Gone;
                    }
                }
            }
            // A master of an older term than this node knows (it voted since, or
            // heard of a newer master) is left for the current one.
            if self.term != 0 && self.node.term() > self.term {
                tracing::info!(
                    master_term = self.term,
                    term = self.node.term(),
                    "this master's term is over; looking for the current one"
                );
                return End::Gone;
            }
            for f in &frames {
                if let MasterFrame::Error(e) = f
                    && e.code == ErrorCode::NotMaster
                {
                    self.node.set_hint(e.master.clone());
                }
            }
            self.last_frame = Instant::now();
            // Group commit: every frame that has arrived is stored, made durable with
            // one sync, and only then acknowledged (the core holds the acknowledgement
            // until `synced`). If no write waits for this secondary, the sync is put
            // off a little (SyncSchedule).
            let now = Instant::now();
            let urgent = frames.iter().any(is_urgent);
            let (outputs, wants_sync) = {
                let mut c = lock(self.core);
                c.handle(now, NodeInput::Frames(frames));
                // Open change streams see entries once written; without them the write
                // waits for the (possibly deferred) sync, which does it in the same call.
                if self.progress.streams() > 0
                    && let Err(e) = self.store.flush()
                {
                    tracing::error!(error = %e, "writing the log failed");
                }
                // (Not once this member leads: the replicator publishes then.)
                if let Some(f) = c.follower() {
                    self.progress
                        .publish(self.store.written_id(), f.commit_id());
                }
                (c.take_outputs(), c.wants_sync())
            };
            match self.send_out(outputs) {
                Ok(false) => {}
                Ok(true) => return End::Close,
                Err(end) => return end,
            }
            if wants_sync && self.schedule.stored(now, urgent, self.store.sync_blocks()) {
                match self.sync_and_acknowledge() {
                    Ok(false) => {}
                    Ok(true) => return End::Close,
                    Err(end) => return end,
                }
            }
        }
    }

    /// Nothing from the master to handle now: leave it if its term is over, if a vote
    /// named another member before it answered the Hello, or if it has been silent
    /// too long; sync and acknowledge if the deferred sync is due. Some: the session
    /// ends so.
    fn between_frames(&mut self) -> Option<End> {
        if self.term != 0 && self.node.term() > self.term {
            return Some(End::Gone); // a newer term: find its master
        }
        let welcomed = self.term != 0;
        if !welcomed && self.node.has_hint_other_than(self.address) {
            // This node voted for another member meanwhile (or learnt where the master
            // is): that one is likely the master now, not the one that has not answered.
            tracing::info!("a master was named elsewhere; leaving the handshake");
            return Some(End::Gone);
        }
        // The same bound before the Welcome: a master answers the Hello at once, never
        // held back by `--delay-ms` or a fault rule's delay (a paused master, or a Hello
        // a fault rule dropped, would otherwise keep this node from the set).
        if self.last_frame.elapsed() > self.cfg.election_timeout * 2 + self.slack {
            if welcomed {
                tracing::warn!("the master has been silent for too long; looking for another");
            } else {
                tracing::warn!("no answer to the Hello; looking for the master");
            }
            return Some(End::Gone);
        }
        if self.schedule.timer(Instant::now()) {
            return match self.sync_and_acknowledge() {
                Ok(false) => None,
                Ok(true) => Some(End::Close),
                Err(end) => Some(end),
            };
        }
        None
    }

    /// Read what has arrived, waiting at most until the held acks are due.
    fn read(&mut self, chunk: &mut [u8]) -> io::Result<usize> {
        // Wake up at least once per election timeout, to notice a silent master or a
        // newer term.
        let watch = self.cfg.election_timeout + self.slack;
        let wanted = Some(self.schedule.due().map_or(watch, |due| {
            due.saturating_duration_since(Instant::now())
                .max(Duration::from_micros(1))
                .min(watch)
        }));
        if wanted != self.timeout {
            self.stream.tcp().set_read_timeout(wanted)?;
            self.timeout = wanted;
        }
        self.stream.read(chunk)
    }

    /// Sync, then send what the core acknowledges now. Ok(true): the core asked to
    /// close.
    fn sync_and_acknowledge(&mut self) -> Result<bool, End> {
        if let Err(e) = sync(self.store) {
            tracing::error!(error = %e, "sync failed; reconnecting");
            return Err(End::Gone);
        }
        let outputs = {
            let mut c = lock(self.core);
            c.handle(Instant::now(), NodeInput::Synced);
            if let Some(f) = c.follower() {
                self.progress
                    .publish(self.store.written_id(), f.commit_id());
            }
            c.take_outputs()
        };
        self.send_out(outputs)
    }

    /// [`Self::dispatch`] what is for this connection (a failed write ending the
    /// session), and pass the rest on to the driver. Ok(true): the core asked to close.
    fn send_out(&mut self, outputs: Vec<NodeOutput>) -> Result<bool, End> {
        let link = pass_on(self.node, outputs);
        self.dispatch(link).map_err(|e| {
            tracing::warn!(error = %e, "write to the master failed");
            End::Gone
        })
    }

    /// The master sent something this side cannot take: say why, then close.
    fn refuse(&mut self, e: CodecError) -> End {
        tracing::warn!(error = %e, "bad frame from the master; closing");
        let code = match e {
            CodecError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
            CodecError::Malformed(_) => Some(ErrorCode::MalformedFrame),
            _ => None,
        };
        if let Some(code) = code {
            let frame = SecondaryFrame::Error(ErrorFrame::new(code, e.to_string()));
            if self.send(frame).and_then(|()| self.write_out()).is_err() {
                return End::Gone;
            }
        }
        End::Close
    }

    /// Write the core's outputs, through the fault rules (`--drop-rate` drops acks,
    /// `--delay-ms` holds every frame back). Ok(true): the core asked to close.
    fn dispatch(&mut self, outputs: Vec<SecondaryOutput>) -> io::Result<bool> {
        let mut close = false;
        for out in outputs {
            match out {
                SecondaryOutput::Send(frame) => {
                    // Fault rules, `--delay-ms` and `--drop-rate` among them.
                    use crate::faults::{Dir, Frame, Verdict};
                    let kind = match frame {
                        SecondaryFrame::Ack { .. } => Frame::Ack,
                        _ => Frame::Replication,
                    };
                    match self.node.faults.judge(self.peer.as_deref(), Dir::Out, kind) {
                        Verdict::Pass => self.send(frame)?,
                        Verdict::Drop => {
                            tracing::trace!(frame = frame.name(), "dropped by a fault rule")
                        }
                        Verdict::Delay(d) => self.send_later(frame, d)?,
                    }
                }
                SecondaryOutput::Close => close = true,
                SecondaryOutput::Following { term, master } => {
                    tracing::info!(%master, term, "following");
                    self.peer = Some(master.clone());
                    self.followed = true;
                    self.term = term;
                    let master_delay = lock(self.core)
                        .follower()
                        .map_or(Duration::ZERO, |f| f.master_delay());
                    self.slack = master_delay + Duration::from_millis(self.cfg.delay.max_ms);
                }
                // The core's own: they never leave it.
                SecondaryOutput::MembersChanged | SecondaryOutput::StandNow => {}
                SecondaryOutput::RolledBack(r) => {
                    tracing::warn!(
                        count = r.count,
                        from = r.from_id,
                        file = ?r.file,
                        "rolled back entries the new master does not hold"
                    );
                    self.node.note_rollback(r);
                }
            }
        }
        self.write_out()?;
        Ok(close)
    }

    /// Write the frames queued by [`Self::send`] (one `write` for all of them).
    fn write_out(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Send one frame after `d` (a fault rule's delay), through the delayer thread,
    /// started for this connection if it has none yet.
    fn send_later(&mut self, frame: SecondaryFrame, d: Duration) -> io::Result<()> {
        if self.delayer.is_none() {
            self.delayer = Some(Delayer::start(self.stream.try_clone()?));
        }
        let mut bytes = BytesMut::new();
        self.codec
            .encode(frame, &mut bytes)
            .map_err(|e| io::Error::other(e.to_string()))?;
        if let Some(delayer) = &self.delayer {
            delayer.send(Instant::now() + d, bytes);
        }
        Ok(())
    }

    /// Queue one frame: into the next write, or, once frames are being held back on
    /// this connection, to the delayer, due now (so that it leaves after what is due
    /// before it).
    fn send(&mut self, frame: SecondaryFrame) -> io::Result<()> {
        match &self.delayer {
            None => self
                .codec
                .encode(frame, &mut self.out)
                .map_err(|e| io::Error::other(e.to_string())),
            Some(_) => self.send_later(frame, Duration::ZERO),
        }
    }
}

/// Writes frames held back by `--delay-ms`, each when its own delay is over (so frames
/// may overtake each other, as on a network that reorders).
struct Delayer {
    tx: mpsc::Sender<(Instant, BytesMut)>,
    done: mpsc::Receiver<()>,
}

impl Delayer {
    fn start(stream: Conn) -> Delayer {
        let (tx, rx) = mpsc::channel::<(Instant, BytesMut)>();
        let (done_tx, done) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("delayed-writes".into())
            .spawn(move || {
                delay_loop(stream, rx);
                let _ = done_tx.send(());
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the delayed writer; frames go out late or not at all");
        }
        Delayer { tx, done }
    }

    fn send(&self, due: Instant, bytes: BytesMut) {
        let _ = self.tx.send((due, bytes));
    }

    /// No more frames: write the queued ones when due, waiting at most `within`.
    fn finish(self, within: Duration) {
        drop(self.tx);
        let _ = self.done.recv_timeout(within);
    }
}

struct Due(Instant, u64, BytesMut);

impl PartialEq for Due {
    fn eq(&self, other: &Self) -> bool {
        (self.0, self.1) == (other.0, other.1)
    }
}
impl Eq for Due {}
impl PartialOrd for Due {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Due {
    // Earliest first in a max-heap.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.0, other.1).cmp(&(self.0, self.1))
    }
}

fn delay_loop(stream: Conn, rx: mpsc::Receiver<(Instant, BytesMut)>) {
    let mut queue = BinaryHeap::new();
    let mut seq = 0u64;
    let mut open = true;
    loop {
        let now = Instant::now();
        while queue.peek().is_some_and(|d: &Due| d.0 <= now) {
            if let Some(Due(_, _, bytes)) = queue.pop()
                && stream.write_all(&bytes).is_err()
            {
                return;
            }
        }
        if !open && queue.is_empty() {
            return;
        }
        let next = match queue.peek() {
            Some(d) => rx.recv_timeout(d.0.saturating_duration_since(now)),
            None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
        };
        match next {
            Ok((due, bytes)) => {
                seq += 1;
                queue.push(Due(due, seq, bytes));
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                open = false;
                if let Some(d) = queue.peek() {
                    std::thread::sleep(d.0.saturating_duration_since(Instant::now()));
                }
            }
        }
    }
}
