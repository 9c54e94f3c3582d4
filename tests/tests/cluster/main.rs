//! The cluster fault suite: chorus nodes in containers on a private network, concurrent
//! writers with mixed write concerns that follow the master across elections, recording
//! every request and response, and, while they run, a sequence of faults: kill -9 and
//! restart of a secondary, a partition of a secondary, a pause past the Unhealthy
//! threshold, kill -9 of the master (another is elected; the old one rejoins), and the
//! master cut off from both others (the majority side elects a master; the old one steps
//! down and rolls back what only it held). A checker then goes over the history.
//!
//! Needs Docker and its own image, `chorus:fault-suite`; `scripts/cluster-suite.sh` builds
//! that image and runs the suite, and skips it with a reason where Docker is missing.

mod docker;

use chorus_tests::{Http, wait_for};
use docker::{Container, DockerCluster};
use serde_json::{Value, json};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

const WRITERS: usize = 4;
const WRITE_TIMEOUT_MS: u64 = 2000;
const HEARTBEAT_MS: u64 = 200;
const LONG: Duration = Duration::from_secs(60);
/// No request waits longer than this (a paused or cut-off node never answers).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
enum Outcome {
    Acked {
        id: u64,
        term: u64,
        acked_by: Vec<String>,
    },
    /// An HTTP error (`504 write_concern_timeout` carries the id the message got).
    Refused { code: String, id: Option<u64> },
    /// No HTTP answer (the node was down or unreachable).
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
    converge: Vec<(String, Duration)>,
    /// Time from a kill or cut of the master to a new master taking writes.
    failovers: Vec<Duration>,
    unhealthy_seen: bool,
}

struct Run {
    t0: Instant,
    http: Http,
    cluster: DockerCluster,
    /// The node that last said it is master, and its HTTP address.
    master: RefCell<(String, SocketAddr)>,
    record: RefCell<Record>,
    stop: Cell<bool>,
}

/// A node's short name (`master`, `s1`, ...) from its container's name.
fn short(c: &Container) -> String {
    c.name.rsplit('-').next().unwrap_or_default().to_string()
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

    fn container(&self, name: &str) -> &Container {
        self.cluster
            .all()
            .into_iter()
            .find(|c| short(c) == name)
            .expect("a node of the cluster")
    }

    async fn get(&self, addr: SocketAddr, path: &str) -> anyhow::Result<(u16, Value)> {
        actix_rt::time::timeout(REQUEST_TIMEOUT, self.http.get(&self.url(addr, path)))
            .await
            .map_err(|_| anyhow::anyhow!("GET {path}: no answer within {REQUEST_TIMEOUT:?}"))?
    }

    async fn health(&self, addr: SocketAddr) -> anyhow::Result<Value> {
        Ok(self.get(addr, "/health").await?.1)
    }

    async fn messages(&self, addr: SocketAddr) -> anyhow::Result<Vec<(u64, String)>> {
        let (status, v) = self.get(addr, "/messages").await?;
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

    /// Ask every node's `/hello` which one takes writes now; remember it.
    async fn find_master(&self) -> Option<(String, SocketAddr)> {
        for c in self.cluster.all() {
            let Ok(addr) = self.cluster.http(c) else {
                continue;
            };
            if let Ok((200, h)) = self.get(addr, "/hello").await
                && h["isWritablePrimary"] == true
            {
                let found = (short(c), addr);
                *self.master.borrow_mut() = found.clone();
                return Some(found);
            }
        }
        None
    }

    /// Wait until a node other than `old` is master and takes writes; record the time
    /// since `since`.
    async fn new_master(&self, old: &str, since: Instant) -> anyhow::Result<String> {
        let name = wait_for(&format!("a master other than {old}"), LONG, || async {
            Ok(self.find_master().await.filter(|m| m.0 != old).map(|m| m.0))
        })
        .await?;
        let took = since.elapsed();
        self.record.borrow_mut().failovers.push(took);
        self.event(format!(
            "{name} is master, {:.2}s after {old} went",
            took.as_secs_f64()
        ));
        Ok(name)
    }

    /// The current master's view of member `name`, from its `/health`.
    async fn member(&self, name: &str) -> anyhow::Result<Value> {
        let addr = match self.find_master().await {
            Some(m) => m.1,
            None => anyhow::bail!("no master"),
        };
        let h = self.health(addr).await?;
        Ok(h["members"]
            .as_array()
            .and_then(|ms| ms.iter().find(|m| m["name"] == name))
            .cloned()
            .unwrap_or_default())
    }

    /// Wait until member `name` holds everything the master holds now; record how long
    /// that took after the heal at `healed`.
    async fn converge_after_heal(&self, name: &str, healed: Instant) -> anyhow::Result<()> {
        let target = wait_for("the master's last id", LONG, || async {
            let Some((_, addr)) = self.find_master().await else {
                return Ok(None);
            };
            Ok(self.health(addr).await?["lastId"].as_u64())
        })
        .await?;
        wait_for(&format!("{name} to catch up to {target}"), LONG, || async {
            if self.master.borrow().0 == name {
                return Ok(Some(())); // it is the master
            }
            let held = self.member(name).await?["lastAckedId"]
                .as_u64()
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
}

async fn writer(run: Rc<Run>, w: usize) {
    let mut seq = 0;
    while !run.stop.get() {
        seq += 1;
        let wc = (seq % 3 + 1) as u64;
        let message = format!("w{w}-{seq}");
        let start = run.now();
        let body = json!({"message": message, "writeConcern": wc, "timeoutMs": WRITE_TIMEOUT_MS});
        let addr = run.master.borrow().1;
        let result = actix_rt::time::timeout(
            REQUEST_TIMEOUT,
            run.http.post(&run.url(addr, "/newMessage"), &body),
        )
        .await;
        let outcome = match result {
            Ok(Ok((201, b))) => Outcome::Acked {
                id: b["id"].as_u64().unwrap_or(0),
                term: b["term"].as_u64().unwrap_or(0),
                acked_by: b["ackedBy"]
                    .as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|n| n.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default(),
            },
            Ok(Ok((status, b))) => Outcome::Refused {
                code: format!("{status} {}", b["code"].as_str().unwrap_or("?")),
                id: b["id"].as_u64(),
            },
            _ => Outcome::NoAnswer,
        };
        let failed = !matches!(outcome, Outcome::Acked { .. });
        run.record.borrow_mut().ops.push(Op {
            message,
            wc,
            start,
            end: run.now(),
            outcome,
        });
        if failed {
            // Not (or no longer) the master: find the one that is.
            run.find_master().await;
            actix_rt::time::sleep(Duration::from_millis(100)).await;
        } else {
            actix_rt::time::sleep(Duration::from_millis(15)).await;
        }
    }
}

async fn snapshotter(run: Rc<Run>) {
    while !run.stop.get() {
        for c in run.cluster.all() {
            let Ok(addr) = run.cluster.http(c) else {
                continue;
            };
            if let Ok(log) = run.messages(addr).await {
                run.record.borrow_mut().snapshots.push(Snapshot {
                    node: short(c),
                    log,
                });
            }
        }
        actix_rt::time::sleep(Duration::from_millis(400)).await;
    }
}

/// The secondaries of the moment (every node but the master), by name.
fn others(run: &Run) -> Vec<String> {
    let master = run.master.borrow().0.clone();
    run.cluster
        .all()
        .into_iter()
        .map(short)
        .filter(|n| *n != master)
        .collect()
}

async fn faults(run: &Run) -> anyhow::Result<()> {
    let c = &run.cluster;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    let [a, b] = <[String; 2]>::try_from(others(run)).expect("two secondaries");

    run.event(format!("kill -9 {a}"));
    c.kill9(run.container(&a))?;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    c.start_again(run.container(&a))?;
    let healed = Instant::now();
    run.event(format!("{a} restarted on its volume"));
    run.converge_after_heal(&a, healed).await?;

    run.event(format!("partition {b} from the others"));
    c.disconnect(run.container(&b))?;
    actix_rt::time::sleep(Duration::from_secs(3)).await;
    c.reconnect(run.container(&b), &b)?;
    let healed = Instant::now();
    run.event(format!("{b} partition healed"));
    run.converge_after_heal(&b, healed).await?;

    run.event(format!("pause {a}"));
    c.pause(run.container(&a))?;
    let seen = wait_for(
        &format!("{a} to turn Unhealthy"),
        Duration::from_secs(15),
        || async { Ok((run.member(&a).await?["status"] == "Unhealthy").then_some(())) },
    )
    .await;
    run.record.borrow_mut().unhealthy_seen = seen.is_ok();
    run.event(format!(
        "master reports paused {a} Unhealthy: {}",
        seen.is_ok()
    ));
    c.unpause(run.container(&a))?;
    let healed = Instant::now();
    run.event(format!("{a} unpaused"));
    run.converge_after_heal(&a, healed).await?;

    let old = run.master.borrow().0.clone();
    run.event(format!("kill -9 the master ({old})"));
    c.kill9(run.container(&old))?;
    let killed = Instant::now();
    run.new_master(&old, killed).await?;
    c.start_again(run.container(&old))?;
    let healed = Instant::now();
    run.event(format!("{old} restarted on its volume"));
    run.converge_after_heal(&old, healed).await?;

    let old = run.master.borrow().0.clone();
    run.event(format!("cut the master ({old}) off from both others"));
    c.disconnect(run.container(&old))?;
    let cut = Instant::now();
    run.new_master(&old, cut).await?;
    actix_rt::time::sleep(Duration::from_secs(2)).await;
    c.reconnect(run.container(&old), &old)?;
    let healed = Instant::now();
    run.event("cut healed");
    run.converge_after_heal(&old, healed).await?;
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    Ok(())
}

/// Every node's final log, by node name.
type Finals = BTreeMap<String, Vec<(u64, String)>>;

/// Check the recorded history against the final logs; return the violations found and
/// the summary table.
fn check(record: &Record, finals: &Finals) -> (Vec<String>, String) {
    let mut bad = Vec::new();
    let (first, log) = finals.iter().next().expect("at least one node");
    for (node, other) in finals {
        if other != log {
            bad.push(format!("{node}'s final log differs from {first}'s"));
        }
    }
    let ids: Vec<u64> = log.iter().map(|e| e.0).collect();
    if ids != (1..=log.len() as u64).collect::<Vec<_>>() {
        bad.push("the final ids are not 1..=n".into());
    }
    let mut place = BTreeMap::new();
    for (id, m) in log {
        if place.insert(m.as_str(), *id).is_some() {
            bad.push(format!("message {m:?} stored twice (again at id {id})"));
        }
    }
    let members: HashSet<String> = finals.keys().cloned().collect();
    let majority = members.len() as u64 / 2 + 1;
    let at = |id: u64| log.get(id as usize - 1).map(|e| e.1.as_str());
    let mut failed: BTreeMap<String, usize> = BTreeMap::new();
    let (mut acked, mut rolled_back) = (0, 0);
    let mut majority_acked = HashSet::new();
    let mut terms = BTreeSet::new();
    let mut acked_at = Vec::new();
    let mut slowest = Duration::ZERO;
    for op in &record.ops {
        match &op.outcome {
            Outcome::Acked { id, term, acked_by } => {
                acked += 1;
                acked_at.push(op.end);
                slowest = slowest.max(op.end.saturating_sub(op.start));
                terms.insert(*term);
                let holders: HashSet<String> = acked_by.iter().cloned().collect();
                if holders.len() < op.wc as usize || !holders.is_subset(&members) {
                    bad.push(format!(
                        "{} (w={}) acknowledged by {acked_by:?}",
                        op.message, op.wc
                    ));
                }
                if op.wc >= majority {
                    majority_acked.insert(op.message.as_str());
                }
                match (
                    at(*id) == Some(op.message.as_str()),
                    place.get(op.message.as_str()),
                ) {
                    (true, _) => {}
                    (false, Some(other)) => bad.push(format!(
                        "acknowledged {} (id {id}) is at id {other}",
                        op.message
                    )),
                    // Acknowledged by fewer than a majority, then rolled back: allowed.
                    (false, None) if op.wc < majority => rolled_back += 1,
                    (false, None) => bad.push(format!(
                        "acknowledged {} (w={}, id {id}) is lost",
                        op.message, op.wc
                    )),
                }
            }
            Outcome::Refused { code, id } => {
                *failed.entry(code.clone()).or_default() += 1;
                if let (Some(id), Some(other)) = (id, place.get(op.message.as_str()))
                    && id != other
                {
                    bad.push(format!(
                        "{} got {code} with id {id} but is stored at {other}",
                        op.message
                    ));
                }
            }
            Outcome::NoAnswer => *failed.entry("no answer".into()).or_default() += 1,
        }
    }
    let mut shown_then_rolled_back = 0;
    for s in &record.snapshots {
        let gap_free = s.log.iter().enumerate().all(|(i, e)| e.0 == i as u64 + 1);
        if !gap_free {
            bad.push(format!("a snapshot of {} has a gap", s.node));
        }
        for (id, m) in &s.log {
            if at(*id) != Some(m.as_str()) {
                if majority_acked.contains(m.as_str()) {
                    bad.push(format!(
                        "a snapshot of {} shows majority-acknowledged {m} at {id}, not where it ended",
                        s.node
                    ));
                }
                shown_then_rolled_back += 1;
            }
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
    let unavailable = acked_at
        .windows(2)
        .map(|w| w[1].saturating_sub(w[0]))
        .max()
        .unwrap_or_default();

    let mut t = String::from("| cluster fault suite | |\n| --- | --- |\n");
    t += &format!("| operations | {} |\n", record.ops.len());
    t += &format!("| acknowledged (201) | {acked} |\n");
    t += &format!("| acknowledged by fewer than a majority, rolled back | {rolled_back} |\n");
    for (code, n) in &failed {
        t += &format!("| failed: {code} | {n} |\n");
    }
    t += &format!("| terms that acknowledged writes | {} |\n", terms.len());
    for (i, f) in record.failovers.iter().enumerate() {
        t += &format!(
            "| failover {} (new master taking writes) | {:.2} s |\n",
            i + 1,
            f.as_secs_f64()
        );
    }
    t += &format!(
        "| longest time without an acknowledged write | {:.2} s |\n",
        unavailable.as_secs_f64()
    );
    t += &format!(
        "| slowest acknowledged write | {:.2} s |\n",
        slowest.as_secs_f64()
    );
    t += &format!(
        "| messages in the final log (every node) | {} |\n",
        log.len()
    );
    t += &format!(
        "| snapshots checked (entries later rolled back) | {} ({shown_then_rolled_back}) |\n",
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
        master: RefCell::new(("master".into(), master)),
        cluster,
        record: RefCell::new(Record::default()),
        stop: Cell::new(false),
    });
    wait_for("two live secondaries", LONG, || async {
        let Some((_, addr)) = run.find_master().await else {
            return Ok(None);
        };
        let h = run.health(addr).await?;
        let live = h["members"]
            .as_array()
            .map_or(0, |ms| ms.iter().filter(|m| m["phase"] == "live").count());
        Ok((live == 2).then_some(()))
    })
    .await?;
    run.event("cluster up: 3 members in containers");

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

    let finals = wait_for("all nodes to converge", LONG, || async {
        let mut finals = Finals::new();
        for c in run.cluster.all() {
            finals.insert(short(c), run.messages(run.cluster.http(c)?).await?);
        }
        let first = finals.values().next().cloned().unwrap_or_default();
        Ok(finals.values().all(|l| *l == first).then_some(finals))
    })
    .await?;
    let (violations, summary) = check(&run.record.borrow(), &finals);
    println!("\n{summary}");
    assert!(
        violations.is_empty(),
        "violations:\n{}",
        violations.join("\n")
    );
    Ok(())
}

/// The checker itself: each kind of violation in a made-up history is reported, and
/// what failover allows (a w=1 write rolled back) is not.
#[test]
fn the_checker_reports_every_kind_of_violation() {
    let log = |msgs: &[&str]| -> Vec<(u64, String)> {
        msgs.iter()
            .enumerate()
            .map(|(i, m)| (i as u64 + 1, m.to_string()))
            .collect()
    };
    let op = |message: &str, wc: u64, outcome: Outcome| Op {
        message: message.into(),
        wc,
        start: Duration::from_secs(0),
        end: Duration::from_secs(1),
        outcome,
    };
    let acked = |id: u64, by: &[&str]| Outcome::Acked {
        id,
        term: 1,
        acked_by: by.iter().map(|s| s.to_string()).collect(),
    };
    let good = Record {
        ops: vec![
            op("a", 2, acked(1, &["master", "s1"])),
            op(
                "b",
                1,
                Outcome::Refused {
                    code: "504 write_concern_timeout".into(),
                    id: Some(2),
                },
            ),
            op("c", 1, Outcome::NoAnswer),
            // Acknowledged by the old master alone, then rolled back: allowed.
            op("r", 1, acked(3, &["master"])),
        ],
        snapshots: vec![
            Snapshot {
                node: "s1".into(),
                log: log(&["a"]),
            },
            // The old master showed "r" before it rolled it back: allowed.
            Snapshot {
                node: "master".into(),
                log: log(&["a", "b", "r"]),
            },
        ],
        unhealthy_seen: true,
        ..Record::default()
    };
    let finals = |m: &[&str], s1: &[&str]| -> Finals {
        [("master".to_string(), log(m)), ("s1".to_string(), log(s1))].into()
    };
    let ok = check(&good, &finals(&["a", "b", "x"], &["a", "b", "x"]));
    assert!(ok.0.is_empty(), "{:?}", ok.0);
    assert!(ok.1.contains("rolled back | 1 |"), "{}", ok.1);

    let cases: Vec<(Record, Finals, &str)> = vec![
        (clone(&good), finals(&["a", "b"], &["a"]), "differs"),
        (clone(&good), finals(&["b", "a"], &["b", "a"]), "is at id 2"),
        (
            clone(&good),
            finals(&["a", "b", "a"], &["a", "b", "a"]),
            "stored twice",
        ),
        (
            clone(&good),
            finals(&["a", "x", "b"], &["a", "x", "b"]),
            "stored at 3",
        ),
        (clone(&good), finals(&["x", "b"], &["x", "b"]), "is lost"),
        (
            Record {
                ops: vec![op("a", 3, acked(1, &["master", "s1"]))],
                ..clone(&good)
            },
            finals(&["a"], &["a"]),
            "acknowledged by",
        ),
        (
            Record {
                snapshots: vec![Snapshot {
                    node: "s1".into(),
                    log: vec![(1, "x".into()), (2, "a".into())],
                }],
                ..clone(&good)
            },
            finals(&["a", "b"], &["a", "b"]),
            "not where it ended",
        ),
        (
            Record {
                snapshots: vec![Snapshot {
                    node: "s1".into(),
                    log: vec![(2, "b".into())],
                }],
                ..clone(&good)
            },
            finals(&["a", "b"], &["a", "b"]),
            "has a gap",
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
            converge: r.converge.clone(),
            failovers: r.failovers.clone(),
            unhealthy_seen: r.unhealthy_seen,
        }
    }
}
