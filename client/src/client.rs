//! The client's I/O: one monitor per server calling `/hello`, server selection that
//! waits for the topology to offer a server, retryable writes, reads and change streams
//! that follow the master across elections. The decisions are the [`Topology`]'s.
//!
//! Runs on an actix (tokio current-thread) runtime: `actix_rt::System::new().block_on`
//! in a program, `#[actix_rt::test]` in a test. Dropping the [`Client`] stops its
//! monitors.

use crate::sse::{SseItem, SseParser};
use crate::topology::{Hello, ReadPreference, ServerType, Topology};
use futures::StreamExt;
use serde_json::{Value, json};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How the client watches the set and how long it waits.
#[derive(Debug, Clone)]
pub struct Options {
    /// Time between two `/hello` checks of a server (MongoDB's heartbeatFrequencyMS;
    /// chorus elects in about a second, so the default is short).
    pub heartbeat: Duration,
    /// The shortest time between two checks of one server, however often an immediate
    /// check is asked for (minHeartbeatFrequencyMS).
    pub min_heartbeat: Duration,
    /// How long an operation waits for a suitable server (serverSelectionTimeoutMS).
    pub selection_timeout: Duration,
    /// The longest a `/hello` or an operation's HTTP request may take.
    pub request_timeout: Duration,
    /// A change stream that sends nothing (not even its keep-alive, every 15 s at the
    /// latest) for this long is taken for dead and resumed elsewhere.
    pub stream_silence: Duration,
    /// Speak HTTPS, verifying the members with this configuration (see
    /// [`tls_config`]); None: plain HTTP.
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
}

/// [`tls_config`] of a path given as text (a command-line value).
pub fn tls_config_from(ca: &str) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    tls_config(std::path::Path::new(ca))
}

/// A TLS configuration that trusts the certificate authority in the PEM file `ca`
/// (the members' `--tls-ca`), for [`Options::tls`].
pub fn tls_config(ca: &std::path::Path) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::{CertificateDer, pem::PemObject};
    let certs = CertificateDer::pem_file_iter(ca)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("cannot read the CA file {}: {e}", ca.display()))?;
    let mut roots = rustls::RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca.display()))?;
    }
    if roots.is_empty() {
        return Err(format!("{} holds no PEM certificate", ca.display()));
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(std::sync::Arc::new(config))
}

impl Default for Options {
    fn default() -> Self {
        Self {
            heartbeat: Duration::from_millis(500),
            min_heartbeat: Duration::from_millis(100),
            selection_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(10),
            stream_silence: Duration::from_secs(35),
            tls: None,
        }
    }
}

/// Why an operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No server suitable for the operation appeared in time.
    #[error("no {wanted} found within {} ms; {topology}", waited.as_millis())]
    NoServer {
        wanted: &'static str,
        waited: Duration,
        topology: String,
    },
    /// The server answered with an error (`{"error", "code"}` in `body`).
    #[error("{server} answered {status} {code}: {message}")]
    Refused {
        server: String,
        status: u16,
        code: String,
        message: String,
        body: Value,
    },
    /// The request did not get an answer.
    #[error("{server}: {message}")]
    Network { server: String, message: String },
}

impl Error {
    fn refused(server: &str, status: u16, body: Value) -> Self {
        Error::Refused {
            server: server.to_string(),
            status,
            code: body["code"].as_str().unwrap_or("unknown").to_string(),
            message: body["error"]
                .as_str()
                .map_or_else(|| body.to_string(), str::to_string),
            body,
        }
    }
}

/// A write as the client sends it.
#[derive(Debug, Clone, Default)]
pub struct Write {
    pub message: String,
    /// A number of members or `"majority"`; the server's default (1) when None.
    pub write_concern: Option<Value>,
    pub timeout_ms: Option<u64>,
    /// The idempotency key; one is generated when None, so that the retry is safe.
    pub request_id: Option<String>,
}

/// A write the master acknowledged.
#[derive(Debug, Clone)]
pub struct Written {
    /// The `201` body: `id`, `term`, `acks`, `ackedBy`, ...
    pub body: Value,
    pub id: u64,
    pub request_id: String,
    /// The master that answered.
    pub server: String,
    /// True if the first attempt failed and this is the retry's answer.
    pub retried: bool,
}

/// One message of the log.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Message {
    pub id: u64,
    pub message: String,
}

/// What a read asks for.
#[derive(Debug, Clone, Copy, Default)]
pub struct Read {
    pub from: u64,
    pub limit: Option<usize>,
    /// Only what a majority holds (`readConcern=majority`): never rolled back.
    pub majority: bool,
    pub preference: ReadPreference,
}

impl Read {
    fn query(&self, from: u64, limit: Option<usize>) -> String {
        let mut q = format!("from={from}");
        if let Some(l) = limit {
            q.push_str(&format!("&limit={l}"));
        }
        if self.majority {
            q.push_str("&readConcern=majority");
        }
        q
    }
}

struct Inner {
    topology: RefCell<Topology>,
    opts: Options,
    http: awc::Client,
    /// Bumped after every change a monitor made to the topology.
    changed: watch::Sender<u64>,
    /// Counts requests for an immediate check of every server: a monitor that sees a
    /// newer count than at its last check checks again (a request made while it was
    /// busy is not lost).
    check_now: watch::Sender<u64>,
    monitors: RefCell<HashMap<String, tokio::task::JoinHandle<()>>>,
}

impl Inner {
    /// `https` with [`Options::tls`], else `http`.
    fn scheme(&self) -> &'static str {
        if self.opts.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }
}

/// A client of one replica set.
pub struct Client {
    inner: Rc<Inner>,
}

impl Drop for Client {
    fn drop(&mut self) {
        for (_, m) in self.inner.monitors.borrow_mut().drain() {
            m.abort();
        }
    }
}

fn random_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

impl Client {
    /// A client of the set that `seeds` (HTTP addresses, `host:port`) belong to; its
    /// monitors start at once.
    pub fn new<S: AsRef<str>>(seeds: &[S], opts: Options) -> Self {
        let http = awc::Client::builder()
            .timeout(opts.request_timeout)
            .disable_redirects();
        let http = match &opts.tls {
            Some(tls) => http
                .connector(awc::Connector::new().rustls_0_23(tls.clone()))
                .finish(),
            None => http.finish(),
        };
        let inner = Rc::new(Inner {
            topology: RefCell::new(Topology::new(seeds)),
            opts,
            http,
            changed: watch::channel(0).0,
            check_now: watch::channel(0).0,
            monitors: RefCell::new(HashMap::new()),
        });
        sync_monitors(&inner);
        Self { inner }
    }

    /// The topology as the monitors last saw it.
    pub fn topology(&self) -> Topology {
        self.inner.topology.borrow().clone()
    }

    /// Ask every monitor to check its server now (at most once per `min_heartbeat`).
    pub fn check_now(&self) {
        self.inner.check_now.send_modify(|n| *n += 1);
    }

    /// Wait (at most `within`) until every server of the topology has been checked at
    /// least once, so that it has a name and a state, or failed.
    pub async fn wait_checked(&self, within: Duration) {
        let mut changed = self.inner.changed.subscribe();
        let deadline = Instant::now() + within;
        loop {
            let all = self
                .inner
                .topology
                .borrow()
                .servers()
                .all(|s| s.hello.is_some() || s.error.is_some());
            let left = deadline.saturating_duration_since(Instant::now());
            if all || left.is_zero() || tokio::time::timeout(left, changed.changed()).await.is_err()
            {
                return;
            }
        }
    }

    /// Wait until `pick` finds a server in the topology, up to the selection timeout.
    async fn select(
        &self,
        wanted: &'static str,
        pick: impl Fn(&Topology) -> Option<String>,
    ) -> Result<String, Error> {
        let started = Instant::now();
        let deadline = started + self.inner.opts.selection_timeout;
        let mut changed = self.inner.changed.subscribe();
        loop {
            if let Some(addr) = pick(&self.inner.topology.borrow()) {
                return Ok(addr);
            }
            self.check_now();
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || tokio::time::timeout(left, changed.changed()).await.is_err() {
                return Err(Error::NoServer {
                    wanted,
                    waited: started.elapsed(),
                    topology: self.inner.topology.borrow().describe(),
                });
            }
        }
    }

    /// The master's HTTP address, waiting for one to be known.
    pub async fn select_primary(&self) -> Result<String, Error> {
        self.select("master", |t| t.select_write().map(|s| s.addr.clone()))
            .await
    }

    /// A server for a read with this preference.
    pub async fn select_read(&self, pref: ReadPreference) -> Result<String, Error> {
        let wanted = match pref {
            ReadPreference::Primary => "master",
            ReadPreference::Secondary => "secondary",
            ReadPreference::Nearest => "member",
        };
        self.select(wanted, |t| {
            t.select(pref, |n| rand::random_range(0..n.max(1)))
                .map(|s| s.addr.clone())
        })
        .await
    }

    /// The server failed an operation: it is Unknown until its monitor hears from it,
    /// which happens at once.
    fn failed(&self, addr: &str, why: &str) {
        self.inner.topology.borrow_mut().on_error(addr, why);
        self.inner.changed.send_modify(|g| *g += 1);
        self.check_now();
    }

    /// Append a message on the master, retried once (with the same `requestId`, on the
    /// master selected afresh) after a network error or a `503 not_writable`: MongoDB's
    /// retryable writes. The server answers a retry of a write that survived with the
    /// first attempt's id, so the message is in the log at most once.
    pub async fn write(&self, w: &Write) -> Result<Written, Error> {
        let request_id = w.request_id.clone().unwrap_or_else(random_id);
        let mut body = json!({"message": w.message, "requestId": request_id});
        if let Some(wc) = &w.write_concern {
            body["writeConcern"] = wc.clone();
        }
        if let Some(t) = w.timeout_ms {
            body["timeoutMs"] = json!(t);
        }
        // The request may wait for its write concern up to its own timeout.
        let wait =
            self.inner.opts.request_timeout + Duration::from_millis(w.timeout_ms.unwrap_or(10_000));
        let mut last = None;
        for attempt in 0..2 {
            let addr = match self.select_primary().await {
                Ok(a) => a,
                Err(e) => return Err(last.unwrap_or(e)),
            };
            let url = format!("{}://{addr}/newMessage", self.inner.scheme());
            let sent = self
                .inner
                .http
                .post(&url)
                .timeout(wait)
                .send_json(&body)
                .await;
            let err = match sent {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let v: Value =
                        resp.json().limit(1 << 20).await.unwrap_or_else(
                            |e| json!({"error": format!("unreadable answer: {e}")}),
                        );
                    if status == 201 {
                        return Ok(Written {
                            id: v["id"].as_u64().unwrap_or(0),
                            body: v,
                            request_id,
                            server: addr,
                            retried: attempt == 1,
                        });
                    }
                    let e = Error::refused(&addr, status, v);
                    let not_writable = matches!(&e, Error::Refused { status: 503, code, .. } if code == "not_writable");
                    if !not_writable {
                        return Err(e);
                    }
                    self.failed(&addr, "not primary");
                    e
                }
                Err(e) => {
                    self.failed(&addr, &e.to_string());
                    Error::Network {
                        server: addr,
                        message: e.to_string(),
                    }
                }
            };
            last = Some(err);
        }
        Err(last.expect("two attempts made"))
    }

    /// One page of the log (`GET /messages`), from a server the preference allows;
    /// retried once on another after a network error.
    pub async fn read(&self, r: &Read) -> Result<Vec<Message>, Error> {
        let mut last = None;
        for _ in 0..2 {
            let addr = match self.select_read(r.preference).await {
                Ok(a) => a,
                Err(e) => return Err(last.unwrap_or(e)),
            };
            let url = format!(
                "{}://{addr}/messages?{}",
                self.inner.scheme(),
                r.query(r.from.max(1), r.limit)
            );
            match self.inner.http.get(&url).send().await {
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let body = resp.body().limit(1 << 30).await;
                    let body = match body {
                        Ok(b) => b,
                        Err(e) => {
                            self.failed(&addr, &e.to_string());
                            last = Some(Error::Network {
                                server: addr,
                                message: e.to_string(),
                            });
                            continue;
                        }
                    };
                    if status != 200 {
                        let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        return Err(Error::refused(&addr, status, v));
                    }
                    return serde_json::from_slice(&body).map_err(|e| Error::Network {
                        server: addr,
                        message: format!("unreadable messages: {e}"),
                    });
                }
                Err(e) => {
                    self.failed(&addr, &e.to_string());
                    last = Some(Error::Network {
                        server: addr,
                        message: e.to_string(),
                    });
                }
            }
        }
        Err(last.expect("two attempts made"))
    }

    /// Follow the log from `r.from` through change streams, calling `each` for every
    /// message in id order, once, until it returns false (or `r.limit` messages came).
    /// When the server streaming dies, stalls or stops being eligible, the stream
    /// resumes on a server selected afresh from the next id, so nothing is skipped or
    /// repeated. With `r.majority` nothing shown can be rolled back later.
    pub async fn follow(
        &self,
        r: &Read,
        mut each: impl FnMut(Message) -> bool,
    ) -> Result<(), Error> {
        let mut next = r.from.max(1);
        let mut left = r.limit;
        loop {
            if left == Some(0) {
                return Ok(());
            }
            let addr = self.select_read(r.preference).await?;
            let url = format!(
                "{}://{addr}/messages/stream?{}",
                self.inner.scheme(),
                r.query(next, None)
            );
            let resp = self
                .inner
                .http
                .get(&url)
                .timeout(Duration::from_secs(365 * 24 * 3600))
                .insert_header(("accept", "text/event-stream"))
                .send()
                .await;
            let mut resp = match resp {
                Ok(r) => r,
                Err(e) => {
                    self.failed(&addr, &e.to_string());
                    continue;
                }
            };
            if resp.status() != 200 {
                let v = resp.json().await.unwrap_or(Value::Null);
                return Err(Error::refused(&addr, resp.status().as_u16(), v));
            }
            let mut parser = SseParser::new();
            // Why the stream ended, and whether that says the server failed.
            let (why, server_failed) = loop {
                let chunk =
                    match tokio::time::timeout(self.inner.opts.stream_silence, resp.next()).await {
                        Err(_) => break ("the stream went silent".to_string(), true),
                        Ok(None) => break ("the server ended the stream".to_string(), true),
                        Ok(Some(Err(e))) => break (e.to_string(), true),
                        Ok(Some(Ok(c))) => c,
                    };
                for item in parser.feed(&chunk) {
                    let SseItem::Event { data, .. } = item else {
                        continue;
                    };
                    let Ok(m) = serde_json::from_str::<Message>(&data) else {
                        continue;
                    };
                    // Resumed streams start at `next`; anything older is a repeat.
                    if m.id < next {
                        continue;
                    }
                    next = m.id + 1;
                    if let Some(l) = &mut left {
                        *l -= 1;
                    }
                    if !each(m) || left == Some(0) {
                        return Ok(());
                    }
                }
                // A master that lost its role: follow the new one.
                if r.preference == ReadPreference::Primary
                    && self
                        .inner
                        .topology
                        .borrow()
                        .server(&addr)
                        .is_none_or(|s| s.kind != ServerType::Primary)
                {
                    break ("no longer the master".to_string(), false);
                }
            };
            tracing::debug!(server = %addr, %why, next, "resuming the stream elsewhere");
            if server_failed {
                self.failed(&addr, &why);
            }
        }
    }

    /// `GET path` on one server, as JSON.
    pub async fn get_json(&self, addr: &str, path: &str) -> Result<Value, Error> {
        let url = format!("{}://{addr}{path}", self.inner.scheme());
        let mut resp = self
            .inner
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| Error::Network {
                server: addr.to_string(),
                message: e.to_string(),
            })?;
        let status = resp.status().as_u16();
        let v: Value = resp
            .json()
            .limit(16 << 20)
            .await
            .map_err(|e| Error::Network {
                server: addr.to_string(),
                message: format!("unreadable answer: {e}"),
            })?;
        if status != 200 {
            return Err(Error::refused(addr, status, v));
        }
        Ok(v)
    }
}

/// Start a monitor for every server of the topology that has none, stop those of
/// servers it no longer has.
fn sync_monitors(inner: &Rc<Inner>) {
    let wanted: Vec<String> = inner
        .topology
        .borrow()
        .servers()
        .map(|s| s.addr.clone())
        .collect();
    let mut monitors = inner.monitors.borrow_mut();
    monitors.retain(|addr, task| {
        let keep = wanted.contains(addr);
        if !keep {
            task.abort();
        }
        keep
    });
    for addr in wanted {
        if let std::collections::hash_map::Entry::Vacant(slot) = monitors.entry(addr) {
            let task = actix_rt::spawn(monitor(Rc::downgrade(inner), slot.key().clone()));
            slot.insert(task);
        }
    }
}

/// The error count of `addr` now, as a check of it begins.
fn me_generation(inner: &Weak<Inner>, addr: &str) -> Option<u64> {
    inner.upgrade()?.topology.borrow().generation(addr)
}

/// Check one server's `/hello` every heartbeat, or sooner when asked.
async fn monitor(inner: Weak<Inner>, addr: String) {
    let Some(me) = inner.upgrade() else { return };
    let url = format!("{}://{addr}/hello", me.scheme());
    let mut asked = me.check_now.subscribe();
    drop(me);
    loop {
        let Some(me) = inner.upgrade() else { return };
        let (http, opts) = (me.http.clone(), me.opts.clone());
        drop(me);
        // This check answers every request made so far.
        asked.borrow_and_update();
        let generation = me_generation(&inner, &addr);
        let started = Instant::now();
        let answer: Result<Hello, String> = match http.get(&url).send().await {
            Ok(mut resp) if resp.status() == 200 => resp
                .json()
                .await
                .map_err(|e| format!("unreadable /hello: {e}")),
            Ok(resp) => Err(format!("/hello answered {}", resp.status())),
            Err(e) => Err(e.to_string()),
        };
        let rtt = started.elapsed();
        let Some(me) = inner.upgrade() else { return };
        me.topology
            .borrow_mut()
            .on_check(&addr, generation, answer, rtt);
        sync_monitors(&me);
        me.changed.send_modify(|g| *g += 1);
        drop(me);
        tokio::time::sleep(opts.min_heartbeat.saturating_sub(rtt)).await;
        let _ = tokio::time::timeout(
            opts.heartbeat.saturating_sub(opts.min_heartbeat),
            asked.changed(),
        )
        .await;
    }
}
