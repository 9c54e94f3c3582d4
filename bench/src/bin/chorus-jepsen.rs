//! chorus-jepsen: a Jepsen-style test of a chorus set on this machine (the loopback
//! variant of the fault suite: no containers; partitions go through `/admin/faults`).
//!
//! It starts `--members` members, runs `--clients` writers through the chorus-client
//! crate (write concerns 1, "majority" and all, each write with its own requestId, some
//! sent again under the same requestId after a failure) and one reader per member
//! (`GET /messages`, local and `readConcern=majority`), and meanwhile a seeded sequence
//! of nemeses, alone or two at once: kill -9 of the master, of a secondary and of a
//! majority; a power loss (the log loses what it had not made durable) of the master
//! and of a majority; a partition that isolates the master, one that splits the set,
//! one that leaves a bridge member; a lossy, slow link; SIGSTOP of the master or of a
//! secondary past the election timeout; where libfaketime is installed, a jump of the
//! master's wall clock (forward or back) and wall clocks skewed apart on every member.
//! Then it heals everything and checks the whole history:
//!
//! - every write acknowledged with a majority is in the final log once, at its id, on
//!   every member; no id holds two different entries on two members;
//! - every majority read showed entries of the final log, at their ids, gap-free;
//! - every local read showed entries that are final or that went to a rollback file;
//! - every rolled-back entry was acknowledged by fewer than a majority, or not at all;
//! - a requestId is in the final log at most once;
//! - after healing, every member's checksum agrees within 10 s.
//!
//! It prints a report (operations, acknowledged by concern, rolled back, lost w=1
//! writes, longest write unavailability, failover times, convergence, violations) and
//! exits non-zero on any violation.
//!
//! ```sh
//! chorus-jepsen --bin-dir target/release --seconds 600 --seed 7 --json report.json
//! ```

use anyhow::{Result, bail};
use chorus_bench::localset::{Admin, Docker, Member, Runner, members, percentile};
use chorus_client::{Client, Error as ClientError, Options, Write};
use clap::Parser;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "A Jepsen-style fault test of a local chorus set: writers, readers, nemeses, a checker"
)]
struct Cli {
    /// Directory holding master-node and secondary-node.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Seconds of faults (then everything heals and the checker runs).
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Seeds the nemesis schedule, the writers' choices and the fault rules.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Members of the set (3 or 5).
    #[arg(long, default_value_t = 3)]
    members: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Members' --election-timeout-ms.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Keep the members' data directories and logs here (default: a temporary
    /// directory, removed at the end).
    #[arg(long)]
    keep: Option<PathBuf>,
    /// Also write the report here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
    /// libfaketime, under which the members run so that the clock nemeses can move
    /// their wall clocks; "none" leaves those nemeses out. The default is Debian's
    /// (package libfaketime), if installed.
    #[arg(long, default_value = chorus_bench::localset::LIBFAKETIME)]
    faketime: PathBuf,
    /// Run the members in containers of this image (scripts/docker-image.sh builds
    /// one) instead of as processes of this machine: kills, pauses and restarts go
    /// through the Docker engine, and the clock nemeses are left out.
    #[arg(long, value_name = "IMAGE")]
    docker: Option<String>,
    /// With --docker: the containers' label `chorus.test=<this>` and their names'
    /// prefix (default chorus-jepsen-<pid>), for a script to remove what is left.
    #[arg(long, value_name = "LABEL")]
    docker_label: Option<String>,
}

/// A write concern as the writers choose them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Concern {
    One,
    Majority,
    All,
}

impl Concern {
    fn value(self, members: usize) -> Value {
        match self {
            Concern::One => json!(1),
            Concern::Majority => json!("majority"),
            Concern::All => json!(members),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Concern::One => "w1",
            Concern::Majority => "majority",
            Concern::All => "all",
        }
    }

    /// Acknowledged by at least a majority: never lost.
    fn durable(self) -> bool {
        self != Concern::One
    }
}

#[derive(Debug, Clone)]
enum WriteResult {
    Acked {
        id: u64,
        term: u64,
        retried: bool,
    },
    /// The server answered an error (a `504` carries the id the message got).
    Refused {
        code: String,
    },
    /// No answer, or none in time: it may or may not be in the log.
    Unknown,
}

#[derive(Debug, Clone)]
struct WriteOp {
    /// The requestId, which is also the message: a resend carries both again.
    key: String,
    concern: Concern,
    start: Duration,
    end: Duration,
    result: WriteResult,
}

#[derive(Debug, Clone)]
struct ReadOp {
    member: String,
    majority: bool,
    at: Duration,
    entries: Vec<(u64, String)>,
}

#[derive(Debug, Clone)]
struct Fault {
    kind: &'static str,
    targets: Vec<String>,
    start: Duration,
    end: Duration,
    /// The fault took the master away (kill, pause, isolation).
    master_lost: bool,
}

#[derive(Default)]
struct History {
    writes: Vec<WriteOp>,
    reads: Vec<ReadOp>,
    faults: Vec<Fault>,
}

struct Run {
    cli: Cli,
    t0: Instant,
    set: RefCell<Vec<Member>>,
    client: Client,
    admin: Admin,
    history: RefCell<History>,
    rng: RefCell<StdRng>,
    stop: Cell<bool>,
}

impl Run {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn event(&self, what: &str) {
        eprintln!("[{:>7.2}s] {what}", self.now().as_secs_f64());
    }

    fn names(&self) -> Vec<String> {
        self.set.borrow().iter().map(|m| m.name.clone()).collect()
    }

    fn index_of(&self, name: &str) -> usize {
        self.set
            .borrow()
            .iter()
            .position(|m| m.name == name)
            .expect("a member of the set")
    }

    fn http_of(&self, name: &str) -> String {
        self.set.borrow()[self.index_of(name)].http.clone()
    }

    /// The master as the client sees it now, by name.
    async fn master(&self) -> Option<String> {
        let addr = self.client.select_primary().await.ok()?;
        self.set
            .borrow()
            .iter()
            .find(|m| m.http == addr)
            .map(|m| m.name.clone())
    }

    fn pick<T: Clone>(&self, from: &[T]) -> T {
        from[self.rng.borrow_mut().random_range(0..from.len())].clone()
    }

    /// `count` members other than `but`, chosen at random.
    fn others(&self, but: &[String], count: usize) -> Vec<String> {
        let mut left: Vec<String> = self
            .names()
            .into_iter()
            .filter(|n| !but.contains(n))
            .collect();
        let mut out = Vec::new();
        while out.len() < count && !left.is_empty() {
            let i = self.rng.borrow_mut().random_range(0..left.len());
            out.push(left.remove(i));
        }
        out
    }

    /// Cut `a` from every member of `b`, both directions: the rules go on the members of
    /// `a` (a rule covers both directions of that member's link).
    async fn cut(&self, a: &[String], b: &[String]) {
        for x in a {
            let rules: Vec<Value> = b
                .iter()
                .map(|y| json!({"peer": y, "partition": true}))
                .collect();
            self.put_rules(x, rules).await;
        }
    }

    async fn put_rules(&self, member: &str, rules: Vec<Value>) {
        let seed = self.rng.borrow_mut().random_range(0..u32::MAX as u64);
        let addr = self.http_of(member);
        let body = json!({"seed": seed, "rules": rules});
        if let Err(e) = self.admin.send("PUT", &addr, "/admin/faults", &body).await {
            self.event(&format!("PUT /admin/faults on {member} failed: {e}"));
        }
    }

    /// Undo every fault: restart the killed, resume the paused, put the clocks right,
    /// clear every rule.
    async fn heal(&self) {
        let names = self.names();
        for name in &names {
            let i = self.index_of(name);
            let mut set = self.set.borrow_mut();
            if let Err(e) = set[i].set_clock(0) {
                eprintln!("setting the clock of {name} right: {e}");
            }
            set[i].resume();
            if !set[i].is_running()
                && let Err(e) = set[i].start()
            {
                eprintln!("restart {name}: {e}");
            }
        }
        for name in &names {
            let addr = self.http_of(name);
            // A member just restarted may not listen yet: it starts without rules anyway.
            let _ = self
                .admin
                .send("DELETE", &addr, "/admin/faults", &json!({}))
                .await;
        }
    }

    async fn sleep_ms(&self, lo: u64, hi: u64) {
        let ms = self.rng.borrow_mut().random_range(lo..=hi);
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }

    /// One nemesis (or two at once), held for a few seconds, then healed.
    async fn nemesis(&self, kinds: &[&'static str]) {
        let start = self.now();
        let mut applied = Vec::new();
        let master = self.master().await;
        for kind in kinds {
            let (targets, master_lost) = self.apply(kind, master.clone()).await;
            if !targets.is_empty() {
                self.event(&format!("{kind}: {}", targets.join(", ")));
                applied.push((*kind, targets, master_lost));
            }
        }
        let hold = self.cli.election_timeout_ms * 3;
        self.sleep_ms(hold / 2, hold * 2).await;
        self.heal().await;
        let end = self.now();
        self.event("healed");
        let mut h = self.history.borrow_mut();
        for (kind, targets, master_lost) in applied {
            h.faults.push(Fault {
                kind,
                targets,
                start,
                end,
                master_lost,
            });
        }
    }

    /// Apply one nemesis; returns whom it hit and whether the master was among them.
    async fn apply(&self, kind: &str, master: Option<String>) -> (Vec<String>, bool) {
        let all = self.names();
        let n = all.len();
        let secondary = || self.others(master.as_slice(), 1);
        let targets: Vec<String> = match kind {
            "kill-master" | "pause-master" | "isolate-master" | "power-loss-master" => {
                master.iter().cloned().collect()
            }
            "kill-secondary" | "pause-secondary" => secondary(),
            "kill-majority" | "power-loss-majority" => {
                let mut t: Vec<String> = master.iter().cloned().collect();
                t.extend(self.others(&t, n / 2 + 1 - t.len()));
                t
            }
            "split" => self.others(&[], n / 2),
            "bridge" => self.others(&[], n),
            "lossy-master" | "clock-jump-master" => master.iter().cloned().collect(),
            "clock-skew" => self.others(&[], n),
            _ => Vec::new(),
        };
        // A member killed or paused by the other nemesis of a pair is left alone (a
        // paused one could not take fault rules either).
        let running: Vec<String> = self
            .set
            .borrow()
            .iter()
            .filter(|m| m.is_running() && !m.is_paused())
            .map(|m| m.name.clone())
            .collect();
        if targets.is_empty() || targets.iter().any(|t| !running.contains(t)) {
            return (Vec::new(), false);
        }
        match kind {
            "kill-master" | "kill-secondary" | "kill-majority" => {
                let mut set = self.set.borrow_mut();
                for t in &targets {
                    let i = set.iter().position(|m| m.name == *t).expect("a member");
                    set[i].kill();
                }
            }
            "power-loss-master" | "power-loss-majority" => {
                // The member drops what its log had not made durable and ends; no
                // answer comes. Then reap it, as for a kill.
                for t in &targets {
                    let addr = self.http_of(t);
                    let crash = json!({"mode": "powerLoss"});
                    let _ = self.admin.send("POST", &addr, "/admin/crash", &crash).await;
                    let i = self.index_of(t);
                    self.set.borrow_mut()[i].kill();
                }
            }
            "pause-master" | "pause-secondary" => {
                let mut set = self.set.borrow_mut();
                for t in &targets {
                    let i = set.iter().position(|m| m.name == *t).expect("a member");
                    set[i].pause();
                }
            }
            "isolate-master" => {
                let rest: Vec<String> = all.iter().filter(|x| **x != targets[0]).cloned().collect();
                self.cut(&targets, &rest).await;
            }
            "split" => {
                let rest: Vec<String> = all
                    .iter()
                    .filter(|x| !targets.contains(x))
                    .cloned()
                    .collect();
                self.cut(&targets, &rest).await;
            }
            "bridge" => {
                // targets is a shuffled list of every member: the first is the bridge,
                // the rest are cut in two halves that each still hear the bridge.
                let rest = &targets[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                self.cut(a, b).await;
            }
            "clock-jump-master" | "clock-skew" => {
                // A jump of the master's wall clock, or every member's apart from each
                // other: 2 to 8 s either way (the election timeout is 1 s), up to 60 s
                // now and then.
                let set = self.set.borrow();
                for t in &targets {
                    let secs = {
                        let mut rng = self.rng.borrow_mut();
                        let s = if rng.random_bool(0.2) {
                            rng.random_range(9..=60i64)
                        } else {
                            rng.random_range(2..=8i64)
                        };
                        if rng.random_bool(0.5) { s } else { -s }
                    };
                    let m = &set[set.iter().position(|m| m.name == *t).expect("a member")];
                    if let Err(e) = m.set_clock(secs) {
                        eprintln!("moving the clock of {t}: {e}");
                    }
                }
            }
            "lossy-master" => {
                let rules: Vec<Value> = all
                    .iter()
                    .filter(|x| **x != targets[0])
                    .map(|y| json!({"peer": y, "drop": 0.2, "delayMs": [5, 60]}))
                    .collect();
                self.put_rules(&targets[0], rules).await;
            }
            _ => {}
        }
        let master_lost = matches!(
            kind,
            "kill-master"
                | "pause-master"
                | "isolate-master"
                | "kill-majority"
                | "power-loss-master"
                | "power-loss-majority"
        );
        (targets, master_lost)
    }
}

/// The nemeses that move clocks (only with libfaketime).
const CLOCK_NEMESES: &[&str] = &["clock-jump-master", "clock-skew"];

const NEMESES: &[&str] = &[
    "kill-master",
    "kill-secondary",
    "kill-majority",
    "isolate-master",
    "split",
    "bridge",
    "lossy-master",
    "pause-master",
    "pause-secondary",
    "power-loss-master",
    "power-loss-majority",
    "clock-jump-master",
    "clock-skew",
];

async fn writer(run: Rc<Run>, idx: usize) {
    let mut rng = StdRng::seed_from_u64(run.cli.seed.wrapping_mul(1000).wrapping_add(idx as u64));
    let mut seq = 0u64;
    // A write that failed without a clear answer, sent again under its requestId.
    let mut again: Option<(String, Concern)> = None;
    while !run.stop.get() {
        let (key, concern) = again.take().unwrap_or_else(|| {
            seq += 1;
            let concern = match rng.random_range(0..10) {
                0..=3 => Concern::One,
                4..=8 => Concern::Majority,
                _ => Concern::All,
            };
            (format!("c{idx}-{seq}"), concern)
        });
        let start = run.now();
        let r = run
            .client
            .write(&Write {
                message: key.clone(),
                write_concern: Some(concern.value(run.cli.members)),
                timeout_ms: Some(2000),
                request_id: Some(key.clone()),
            })
            .await;
        let result = match r {
            Ok(w) => WriteResult::Acked {
                id: w.id,
                term: w.body["term"].as_u64().unwrap_or(0),
                retried: w.retried,
            },
            Err(ClientError::Refused { code, .. }) => WriteResult::Refused { code },
            Err(_) => WriteResult::Unknown,
        };
        if !matches!(result, WriteResult::Acked { .. }) && rng.random_bool(0.5) {
            again = Some((key.clone(), concern));
        }
        run.history.borrow_mut().writes.push(WriteOp {
            key,
            concern,
            start,
            end: run.now(),
            result,
        });
        if rng.random_bool(0.3) {
            tokio::time::sleep(Duration::from_millis(rng.random_range(1..20))).await;
        }
    }
}

/// Read one member's tail over and over, local and majority in turn.
async fn reader(run: Rc<Run>, member: String) {
    let mut rng = StdRng::seed_from_u64(run.cli.seed ^ 0x5eed ^ member.len() as u64);
    let mut last = 0u64;
    while !run.stop.get() {
        let majority = rng.random_bool(0.5);
        let from = last.saturating_sub(rng.random_range(0..50)).max(1);
        let addr = run.http_of(&member);
        let path = format!(
            "/messages?from={from}&limit=200{}",
            if majority {
                "&readConcern=majority"
            } else {
                ""
            }
        );
        let at = run.now();
        if let Ok((200, v)) = run.admin.get(&addr, &path).await {
            let entries: Vec<(u64, String)> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    (
                        e["id"].as_u64().unwrap_or(0),
                        e["message"].as_str().unwrap_or_default().to_string(),
                    )
                })
                .collect();
            if let Some((id, _)) = entries.last() {
                last = last.max(*id);
            }
            run.history.borrow_mut().reads.push(ReadOp {
                member: member.clone(),
                majority,
                at,
                entries,
            });
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(20..120))).await;
    }
}

/// An entry a member wrote to its rollback files.
struct RolledBack {
    member: String,
    id: u64,
    term: u64,
    message: String,
}

/// Every entry the members wrote to their rollback files.
fn rolled_back(set: &[Member]) -> Vec<RolledBack> {
    let mut out = Vec::new();
    for m in set {
        let Ok(dir) = std::fs::read_dir(m.data_dir.join("rollback")) else {
            continue;
        };
        for f in dir.flatten() {
            let Ok(text) = std::fs::read_to_string(f.path()) else {
                continue;
            };
            for line in text.lines() {
                if let Ok(v) = serde_json::from_str::<Value>(line) {
                    out.push(RolledBack {
                        member: m.name.clone(),
                        id: v["id"].as_u64().unwrap_or(0),
                        term: v["term"].as_u64().unwrap_or(0),
                        message: v["message"].as_str().unwrap_or_default().to_string(),
                    });
                }
            }
        }
    }
    out
}

/// Write `message` with every member as its write concern, again and again for up to
/// a minute; whether it was acknowledged.
async fn write_everywhere(run: &Run, message: &str) -> bool {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        let w = Write {
            message: message.into(),
            write_concern: Some(json!(run.cli.members)),
            timeout_ms: Some(2000),
            ..Write::default()
        };
        if run.client.write(&w).await.is_ok() {
            return true;
        }
    }
    false
}

async fn run(cli: Cli) -> Result<bool> {
    let tmp = tempfile::Builder::new()
        .prefix("chorus-jepsen-")
        .tempdir()?;
    let work = match &cli.keep {
        Some(p) => {
            std::fs::create_dir_all(p)?;
            p.clone()
        }
        None => tmp.path().to_path_buf(),
    };
    let names: Vec<String> = (1..=cli.members).map(|i| format!("n{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let extra = vec![
        "--election-timeout-ms".to_string(),
        cli.election_timeout_ms.to_string(),
    ];
    let runner = match &cli.docker {
        Some(image) => Runner::Docker(Docker {
            image: image.clone(),
            label: cli
                .docker_label
                .clone()
                .unwrap_or_else(|| format!("chorus-jepsen-{}", std::process::id())),
        }),
        None => Runner::Process,
    };
    let faketime = cli
        .faketime
        .exists()
        .then_some(cli.faketime.as_path())
        .filter(|_| cli.docker.is_none());
    if cli.docker.is_some() {
        eprintln!("members in containers: the clock nemeses are left out");
    } else if faketime.is_none() {
        eprintln!(
            "no libfaketime at {}: the clock nemeses are left out",
            cli.faketime.display()
        );
    }
    let mut set = members(&runner, &cli.bin_dir, &work, &name_refs, &extra, faketime)?;
    for m in &mut set {
        m.start()?;
    }
    let seeds: Vec<String> = set.iter().map(|m| m.http.clone()).collect();
    let client = Client::new(
        &seeds,
        Options {
            selection_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(5),
            ..Options::default()
        },
    );
    let run = Rc::new(Run {
        rng: RefCell::new(StdRng::seed_from_u64(cli.seed)),
        cli,
        t0: Instant::now(),
        set: RefCell::new(set),
        client,
        admin: Admin::default(),
        history: RefCell::default(),
        stop: Cell::new(false),
    });
    // Ready once a write reaches every member.
    if !write_everywhere(&run, "ready").await {
        bail!("the set never took a write on every member");
    }
    run.event(&format!(
        "{} members up; seed {}; {} s of faults",
        run.cli.members, run.cli.seed, run.cli.seconds
    ));

    let mut tasks = Vec::new();
    for i in 0..run.cli.clients {
        tasks.push(actix_rt::spawn(writer(run.clone(), i)));
    }
    for name in run.names() {
        tasks.push(actix_rt::spawn(reader(run.clone(), name)));
    }
    let clocks = run.set.borrow().iter().all(Member::has_clock);
    let nemeses: Vec<&'static str> = NEMESES
        .iter()
        .copied()
        .filter(|k| clocks || !CLOCK_NEMESES.contains(k))
        .collect();
    let faults_end = Duration::from_secs(run.cli.seconds);
    while run.now() < faults_end {
        run.sleep_ms(500, 2000).await;
        let first = run.pick(&nemeses);
        let mut kinds = vec![first];
        if run.rng.borrow_mut().random_bool(0.3) {
            let second = run.pick(&nemeses);
            // Two kills at once are one bigger kill; keep the mix to one of a kind.
            let crash = |k: &str| k.starts_with("kill") || k.starts_with("power-loss");
            if second != first && !(crash(first) && crash(second)) {
                kinds.push(second);
            }
        }
        run.nemesis(&kinds).await;
    }
    run.heal().await;
    run.event("faults over; the writers go on for 3 s on the healed set");
    tokio::time::sleep(Duration::from_secs(3)).await;
    run.stop.set(true);
    for t in tasks {
        let _ = t.await;
    }
    // Convergence counts from here: the set is healed and no write is in flight.
    let quiet = Instant::now();
    // One last write on every member, so that a master of the last term holds
    // everything committed; then the members must agree (the checker says so if not).
    write_everywhere(&run, "final").await;
    let addrs: Vec<(String, String)> = run
        .set
        .borrow()
        .iter()
        .map(|m| (m.name.clone(), m.http.clone()))
        .collect();
    let http: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let (final_log, agreed, _) = run.admin.converge(&http, Duration::from_secs(60)).await;
    let convergence = quiet.elapsed();
    let mut logs = Vec::new();
    for (name, addr) in &addrs {
        logs.push((name.clone(), run.admin.log(addr).await.unwrap_or_default()));
    }
    let rolled = rolled_back(&run.set.borrow());
    let report = check(
        &run.cli,
        &run.history.borrow(),
        &Final {
            log: &final_log,
            logs: &logs,
            rolled: &rolled,
            agreed,
            convergence,
        },
    );
    let violations = report["violations"].as_array().map_or(0, Vec::len);
    if let Some(path) = &run.cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    if violations > 0 && run.cli.keep.is_none() {
        // Keep the evidence.
        let kept = tmp.keep();
        eprintln!("data directories and logs kept in {}", kept.display());
    }
    Ok(violations == 0)
}

/// What the set holds once healed.
struct Final<'a> {
    /// The log every member agreed on (or the first member's, if they never did).
    log: &'a [(u64, String)],
    /// Each member's log, by name.
    logs: &'a [(String, Vec<(u64, String)>)],
    rolled: &'a [RolledBack],
    agreed: bool,
    /// From healing to equal checksums.
    convergence: Duration,
}

/// The checker: the whole history against the final logs. Returns the report.
fn check(cli: &Cli, h: &History, end: &Final) -> Value {
    let Final {
        log: final_log,
        logs,
        rolled,
        agreed,
        convergence,
    } = *end;
    let mut violations: Vec<String> = Vec::new();
    let mut violate = |v: String| {
        if violations.len() < 50 {
            eprintln!("VIOLATION: {v}");
        }
        violations.push(v);
    };
    let at = |id: u64| {
        final_log
            .get((id as usize).wrapping_sub(1))
            .map(|(_, m)| m.as_str())
    };

    // The final logs: one entry per id across members, gap-free, each key once.
    let mut by_id: BTreeMap<u64, &str> = BTreeMap::new();
    for (name, log) in logs {
        for (i, (id, msg)) in log.iter().enumerate() {
            if *id != i as u64 + 1 {
                violate(format!("{name}'s log has id {id} at position {}", i + 1));
                break;
            }
            match by_id.get(id) {
                Some(other) if other != msg => violate(format!(
                    "id {id} holds {other:?} on one member and {msg:?} on {name}"
                )),
                _ => {
                    by_id.insert(*id, msg);
                }
            }
        }
    }
    if !agreed {
        violate("the members' checksums never agreed once healed".into());
    } else if convergence > Duration::from_secs(10) {
        violate(format!(
            "the members' checksums agreed {} ms after the writers stopped (bound: 10 s)",
            convergence.as_millis()
        ));
    }
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (id, msg) in final_log {
        if let Some(first) = seen.insert(msg.as_str(), *id)
            && msg != "ready"
            && msg != "final"
        {
            violate(format!(
                "{msg} is in the final log twice, at {first} and {id}"
            ));
        }
    }

    // Writes.
    let mut acked: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut unknown, mut retried_by_client, mut lost_w1) = (0, 0, 0);
    let mut refused: BTreeMap<&str, usize> = BTreeMap::new();
    let mut slowest_ack = Duration::ZERO;
    let mut resent: HashSet<&str> = HashSet::new();
    let mut keys: HashMap<&str, usize> = HashMap::new();
    let mut acks: Vec<(Duration, u64)> = Vec::new();
    for w in &h.writes {
        *keys.entry(w.key.as_str()).or_default() += 1;
        if keys[w.key.as_str()] > 1 {
            resent.insert(w.key.as_str());
        }
        match &w.result {
            WriteResult::Acked { id, term, retried } => {
                *acked.entry(w.concern.name()).or_default() += 1;
                slowest_ack = slowest_ack.max(w.end.saturating_sub(w.start));
                retried_by_client += usize::from(*retried);
                acks.push((w.end, *term));
                let held = at(*id) == Some(w.key.as_str());
                if w.concern.durable() && !held {
                    violate(format!(
                        "{} acknowledged with {} at id {id} (term {term}) is not there in the final log (found {:?})",
                        w.key,
                        w.concern.name(),
                        at(*id)
                    ));
                } else if !held {
                    lost_w1 += 1;
                }
            }
            WriteResult::Refused { code } => *refused.entry(code.as_str()).or_default() += 1,
            WriteResult::Unknown => unknown += 1,
        }
    }

    // Reads.
    let rolled_set: HashSet<(u64, &str)> =
        rolled.iter().map(|r| (r.id, r.message.as_str())).collect();
    let (mut majority_reads, mut local_reads) = (0, 0);
    for r in &h.reads {
        if r.majority {
            majority_reads += 1;
        } else {
            local_reads += 1;
        }
        for (i, (id, msg)) in r.entries.iter().enumerate() {
            if i > 0 && *id != r.entries[i - 1].0 + 1 {
                violate(format!(
                    "a read of {} at {:.2}s skipped from id {} to {id}",
                    r.member,
                    r.at.as_secs_f64(),
                    r.entries[i - 1].0
                ));
                break;
            }
            let fine = at(*id) == Some(msg.as_str());
            if r.majority && !fine {
                violate(format!(
                    "a majority read of {} at {:.2}s showed {msg:?} at id {id}; the final log holds {:?}",
                    r.member,
                    r.at.as_secs_f64(),
                    at(*id)
                ));
            } else if !fine && !rolled_set.contains(&(*id, msg.as_str())) {
                violate(format!(
                    "a local read of {} at {:.2}s showed {msg:?} at id {id}, which is neither final ({:?}) nor rolled back",
                    r.member,
                    r.at.as_secs_f64(),
                    at(*id)
                ));
            }
        }
    }

    // Rollbacks: never of a write a majority acknowledged. The entry is the same one
    // if id and term match: a write that failed on a master cut off, then retried
    // under its requestId on the next, may land at the same id in a newer term.
    for r in rolled {
        for w in h.writes.iter().filter(|w| w.key == r.message) {
            if let WriteResult::Acked { id, term, .. } = w.result
                && (id, term) == (r.id, r.term)
                && w.concern.durable()
            {
                violate(format!(
                    "{} rolled back {} at id {id} of term {term}, acknowledged with {}",
                    r.member,
                    r.message,
                    w.concern.name()
                ));
            }
        }
    }

    // Availability: the longest time without an acknowledgement while the writers ran,
    // and per fault that took the master, the time to the first write a master of a
    // newer term acknowledged.
    acks.sort();
    let longest_gap = acks
        .windows(2)
        .map(|w| w[1].0 - w[0].0)
        .max()
        .unwrap_or_default();
    // A fault only counts as a failover if a master of a newer term acknowledged a
    // write before the next fault began: a pause shorter than the election timeout,
    // for one, leaves the same master in place.
    let mut failovers: Vec<f64> = Vec::new();
    let mut kept_master = 0;
    for (i, f) in h.faults.iter().enumerate().filter(|(_, f)| f.master_lost) {
        let before = acks
            .iter()
            .filter(|(t, _)| *t <= f.start)
            .map(|(_, term)| *term)
            .max()
            .unwrap_or(0);
        let next = h.faults[i + 1..]
            .iter()
            .map(|n| n.start)
            .find(|s| *s > f.start)
            .unwrap_or(Duration::MAX);
        match acks
            .iter()
            .find(|(t, term)| *t > f.start && *term > before)
            .filter(|(t, _)| *t < next)
        {
            Some((t, _)) => failovers.push((*t - f.start).as_secs_f64() * 1000.0),
            None => kept_master += 1,
        }
    }
    failovers.sort_by(f64::total_cmp);
    let mut by_kind: BTreeMap<&str, usize> = BTreeMap::new();
    for f in &h.faults {
        *by_kind.entry(f.kind).or_default() += 1;
    }
    let report = json!({
        "seed": cli.seed,
        "members": cli.members,
        "seconds": cli.seconds,
        "writes": h.writes.len(),
        "acknowledged": acked,
        "refused": refused,
        "indeterminate": unknown,
        "retriedByClient": retried_by_client,
        "resentUnderSameRequestId": resent.len(),
        "reads": {"majority": majority_reads, "local": local_reads},
        "rolledBack": rolled.len(),
        "lostW1": lost_w1,
        "longestWriteUnavailabilityMs": longest_gap.as_secs_f64() * 1000.0,
        "slowestAcknowledgedWriteMs": slowest_ack.as_secs_f64() * 1000.0,
        "failoverMs": {
            "count": failovers.len(),
            "faultsWithoutNewMaster": kept_master,
            "median": percentile(&failovers, 0.5),
            "max": failovers.last().copied().unwrap_or(f64::NAN),
        },
        "convergenceMs": convergence.as_secs_f64() * 1000.0,
        "finalLogLength": final_log.len(),
        "nemeses": by_kind,
        "faults": h.faults.iter().map(|f| json!({
            "kind": f.kind,
            "targets": f.targets,
            "startS": f.start.as_secs_f64(),
            "healedS": f.end.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "violations": violations,
    });
    println!(
        "chorus-jepsen: seed {}, {} members, {} s of faults",
        cli.seed, cli.members, cli.seconds
    );
    println!(
        "  nemeses          {}",
        serde_json::to_string(&report["nemeses"]).unwrap_or_default()
    );
    println!(
        "  writes           {} ({} acknowledged: {}; refused {}; {} indeterminate; {} retried by the client, {} resent under their requestId)",
        h.writes.len(),
        acked.values().sum::<usize>(),
        serde_json::to_string(&report["acknowledged"]).unwrap_or_default(),
        serde_json::to_string(&report["refused"]).unwrap_or_default(),
        unknown,
        retried_by_client,
        resent.len()
    );
    println!("  reads            {majority_reads} majority, {local_reads} local");
    println!(
        "  rolled back      {} entries; lost w=1 writes {lost_w1}",
        rolled.len()
    );
    println!(
        "  unavailability   longest gap between acknowledgements {:.0} ms; failovers {} (median {:.0} ms, max {:.0} ms; {} faults of the master left it in place)",
        longest_gap.as_secs_f64() * 1000.0,
        failovers.len(),
        percentile(&failovers, 0.5),
        failovers.last().copied().unwrap_or(f64::NAN),
        kept_master
    );
    println!(
        "  convergence      {:.0} ms after the writers stopped; final log {} entries",
        convergence.as_secs_f64() * 1000.0,
        final_log.len()
    );
    println!(
        "  violations       {}",
        report["violations"].as_array().map_or(0, Vec::len)
    );
    report
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    if !(3..=7).contains(&cli.members) {
        bail!("--members must be 3 to 7");
    }
    let ok = actix_rt::System::new().block_on(run(cli))?;
    if !ok {
        bail!("violations: see above");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cli() -> Cli {
        Cli::parse_from(["chorus-jepsen"])
    }

    fn log(msgs: &[&str]) -> Vec<(u64, String)> {
        msgs.iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.to_string()))
            .collect()
    }

    fn acked(key: &str, concern: Concern, id: u64, term: u64) -> WriteOp {
        WriteOp {
            key: key.into(),
            concern,
            start: Duration::ZERO,
            end: Duration::from_millis(id),
            result: WriteResult::Acked {
                id,
                term,
                retried: false,
            },
        }
    }

    /// The violations the checker finds in `h` against one final log held by three
    /// members, with `rolled` in rollback files.
    fn violations(h: &History, final_log: &[(u64, String)], rolled: &[RolledBack]) -> Vec<String> {
        report(h, final_log, rolled)["violations"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect()
    }

    fn report(h: &History, final_log: &[(u64, String)], rolled: &[RolledBack]) -> Value {
        let logs: Vec<(String, Vec<(u64, String)>)> = ["n1", "n2", "n3"]
            .iter()
            .map(|n| (n.to_string(), final_log.to_vec()))
            .collect();
        check(
            &cli(),
            h,
            &Final {
                log: final_log,
                logs: &logs,
                rolled,
                agreed: true,
                convergence: Duration::from_secs(1),
            },
        )
    }

    fn rolled(id: u64, term: u64, message: &str) -> RolledBack {
        RolledBack {
            member: "n1".into(),
            id,
            term,
            message: message.into(),
        }
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let h = History {
            writes: vec![
                acked("a", Concern::Majority, 1, 1),
                acked("b", Concern::One, 2, 1),
                acked("c", Concern::All, 3, 2),
            ],
            reads: vec![ReadOp {
                member: "n2".into(),
                majority: true,
                at: Duration::ZERO,
                entries: log(&["a", "b"]),
            }],
            faults: Vec::new(),
        };
        assert_eq!(
            violations(&h, &log(&["a", "b", "c"]), &[]),
            Vec::<String>::new()
        );
    }

    #[test]
    fn a_lost_majority_write_is_a_violation_and_a_lost_w1_write_is_counted() {
        let h = History {
            writes: vec![
                acked("a", Concern::Majority, 1, 1),
                acked("b", Concern::One, 2, 1),
                acked("c", Concern::Majority, 3, 1),
            ],
            ..History::default()
        };
        let v = violations(&h, &log(&["a", "x"]), &[]);
        assert_eq!(v.len(), 1, "{v:?}");
        assert!(
            v[0].contains("c acknowledged with majority at id 3"),
            "{v:?}"
        );
        assert_eq!(report(&h, &log(&["a", "x"]), &[])["lostW1"], 1);
    }

    #[test]
    fn rollbacks_of_a_majority_write_are_violations_unless_a_retry_took_the_id_in_a_newer_term() {
        let h = History {
            writes: vec![acked("a", Concern::Majority, 1, 3)],
            ..History::default()
        };
        // The same message at the same id of an older term, cut from a master that
        // was cut off: the write failed there and its retry landed at id 1 in term 3.
        assert!(violations(&h, &log(&["a"]), &[rolled(1, 2, "a")]).is_empty());
        let v = violations(&h, &log(&["a"]), &[rolled(1, 3, "a")]);
        assert!(
            v.iter()
                .any(|v| v.contains("rolled back a at id 1 of term 3")),
            "{v:?}"
        );
    }

    #[test]
    fn reads_are_checked_against_the_final_log_and_the_rollback_files() {
        let read = |majority, entries: Vec<(u64, String)>| ReadOp {
            member: "n1".into(),
            majority,
            at: Duration::ZERO,
            entries,
        };
        let final_log = log(&["a", "b"]);
        let h = |r| History {
            reads: vec![r],
            ..History::default()
        };
        let lost = vec![(1, "a".to_string()), (2, "z".to_string())];
        // A local read of an entry that was rolled back is fine; a majority read is not.
        assert!(
            violations(
                &h(read(false, lost.clone())),
                &final_log,
                &[rolled(2, 1, "z")]
            )
            .is_empty()
        );
        assert_eq!(
            violations(
                &h(read(true, lost.clone())),
                &final_log,
                &[rolled(2, 1, "z")]
            )
            .len(),
            1
        );
        // Neither final nor rolled back.
        assert_eq!(violations(&h(read(false, lost)), &final_log, &[]).len(), 1);
        // A read with a gap.
        let gap = vec![(1, "a".to_string()), (3, "c".to_string())];
        assert!(
            violations(&h(read(true, gap)), &log(&["a", "b", "c"]), &[])[0].contains("skipped")
        );
    }

    #[test]
    fn a_message_twice_and_members_that_disagree_are_violations() {
        let h = History::default();
        let v = violations(&h, &log(&["a", "b", "a"]), &[]);
        assert!(v.iter().any(|v| v.contains("twice")), "{v:?}");
        let logs = vec![
            ("n1".to_string(), log(&["a", "b"])),
            ("n2".to_string(), log(&["a", "c"])),
        ];
        let report = check(
            &cli(),
            &h,
            &Final {
                log: &logs[0].1,
                logs: &logs,
                rolled: &[],
                agreed: false,
                convergence: Duration::from_secs(61),
            },
        );
        let v = report["violations"].as_array().unwrap();
        assert_eq!(v.len(), 2, "{v:?}");
    }
}
