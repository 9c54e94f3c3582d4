//! chorus-streams: what the change stream (`GET /messages/stream`) costs and how fast
//! it is. Two measurements against a running set:
//!
//! 1. idle streams: open `--idle` streams on `--node` that have nothing to send, check
//!    the node counts them (`chorus_streams` in its /metrics), and read how much its
//!    resident memory grew (`/proc/<--pid>/status`);
//! 2. latency: one stream on `--node` while writes go to `--master` at `--rate` per
//!    second (open loop, w=1) for `--seconds`: the time from each write's 201 to its
//!    event on the stream (0 when the event came first), and from sending the write.
//!
//! ```sh
//! chorus-streams --master 127.0.0.1:8080 --node 127.0.0.1:8081 --pid 1234
//! ```

use anyhow::{Context, Result, anyhow, bail};
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::json;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Measure chorus change streams: idle streams' memory, write-to-event latency"
)]
struct Cli {
    /// The master (HTTP host:port), for the writes.
    #[arg(long)]
    master: String,
    /// The node whose streams are measured (HTTP host:port).
    #[arg(long)]
    node: String,
    /// The node's process id, for its resident memory.
    #[arg(long)]
    pid: Option<u32>,
    /// Idle streams to open (0: skip that measurement).
    #[arg(long, default_value_t = 10_000)]
    idle: usize,
    /// Writes per second during the latency measurement.
    #[arg(long, default_value_t = 1000)]
    rate: u64,
    /// How long the writes go on (0: skip that measurement).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// Resident memory of `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("no VmRSS for pid {pid}"))
}

/// GET `path` on `addr` (connection: close); the body, read to the end.
async fn get(addr: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (_, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow!("no HTTP answer from {addr}{path}"))?;
    Ok(body.to_string())
}

/// The node's last id (`lastId` of /health).
async fn last_id(addr: &str) -> Result<u64> {
    let body = get(addr, "/health").await?;
    let v: serde_json::Value = serde_json::from_str(&body).context("/health")?;
    v["lastId"]
        .as_u64()
        .ok_or_else(|| anyhow!("no lastId in {v}"))
}

/// The node's `chorus_streams` gauge.
async fn open_streams(addr: &str) -> Result<u64> {
    let body = get(addr, "/metrics").await?;
    body.lines()
        .find_map(|l| l.strip_prefix("chorus_streams "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .ok_or_else(|| anyhow!("no chorus_streams in /metrics"))
}

/// Open a stream from `from` and read its response head; the connection, and what was
/// read past the head (chunked: actix sends a stream so, whatever the version).
async fn open_stream(addr: &str, from: u64) -> Result<(TcpStream, Vec<u8>)> {
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "GET /messages/stream?from={from} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            bail!("the stream closed before its head");
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            if head.split_whitespace().nth(1) != Some("200") {
                bail!("stream refused: {head}");
            }
            return Ok((s, buf[end + 4..].to_vec()));
        }
    }
}

async fn idle(cli: &Cli) -> Result<serde_json::Value> {
    let before = cli.pid.map(rss_kib).transpose()?;
    let from = last_id(&cli.node).await? + 1_000_000_000; // nothing to send, ever
    let started = Instant::now();
    let mut streams = Vec::with_capacity(cli.idle);
    let mut pending = futures::stream::FuturesUnordered::new();
    let mut opened = 0;
    use futures::StreamExt;
    while streams.len() < cli.idle {
        while opened < cli.idle && pending.len() < 200 {
            pending.push(open_stream(&cli.node, from));
            opened += 1;
        }
        let (s, _) = pending.next().await.expect("pending")?;
        streams.push(s);
    }
    let open_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    let counted = loop {
        let n = open_streams(&cli.node).await?;
        if n >= cli.idle as u64 || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let after = cli.pid.map(rss_kib).transpose()?;
    let extra = before.zip(after).map(|(b, a)| a.saturating_sub(b));
    println!(
        "idle streams: {} open in {open_s:.2} s, the node counts {counted}; RSS {} KiB -> {} KiB: {} MiB extra, {} bytes a stream",
        cli.idle,
        before.map_or("?".into(), |v| v.to_string()),
        after.map_or("?".into(), |v| v.to_string()),
        extra.map_or("?".into(), |e| format!("{:.1}", e as f64 / 1024.0)),
        extra.map_or("?".into(), |e| (e * 1024 / cli.idle.max(1) as u64)
            .to_string()),
    );
    drop(streams);
    // Let the node finish closing them before anything else is measured.
    let deadline = Instant::now() + Duration::from_secs(60);
    while open_streams(&cli.node).await? > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(json!({
        "streams": cli.idle, "counted": counted, "openSeconds": open_s,
        "rssBeforeKiB": before, "rssAfterKiB": after, "extraKiB": extra,
    }))
}

/// Undoes HTTP/1.1 chunked transfer coding, as bytes arrive in any pieces.
#[derive(Default)]
struct Dechunk {
    /// Bytes of the current chunk still to come (then its CRLF).
    left: usize,
    /// The size line being read.
    line: Vec<u8>,
    /// CRLF bytes to skip after a chunk's data.
    skip: usize,
}

impl Dechunk {
    fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            if self.skip > 0 {
                let n = self.skip.min(input.len());
                self.skip -= n;
                input = &input[n..];
            } else if self.left > 0 {
                let n = self.left.min(input.len());
                out.extend_from_slice(&input[..n]);
                self.left -= n;
                input = &input[n..];
                if self.left == 0 {
                    self.skip = 2;
                }
            } else {
                let b = input[0];
                input = &input[1..];
                if b == b'\n' {
                    let line = String::from_utf8_lossy(&self.line).trim().to_string();
                    let size = line.split(';').next().unwrap_or_default();
                    self.left = usize::from_str_radix(size, 16).unwrap_or(0);
                    self.line.clear();
                } else {
                    self.line.push(b);
                }
            }
        }
    }
}

/// Read SSE events from `s` (`head_rest`: what came with the response head), noting
/// when each id arrived.
async fn read_events(
    mut s: TcpStream,
    head_rest: Vec<u8>,
    seen: Rc<RefCell<HashMap<u64, Instant>>>,
) -> Result<()> {
    let mut chunk = vec![0u8; 64 * 1024];
    let mut dechunk = Dechunk::default();
    let mut buf = Vec::new();
    dechunk.feed(&head_rest, &mut buf);
    loop {
        // Events are separated by a blank line; ids are on "id: N" lines.
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block: Vec<u8> = buf.drain(..end + 2).collect();
            let now = Instant::now();
            for line in String::from_utf8_lossy(&block).lines() {
                if let Some(id) = line.strip_prefix("id: ").and_then(|v| v.parse().ok()) {
                    seen.borrow_mut().entry(id).or_insert(now);
                }
            }
        }
        let n = s.read(&mut chunk).await?;
        if n == 0 {
            return Ok(());
        }
        dechunk.feed(&chunk[..n], &mut buf);
    }
}

async fn latency(cli: &Cli) -> Result<serde_json::Value> {
    let from = last_id(&cli.master).await?.max(last_id(&cli.node).await?) + 1;
    let (stream, rest) = open_stream(&cli.node, from).await?;
    let seen = Rc::new(RefCell::new(HashMap::new()));
    let reader = actix_rt::spawn(read_events(stream, rest, seen.clone()));
    let acked: Rc<RefCell<HashMap<u64, (Instant, Instant)>>> = Default::default();
    let client = awc::Client::builder()
        .timeout(Duration::from_secs(30))
        .finish();
    let url = format!("http://{}/newMessage", cli.master);
    let total = cli.rate * cli.seconds;
    let interval = Duration::from_secs_f64(1.0 / cli.rate as f64);
    let started = Instant::now();
    let mut writes = Vec::with_capacity(total as usize);
    let mut failed = 0u64;
    for i in 0..total {
        let at = started + interval * i as u32;
        tokio::time::sleep_until(at.into()).await;
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        writes.push(actix_rt::spawn(async move {
            let sent = Instant::now();
            let body = json!({"message": format!("stream latency {i}"), "writeConcern": 1});
            let mut resp = client.post(&url).send_json(&body).await.ok()?;
            let v: serde_json::Value = resp.json().await.ok()?;
            let id = v["id"].as_u64().filter(|_| resp.status() == 201)?;
            acked.borrow_mut().insert(id, (sent, Instant::now()));
            Some(())
        }));
    }
    for w in writes {
        if w.await.ok().flatten().is_none() {
            failed += 1;
        }
    }
    let write_s = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let missing = acked
            .borrow()
            .keys()
            .filter(|id| !seen.borrow().contains_key(id))
            .count();
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("{missing} acknowledged writes never reached the stream");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.abort();
    let mut after_ack = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut after_send = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut first = 0u64;
    for (id, (sent, ack)) in acked.borrow().iter() {
        let ev = seen.borrow()[id];
        if ev < *ack {
            first += 1;
        }
        after_ack.record(ev.saturating_duration_since(*ack).as_micros().max(1) as u64)?;
        after_send.record(ev.saturating_duration_since(*sent).as_micros().max(1) as u64)?;
    }
    let ms = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "latency: {} writes at {}/s in {write_s:.1} s ({failed} failed); 201 -> event p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms ({first} events before their 201); send -> event p50 {:.3} ms, p99 {:.3} ms",
        after_ack.len(),
        cli.rate,
        ms(&after_ack, 0.5),
        ms(&after_ack, 0.99),
        after_ack.max() as f64 / 1000.0,
        ms(&after_send, 0.5),
        ms(&after_send, 0.99),
    );
    Ok(json!({
        "writes": after_ack.len(), "rate": cli.rate, "failed": failed,
        "ackToEventMs": {"p50": ms(&after_ack, 0.5), "p99": ms(&after_ack, 0.99), "max": after_ack.max() as f64 / 1000.0},
        "sendToEventMs": {"p50": ms(&after_send, 0.5), "p99": ms(&after_send, 0.99)},
        "eventsBeforeTheir201": first,
    }))
}

fn main() -> Result<()> {
    let cli: Cli = common::config::parse_cli();
    actix_rt::System::new().block_on(async move {
        let mut out = json!({});
        if cli.idle > 0 {
            out["idle"] = idle(&cli).await?;
        }
        if cli.seconds > 0 && cli.rate > 0 {
            out["latency"] = latency(&cli).await?;
        }
        if let Some(path) = &cli.json {
            std::fs::write(path, serde_json::to_vec_pretty(&out)?)?;
        }
        Ok(())
    })
}
