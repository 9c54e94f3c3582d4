//! Crashes and restarts on the same data directories: nothing acknowledged is lost,
//! ids stay gap-free, and every node ends with the same log.

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

/// Every acknowledged message is in `log` at its id.
fn assert_all_acked_present(history: &History, log: &[(u64, String)]) {
    for (id, msg) in &history.acked {
        let got = log.get(*id as usize - 1).map(|e| &e.1);
        assert_eq!(
            got,
            Some(msg),
            "acknowledged message {id} is missing or different"
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
    // Kill the master once part of the burst is acknowledged, restart it at once.
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
        anyhow::Ok(())
    });
    killed?;
    let mut history = history?;
    assert!(
        history.failed > 0,
        "the kill interrupted no write: {history:?}"
    );
    master.restart()?;
    // Writers that were cut off have finished; a second burst runs on the restarted master.
    for n in &nodes {
        wait_member_live(&http, &master, &n.name).await?;
    }
    let after = burst(&http, &master, 2, 20, wc).await?;
    assert_eq!(after.failed, 0, "writes fail after the restart");
    history.acked.extend(after.acked);

    let log = wait_same_logs(&http, &master, &[&nodes[0], &nodes[1]]).await?;
    assert_gap_free(&log);
    assert_all_acked_present(&history, &log);
    assert!(
        history.acked.len() >= 60,
        "too few writes acknowledged to mean anything: {history:?}"
    );
    Ok(())
}

#[actix_rt::test]
async fn kill9_master_mid_burst_w1_loses_nothing_acknowledged() -> anyhow::Result<()> {
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

/// A restarted master keeps its log, its ids and its membership.
#[actix_rt::test]
async fn a_restarted_master_keeps_log_ids_and_members() -> anyhow::Result<()> {
    let dir = TestDir::new("master-restart");
    let http = Http::new();
    let (mut master, mut nodes) = cluster_holding_ten(&dir, &http).await?;
    // Both secondaries down, then the master restarted: it still counts them.
    for n in &mut nodes {
        n.kill9();
    }
    let status = master.terminate(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(0), "SIGTERM exits 0");
    master.restart()?;
    // The first request may meet a connection pooled before the restart: poll.
    let h = wait_for("the restarted master to answer", LONG, || async {
        Ok(Some(http.health(&master).await?))
    })
    .await?;
    assert_eq!(h["memberCount"], 3, "membership survives the restart: {h}");
    assert_eq!(h["lastId"], 10, "{h}");
    // Alone of three members it has no quorum: writes are refused, nothing appended.
    let (st, body) = http.write(&master, "b", json!(1)).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    for n in &mut nodes {
        n.restart()?;
    }
    let (st, body) = write_once_writable(&http, &master, "c", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(11)), "{body}");
    let log = wait_same_logs(&http, &master, &[&nodes[0], &nodes[1]]).await?;
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
    let (master, _) = cluster(&dir, &http, &[], &[]).await?;
    const N: usize = 6000;
    let writes: Vec<_> = (0..8)
        .map(|w| {
            let http = http.clone();
            let url = master.url("/newMessage");
            actix_rt::spawn(async move {
                for i in 0..N / 8 {
                    let (st, _) = http
                        .post(&url, &json!({"message": format!("{w}-{i}")}))
                        .await?;
                    anyhow::ensure!(st == 201);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writes {
        w.await??;
    }
    // s1 joins late and needs all N. Its acks are delayed, so the master stalls after
    // its window of 4096 in-flight messages: s1 is caught part-way through.
    let mut s1 = Node::secondary(&dir, "s1", master.comm.unwrap(), &["--delay-ms", "500"])?;
    let partial = wait_for("s1 to be part-way through catch-up", LONG, || async {
        let last = http.health(&s1).await?["lastId"].as_u64().unwrap_or(0);
        Ok((last > 0).then_some(last))
    })
    .await?;
    s1.kill9();
    assert!(
        partial < N as u64,
        "s1 had finished catching up ({partial}) before the kill"
    );
    s1.restart()?;
    let m = wait_for(
        "s1 to reconnect and ask for what it misses",
        LONG,
        || async {
            let h = http.health(&master).await?;
            let m = h["members"][0].clone();
            let asked = m["catchUpFrom"].as_u64().unwrap_or(0);
            Ok((m["connected"] == true && asked > 1).then_some(m))
        },
    )
    .await?;
    let from = m["catchUpFrom"].as_u64().unwrap();
    assert!(
        from > partial,
        "after the restart s1 asked from {from}, but it reported {partial} durable before the crash"
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
    let (st, again) = wait_for("the restarted master to take the retry", LONG, || async {
        let (st, v) = http.post(&master.url("/newMessage"), &body).await?;
        Ok((st != 503).then_some((st, v)))
    })
    .await?;
    assert_eq!(st, 201, "{again}");
    assert_eq!(again["id"], first["id"], "the retry got another id");
    let log = http.messages(&master).await?;
    assert_eq!(log.iter().filter(|e| e.1 == "pay 10").count(), 1, "{log:?}");
    assert_eq!(log.len(), 2);
    Ok(())
}

/// The master's machine loses the end of its log (a power cut before its fsync; here
/// the file is cut while every node is down). The secondaries hold that end; when they
/// meet the master's next run they cut it, and every member ends with the master's log.
#[actix_rt::test]
async fn secondaries_cut_what_a_crashed_master_lost() -> anyhow::Result<()> {
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
    let (st, body) = write_once_writable(&http, &master, "b0", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(8)), "{body}");
    let log = wait_same_logs(&http, &master, &[&nodes[0], &nodes[1]]).await?;
    let want: Vec<(u64, String)> = (0..7)
        .map(|i| format!("a{i}"))
        .chain(["b0".to_string()])
        .enumerate()
        .map(|(i, m)| (i as u64 + 1, m))
        .collect();
    assert_eq!(log, want);
    assert_eq!(
        http.health(&master).await?["term"],
        2,
        "a new run, a new term"
    );
    for n in &nodes {
        let (_, st) = http.get(&n.url("/status")).await?;
        assert_eq!(st["truncated"], 3, "{st}");
    }
    Ok(())
}
