//! The secondary's side of the replication connection.

use crate::{Config, SharedCore, Store};
use common::protocol::codec::{CodecError, FrameCodec};
use common::protocol::{ErrorCode, ErrorFrame, MasterFrame, SecondaryFrame};
use common::replication::{SecondaryOutput, SyncSchedule, is_urgent};
use futures::FutureExt;
use futures::{SinkExt, StreamExt};
use rand::RngExt;
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, FramedWrite};
use tracing::Instrument;

type Codec = FrameCodec<MasterFrame, SecondaryFrame>;

const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// Keep a connection to the master for as long as the process runs.
pub async fn follow(cfg: Config, core: SharedCore, store: Store) {
    let master = format!("{}:{}", cfg.master_ip, cfg.master_comm_port);
    let mut backoff = MIN_BACKOFF;
    let mut warned = false;
    loop {
        match TcpStream::connect(master.as_str()).await {
            Ok(stream) => {
                tracing::info!(%master, "connected to the master");
                warned = false;
                let started = Instant::now();
                session(stream, &cfg, &core, &store)
                    .instrument(tracing::info_span!("link", master = %master))
                    .await;
                lock(&core).disconnected();
                tracing::info!(%master, "disconnected from the master");
                if started.elapsed() > MAX_BACKOFF {
                    backoff = MIN_BACKOFF;
                }
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(%master, error = %e, "cannot reach the master; retrying");
                    warned = true;
                }
            }
        }
        let jitter = rand::rng().random_range(0..=backoff.as_millis() as u64 / 2);
        tokio::time::sleep(backoff + Duration::from_millis(jitter)).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

fn lock(core: &SharedCore) -> std::sync::MutexGuard<'_, crate::Core> {
    core.lock().unwrap_or_else(|e| e.into_inner())
}

/// What the writer task is asked to do.
enum Out {
    Frame(SecondaryFrame),
    Close,
}

/// Make what the core appended durable (no-op when nothing is pending).
async fn sync(store: &Store) -> anyhow::Result<()> {
    if store.last_id() > store.durable_id() {
        // On this thread: it runs only the replication tasks (HTTP has its own
        // workers), and nothing here can proceed before the sync anyway.
        store.sync()?;
        metrics::counter!(common::metrics::SYNCS).increment(1);
    }
    Ok(())
}

/// One connection, from handshake to close.
async fn session(stream: TcpStream, cfg: &Config, core: &SharedCore, store: &Store) {
    let _ = stream.set_nodelay(true);
    let (read, write) = stream.into_split();
    let mut reader = FramedRead::new(read, Codec::new());
    let (tx, mut rx) = mpsc::unbounded_channel::<Out>();
    let mut writer_task = actix_web::rt::spawn(async move {
        let mut sink = FramedWrite::new(write, Codec::new());
        while let Some(out) = rx.recv().await {
            match out {
                Out::Frame(f) => {
                    if let Err(e) = sink.send(f).await {
                        tracing::warn!(error = %e, "write to the master failed");
                        return;
                    }
                }
                Out::Close => {
                    let _ = sink.close().await;
                    return;
                }
            }
        }
    });
    let outputs = {
        let mut c = lock(core);
        c.connected(Instant::now());
        c.take_outputs()
    };
    let mut closing = dispatch(outputs, cfg, &tx);
    // What the core answered to frames whose sync is put off (acks), in order.
    let mut held: Vec<SecondaryOutput> = Vec::new();
    let mut schedule = SyncSchedule::default();
    let defer_allowed = store.sync_blocks();
    while !closing {
        let due = schedule.due().map(tokio::time::Instant::from_std);
        tokio::select! {
            _ = tokio::time::sleep_until(due.unwrap_or_else(tokio::time::Instant::now)), if due.is_some() => {
                if schedule.timer(Instant::now()) {
                    if let Err(e) = sync(store).await {
                        tracing::error!(error = %e, "sync failed; reconnecting");
                        break;
                    }
                    closing = dispatch(std::mem::take(&mut held), cfg, &tx);
                }
            }
            item = reader.next() => match item {
                Some(Ok(frame)) => {
                    // Group commit: take every frame that has already arrived, make what
                    // they stored durable with one sync, and only then acknowledge (or,
                    // if no write waits for this secondary, put that off a little:
                    // SyncSchedule).
                    let mut frames = vec![frame];
                    while let Some(Some(Ok(f))) = reader.next().now_or_never() {
                        frames.push(f);
                    }
                    let now = Instant::now();
                    let urgent = frames.iter().any(is_urgent);
                    let outputs = {
                        let mut c = lock(core);
                        for f in frames {
                            c.handle_frame(now, f);
                        }
                        c.take_outputs()
                    };
                    let sync_now = schedule.stored(now, urgent, &outputs, defer_allowed);
                    held.extend(outputs);
                    if sync_now {
                        if let Err(e) = sync(store).await {
                            tracing::error!(error = %e, "sync failed; reconnecting");
                            break;
                        }
                        closing = dispatch(std::mem::take(&mut held), cfg, &tx);
                    }
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "bad frame from the master; closing");
                    let code = match e {
                        CodecError::TooLarge { .. } => Some(ErrorCode::FrameTooLarge),
                        CodecError::Malformed(_) => Some(ErrorCode::MalformedFrame),
                        _ => None,
                    };
                    if let Some(code) = code {
                        let _ = tx.send(Out::Frame(SecondaryFrame::Error(ErrorFrame::new(code, e.to_string()))));
                    }
                    let _ = tx.send(Out::Close);
                    closing = true;
                }
                None => {
                    // The master closed the connection: nothing left worth writing.
                    writer_task.abort();
                    return;
                }
            },
            _ = &mut writer_task => return,
        }
    }
    // Let the writer flush what is queued (an error frame, delayed frames), bounded.
    drop(tx);
    let grace = Duration::from_millis(cfg.delay.max_ms + 1000);
    let _ = tokio::time::timeout(grace, writer_task).await;
}

/// Hand the core's outputs to the writer, applying `--drop-rate` to acks and
/// `--delay-ms` to every frame. Returns true if the core asked to close.
fn dispatch(outputs: Vec<SecondaryOutput>, cfg: &Config, tx: &mpsc::UnboundedSender<Out>) -> bool {
    let mut close = false;
    for out in outputs {
        let item = match out {
            SecondaryOutput::Send(frame) => {
                if let SecondaryFrame::Ack { upto, .. } = &frame
                    && cfg.drop_rate > 0.0
                    && rand::rng().random_bool(cfg.drop_rate)
                {
                    tracing::debug!(upto, "dropping an ack (--drop-rate)");
                    continue;
                }
                Out::Frame(frame)
            }
            SecondaryOutput::Close => {
                close = true;
                Out::Close
            }
        };
        if cfg.delay.is_zero() {
            let _ = tx.send(item);
        } else {
            // Each frame is delayed on its own, so frames may overtake each other; a
            // close waits for the longest delay so that it comes after them.
            let wait = match item {
                Out::Close => Duration::from_millis(cfg.delay.max_ms + 1),
                Out::Frame(_) => cfg.delay.sample(&mut rand::rng()),
            };
            let tx = tx.clone();
            actix_web::rt::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(item);
            });
        }
    }
    close
}
