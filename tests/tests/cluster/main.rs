//! The cluster fault suite: chorus nodes in containers on a private network, concurrent
//! writers with mixed write concerns recording every request and response, and, while
//! they run, a sequence of faults: kill -9 and restart of a secondary, a partition of a
//! secondary, a pause past the Unhealthy threshold, kill -9 and restart of the master,
//! and the master cut off from both secondaries. A checker then goes over the history.
//!
//! Needs Docker and its own image, `chorus:fault-suite`; `scripts/cluster-suite.sh` builds
//! that image and runs the suite, and skips it with a reason where Docker is missing.

mod docker;

use chorus_tests::{Http, wait_for};
use docker::DockerCluster;
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
const WRITE_TIMEOUT_MS: u64 = 2000;
const HEARTBEAT_MS: u64 = 200;
const LONG: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Outcome {
    Acked {
        id: u64,
        acked_by: Vec<String>,
    },
    /// An HTTP error (`504 write_concern_timeout` carries the id the message got).
    Refused {
        code: String,
        id: Option<u64>,
    },
    /// No HTTP answer (the master was down or unreachable).
    NoAnswer,
}

#[derive(Debug, Clone)]
struct Op {
    message: String,
    wc: u64,
    start: Duration,
    end: Duration,
    outcome: Outcome,
}

struct Snapshot {
    node: String,
    log: Vec<(u64, String)>,
}

/// What the run recorded, shared by the tasks of the single-threaded test runtime.
#[derive(Default)]
struct Record {
    ops: Vec<Op>,
    snapshots: Vec<Snapshot>,
    events: Vec<(Duration, String)>,
    /// The master was cut off from both secondaries during this window.
    cut: Option<(Duration, Duration)>,
    converge: Vec<(String, Duration)>,
    unhealthy_seen: bool,
}

struct Run {
    t0: Instant,
    http: Http,
    cluster: DockerCluster,
    master: Cell<SocketAddr>,
    record: RefCell<Record>,
    stop: Cell<bool>,
}

impl Run {
    fn now(&self) -> Duration {
        self.t0.elapsed()
    }

    fn event(&self, what: impl Into<String>) {
        let what = what.into();
        eprintln!("[{:>6.1}s] {what}", self.now().as_secs_f64());
        self.record.borrow_mut().events.push((self.now(), what));
    }

    fn url(&self, addr: SocketAddr, path: &str) -> String {
        format!("http://{addr}{path}")
    }

    async fn health(&self, addr: SocketAddr) -> anyhow::Result<Value> {
        Ok(self.http.get(&self.url(addr, "/health")).await?.1)
    }

    async fn messages(&self, addr: SocketAddr) -> anyhow::Result<Vec<(u64, String)>> {
        let (status, v) = self.http.get(&self.url(addr, "/messages")).await?;
        anyhow::ensure!(status == 200, "GET /messages: {status}");
        Ok(v.as_array()
            .ok_or_else(|| anyhow::anyhow!("not an array"))?
            .iter()
            .map(|m| {
                (
                    m["id"].as_u64().unwrap_or(0),
                    m["message"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect())
    }

    /// Wait until the member `name` holds everything the master holds now; record how
    /// long that took after the heal at `healed`.
    async fn converge_after_heal(&self, name: &str, healed: Instant) -> anyhow::Result<()> {
        let target = self.health(self.master.get()).await?["lastId"]
            .as_u64()
            .unwrap_or(0);
        wait_for(&format!("{name} to catch up to {target}"), LONG, || async {
            let h = self.health(self.master.get()).await?;
            let held = h["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["name"] == name))
                .and_then(|m| m["lastAckedId"].as_u64())
                .unwrap_or(0);
            Ok((held >= target).then_some(()))
        })
        .await?;
        let took = healed.elapsed();
        self.record
            .borrow_mut()
            .converge
            .push((name.to_string(), took));
        self.event(format!("{name} caught up in {:.2}s", took.as_secs_f64()));
        Ok(())
    }

    async fn member_status(&self, name: &str) -> anyhow::Result<String> {
        let h = self.health(self.master.get()).await?;
        Ok(h["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .and_then(|m| m["status"].as_str())
            .unwrap_or("")
            .to_string())
    }
}

async fn writer(run: Rc<Run>, w: usize) {
    let mut seq = 0;
    while !run.stop.get() {
        seq += 1;
        let wc = (seq % 3 + 1) as u64;
        let message = format!("w{w}-{seq}");
        let start = run.now();
        let body = json!({"message": message, "writeConcern": wc, "timeoutMs": WRITE_TIMEOUT_MS});
        let result = run
            .http
            .post(&run.url(run.master.get(), "/newMessage"), &body)
            .await;
        let outcome = match result {
            Ok((201, b)) => Outcome::Acked {
                id: b["id"].as_u64().unwrap_or(0),
                acked_by: b["ackedBy"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            Ok((status, b)) => Outcome::Refused {
                code: format!("{status} {}", b["code"].as_str().unwrap_or("?")),
                id: b["id"].as_u64(),
            },
            Err(_) => Outcome::NoAnswer,
        };
        let failed = !matches!(outcome, Outcome::Acked { .. });
        run.record.borrow_mut().ops.push(Op {
            message,
            wc,
            start,
            end: run.now(),
            outcome,
        });
        actix_rt::time::sleep(Duration::from_millis(if failed { 100 } else { 15 })).await;
    }
}

async fn snapshotter(run: Rc<Run>) {
    while !run.stop.get() {
        for c in &run.cluster.secondaries {
            let Ok(addr) = run.cluster.http(c) else {
                continue;
            };
            if let Ok(log) = run.messages(addr).await {
                let node = c.name.clone();
                run.record
                    .borrow_mut()
                    .snapshots
                    .push(Snapshot { node, log });
            }
        }
        actix_rt::time::sleep(Duration::from_millis(400)).await;
    }
}

async fn faults(run: &Run) -> anyhow::Result<()> {
    let c = &run.cluster;
    let (s1, s2) = (&c.secondaries[0], &c.secondaries[1]);
    actix_rt::time::sleep(Duration::from_secs(2)).await;

    run.event("kill -9 s1");
    c.kill9(s1)?;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    c.start_again(s1)?;
    let healed = Instant::now();
    run.event("s1 restarted on its volume");
    run.converge_after_heal("s1", healed).await?;

    run.event("partition s2 from the master");
    c.disconnect(s2)?;
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    c.reconnect(s2, "s2")?;
    let healed = Instant::now();
    run.event("s2 partition healed");
    run.converge_after_heal("s2", healed).await?;

    run.event("pause s1");
    c.pause(s1)?;
    let seen = wait_for("s1 to turn Unhealthy", Duration::from_secs(15), || async {
        Ok((run.member_status("s1").await? == "Unhealthy").then_some(()))
    })
    .await;
    run.record.borrow_mut().unhealthy_seen = seen.is_ok();
    run.event(format!(
        "master reports paused s1 Unhealthy: {}",
        seen.is_ok()
    ));
    c.unpause(s1)?;
    let healed = Instant::now();
    run.event("s1 unpaused");
    wait_for("s1 to be Healthy again", LONG, || async {
        Ok((run.member_status("s1").await? == "Healthy").then_some(()))
    })
    .await?;
    run.converge_after_heal("s1", healed).await?;

    run.event("kill -9 master");
    c.kill9(&c.master)?;
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    c.start_again(&c.master)?;
    run.master.set(c.http(&c.master)?);
    wait_for("the master to answer", LONG, || async {
        Ok(run.health(run.master.get()).await.ok().map(|_| ()))
    })
    .await?;
    run.event("master restarted on its volume");
    for name in ["s1", "s2"] {
        wait_for(&format!("{name} to reconnect"), LONG, || async {
            let h = run.health(run.master.get()).await?;
            let live = h["members"]
                .as_array()
                .is_some_and(|ms| ms.iter().any(|m| m["name"] == name && m["phase"] == "live"));
            Ok(live.then_some(()))
        })
        .await?;
    }
    run.event("both secondaries live again");

    run.event("cut the master off from both secondaries");
    let cut_start = run.now();
    c.disconnect(s1)?;
    c.disconnect(s2)?;
    actix_rt::time::sleep(Duration::from_secs(4)).await;
    c.reconnect(s1, "s1")?;
    c.reconnect(s2, "s2")?;
    let healed = Instant::now();
    run.record.borrow_mut().cut = Some((cut_start, run.now()));
    run.event("cut healed");
    run.converge_after_heal("s1", healed).await?;
    run.converge_after_heal("s2", healed).await?;
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Every node's final log, by node name.
type Finals = BTreeMap<String, Vec<(u64, String)>>;

/// Check the recorded history against the final logs; return the violations found and
/// the summary table.
fn check(record: &Record, finals: &Finals) -> (Vec<String>, String) {
    let mut bad = Vec::new();
    let master = &finals["master"];
    for (node, log) in finals {
        if log != master {
            bad.push(format!("{node}'s final log differs from the master's"));
        }
    }
    let ids: Vec<u64> = master.iter().map(|e| e.0).collect();
    if ids != (1..=master.len() as u64).collect::<Vec<_>>() {
        bad.push("the master's ids are not 1..=n".into());
    }
    let mut seen = HashSet::new();
    for (id, m) in master {
        if !seen.insert(m) {
            bad.push(format!("message {m:?} stored twice (again at id {id})"));
        }
    }
    let members: HashSet<&str> = ["master", "s1", "s2"].into();
    let (cut_start, cut_end) = record.cut.unwrap_or_default();
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let mut acked = 0;
    for op in &record.ops {
        match &op.outcome {
            Outcome::Acked { id, acked_by } => {
                acked += 1;
                let holders: HashSet<&str> = acked_by.iter().map(String::as_str).collect();
                if holders.len() < op.wc as usize || !holders.is_subset(&members) {
                    bad.push(format!(
                        "{} (w={}) acknowledged by {acked_by:?}",
                        op.message, op.wc
                    ));
                }
                if master.get(*id as usize - 1).map(|e| &e.1) != Some(&op.message) {
                    bad.push(format!(
                        "acknowledged {} (id {id}) is not at its id",
                        op.message
                    ));
                }
                let during_cut =
                    op.start > cut_start + Duration::from_millis(500) && op.end < cut_end;
                if op.wc >= 2 && during_cut {
                    bad.push(format!(
                        "{} (w={}) acknowledged while the master was cut off",
                        op.message, op.wc
                    ));
                }
            }
            Outcome::Refused { code, id } => {
                *failed.entry(code.clone()).or_default() += 1;
                if let Some(id) = id
                    && master.get(*id as usize - 1).map(|e| &e.1) != Some(&op.message)
                {
                    bad.push(format!(
                        "{} got {code} with id {id} but is not stored there",
                        op.message
                    ));
                }
            }
            Outcome::NoAnswer => *failed.entry("no answer".into()).or_default() += 1,
        }
    }
    for s in &record.snapshots {
        if s.log.len() > master.len() || s.log[..] != master[..s.log.len()] {
            bad.push(format!(
                "a snapshot of {} ({} messages) is not a prefix of the master's log",
                s.node,
                s.log.len()
            ));
        }
    }
    if let Some((start, end)) = record.cut {
        let refused_503 = record.ops.iter().any(|op| {
            op.start >= start
                && op.end <= end
                && matches!(&op.outcome, Outcome::Refused { code, .. } if code == "503 not_writable")
        });
        if !refused_503 {
            bad.push("writes never turned 503 while the master was cut off from its quorum".into());
        }
    }
    if !record.unhealthy_seen {
        bad.push("the master never reported the paused secondary Unhealthy".into());
    }
    let longest = record
        .converge
        .iter()
        .map(|c| c.1)
        .max()
        .unwrap_or_default();

    let mut t = String::from("| cluster fault suite | |\n| --- | --- |\n");
    t += &format!("| operations | {} |\n", record.ops.len());
    t += &format!("| acknowledged (201) | {acked} |\n");
    for (code, n) in &failed {
        t += &format!("| failed: {code} | {n} |\n");
    }
    t += &format!(
        "| messages in the final log (every node) | {} |\n",
        master.len()
    );
    t += &format!(
        "| secondary snapshots checked | {} |\n",
        record.snapshots.len()
    );
    t += &format!(
        "| longest time to converge after a heal | {:.2} s |\n",
        longest.as_secs_f64()
    );
    t += &format!("| violations | {} |\n", bad.len());
    (bad, t)
}

#[actix_rt::test]
#[ignore = "needs Docker and the chorus image: run scripts/cluster-suite.sh"]
async fn cluster_fault_suite() -> anyhow::Result<()> {
    if let Some(why) = docker::unavailable() {
        panic!("cannot run the cluster suite: {why}");
    }
    let hb = HEARTBEAT_MS.to_string();
    let cluster = DockerCluster::start(2, &["--heartbeat-ms", &hb, "--ack-timeout-ms", "300"])?;
    let http = Http::new();
    let master = cluster.http(&cluster.master)?;
    let run = Rc::new(Run {
        t0: Instant::now(),
        http,
        master: Cell::new(master),
        cluster,
        record: RefCell::new(Record::default()),
        stop: Cell::new(false),
    });
    wait_for("two live secondaries", LONG, || async {
        let h = run.health(run.master.get()).await?;
        let live = h["members"]
            .as_array()
            .map_or(0, |ms| ms.iter().filter(|m| m["phase"] == "live").count());
        Ok((live == 2).then_some(()))
    })
    .await?;
    run.event("cluster up: master + 2 secondaries in containers");

    let tasks: Vec<_> = (0..WRITERS)
        .map(|w| actix_rt::spawn(writer(run.clone(), w)))
        .chain(std::iter::once(actix_rt::spawn(snapshotter(run.clone()))))
        .collect();
    let outcome = actix_rt::time::timeout(Duration::from_secs(300), faults(&run)).await;
    run.stop.set(true);
    for t in tasks {
        t.await?;
    }
    outcome.map_err(|_| anyhow::anyhow!("the fault schedule took over 5 minutes"))??;
    run.event("writers stopped; waiting for every node to hold the same log");

    let mut finals = Finals::new();
    let master_log = wait_for("all nodes to converge", LONG, || async {
        let m = run.messages(run.master.get()).await?;
        for c in &run.cluster.secondaries {
            if run.messages(run.cluster.http(c)?).await? != m {
                return Ok(None);
            }
        }
        Ok(Some(m))
    })
    .await?;
    for c in &run.cluster.secondaries {
        finals.insert(
            c.name.rsplit('-').next().unwrap_or_default().to_string(),
            run.messages(run.cluster.http(c)?).await?,
        );
    }
    finals.insert("master".to_string(), master_log);
    let (violations, summary) = check(&run.record.borrow(), &finals);
    println!("\n{summary}");
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
    Ok(())
}

/// The checker itself: each kind of violation in a made-up history is reported.
#[test]
fn the_checker_reports_every_kind_of_violation() {
    let log = |msgs: &[&str]| -> Vec<(u64, String)> {
        msgs.iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.to_string()))
            .collect()
    };
    let op = |message: &str, wc: u64, start: u64, end: u64, outcome: Outcome| Op {
        message: message.into(),
        wc,
        start: Duration::from_secs(start),
        end: Duration::from_secs(end),
        outcome,
    };
    let acked = |id: u64, by: &[&str]| Outcome::Acked {
        id,
        acked_by: by.iter().map(|s| s.to_string()).collect(),
    };
    let good = Record {
        ops: vec![
            op("a", 2, 0, 1, acked(1, &["master", "s1"])),
            op(
                "b",
                1,
                1,
                2,
                Outcome::Refused {
                    code: "504 write_concern_timeout".into(),
                    id: Some(2),
                },
            ),
            op("c", 1, 2, 3, Outcome::NoAnswer),
            op(
                "d",
                1,
                12,
                13,
                Outcome::Refused {
                    code: "503 not_writable".into(),
                    id: None,
                },
            ),
        ],
        snapshots: vec![Snapshot {
            node: "s1".into(),
            log: log(&["a"]),
        }],
        cut: Some((Duration::from_secs(10), Duration::from_secs(20))),
        unhealthy_seen: true,
        ..Record::default()
    };
    let finals = |m: &[&str], s1: &[&str]| -> Finals {
        [("master".to_string(), log(m)), ("s1".to_string(), log(s1))].into()
    };
    assert!(check(&good, &finals(&["a", "b"], &["a", "b"])).0.is_empty());

    let cases: Vec<(Record, Finals, &str)> = vec![
        (
            Record { ..clone(&good) },
            finals(&["a", "b"], &["a"]),
            "differs",
        ),
        (
            Record { ..clone(&good) },
            finals(&["b"], &["b"]),
            "not at its id",
        ),
        (
            Record { ..clone(&good) },
            finals(&["a", "b", "a"], &["a", "b", "a"]),
            "stored twice",
        ),
        (
            Record { ..clone(&good) },
            finals(&["a", "x"], &["a", "x"]),
            "not stored there",
        ),
        (
            Record {
                ops: vec![op("a", 3, 0, 1, acked(1, &["master", "s1"]))],
                ..clone(&good)
            },
            finals(&["a"], &["a"]),
            "acknowledged by",
        ),
        (
            Record {
                ops: vec![op("a", 2, 11, 12, acked(1, &["master", "s1"]))],
                ..clone(&good)
            },
            finals(&["a"], &["a"]),
            "cut off",
        ),
        (
            Record {
                snapshots: vec![Snapshot {
                    node: "s1".into(),
                    log: log(&["z"]),
                }],
                ..clone(&good)
            },
            finals(&["a", "b"], &["a", "b"]),
            "not a prefix",
        ),
        (
            Record {
                unhealthy_seen: false,
                ..clone(&good)
            },
            finals(&["a", "b"], &["a", "b"]),
            "Unhealthy",
        ),
    ];
    for (record, finals, want) in cases {
        let (v, _) = check(&record, &finals);
        assert!(
            v.iter().any(|m| m.contains(want)),
            "expected a violation about {want:?}, got {v:?}"
        );
    }

    fn clone(r: &Record) -> Record {
        Record {
            ops: r.ops.clone(),
            snapshots: r
                .snapshots
                .iter()
                .map(|s| Snapshot {
                    node: s.node.clone(),
                    log: s.log.clone(),
                })
                .collect(),
            events: r.events.clone(),
            cut: r.cut,
            converge: r.converge.clone(),
            unhealthy_seen: r.unhealthy_seen,
        }
    }
}
