//! chorus-bench: load for a chorus master, measured.
//!
//! Closed loop (default): `--concurrency` clients, each sending its next write as soon as
//! the previous one is answered, over keep-alive connections. Open loop (`--rate R`):
//! writes are started R times a second whatever the answers do, and each latency is
//! counted from when its write was due (so a stalled server cannot hide its queue: no
//! coordinated omission); at most `--max-in-flight` writes are outstanding.
//!
//! Bounded by `--duration` (at most an hour) or `--count`, whichever ends first.
//! Prints throughput and p50/p90/p99/p99.9/max; `--json FILE` writes them too.
//!
//! The same loops drive the peers chorus is compared with (docs/benchmarks.md), each
//! through its own native protocol, so that only the server differs:
//! - `--target redis`: per write `RPUSH` of the message, pipelined with `WAIT w-1 0`
//!   (when w > 1) on the same connection: one round trip, answered once w-1 replicas
//!   have it; one connection per outstanding write.
//! - `--target etcd`: per write a gRPC `etcdserverpb.KV/Put` over one HTTP/2
//!   connection per thread (as etcd's own clients do); Raft commits it on a majority.

mod peers;

use anyhow::Context;
use clap::Parser;
use hdrhistogram::Histogram;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// What is being loaded.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    /// A chorus master (or anything answering POST /newMessage the same way).
    Chorus,
    /// A Redis primary: RPUSH + WAIT.
    Redis,
    /// An etcd member: KV.Put over gRPC.
    Etcd,
}

#[derive(Parser, Debug, Clone)]
#[command(
    version,
    about = "Load generator for a chorus master (and the peers it is compared with)"
)]
struct Cli {
    /// The server's address: http(s)://HOST:PORT for chorus, HOST:PORT for redis and
    /// etcd.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// For an https:// URL: the certificate authority (PEM) that signed the nodes'
    /// --tls-cert.
    #[arg(long, value_name = "F", value_parser = chorus_client::tls_config_from)]
    tls_ca: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// What kind of server --url is.
    #[arg(long, value_enum, default_value = "chorus")]
    target: Target,
    /// HTTP client for chorus: `raw` (HTTP/1.1 over keep-alive TCP, built for this
    /// load, as lean as the Redis client) or `awc` (actix's full client).
    #[arg(long, default_value = "raw", value_parser = ["raw", "awc"])]
    http_client: String,
    /// Concurrent clients per thread (closed loop).
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    concurrency: u32,
    /// OS threads, each with its own event loop and share of the load.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    threads: u32,
    /// Message size in bytes.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(0..=33_554_432))]
    size: u32,
    /// Write concern: an integer or "majority" (redis: w-1 replicas in WAIT; etcd:
    /// always a Raft majority).
    #[arg(long, default_value = "1")]
    write_concern: String,
    /// How long to run, in seconds (at most 3600).
    #[arg(long, default_value_t = 10.0, value_parser = seconds)]
    duration: f64,
    /// Stop after this many writes (over all threads).
    #[arg(long)]
    count: Option<u64>,
    /// Open loop: start this many writes per second in total.
    #[arg(long, value_parser = rate)]
    rate: Option<f64>,
    /// Open loop: most writes outstanding per thread.
    #[arg(long, default_value_t = 10_000)]
    max_in_flight: u32,
    /// timeoutMs sent with every write (0: none).
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Write the results as JSON to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

/// What one thread measured.
struct Tally {
    ok: Histogram<u64>,
    errors: BTreeMap<String, u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            // 1 µs to 1 hour, 3 significant digits.
            ok: Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds"),
            errors: BTreeMap::new(),
        }
    }
}

fn seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 3600.0 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a number of seconds above 0 and at most 3600"
        )),
    }
}

fn rate(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v > 0.0 && v <= 1e7 => Ok(v),
        _ => Err(format!(
            "{s:?} is not a rate above 0 and at most 10000000 per second"
        )),
    }
}

fn main() -> anyhow::Result<()> {
    let cli: Cli = common::config::parse_cli();
    let wc: Value = match cli.write_concern.parse::<u64>() {
        Ok(n) => json!(n),
        Err(_) => json!(cli.write_concern),
    };
    let message = "x".repeat(cli.size as usize);
    let (url, body) = match cli.target {
        Target::Chorus => (
            format!("{}/newMessage", cli.url.trim_end_matches('/')),
            json!({"message": message, "writeConcern": wc, "timeoutMs": cli.timeout_ms})
                .to_string(),
        ),
        Target::Redis | Target::Etcd => {
            let addr = cli.url.trim_start_matches("http://").trim_end_matches('/');
            (addr.to_string(), message)
        }
    };
    let wc = match cli.target {
        Target::Chorus => wc,
        Target::Redis => match wc.as_u64() {
            Some(n) if n >= 1 => wc,
            _ => anyhow::bail!(
                "--target redis needs an integer write concern (1 + replicas in WAIT)"
            ),
        },
        Target::Etcd => json!("majority"),
    };

    let done = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let bar = if cli.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new(cli.duration.ceil() as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {msg}")
            .expect("template")
            .progress_chars("=> "),
    );
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(cli.duration);
    let threads: Vec<_> = (0..cli.threads)
        .map(|t| {
            let (cli, url, body, done) = (cli.clone(), url.clone(), body.clone(), done.clone());
            std::thread::spawn(move || {
                actix_rt::System::new().block_on(run_thread(t, cli, url, body, deadline, done))
            })
        })
        .collect();
    while threads.iter().any(|t| !t.is_finished()) {
        std::thread::sleep(Duration::from_millis(100));
        let n = done.load(std::sync::atomic::Ordering::Relaxed);
        let secs = start.elapsed().as_secs_f64();
        bar.set_position(secs as u64);
        bar.set_message(format!("{n} writes, {:.0}/s", n as f64 / secs.max(1e-9)));
    }
    bar.finish_and_clear();
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = Tally::new();
    for t in threads {
        let tally = t
            .join()
            .map_err(|_| anyhow::anyhow!("a load thread panicked"))??;
        total.ok.add(&tally.ok).context("merge histograms")?;
        for (k, v) in tally.errors {
            *total.errors.entry(k).or_default() += v;
        }
    }
    let results = report(&cli, &wc, &total, elapsed);
    // Written before the summary: a reader that stops early (`| head -1`) must not cost
    // the JSON.
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&results)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    // Not println!: it panics when stdout is a pipe already closed.
    use std::io::Write;
    let _ = writeln!(std::io::stdout(), "{}", summary(&results));
    Ok(())
}

async fn run_thread(
    thread: u32,
    cli: Cli,
    url: String,
    body: String,
    deadline: Instant,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
) -> anyhow::Result<Tally> {
    // One keep-alive connection per outstanding write (the default pool has 100).
    let connector = awc::Connector::new().limit(cli.concurrency.max(cli.max_in_flight) as usize);
    let client =
        awc::Client::builder().timeout(Duration::from_millis(cli.timeout_ms.max(1000) + 10_000));
    let client = match &cli.tls_ca {
        Some(tls) => client
            .connector(connector.rustls_0_23(tls.clone()))
            .finish(),
        None => client.connector(connector).finish(),
    };
    let tally = Rc::new(RefCell::new(Tally::new()));
    // This thread's share of --count.
    let quota = cli.count.map(|c| {
        let share = c / u64::from(cli.threads);
        share + u64::from(u64::from(thread) < c % u64::from(cli.threads))
    });
    let issued = Rc::new(Cell::new(0u64));
    let take = {
        let issued = issued.clone();
        move || {
            if Instant::now() >= deadline || quota.is_some_and(|q| issued.get() >= q) {
                return false;
            }
            issued.set(issued.get() + 1);
            true
        }
    };
    let client = match cli.target {
        Target::Chorus if cli.http_client == "raw" => Client::Raw(peers::Http::new(
            &url_base(&url),
            &body,
            cli.tls_ca.clone(),
        )?),
        Target::Chorus => Client::Chorus {
            http: client,
            url,
            body,
        },
        Target::Redis => {
            let replicas = cli
                .write_concern
                .parse::<u64>()
                .unwrap_or(1)
                .saturating_sub(1);
            Client::Redis(peers::Redis::new(&url, &body, replicas))
        }
        Target::Etcd => Client::Etcd(
            peers::Etcd::connect(&url, &body)
                .await
                .with_context(|| format!("connect to etcd at {url}"))?,
        ),
    };
    let shared = Rc::new(Shared {
        client,
        tally: tally.clone(),
        done,
    });
    match cli.rate {
        None => {
            let workers: Vec<_> = (0..cli.concurrency)
                .map(|_| {
                    let (take, shared) = (take.clone(), shared.clone());
                    actix_rt::spawn(async move {
                        while take() {
                            shared.write(Instant::now()).await;
                        }
                    })
                })
                .collect();
            for w in workers {
                w.await?;
            }
        }
        Some(rate) => {
            let interval = Duration::from_secs_f64(f64::from(cli.threads) / rate);
            let in_flight = Rc::new(Cell::new(0u32));
            let mut due = Instant::now();
            let mut pending = Vec::new();
            while take() {
                actix_rt::time::sleep_until(due.into()).await;
                if in_flight.get() >= cli.max_in_flight {
                    *tally
                        .borrow_mut()
                        .errors
                        .entry("skipped: too many in flight".into())
                        .or_default() += 1;
                } else {
                    in_flight.set(in_flight.get() + 1);
                    let (shared, in_flight) = (shared.clone(), in_flight.clone());
                    pending.push(actix_rt::spawn(async move {
                        shared.write(due).await;
                        in_flight.set(in_flight.get() - 1);
                    }));
                }
                due += interval;
            }
            for p in pending {
                p.await?;
            }
        }
    }
    drop(shared);
    Ok(Rc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("tally still shared"))?
        .into_inner())
}

/// How one thread talks to the server.
enum Client {
    Chorus {
        http: awc::Client,
        url: String,
        body: String,
    },
    Raw(peers::Http),
    Redis(peers::Redis),
    Etcd(peers::Etcd),
}

/// http://HOST:PORT of a .../newMessage URL.
fn url_base(url: &str) -> String {
    url.trim_end_matches("/newMessage").to_string()
}

impl Client {
    async fn write(&self) -> Result<(), String> {
        match self {
            Client::Chorus { http, url, body } => {
                let answer = http
                    .post(url)
                    .insert_header(("content-type", "application/json"))
                    .send_body(body.clone())
                    .await;
                match answer {
                    Ok(mut resp) if resp.status().as_u16() == 201 => {
                        let _ = resp.body().await;
                        Ok(())
                    }
                    Ok(resp) => Err(resp.status().as_u16().to_string()),
                    Err(e) => Err(format!("no answer: {e}")),
                }
            }
            Client::Raw(h) => h.write().await,
            Client::Redis(r) => r.write().await,
            Client::Etcd(e) => e.write().await,
        }
    }
}

/// What every write of one thread shares.
struct Shared {
    client: Client,
    tally: Rc<RefCell<Tally>>,
    done: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Shared {
    /// One write, due at `due`: its latency (or its error) goes into the tally.
    async fn write(&self, due: Instant) {
        // Finish the write before touching the tally: no borrow across an await, where
        // another write's task may want it.
        let outcome = self
            .client
            .write()
            .await
            .map(|()| due.elapsed().as_micros().max(1) as u64);
        let mut t = self.tally.borrow_mut();
        match outcome {
            Ok(micros) => t.ok.saturating_record(micros),
            Err(kind) => *t.errors.entry(kind).or_default() += 1,
        }
        self.done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

fn report(cli: &Cli, wc: &Value, t: &Tally, elapsed: f64) -> Value {
    let h = &t.ok;
    let errors: u64 = t.errors.values().sum();
    json!({
        "mode": if cli.rate.is_some() { "open" } else { "closed" },
        "target": format!("{:?}", cli.target).to_lowercase(),
        "httpClient": (cli.target == Target::Chorus).then_some(&cli.http_client),
        "url": cli.url,
        "concurrency": cli.concurrency * cli.threads,
        "threads": cli.threads,
        "rate": cli.rate,
        "messageBytes": cli.size,
        "writeConcern": wc,
        "seconds": elapsed,
        "ok": h.len(),
        "errors": errors,
        "errorsByKind": t.errors,
        "throughput": h.len() as f64 / elapsed,
        "latencyMs": {
            "p50": ms(h.value_at_quantile(0.5)),
            "p90": ms(h.value_at_quantile(0.9)),
            "p99": ms(h.value_at_quantile(0.99)),
            "p999": ms(h.value_at_quantile(0.999)),
            "max": ms(h.max()),
            "mean": h.mean() / 1000.0,
        },
    })
}

fn summary(r: &Value) -> String {
    let l = &r["latencyMs"];
    let load = match r["rate"].as_f64() {
        Some(rate) => format!("open loop at {rate}/s"),
        None => format!("closed loop, concurrency {}", r["concurrency"]),
    };
    format!(
        "{load}, w={}, {} B: {} ok, {} errors in {:.2} s = {:.0} writes/s\nlatency ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}",
        r["writeConcern"],
        r["messageBytes"],
        r["ok"],
        r["errors"],
        r["seconds"].as_f64().unwrap_or_default(),
        r["throughput"].as_f64().unwrap_or_default(),
        l["p50"].as_f64().unwrap_or_default(),
        l["p90"].as_f64().unwrap_or_default(),
        l["p99"].as_f64().unwrap_or_default(),
        l["p999"].as_f64().unwrap_or_default(),
        l["max"].as_f64().unwrap_or_default(),
    )
}
