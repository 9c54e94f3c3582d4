//! The change stream, `GET /messages/stream`: every message of the log as a
//! Server-Sent Event, from a chosen id on, then live as the log grows.
//!
//! The node's replication shell publishes how far its log reaches ([`Progress`]) after
//! every step; each open stream watches that and reads what it has not sent yet from
//! the store, a batch at a time, only when the client has taken the previous events (the
//! HTTP server polls the stream only while the socket accepts more). So a reader that
//! falls behind costs one batch of memory and is served from the log, never from a
//! buffer that grows with its lag, and an idle stream is one parked task.

use crate::api;
use crate::protocol::Entry;
use crate::storage::LogStore;
use actix_web::{HttpRequest, HttpResponse, Responder, web};
use actix_web_lab::sse;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How often an idle stream sends a comment line, so that proxies and clients see the
/// connection alive (the API promises at least every 15 s).
pub const KEEP_ALIVE: Duration = Duration::from_secs(10);

/// What an `EventSource` waits before reconnecting after the connection drops.
pub const RETRY: Duration = Duration::from_secs(1);

/// Entries read from the store at a time for one stream.
pub const BATCH: usize = 256;

/// How far a node's log reaches, as its shell last published it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogProgress {
    /// The highest id readable (written to the operating system) on this node.
    pub written_id: u64,
    /// The highest id a majority of the set holds, as this node knows it.
    pub commit_id: u64,
    /// The node is stopping: streams end so that it can.
    pub stopping: bool,
}

impl LogProgress {
    /// The last id a stream may send.
    fn end(&self, majority: bool) -> u64 {
        if majority {
            self.commit_id.min(self.written_id)
        } else {
            self.written_id
        }
    }
}

/// The publishing side, owned by the node's replication shell (cheap to clone).
#[derive(Clone, Debug)]
pub struct Progress(Arc<watch::Sender<LogProgress>>);

impl Progress {
    /// Starting at a log that reaches `written_id`.
    pub fn new(written_id: u64) -> Self {
        let (tx, _) = watch::channel(LogProgress {
            written_id,
            ..LogProgress::default()
        });
        Self(Arc::new(tx))
    }

    /// The log now reaches `written_id`, and a majority holds up to `commit_id`. Wakes
    /// the streams only when either moved.
    pub fn publish(&self, written_id: u64, commit_id: u64) {
        self.0.send_if_modified(|p| {
            let changed = p.written_id != written_id || p.commit_id != commit_id;
            p.written_id = written_id;
            p.commit_id = commit_id;
            changed
        });
    }

    /// End every stream, now and from now on (the node is stopping).
    pub fn stop(&self) {
        self.0.send_modify(|p| p.stopping = true);
    }

    pub fn current(&self) -> LogProgress {
        *self.0.borrow()
    }

    /// Open streams right now.
    pub fn streams(&self) -> usize {
        self.0.receiver_count()
    }

    fn subscribe(&self) -> watch::Receiver<LogProgress> {
        self.0.subscribe()
    }
}

/// One stream's place in the log.
struct Cursor {
    store: Arc<dyn LogStore>,
    progress: watch::Receiver<LogProgress>,
    /// The next id to send.
    next: u64,
    /// Whether anything was sent yet (`next - 1` is then the last id sent).
    sent: bool,
    /// Events still allowed by `limit`.
    left: u64,
    majority: bool,
    batch: VecDeque<Entry>,
}

impl Cursor {
    /// The next event, waiting for the log to grow if need be; None when the stream
    /// ends (its limit reached, the node stopping, or the log cut below what it sent).
    async fn next_event(&mut self) -> Option<sse::Event> {
        loop {
            if self.left == 0 {
                return None;
            }
            if let Some(e) = self.batch.pop_front() {
                self.left -= 1;
                self.next = e.id + 1;
                self.sent = true;
                return Some(event(&e));
            }
            let p = *self.progress.borrow_and_update();
            if p.stopping {
                return None;
            }
            if self.sent && p.written_id + 1 < self.next && !self.majority {
                // A secondary cut entries this stream had sent (its master had lost
                // them): end it; the client resumes from what it holds. Majority
                // streams never send what can be cut.
                tracing::info!(
                    next = self.next,
                    written = p.written_id,
                    "the log was cut below a stream's position; ending it"
                );
                return None;
            }
            let end = p.end(self.majority);
            if self.next <= end {
                let n = (end - self.next + 1).min(self.left).min(BATCH as u64) as usize;
                let (store, from) = (self.store.clone(), self.next);
                match web::block(move || store.read(from, n)).await {
                    Ok(Ok(entries)) if !entries.is_empty() => {
                        self.batch = entries.into();
                        continue;
                    }
                    // The end moved back meanwhile: wait for the next change.
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(error = %e, "reading the log for a stream failed");
                        return None;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "reading the log for a stream failed");
                        return None;
                    }
                }
            }
            if self.progress.changed().await.is_err() {
                return None; // the node is gone
            }
        }
    }
}

/// One message as an event: `id: <id>` and `data: {"id": .., "message": ..}`.
fn event(e: &Entry) -> sse::Event {
    let data = serde_json::json!({"id": e.id, "message": e.message}).to_string();
    sse::Event::Data(sse::Data::new(data).id(e.id.to_string()))
}

/// What `GET /messages/stream` reads: each node registers one as app data.
#[derive(Clone)]
pub struct Source {
    pub store: Arc<dyn LogStore>,
    pub progress: Progress,
}

/// The log as Server-Sent Events, then live.
#[utoipa::path(get, path = "/messages/stream", tag = "every node",
    params(
        ("from" = Option<u64>, Query, description = "First id wanted (default 1)"),
        ("limit" = Option<u64>, Query, description = "End the stream after this many events (default: never)"),
        ("readConcern" = Option<String>, Query, description = "`local` (default) or `majority`: only what can no longer be rolled back"),
        ("Last-Event-ID" = Option<u64>, Header, description = "Resume after this id (wins over `from`)"),
    ),
    responses(
        (status = 200, description = "text/event-stream: `id: <id>`, `data: {\"id\", \"message\"}` per message; a comment every 10 s", content_type = "text/event-stream", body = String),
        (status = 400, description = "Invalid query or Last-Event-ID", body = crate::api::doc::Error),
    ))]
pub async fn message_stream(req: HttpRequest, src: web::Data<Source>) -> HttpResponse {
    handle(&req, src.store.clone(), &src.progress)
}

/// `GET /messages/stream` over `store`: the query and `Last-Event-ID` say where it
/// starts ([`crate::api::stream_start`]); then the events up to the log's end, and each
/// new one as `progress` announces it; with `readConcern=majority` only up to the
/// commit id. A bad query is a 400 `invalid_query`.
pub fn handle(req: &HttpRequest, store: Arc<dyn LogStore>, progress: &Progress) -> HttpResponse {
    let q = match api::parse_messages_query(req.query_string()).and_then(|q| {
        let last = req.headers().get("last-event-id").map(|v| v.as_bytes());
        api::stream_start(q, last)
    }) {
        Ok(q) => q,
        Err(e) => return crate::web::error_response(&e),
    };
    let cursor = Cursor {
        store,
        progress: progress.subscribe(),
        next: q.from,
        sent: false,
        left: q.limit.map_or(u64::MAX, |l| l as u64),
        majority: q.majority,
        batch: VecDeque::new(),
    };
    let events = futures::stream::unfold(cursor, |mut c| async move {
        let e = c.next_event().await?;
        Some((Ok::<_, std::convert::Infallible>(e), c))
    });
    sse::Sse::from_stream(events)
        .with_keep_alive(KEEP_ALIVE)
        .with_retry_duration(RETRY)
        .respond_to(req)
        .map_into_boxed_body()
}
