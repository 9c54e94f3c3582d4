//! Harness for the black-box tests: start the real `master-node` and `secondary-node`
//! binaries on ports they pick themselves, talk to them over HTTP and TCP only, stop
//! them with SIGKILL or SIGTERM.
//!
//! The binaries are found next to the test executable (`target/<profile>/`), or at
//! `$CHORUS_MASTER_BIN` / `$CHORUS_SECONDARY_BIN`. `cargo test --workspace` builds them.
//! Each node logs to `<tempdir>/<name>.log`; on a failed wait the last lines are shown.
//! Set `CHORUS_KEEP_LOGS=1` to keep the directory.

use anyhow::{Context, Result, anyhow, bail};
use serde_json::Value;
use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Where the binaries are (the nodes' and the `chorus` client's).
pub fn bin(name: &str) -> PathBuf {
    let var = match name {
        "master-node" => "CHORUS_MASTER_BIN",
        "chorus" => "CHORUS_CLI_BIN",
        _ => "CHORUS_SECONDARY_BIN",
    };
    if let Ok(p) = std::env::var(var) {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not found; build it first (cargo build --workspace) or set {var}",
        path.display()
    );
    path
}

/// A directory for one test's node logs.
pub struct TestDir {
    dir: Option<tempfile::TempDir>,
    path: PathBuf,
}

impl TestDir {
    pub fn new(test: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("chorus-{test}-"))
            .tempdir()
            .expect("tempdir");
        let path = dir.path().to_path_buf();
        Self {
            dir: Some(dir),
            path,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        if (std::env::var_os("CHORUS_KEEP_LOGS").is_some() || std::thread::panicking())
            && let Some(d) = self.dir.take()
        {
            eprintln!("node logs kept in {}", d.keep().display());
        }
    }
}

/// One running node process.
pub struct Node {
    pub name: String,
    pub http: SocketAddr,
    pub comm: Option<SocketAddr>,
    child: Child,
    log: PathBuf,
    binary: PathBuf,
    args: Vec<String>,
    dir: PathBuf,
}

impl Node {
    /// Start a master with the given extra flags on free ports.
    pub fn master(dir: &TestDir, name: &str, extra: &[&str]) -> Result<Node> {
        Self::master_on(dir, name, 0, extra)
    }

    /// Start a master on a given comm port (0: any).
    pub fn master_on(dir: &TestDir, name: &str, comm_port: u16, extra: &[&str]) -> Result<Node> {
        let mut args = vec![
            "--name".to_string(),
            name.into(),
            "--http-port".into(),
            "0".into(),
            "--comm-port".into(),
            comm_port.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(dir.path(), bin("master-node"), name, args)
    }

    /// Start a secondary following the master at `comm`.
    pub fn secondary(dir: &TestDir, name: &str, comm: SocketAddr, extra: &[&str]) -> Result<Node> {
        let mut args = vec![
            "--name".to_string(),
            name.into(),
            "--http-port".into(),
            "0".into(),
            "--master-ip".into(),
            comm.ip().to_string(),
            "--master-comm-port".into(),
            comm.port().to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(dir.path(), bin("secondary-node"), name, args)
    }

    fn spawn(dir: &Path, binary: PathBuf, name: &str, args: Vec<String>) -> Result<Node> {
        let log = dir.join(format!("{name}.log"));
        let mut child = Command::new(&binary)
            .args(&args)
            .current_dir(dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or("info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("spawn {}", binary.display()))?;
        let stderr = child.stderr.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)?;
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(file, "{line}");
                if let Some(rest) = line.split("listening ").nth(1) {
                    let _ = tx.send(rest.to_string());
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) => l,
            Err(_) => {
                let _ = child.kill();
                bail!("{name} did not start:\n{}", tail(&log, 30));
            }
        };
        let field = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        Ok(Node {
            name: name.to_string(),
            http: field("http=").ok_or_else(|| anyhow!("no http address in {line:?}"))?,
            comm: field("comm="),
            child,
            log,
            binary,
            args,
            dir: dir.to_path_buf(),
        })
    }

    pub fn url(&self, path: &str) -> String {
        // A node started with --tls-cert serves HTTPS only.
        let scheme = if self.args.iter().any(|a| a == "--tls-cert") {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.http, path)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Send a signal (SIGTERM, SIGSTOP, ...).
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid has no memory-safety requirements.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    /// SIGTERM, then wait up to `within` for the exit status.
    pub fn terminate(&mut self, within: Duration) -> Result<std::process::ExitStatus> {
        self.signal(libc::SIGTERM);
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = self.child.try_wait()? {
                return Ok(st);
            }
            if Instant::now() > deadline {
                bail!("{} still running {within:?} after SIGTERM", self.name);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Start the same command again (killing the process first if it still runs), on
    /// the same data directory and the same ports it had.
    pub fn restart(&mut self) -> Result<()> {
        self.kill9();
        let mut args = self.args.clone();
        pin(&mut args, "--http-port", self.http.port());
        if let Some(comm) = self.comm {
            pin(&mut args, "--comm-port", comm.port());
        }
        let binary = self.binary.clone();
        let fresh = Self::spawn(&self.dir, binary, &self.name, args)?;
        // The old handle's process is already reaped; dropping it is a no-op.
        drop(std::mem::replace(self, fresh));
        Ok(())
    }

    /// The last lines of this node's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }
}

/// Set `flag`'s value in `args` to `port`.
fn pin(args: &mut [String], flag: &str, port: u16) {
    if let Some(i) = args.iter().position(|a| a == flag) {
        args[i + 1] = port.to_string();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// An HTTP client for the tests (actix's own `awc`).
#[derive(Clone)]
pub struct Http {
    /// Cheap to clone; shared by every task of one test.
    client: awc::Client,
}

impl Default for Http {
    fn default() -> Self {
        Self::new()
    }
}

impl Http {
    pub fn new() -> Self {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(180))
            .finish();
        Self { client }
    }

    /// A client that speaks HTTPS to nodes whose certificates the CA in the PEM file
    /// `ca` signed (and plain HTTP to the others).
    pub fn with_ca(ca: &Path) -> Result<Self> {
        let tls = chorus_client::tls_config(ca).map_err(|e| anyhow!(e))?;
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(180))
            .connector(awc::Connector::new().rustls_0_23(tls))
            .finish();
        Ok(Self { client })
    }

    /// A client that sends `Authorization: Bearer <token>` on every request.
    pub fn with_bearer(token: &str) -> Self {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(180))
            .add_default_header(("authorization", format!("Bearer {token}")))
            .finish();
        Self { client }
    }

    /// Send `req` (with `body`, if any) and read the whole answer.
    async fn send(
        &self,
        what: &str,
        req: awc::ClientRequest,
        body: Option<bytes::Bytes>,
    ) -> Result<(u16, bytes::Bytes)> {
        let sent = match body {
            Some(b) => {
                req.insert_header(("content-type", "application/json"))
                    .send_body(b)
                    .await
            }
            None => req.send().await,
        };
        let mut resp = sent.map_err(|e| anyhow!("{what}: {e}"))?;
        let bytes = resp
            .body()
            .limit(256 * 1024 * 1024)
            .await
            .map_err(|e| anyhow!("{what} body: {e}"))?;
        Ok((resp.status().as_u16(), bytes))
    }

    async fn send_json(
        &self,
        what: &str,
        req: awc::ClientRequest,
        body: Option<bytes::Bytes>,
    ) -> Result<(u16, Value)> {
        let (status, bytes) = self.send(what, req, body).await?;
        Ok((
            status,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        ))
    }

    /// POST a raw body; returns status and parsed JSON (Null if the body is not JSON).
    pub async fn post_raw(&self, url: &str, body: impl Into<bytes::Bytes>) -> Result<(u16, Value)> {
        let req = self.client.post(url);
        self.send_json(&format!("POST {url}"), req, Some(body.into()))
            .await
    }

    pub async fn put_raw(&self, url: &str, body: impl Into<bytes::Bytes>) -> Result<(u16, Value)> {
        let req = self.client.put(url);
        self.send_json(&format!("PUT {url}"), req, Some(body.into()))
            .await
    }

    pub async fn put(&self, url: &str, body: &Value) -> Result<(u16, Value)> {
        self.put_raw(url, body.to_string()).await
    }

    pub async fn post(&self, url: &str, body: &Value) -> Result<(u16, Value)> {
        self.post_raw(url, body.to_string()).await
    }

    /// POST /newMessage.
    pub async fn write(&self, node: &Node, message: &str, wc: Value) -> Result<(u16, Value)> {
        self.post(
            &node.url("/newMessage"),
            &serde_json::json!({"message": message, "writeConcern": wc}),
        )
        .await
    }

    pub async fn get(&self, url: &str) -> Result<(u16, Value)> {
        self.send_json(&format!("GET {url}"), self.client.get(url), None)
            .await
    }

    pub async fn delete(&self, url: &str) -> Result<(u16, Value)> {
        self.send_json(&format!("DELETE {url}"), self.client.delete(url), None)
            .await
    }

    /// GET a text body (e.g. /metrics); status and text.
    pub async fn get_text(&self, url: &str) -> Result<(u16, String)> {
        let (status, bytes) = self
            .send(&format!("GET {url}"), self.client.get(url), None)
            .await?;
        Ok((status, String::from_utf8(bytes.to_vec())?))
    }

    /// A node's log as (id, message) pairs.
    pub async fn messages(&self, node: &Node) -> Result<Vec<(u64, String)>> {
        let (status, v) = self.get(&node.url("/messages")).await?;
        if status != 200 {
            bail!("GET /messages on {}: {status} {v}", node.name);
        }
        v.as_array()
            .ok_or_else(|| anyhow!("not an array: {v}"))?
            .iter()
            .map(|m| {
                Ok((
                    m["id"].as_u64().ok_or_else(|| anyhow!("no id in {m}"))?,
                    m["message"]
                        .as_str()
                        .ok_or_else(|| anyhow!("no message in {m}"))?
                        .to_string(),
                ))
            })
            .collect()
    }

    pub async fn health(&self, node: &Node) -> Result<Value> {
        Ok(self.get(&node.url("/health")).await?.1)
    }
}

/// Poll `check` every 50 ms until it returns `Some`, or fail after `within`.
pub async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let deadline = Instant::now() + within;
    let mut last_err = None;
    loop {
        match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if Instant::now() > deadline {
            bail!("timed out after {within:?} waiting for {what} (last error: {last_err:?})");
        }
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Wait until every node's log equals the master's and holds `n` messages.
pub async fn wait_converged(
    http: &Http,
    master: &Node,
    others: &[&Node],
    n: usize,
    within: Duration,
) -> Result<Vec<(u64, String)>> {
    wait_for("all logs to converge", within, || async {
        let m = http.messages(master).await?;
        if m.len() != n {
            return Ok(None);
        }
        for o in others {
            if http.messages(o).await? != m {
                return Ok(None);
            }
        }
        Ok(Some(m))
    })
    .await
}

/// Write `message` with write concern `wc`, retrying while the master answers 503 (it
/// waits for a quorum, e.g. after a restart); the first other answer.
pub async fn write_once_writable(
    http: &Http,
    master: &Node,
    message: &str,
    wc: serde_json::Value,
    within: Duration,
) -> Result<(u16, serde_json::Value)> {
    wait_for("writes to resume", within, || async {
        let (st, body) = http.write(master, message, wc.clone()).await?;
        Ok((st != 503).then_some((st, body)))
    })
    .await
}

/// Wait until one of `nodes` is the master and takes writes (its `/hello` says
/// `isWritablePrimary`); its index.
pub async fn wait_master(http: &Http, nodes: &[&Node], within: Duration) -> Result<usize> {
    wait_for("a master that takes writes", within, || async {
        for (i, n) in nodes.iter().enumerate() {
            if let Ok((200, h)) = http.get(&n.url("/hello")).await
                && h["isWritablePrimary"] == true
            {
                return Ok(Some(i));
            }
        }
        Ok(None)
    })
    .await
}

/// Every entry a node rolled back (its `rollback/` files), as (id, message).
pub fn rolled_back(dir: &TestDir, name: &str) -> Vec<(u64, String)> {
    let mut out = Vec::new();
    let Ok(files) = std::fs::read_dir(dir.path().join("data").join(name).join("rollback")) else {
        return out;
    };
    for f in files.flatten() {
        for line in std::fs::read_to_string(f.path())
            .unwrap_or_default()
            .lines()
        {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                out.push((
                    v["id"].as_u64().unwrap_or(0),
                    v["message"].as_str().unwrap_or_default().to_string(),
                ));
            }
        }
    }
    out
}

/// Ids are exactly 1..=n, in order (no gap, no duplicate).
pub fn assert_gap_free(log: &[(u64, String)]) {
    let ids: Vec<u64> = log.iter().map(|e| e.0).collect();
    let want: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(ids, want, "ids are not 1..=n");
}

/// Wait until the master reports member `name` connected and live.
pub async fn wait_member_live(http: &Http, master: &Node, name: &str) -> Result<()> {
    wait_for(
        &format!("{name} to be live"),
        Duration::from_secs(60),
        || async {
            let h = http.health(master).await?;
            let live = h["members"].as_array().is_some_and(|ms| {
                ms.iter()
                    .any(|m| m["name"] == name && m["phase"] == "live" && m["connected"] == true)
            });
            Ok(live.then_some(()))
        },
    )
    .await
}

/// Start a master `m` with `master_args` and one secondary `s1`, `s2`, ... per entry of
/// `secondaries` (its flags), and wait until every secondary is live.
pub async fn cluster(
    dir: &TestDir,
    http: &Http,
    master_args: &[&str],
    secondaries: &[&[&str]],
) -> Result<(Node, Vec<Node>)> {
    let master = Node::master(dir, "m", master_args)?;
    let comm = master
        .comm
        .ok_or_else(|| anyhow!("master without comm address"))?;
    let mut nodes = Vec::new();
    for (i, args) in secondaries.iter().enumerate() {
        nodes.push(Node::secondary(dir, &format!("s{}", i + 1), comm, args)?);
    }
    for n in &nodes {
        wait_member_live(http, &master, &n.name).await?;
    }
    Ok((master, nodes))
}

/// POST /newMessage in the background.
pub fn spawn_write(
    http: &Http,
    node: &Node,
    message: impl Into<String>,
    write_concern: Value,
) -> actix_rt::task::JoinHandle<Result<(u16, Value)>> {
    let http = http.clone();
    let url = node.url("/newMessage");
    let body = serde_json::json!({"message": message.into(), "writeConcern": write_concern});
    actix_rt::spawn(async move { http.post(&url, &body).await })
}

pub use chorus_client::sse::SseItem;

/// A client's side of `GET /messages/stream`, read incrementally.
pub struct EventStream {
    body: std::pin::Pin<
        Box<dyn futures::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>>>,
    >,
    parser: chorus_client::sse::SseParser,
    items: std::collections::VecDeque<SseItem>,
}

impl EventStream {
    /// Open `url` (with `last_event_id` as the `Last-Event-ID` header, if given); fails on
    /// any answer but 200 `text/event-stream`.
    pub async fn open(url: &str, last_event_id: Option<&str>) -> Result<EventStream> {
        let client = awc::Client::builder()
            .timeout(Duration::from_secs(600))
            .finish();
        let mut req = client
            .get(url)
            .insert_header(("accept", "text/event-stream"));
        if let Some(id) = last_event_id {
            req = req.insert_header(("last-event-id", id));
        }
        let mut resp = req.send().await.map_err(|e| anyhow!("GET {url}: {e}"))?;
        let kind = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if resp.status() != 200 || !kind.starts_with("text/event-stream") {
            let body = resp.body().await.unwrap_or_default();
            bail!(
                "GET {url}: {} {kind}: {}",
                resp.status(),
                String::from_utf8_lossy(&body)
            );
        }
        Ok(EventStream {
            body: Box::pin(resp),
            parser: Default::default(),
            items: Default::default(),
        })
    }

    /// The next event or comment; None when the server ended the stream. Fails if
    /// nothing comes within `within`.
    pub async fn next(&mut self, within: Duration) -> Result<Option<SseItem>> {
        use futures::StreamExt;
        let deadline = Instant::now() + within;
        loop {
            if let Some(item) = self.items.pop_front() {
                return Ok(Some(item));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            let chunk = match actix_rt::time::timeout(left, self.body.next()).await {
                Err(_) => bail!("nothing on the stream within {within:?}"),
                Ok(None) => return Ok(None),
                Ok(Some(c)) => c.map_err(|e| anyhow!("stream body: {e}"))?,
            };
            self.items.extend(self.parser.feed(&chunk));
        }
    }

    /// The next message event as (id from the `id:` field, data as JSON), skipping
    /// comments; checks that the `id:` field and the data's `id` agree.
    pub async fn message(&mut self, within: Duration) -> Result<Option<(u64, Value)>> {
        loop {
            match self.next(within).await? {
                None => return Ok(None),
                Some(SseItem::Comment) => {}
                Some(SseItem::Event { id, data }) => {
                    let v: Value = serde_json::from_str(&data)
                        .with_context(|| format!("event data {data:?}"))?;
                    let id: u64 = id
                        .ok_or_else(|| anyhow!("event without id: {data}"))?
                        .parse()?;
                    if v["id"].as_u64() != Some(id) {
                        bail!("event id {id} but data {v}");
                    }
                    return Ok(Some((id, v)));
                }
            }
        }
    }
}

/// The `Hello` of a new secondary called `name` with an empty log, speaking `version`
/// of the protocol: what a raw peer on the comm port opens with.
pub fn fresh_hello(name: &str, version: u32) -> common::protocol::SecondaryFrame {
    common::protocol::SecondaryFrame::Hello {
        version,
        name: name.into(),
        next_expected: 1,
        log_id: 0,
        last_term: 0,
        term: 0,
        history: Default::default(),
        comm: None,
        http: None,
        priority: 1,
        delay_ms: 0,
    }
}

/// Raise this process's soft limit of open files toward `want` (up to the hard limit):
/// tests that hold many connections at once need more than a default of 1,024.
pub fn raise_fd_limit(want: u64) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid pointer to a local struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < want {
            lim.rlim_cur = want.min(lim.rlim_max);
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// Test certificates made by `scripts/tls-certs.sh` in `dir/name`: a CA and one
/// certificate per node of `names`. Returns the directory (`ca.pem`, `NAME.pem`,
/// `NAME-key.pem`).
pub fn tls_certs(dir: &TestDir, name: &str, names: &[&str]) -> Result<PathBuf> {
    let out = dir.path().join(name);
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/tls-certs.sh");
    let done = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .args(names)
        .output()
        .with_context(|| format!("run {}", script.display()))?;
    if !done.status.success() {
        bail!(
            "tls-certs.sh failed: {}",
            String::from_utf8_lossy(&done.stderr)
        );
    }
    Ok(out)
}

/// The `--tls-cert/--tls-key/--tls-ca` flags of node `name` with the certificates in
/// `certs` (from [`tls_certs`]).
pub fn tls_flags(certs: &Path, name: &str) -> Vec<String> {
    let f = |file: String| certs.join(file).to_string_lossy().into_owned();
    vec![
        "--tls-cert".into(),
        f(format!("{name}.pem")),
        "--tls-key".into(),
        f(format!("{name}-key.pem")),
        "--tls-ca".into(),
        f("ca.pem".into()),
    ]
}
