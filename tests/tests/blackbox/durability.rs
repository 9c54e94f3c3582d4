//! Crashes and restarts on the same data directories: nothing acknowledged by a
//! majority is lost (a write acknowledged by fewer may be rolled back, into the
//! rollback file), ids stay gap-free, and every node ends with the same log.

use chorus_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(90);

/// What concurrent writers saw: every 201 (id -> message) and how many failed.
#[derive(Default, Debug)]
struct History {
    acked: BTreeMap<u64, String>,
    failed: usize,
}

/// `writers` tasks, each writing `per_writer` messages with write concern `wc`, recording
/// every answer. Connection errors (the master is down) count as failures.
async fn burst(
    http: &Http,
    master: &Node,
    writers: usize,
    per_writer: usize,
    wc: Value,
) -> anyhow::Result<History> {
    let tasks: Vec<_> = (0..writers)
        .map(|w| {
            let http = http.clone();
            let url = master.url("/newMessage");
            let wc = wc.clone();
            actix_rt::spawn(async move {
                let mut h = History::default();
                for i in 0..per_writer {
                    let msg = format!("w{w}-{i}");
                    match http
                        .post(
                            &url,
                            &json!({"message": msg, "writeConcern": wc, "timeoutMs": 20000}),
                        )
                        .await
                    {
                        Ok((201, body)) => {
                            let id = body["id"].as_u64().expect("id");
                            h.acked.insert(id, msg);
                        }
                        _ => {
                            h.failed += 1;
                            // Do not spin while the master is down.
                            actix_rt::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                h
            })
        })
        .collect();
    let mut all = History::default();
    for t in tasks {
        let h = t.await?;
        all.failed += h.failed;
        for (id, msg) in h.acked {
            assert!(
                all.acked.insert(id, msg).is_none(),
                "id {id} acknowledged twice"
            );
        }
    }
    Ok(all)
}

/// Every acknowledged message is in `log` at its id, or (when `rolled_back` is given:
/// writes acknowledged by fewer than a majority) in that rollback file at its id.
fn assert_all_acked_present(
    history: &History,
    log: &[(u64, String)],
    rolled_back: Option<&[(u64, String)]>,
) {
    for (id, msg) in &history.acked {
        let got = log.get(*id as usize - 1).map(|e| &e.1);
        if got == Some(msg) {
            continue;
        }
        let kept = rolled_back.is_some_and(|r| r.iter().any(|e| e.0 == *id && e.1 == *msg));
        assert!(
            kept,
            "acknowledged message {id} ({msg}) is missing or different ({got:?}), and not in a rollback file"
        );
    }
}

async fn wait_same_logs(
    http: &Http,
    master: &Node,
    others: &[&Node],
) -> anyhow::Result<Vec<(u64, String)>> {
    wait_for("all logs to be equal", LONG, || async {
        let m = http.messages(master).await?;
        for o in others {
            if http.messages(o).await? != m {
                return Ok(None);
            }
        }
        Ok(Some(m))
    })
    .await
}

/// kill -9 the master in the middle of a burst of writes: the secondaries elect a new
/// master, the old one is restarted with the same command and rejoins as a secondary,
/// a second burst goes to whichever member is master, and every node ends with the same
/// log holding every write acknowledged by a majority (w=1 writes may have been rolled
/// back into the old master's rollback file instead).
async fn kill_master_mid_burst(wc: Value, name: &str, args: &[&str]) -> anyhow::Result<()> {
    let dir = TestDir::new(name);
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, args, &[args, args]).await?;
    let mode = if args.contains(&"relaxed") {
        "relaxed"
    } else {
        "fsync"
    };
    for n in std::iter::once(&master).chain(&nodes) {
        let (_, status) = http.get(&n.url("/status")).await?;
        assert_eq!(status["durability"], mode, "{}: {status}", n.name);
    }
    let writes = burst(&http, &master, 6, 60, wc.clone());
    // Kill the master once part of the burst is acknowledged.
    let killer = async {
        wait_for("some writes to land", LONG, || async {
            Ok((http.health(&master).await?["lastId"].as_u64().unwrap_or(0) >= 40).then_some(()))
        })
        .await?;
        anyhow::Ok(())
    };
    let (history, killed) = futures::join!(writes, async {
        killer.await?;
        master.signal(libc::SIGKILL);
        anyhow::Ok(std::time::Instant::now())
    });
    let killed_at = killed?;
    let mut history = history?;
    assert!(
        history.failed > 0,
        "the kill interrupted no write: {history:?}"
    );
    // The other two elect a master among themselves.
    let new = wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    eprintln!(
        "{} took writes {} ms after the kill",
        nodes[new].name,
        killed_at.elapsed().as_millis()
    );
    master.restart()?;
    let all = [&master, &nodes[0], &nodes[1]];
    let now = all[wait_master(&http, &all, LONG).await?];
    for n in all.iter().filter(|n| n.name != now.name) {
        wait_member_live(&http, now, &n.name).await?;
    }
    let after = burst(&http, now, 2, 20, wc.clone()).await?;
    assert_eq!(after.failed, 0, "writes fail after the failover");
    history.acked.extend(after.acked);

    let log = wait_same_logs(&http, now, &all).await?;
    assert_gap_free(&log);
    let majority = wc.as_u64().is_some_and(|w| w >= 2);
    let kept = rolled_back(&dir, "m");
    assert_all_acked_present(&history, &log, (!majority).then_some(&kept[..]));
    assert!(
        history.acked.len() >= 60,
        "too few writes acknowledged to mean anything: {history:?}"
    );
    Ok(())
}

#[actix_rt::test]
async fn kill9_master_mid_burst_w1_keeps_or_rolls_back_each_acknowledged_write()
-> anyhow::Result<()> {
    kill_master_mid_burst(json!(1), "kill-master-w1", &[]).await
}

#[actix_rt::test]
async fn kill9_master_mid_burst_w_all_loses_nothing_acknowledged() -> anyhow::Result<()> {
    kill_master_mid_burst(json!(3), "kill-master-wall", &[]).await
}

/// Relaxed durability acknowledges what is written to the OS, not yet fsync'd: a crash of
/// the process (not of the machine) still loses nothing acknowledged.
#[actix_rt::test]
async fn kill9_master_mid_burst_relaxed_loses_nothing_acknowledged() -> anyhow::Result<()> {
    let relaxed = ["--durability", "relaxed", "--sync-interval-ms", "50"];
    kill_master_mid_burst(json!(3), "kill-master-relaxed", &relaxed).await
}

/// A master and two secondaries holding `a0` ... `a9`, each written with w=3.
async fn cluster_holding_ten(dir: &TestDir, http: &Http) -> anyhow::Result<(Node, Vec<Node>)> {
    let (master, nodes) = cluster(dir, http, &[], &[&[], &[]]).await?;
    for i in 0..10 {
        assert_eq!(
            http.write(&master, &format!("a{i}"), json!(3)).await?.0,
            201
        );
    }
    Ok((master, nodes))
}

/// A master restarted alone keeps its log, its ids and the member list; alone of
/// three it is not elected (no majority) and takes no writes; once the others are back
/// the set elects a master and ids go on from 11.
#[actix_rt::test]
async fn a_restarted_master_keeps_log_ids_and_members() -> anyhow::Result<()> {
    let dir = TestDir::new("master-restart");
    let http = Http::new();
    let (mut master, mut nodes) = cluster_holding_ten(&dir, &http).await?;
    // Both secondaries down, then the master restarted.
    for n in &mut nodes {
        n.kill9();
    }
    let status = master.terminate(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    master.restart()?;
    // The first request may meet a connection pooled before the restart: poll.
    let h = wait_for("the restarted master to answer", LONG, || async {
        Ok(Some(http.get(&master.url("/hello")).await?.1))
    })
    .await?;
    assert_eq!(
        h["hosts"].as_array().map(Vec::len),
        Some(3),
        "membership survives the restart: {h}"
    );
    assert_eq!(h["lastWrite"]["id"], 10, "{h}");
    // Alone of three members it is not master: writes are refused, nothing appended.
    let (st, body) = http.write(&master, "b", json!(1)).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    for n in &mut nodes {
        n.restart()?;
    }
    let all = [&master, &nodes[0], &nodes[1]];
    let now = all[wait_master(&http, &all, LONG).await?];
    let (st, body) = write_once_writable(&http, now, "c", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(11)), "{body}");
    let log = wait_same_logs(&http, now, &all).await?;
    assert_eq!(log.len(), 11);
    assert_gap_free(&log);
    Ok(())
}

/// kill -9 a secondary in the middle of catch-up; once restarted it asks only for what
/// it misses, and ends with the master's log.
#[actix_rt::test]
async fn kill9_secondary_mid_catch_up_resumes_where_it_stopped() -> anyhow::Result<()> {
    let dir = TestDir::new("kill-catch-up");
    let http = Http::new();
    // Three members, so that the master keeps its majority while the late one is down
    // (with two, it would step down: check-quorum).
    let (master, _s1) = cluster(&dir, &http, &[], &[&[]]).await?;
    const N: usize = 6000;
    let writes: Vec<_> = (0..8)
        .map(|w| {
            let http = http.clone();
            let url = master.url("/newMessage");
            actix_rt::spawn(async move {
                for i in 0..N / 8 {
                    let (st, body) = http
                        .post(&url, &json!({"message": format!("{w}-{i}")}))
                        .await?;
                    anyhow::ensure!(st == 201, "{st}: {body}");
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writes {
        w.await??;
    }
    // s2 joins late and needs all N. Its acks are delayed, so the master stalls after
    // its window of 4096 in-flight messages: s2 is caught part-way through.
    let mut s1 = Node::secondary(&dir, "s2", master.comm.unwrap(), &["--delay-ms", "500"])?;
    let partial = wait_for("s2 to be part-way through catch-up", LONG, || async {
        let last = http.health(&s1).await?["lastId"].as_u64().unwrap_or(0);
        Ok((last > 0).then_some(last))
    })
    .await?;
    s1.kill9();
    assert!(
        partial < N as u64,
        "s2 had finished catching up ({partial}) before the kill"
    );
    s1.restart()?;
    let m = wait_for(
        "s2 to reconnect and ask for what it misses",
        LONG,
        || async {
            let h = http.health(&master).await?;
            let m = h["members"]
                .as_array()
                .and_then(|ms| ms.iter().find(|m| m["name"] == "s2"))
                .cloned()
                .unwrap_or_default();
            let asked = m["catchUpFrom"].as_u64().unwrap_or(0);
            Ok((m["connected"] == true && asked > 1).then_some(m))
        },
    )
    .await?;
    let from = m["catchUpFrom"].as_u64().unwrap();
    assert!(
        from > partial,
        "after the restart s2 asked from {from}, but it reported {partial} durable before the crash"
    );
    let log = wait_converged(&http, &master, &[&s1], N, LONG).await?;
    assert_gap_free(&log);
    Ok(())
}

/// A requestId retried after the master was killed and restarted returns the first
/// attempt's id and appends nothing.
#[actix_rt::test]
async fn a_request_id_retried_across_a_master_restart_appends_once() -> anyhow::Result<()> {
    let dir = TestDir::new("request-id");
    let http = Http::new();
    let (mut master, _nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let body = json!({"message": "pay 10", "writeConcern": 2, "requestId": "order-17"});
    let (st, first) = http.post(&master.url("/newMessage"), &body).await?;
    assert_eq!(st, 201, "{first}");
    assert_eq!(http.write(&master, "other", json!(1)).await?.0, 201);
    master.kill9();
    master.restart()?;
    // Two members: the set elects a master once both are up (either may win).
    let all = [&master, &_nodes[0]];
    let now = all[wait_master(&http, &all, LONG).await?];
    let (st, again) = wait_for("the master to take the retry", LONG, || async {
        let (st, v) = http.post(&now.url("/newMessage"), &body).await?;
        Ok((st != 503).then_some((st, v)))
    })
    .await?;
    assert_eq!(st, 201, "{again}");
    assert_eq!(again["id"], first["id"], "the retry got another id");
    let log = http.messages(now).await?;
    assert_eq!(log.iter().filter(|e| e.1 == "pay 10").count(), 1, "{log:?}");
    assert_eq!(log.len(), 2);
    Ok(())
}

/// The master's machine loses the end of its log (a power cut before its fsync; here
/// the file is cut while every node is down). Those entries were acknowledged by all
/// three members: a majority holds them, so they are not lost. The master cannot be
/// elected with a shorter log than the others; one of them is, and the old master
/// catches the lost tail up again from it. Nothing is rolled back anywhere.
#[actix_rt::test]
async fn a_member_that_lost_a_majority_acknowledged_tail_catches_it_up_again() -> anyhow::Result<()>
{
    let dir = TestDir::new("master-lost-tail");
    let http = Http::new();
    let (mut master, mut nodes) = cluster_holding_ten(&dir, &http).await?;
    assert_eq!(http.health(&master).await?["term"], 1);
    for n in &mut nodes {
        n.terminate(Duration::from_secs(10))?;
    }
    master.terminate(Duration::from_secs(10))?;
    // Each record of a two-byte message without a key is 8 + 18 + 2 bytes: drop three
    // (past any preallocated zeros, though a clean stop gives them back).
    let log = dir.path().join("data/m/log");
    let bytes = std::fs::read(&log)?;
    let end = bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    std::fs::write(&log, &bytes[..end - 3 * 28])?;

    master.restart()?;
    for n in &mut nodes {
        n.restart()?;
    }
    let all = [&master, &nodes[0], &nodes[1]];
    let now = all[wait_master(&http, &all, LONG).await?];
    assert_ne!(
        now.name, "m",
        "a member missing acknowledged entries was elected"
    );
    let (st, body) = write_once_writable(&http, now, "b0", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(11)), "{body}");
    let log = wait_same_logs(&http, now, &all).await?;
    let want: Vec<(u64, String)> = (0..10)
        .map(|i| format!("a{i}"))
        .chain(["b0".to_string()])
        .enumerate()
        .map(|(i, m)| (i as u64 + 1, m))
        .collect();
    assert_eq!(log, want);
    let (_, hello) = http.get(&now.url("/hello")).await?;
    assert_eq!(hello["term"], 2, "one election, one new term: {hello}");
    for n in all {
        assert!(
            rolled_back(&dir, &n.name).is_empty(),
            "{} rolled back",
            n.name
        );
    }
    Ok(())
}

/// `POST /admin/crash`: `kill` ends the node as kill -9 does, and everything it
/// acknowledged is there after a restart; `powerLoss` also loses what the log had not
/// made durable. With `--durability relaxed` and a sync interval longer than the test,
/// writes are acknowledged from the page cache: a power loss takes them all, which is
/// the risk relaxed mode documents, while fsync mode keeps every one.
#[actix_rt::test]
async fn admin_crash_kills_or_cuts_the_power() -> anyhow::Result<()> {
    let dir = TestDir::new("admin-crash");
    let http = Http::new();
    for (mode, flags, kept) in [
        (
            "powerLoss",
            &["--durability", "relaxed", "--sync-interval-ms", "600000"][..],
            0,
        ),
        ("powerLoss", &[][..], 5),
        (
            "kill",
            &["--durability", "relaxed", "--sync-interval-ms", "600000"][..],
            5,
        ),
    ] {
        let name = format!("m-{mode}-{kept}");
        let mut m = Node::master(&dir, &name, flags)?;
        wait_for("the master to take writes", LONG, || async {
            let h = http.get(&m.url("/hello")).await?.1;
            Ok((h["isWritablePrimary"] == true).then_some(()))
        })
        .await?;
        for i in 0..5 {
            let (st, b) = http
                .post(&m.url("/newMessage"), &json!({"message": format!("e{i}")}))
                .await?;
            assert_eq!(st, 201, "{b}");
        }
        let (st, b) = http
            .post(&m.url("/admin/crash"), &json!({"mode": "sideways"}))
            .await?;
        assert_eq!(
            (st, b["code"].as_str()),
            (400, Some("invalid_request")),
            "{b}"
        );
        assert!(
            http.post(&m.url("/admin/crash"), &json!({"mode": mode}))
                .await
                .is_err(),
            "a crash sends no answer"
        );
        m.restart()?;
        let log = wait_for("the node back", LONG, || async {
            let (st, v) = http.get(&m.url("/messages")).await?;
            Ok((st == 200).then_some(v))
        })
        .await?;
        let msgs: Vec<&str> = log
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e["message"].as_str())
            .collect();
        let expected: Vec<String> = (0..kept).map(|i| format!("e{i}")).collect();
        assert_eq!(msgs, expected, "{mode} with {flags:?}");
    }
    Ok(())
}
