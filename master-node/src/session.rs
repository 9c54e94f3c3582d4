//! One actor per secondary connection. It only turns frames into messages for the
//! [`Replicator`] and back, applying `--delay-ms` to what it writes.

use crate::replicator::{Inbound, Register, Replicator, ToSession, Unregister};
use actix::io::{FramedWrite, WriteHandler};
use actix::prelude::*;
use common::config::DelaySpec;
use common::protocol::codec::{CodecError, FrameCodec};
use common::protocol::{ErrorCode, ErrorFrame, MasterFrame, SecondaryFrame};
use common::replication::ConnId;
use std::time::Duration;
use tokio::net::{TcpListener, tcp::OwnedWriteHalf};
use tokio_util::codec::FramedRead;

type Codec = FrameCodec<SecondaryFrame, MasterFrame>;

/// Accept secondaries forever, one [`Session`] each.
pub async fn accept_loop(listener: TcpListener, replicator: Addr<Replicator>, delay: DelaySpec) {
    let mut next: ConnId = 0;
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                next += 1;
                let conn = next;
                let _ = stream.set_nodelay(true);
                let (read, write) = stream.into_split();
                let replicator = replicator.clone();
                Session::create(move |ctx| {
                    Session::add_stream(FramedRead::new(read, Codec::new()), ctx);
                    Session {
                        conn,
                        peer: peer.to_string(),
                        replicator,
                        writer: FramedWrite::new(write, Codec::new(), ctx),
                        delay,
                        closing: false,
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors and the like: back off, keep serving.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

pub struct Session {
    conn: ConnId,
    peer: String,
    replicator: Addr<Replicator>,
    writer: FramedWrite<MasterFrame, OwnedWriteHalf, Codec>,
    delay: DelaySpec,
    /// An error frame is being flushed before the connection closes.
    closing: bool,
}

impl Session {
    /// Write now, or after the artificial delay. Delays are drawn per frame, so frames
    /// may overtake each other, as on a network that reorders.
    fn write(&mut self, frame: MasterFrame, ctx: &mut Context<Self>) {
        if self.delay.is_zero() {
            self.writer.write(frame);
        } else {
            let wait = self.delay.sample(&mut rand::rng());
            ctx.run_later(wait, move |act, _| act.writer.write(frame));
        }
    }

    /// Close after everything already queued (including delayed frames) is written.
    fn close(&mut self, ctx: &mut Context<Self>) {
        if self.delay.is_zero() {
            self.writer.close();
        } else {
            let wait = Duration::from_millis(self.delay.max_ms + 1);
            ctx.run_later(wait, |act, _| act.writer.close());
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
        });
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        self.replicator.do_send(Unregister { conn: self.conn });
    }
}

impl StreamHandler<Result<SecondaryFrame, CodecError>> for Session {
    fn handle(&mut self, item: Result<SecondaryFrame, CodecError>, _: &mut Context<Self>) {
        match item {
            Ok(frame) => self.replicator.do_send(Inbound {
                conn: self.conn,
                frame,
            }),
            Err(e) => {
                tracing::warn!(conn = self.conn, peer = %self.peer, error = %e, "bad input on the comm port; closing");
                let code = match e {
                    CodecError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                    CodecError::Malformed(_) => Some(ErrorCode::MalformedFrame),
                    CodecError::Truncated(_) | CodecError::Io(_) | CodecError::Encode(_) => None,
                };
                if let Some(code) = code {
                    // No artificial delay here: the peer is not a replica we test with.
                    self.writer
                        .write(MasterFrame::Error(ErrorFrame::new(code, e.to_string())));
                }
                // The actor stops once the writer has flushed the error frame.
                self.closing = true;
                self.writer.close();
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The peer closed its side (or the stream failed). If an error frame is still
        // being flushed, the writer stops the actor when it is done.
        if !self.closing {
            ctx.stop();
        }
    }
}

impl Handler<ToSession> for Session {
    type Result = ();
    fn handle(&mut self, msg: ToSession, ctx: &mut Context<Self>) {
        match msg {
            ToSession::Frame(frame) => self.write(frame, ctx),
            ToSession::Close => self.close(ctx),
        }
    }
}

impl WriteHandler<CodecError> for Session {
    fn error(&mut self, err: CodecError, _: &mut Self::Context) -> Running {
        tracing::warn!(conn = self.conn, peer = %self.peer, error = %err, "write failed; closing");
        Running::Stop
    }
}
