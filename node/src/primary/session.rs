//! One actor per secondary connection. It turns the frames it reads into messages for
//! the [`Replicator`], and owns the connection's [`Outbox`], through which frames go
//! out (those a fault rule or `--delay-ms` holds back, after their delay).

use super::replicator::{Inbound, Register, Replicator, ToSession, Unregister};
use crate::http::Role;
use crate::member::{Event, Node};
use crate::wire::{Receiver, Sender};
use actix::prelude::*;
use bytes::BytesMut;
use common::protocol::codec::{CodecError, FrameCodec};
use common::protocol::{ErrorCode, ErrorFrame, MasterFrame, SecondaryFrame};
use common::replication::ConnId;
use futures::StreamExt;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::codec::{Encoder, FramedRead};

/// How long a peer may take to send its first frame (and each frame of the key
/// handshake before it).
const FIRST_FRAME_TIMEOUT: Duration = Duration::from_secs(10);

/// The most comm connections open at once: members' replication links, vote
/// requests, and anything else that connects. A set has a handful of members; the rest
/// of the room is for reconnects and elections.
pub const MAX_COMM_CONNECTIONS: usize = 1024;

/// The most comm connections still in their handshake (before their first frame,
/// after the key handshake if there is one), each for at most [`FIRST_FRAME_TIMEOUT`]
/// a step: peers that connect and say nothing cannot take every connection.
pub const MAX_HANDSHAKING: usize = 128;

/// One taken place in a count of connections, given back when dropped.
struct Slot(Arc<AtomicUsize>);

impl Slot {
    /// A place, if fewer than `max` are taken.
    fn take(count: &Arc<AtomicUsize>, max: usize) -> Option<Slot> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Slot(count.clone()))
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

type Codec = FrameCodec<SecondaryFrame, MasterFrame>;

/// The sending end of a secondary's connection, shared by its [`Session`] and the
/// [`Replicator`], which run on the same thread. The replicator writes a frame through
/// it the moment it decides to send it, without a trip through the session's mailbox
/// (docs/benchmarks.md); whatever the socket does not take at once waits here for the
/// session's flusher, in order.
pub struct Outbox {
    half: Sender,
    state: Mutex<OutState>,
    /// Wakes the flusher: bytes are waiting, the connection failed, or it is closing.
    flush: Notify,
}

struct OutState {
    codec: Codec,
    buf: BytesMut,
    /// Close once `buf` is written; take no more frames.
    closing: bool,
    /// Writing failed: the flusher reports it and the session ends.
    failed: Option<io::Error>,
}

impl Outbox {
    fn new(half: Sender) -> Self {
        Outbox {
            half,
            state: Mutex::new(OutState {
                codec: Codec::new(),
                buf: BytesMut::new(),
                closing: false,
                failed: None,
            }),
            flush: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queue `frame` and write as much as the socket takes now, without waiting.
    pub fn send(&self, frame: MasterFrame) {
        let mut st = self.lock();
        if st.closing || st.failed.is_some() {
            return;
        }
        let OutState { codec, buf, .. } = &mut *st;
        if let Err(e) = codec.encode(frame, buf) {
            tracing::error!(error = %e, "cannot encode a frame; closing the connection");
            st.failed = Some(io::Error::other(e.to_string()));
        }
        if !self.write_some(&mut st) || st.failed.is_some() {
            drop(st);
            self.flush.notify_one();
        }
    }

    /// Take no more frames; close once everything queued is written.
    pub fn close(&self) {
        self.lock().closing = true;
        self.flush.notify_one();
    }

    /// Write from `buf` until everything is out (true) or the socket would block.
    fn write_some(&self, st: &mut OutState) -> bool {
        if st.failed.is_some() {
            return true;
        }
        match self.half.try_send(&mut st.buf) {
            Ok(done) => done,
            Err(e) => {
                st.failed = Some(e);
                true
            }
        }
    }

    /// Write what waits whenever the socket can take it, until closed (Ok) or failed.
    async fn flusher(self: Arc<Self>) -> io::Result<()> {
        loop {
            self.flush.notified().await;
            loop {
                let (empty, closing) = {
                    let mut st = self.lock();
                    let done = self.write_some(&mut st);
                    if let Some(e) = st.failed.take() {
                        st.closing = true;
                        return Err(e);
                    }
                    (done, st.closing)
                };
                if empty {
                    if closing {
                        // The peer sees the end now, whoever still holds the outbox.
                        return self.half.shutdown();
                    }
                    break;
                }
                self.half.writable().await?;
            }
        }
    }
}

/// Accept connections on the comm port forever. The first frame says what a
/// connection is for: a candidate's vote request (answered, then closed), or a
/// secondary's `Hello`, which gets a [`Session`] while this node is the master and,
/// otherwise, a `NotMaster` refusal naming the master if this node knows it.
pub async fn accept_loop(listener: TcpListener, node: Arc<Node>) {
    let mut next: ConnId = 0;
    let open = Arc::new(AtomicUsize::new(0));
    let handshaking = Arc::new(AtomicUsize::new(0));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                let slots = Slot::take(&open, MAX_COMM_CONNECTIONS)
                    .and_then(|o| Slot::take(&handshaking, MAX_HANDSHAKING).map(|h| (o, h)));
                let Some((slot, handshake)) = slots else {
                    // Told why, if the socket takes it at once; never waited on.
                    let msg = format!(
                        "too many connections ({} open, {} in their handshake; the most are {MAX_COMM_CONNECTIONS} and {MAX_HANDSHAKING})",
                        open.load(Ordering::Acquire),
                        handshaking.load(Ordering::Acquire)
                    );
                    tracing::warn!(%peer, "refused a comm connection: {msg}");
                    let mut buf = BytesMut::new();
                    let frame = MasterFrame::Error(ErrorFrame::new(ErrorCode::Other, msg));
                    if Codec::new().encode(frame, &mut buf).is_ok() {
                        let _ = stream.try_write(&buf);
                    }
                    continue;
                };
                next += 1;
                let conn = next;
                let node = node.clone();
                actix_web::rt::spawn(serve_connection(conn, stream, peer, node, slot, handshake));
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn serve_connection(
    conn: ConnId,
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    node: Arc<Node>,
    slot: Slot,
    handshake: Slot,
) {
    let _ = stream.set_nodelay(true);
    // With --tls-*, the TLS handshake first (a peer without a certificate of the CA
    // goes no further), inside the same deadline as a first frame.
    let accepted = tokio::time::timeout(
        FIRST_FRAME_TIMEOUT,
        crate::wire::accept(stream, node.cfg.tls.as_ref()),
    )
    .await;
    let (read, write) = match accepted {
        Ok(Ok(halves)) => halves,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "refused a peer on the comm port");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "refused a peer on the comm port: no TLS handshake in time");
            return;
        }
    };
    let mut frames = FramedRead::new(read, Codec::new());
    if let Err(why) = authenticate(&node, &mut frames, &write).await {
        tracing::warn!(%peer, %why, "refused a peer on the comm port: unauthorized");
        let mut e = ErrorFrame::new(ErrorCode::Unauthorized, why);
        e.term = node.term();
        write_one(&write, MasterFrame::Error(e)).await;
        return;
    }
    let first = match tokio::time::timeout(FIRST_FRAME_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(frame))) => frame,
        Ok(Some(Err(e))) => {
            tracing::warn!(%peer, error = %e, "bad input on the comm port; closing");
            let code = match e {
                CodecError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                CodecError::Malformed(_) => Some(ErrorCode::MalformedFrame),
                CodecError::Truncated(_) | CodecError::Io(_) | CodecError::Encode(_) => None,
            };
            if let Some(code) = code {
                let frame = MasterFrame::Error(ErrorFrame::new(code, e.to_string()));
                write_one(&write, frame).await;
            }
            return;
        }
        Ok(None) => return,
        Err(_) => {
            tracing::debug!(%peer, "no first frame in time; closing");
            return;
        }
    };
    drop(handshake);
    if let SecondaryFrame::AuthHello { .. } = first {
        tracing::warn!(%peer, "refused a peer that authenticates: this node has no cluster key");
        let e = ErrorFrame::new(
            ErrorCode::Unauthorized,
            "this node runs without --cluster-key-file; the members' settings differ",
        );
        write_one(&write, MasterFrame::Error(e)).await;
        return;
    }
    if let SecondaryFrame::RequestVote(req) = first {
        use crate::faults::{Dir, Frame, Verdict};
        let candidate = req.candidate.clone();
        match node.faults.judge(Some(&candidate), Dir::In, Frame::Vote) {
            Verdict::Drop => return,
            Verdict::Delay(d) => tokio::time::sleep(d).await,
            Verdict::Pass => {}
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        node.send(Event::VoteRequest(req, tx));
        if let Ok(resp) = rx.await {
            match node.faults.judge(Some(&candidate), Dir::Out, Frame::Vote) {
                Verdict::Drop => return,
                Verdict::Delay(d) => tokio::time::sleep(d).await,
                Verdict::Pass => {}
            }
            write_one(&write, MasterFrame::Vote(resp)).await;
        }
        return;
    }
    // The member this connection belongs to, by the name its Hello gives.
    let member = match &first {
        SecondaryFrame::Hello { name, .. } => Some(name.clone()),
        _ => None,
    };
    // Another protocol version is told so whatever this node's role (a member that is
    // not the master, or not settled yet, would otherwise answer NotMaster).
    if let SecondaryFrame::Hello { version, .. } = &first
        && *version != common::protocol::PROTOCOL_VERSION
    {
        let msg = format!(
            "this node speaks protocol version {}, the peer sent version {version}",
            common::protocol::PROTOCOL_VERSION
        );
        write_one(
            &write,
            MasterFrame::Error(ErrorFrame::new(ErrorCode::VersionMismatch, msg)),
        )
        .await;
        return;
    }
    let replicator = match node.role() {
        Role::Primary(r) if r.connected() => r,
        _ => {
            let mut e = if matches!(first, SecondaryFrame::Hello { .. }) {
                let master = node.master_comm();
                let msg = match &master {
                    Some(m) => format!("this node is not the master; the master is at {m}"),
                    None => "this node is not the master and knows of none now".to_string(),
                };
                let mut e = ErrorFrame::new(ErrorCode::NotMaster, msg);
                e.master = master;
                e
            } else {
                ErrorFrame::new(
                    ErrorCode::HandshakeRequired,
                    "the first frame must be Hello",
                )
            };
            e.term = node.term();
            write_one(&write, MasterFrame::Error(e)).await;
            return;
        }
    };
    let session_node = node.clone();
    Session::create(move |ctx| {
        Session::add_stream(frames, ctx);
        let outbox = Arc::new(Outbox::new(write));
        ctx.spawn(flush_then_stop(outbox.clone()));
        Session {
            conn,
            peer: peer.to_string(),
            member,
            node: session_node,
            replicator,
            outbox,
            closing: false,
            first: Some(first),
            _slot: slot,
        }
    });
}

/// With `--cluster-key-file`: the challenge-response that opens every connection
/// (`common::protocol::auth`); Err says why the peer is refused. (Without a key, a
/// peer that opens with authentication is refused once its first frame is read.)
async fn authenticate(
    node: &Node,
    frames: &mut FramedRead<Receiver, Codec>,
    write: &Sender,
) -> Result<(), String> {
    use common::protocol::auth;
    let Some(key) = &node.cfg.cluster_key else {
        return Ok(());
    };
    let mut next = async || match tokio::time::timeout(FIRST_FRAME_TIMEOUT, frames.next()).await {
        Ok(Some(Ok(f))) => Ok(f),
        Ok(Some(Err(e))) => Err(format!("bad frame: {e}")),
        Ok(None) => Err("closed during authentication".to_string()),
        Err(_) => Err("no authentication in time".to_string()),
    };
    let client = match next().await? {
        SecondaryFrame::AuthHello { nonce } => nonce,
        other => {
            return Err(format!(
                "this set needs the cluster key; the first frame was {} instead of AuthHello",
                other.name()
            ));
        }
    };
    let server = auth::nonce();
    let challenge = MasterFrame::AuthChallenge {
        proof: key.server_proof(&client, &server),
        nonce: server.clone(),
    };
    let mut buf = BytesMut::new();
    Codec::new()
        .encode(challenge, &mut buf)
        .map_err(|e| e.to_string())?;
    tokio::time::timeout(FIRST_FRAME_TIMEOUT, write.send_all(&buf))
        .await
        .map_err(|_| "write timed out".to_string())?
        .map_err(|e| e.to_string())?;
    match next().await? {
        SecondaryFrame::AuthProof { proof } if key.check_client(&client, &server, &proof) => Ok(()),
        SecondaryFrame::AuthProof { .. } => {
            Err("wrong cluster key (the proof does not match)".into())
        }
        other => Err(format!("expected AuthProof, got {}", other.name())),
    }
}

/// Write one frame and close (a refusal, a vote).
async fn write_one(write: &Sender, frame: MasterFrame) {
    let mut buf = BytesMut::new();
    if Codec::new().encode(frame, &mut buf).is_ok() {
        let _ = tokio::time::timeout(FIRST_FRAME_TIMEOUT, write.send_all(&buf)).await;
    }
    let _ = write.shutdown();
}

pub struct Session {
    conn: ConnId,
    peer: String,
    /// The member's name, from its Hello (for fault rules).
    member: Option<String>,
    node: Arc<Node>,
    replicator: Addr<Replicator>,
    outbox: Arc<Outbox>,
    /// An error frame is being flushed before the connection closes.
    closing: bool,
    /// The first frame, read before the session existed: the replicator gets it once
    /// the session is registered.
    first: Option<SecondaryFrame>,
    /// Its place among the comm port's connections, given back when the session ends.
    _slot: Slot,
}

impl Session {
    /// Hand a frame from the peer to the replicator, unless a fault rule drops it or
    /// holds it back.
    fn inbound(&mut self, frame: SecondaryFrame, ctx: &mut Context<Self>) {
        use crate::faults::{Dir, Frame, Verdict};
        let msg = Inbound {
            conn: self.conn,
            frame,
        };
        match self
            .node
            .faults
            .judge(self.member.as_deref(), Dir::In, Frame::Replication)
        {
            Verdict::Pass => self.replicator.do_send(msg),
            Verdict::Drop => {}
            Verdict::Delay(d) => {
                ctx.run_later(d, move |act, _| act.replicator.do_send(msg));
            }
        }
    }

    /// Close after everything already queued (including frames a fault rule, or
    /// `--delay-ms`, holds back) is written.
    fn close(&mut self, ctx: &mut Context<Self>) {
        let wait = self.node.faults.max_delay();
        if wait.is_zero() {
            self.outbox.close();
        } else {
            ctx.run_later(wait + Duration::from_millis(1), |act, _| act.outbox.close());
        }
    }
}

impl Actor for Session {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.replicator.do_send(Register {
            conn: self.conn,
            peer: self.peer.clone(),
            session: ctx.address().recipient(),
            outbox: self.outbox.clone(),
            member: self.member.clone(),
        });
        if let Some(frame) = self.first.take() {
            self.inbound(frame, ctx);
        }
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.replicator.do_send(Unregister { conn: self.conn });
    }
}

impl StreamHandler<Result<SecondaryFrame, CodecError>> for Session {
    fn handle(&mut self, item: Result<SecondaryFrame, CodecError>, ctx: &mut Context<Self>) {
        match item {
            Ok(frame) => self.inbound(frame, ctx),
            Err(e) => {
                tracing::warn!(conn = self.conn, peer = %self.peer, error = %e, "bad input on the comm port; closing");
                let code = match e {
                    CodecError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                    CodecError::Malformed(_) => Some(ErrorCode::MalformedFrame),
                    CodecError::Truncated(_) | CodecError::Io(_) | CodecError::Encode(_) => None,
                };
                if let Some(code) = code {
                    // No artificial delay here: the peer is not a replica we test with.
                    self.outbox
                        .send(MasterFrame::Error(ErrorFrame::new(code, e.to_string())));
                }
                // The actor stops once the flusher has written the error frame.
                self.closing = true;
                self.outbox.close();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The peer closed its side (or the stream failed). If an error frame is still
        // being flushed, the flusher stops the actor when it is done.
        if !self.closing {
            ctx.stop();
        }
    }
}

impl Handler<ToSession> for Session {
    type Result = ();
    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::Delayed(frame, d) => {
                ctx.run_later(d, move |act, _| act.outbox.send(*frame));
            }
            ToSession::Close => self.close(ctx),
        }
    }
}

/// Run the outbox's flusher in the session; stop the session when it ends.
fn flush_then_stop(outbox: Arc<Outbox>) -> impl ActorFuture<Session, Output = ()> {
    fut::wrap_future::<_, Session>(outbox.flusher()).map(|result, act, ctx| {
        if let Err(err) = result {
            tracing::warn!(conn = act.conn, peer = %act.peer, error = %err, "write failed; closing");
        }
        ctx.stop();
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use common::protocol::Entry;
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;

    fn batch(i: u64) -> MasterFrame {
        MasterFrame::AddMessages {
            entries: vec![Entry {
                term: 1,
                id: i,
                message: format!("{i:0>32768}"),
                request_id: None,
            }],
            commit_id: 0,
            urgent: true,
            term: 1,
        }
    }

    /// An outbox on one end of a loopback connection, its flusher running, and the
    /// other end.
    async fn connected() -> (
        Arc<Outbox>,
        actix_web::rt::task::JoinHandle<io::Result<()>>,
        tokio::net::TcpStream,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (peer, _) = listener.accept().await.unwrap();
        let (_read, write) = crate::wire::accept(client, None).await.unwrap();
        let outbox = Arc::new(Outbox::new(write));
        let flusher = actix_web::rt::spawn(outbox.clone().flusher());
        (outbox, flusher, peer)
    }

    /// Frames sent while the peer reads nothing fill the socket; the rest waits in the
    /// outbox, goes out in order once the peer reads, and a close comes after all of it.
    #[actix_web::test]
    async fn what_the_socket_does_not_take_goes_out_later_in_order() {
        let (outbox, flusher, mut peer) = connected().await;
        const FRAMES: u64 = 600; // ~20 MB, far more than loopback's socket buffers
        for i in 1..=FRAMES {
            outbox.send(batch(i));
        }
        assert!(
            !outbox.lock().buf.is_empty(),
            "the socket should not have taken everything at once"
        );
        outbox.close();
        outbox.send(batch(FRAMES + 1)); // refused: closing

        let mut got = Vec::new();
        peer.read_to_end(&mut got).await.unwrap(); // ends: the flusher closed
        flusher.await.unwrap().unwrap();
        let mut buf = BytesMut::from(&got[..]);
        let mut codec = FrameCodec::<MasterFrame, SecondaryFrame>::new();
        let mut ids = Vec::new();
        while let Some(MasterFrame::AddMessages { entries, .. }) = codec.decode(&mut buf).unwrap() {
            ids.extend(entries.iter().map(|e| e.id));
        }
        assert!(buf.is_empty(), "nothing after the last whole frame");
        assert_eq!(ids, (1..=FRAMES).collect::<Vec<_>>());
    }

    /// A write to a connection the peer has closed fails the outbox: the flusher
    /// reports it (and so the session ends) instead of queueing forever.
    #[actix_web::test]
    async fn a_failed_connection_ends_the_flusher_with_the_error() {
        let (outbox, flusher, peer) = connected().await;
        drop(peer);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !flusher.is_finished() {
            assert!(
                std::time::Instant::now() < deadline,
                "the flusher never failed"
            );
            outbox.send(batch(1));
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(flusher.await.unwrap().is_err());
    }
}
