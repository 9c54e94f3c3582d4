use chorus_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// The acceptance scenario: a w=3 write waits for a third member while w=1 writes go on.
#[actix_rt::test]
async fn seed_acceptance_scenario() -> anyhow::Result<()> {
    let dir = TestDir::new("acceptance");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let s1 = nodes.remove(0);

    let (st, body) = http.write(&master, "m1", json!(1)).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(1)), "{body}");
    let (st, body) = http.write(&master, "m2", json!(2)).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    assert_eq!(body["ackedBy"], json!(["m", "s1"]));

    // m3 with w=3 must wait: only two members exist.
    let h3 = spawn_write(&http, &master, "m3", json!(3));
    // m4 with w=1 completes while m3 waits.
    wait_for("m3 to be accepted", LONG, || async {
        Ok((http.messages(&master).await?.len() == 3).then_some(()))
    })
    .await?;
    let (st, body) = http.write(&master, "m4", json!(1)).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(4)), "{body}");
    assert!(!h3.is_finished(), "m3 (w=3) returned with only 2 members");

    let s2 = Node::secondary(&dir, "s2", master.comm.unwrap(), &[])?;
    let (st, body) = actix_rt::time::timeout(LONG, h3).await???;
    assert_eq!(st, 201, "{body}");
    assert_eq!(body["id"], 3);
    assert_eq!(body["acks"], 3);

    let log = wait_converged(&http, &master, &[&s1, &s2], 4, LONG).await?;
    let msgs: Vec<&str> = log.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(msgs, ["m1", "m2", "m3", "m4"]);
    assert_gap_free(&log);
    Ok(())
}

/// w=1 does not wait for a slow secondary; w=all does.
#[actix_rt::test]
async fn w1_is_not_slowed_by_a_delayed_secondary() -> anyhow::Result<()> {
    let dir = TestDir::new("slow");
    let http = Http::new();
    let (master, _slow) = cluster(
        &dir,
        &http,
        &["--ack-timeout-ms", "3000"],
        &[&["--delay-ms", "1500"]],
    )
    .await?;

    let t = Instant::now();
    for i in 0..5 {
        let (st, _) = http.write(&master, &format!("fast{i}"), json!(1)).await?;
        assert_eq!(st, 201);
    }
    let fast = t.elapsed();
    assert!(
        fast < Duration::from_millis(1500),
        "5 w=1 writes took {fast:?}"
    );

    let t = Instant::now();
    let (st, body) = http.write(&master, "all", json!(2)).await?;
    let all = t.elapsed();
    assert_eq!(st, 201, "{body}");
    assert!(
        all >= Duration::from_millis(1500),
        "w=2 returned in {all:?}, before the delayed ack"
    );
    assert_eq!(body["ackedBy"], json!(["m", "s1"]));
    Ok(())
}

/// A master that holds its frames back for longer than a member waits for an answer to
/// its Hello (two election timeouts, 2 s here) is still followed: the Welcome is never
/// held back, and it tells the member how late the rest will come.
#[actix_rt::test]
async fn a_master_slower_than_the_handshake_bound_is_followed() -> anyhow::Result<()> {
    let dir = TestDir::new("slow-master");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &["--delay-ms", "3000"], &[&[]]).await?;
    let t = Instant::now();
    let (st, body) = http.write(&master, "late", json!(2)).await?;
    let took = t.elapsed();
    assert_eq!(st, 201, "{body}");
    assert!(
        took >= Duration::from_millis(3000),
        "w=2 returned in {took:?}, before the delayed entry could arrive"
    );
    let h = http.health(&nodes[0]).await?;
    assert_eq!(h["phase"], "live", "{h}");
    Ok(())
}

/// A w=all writer blocked on a dead member never holds up w=1 writers.
#[actix_rt::test]
async fn a_blocked_write_concern_never_blocks_other_clients() -> anyhow::Result<()> {
    let dir = TestDir::new("blocked");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let (s1, mut s2) = (nodes.remove(0), nodes.remove(0));
    s2.kill9();

    let blocked: Vec<_> = (0..3)
        .map(|i| spawn_write(&http, &master, format!("all{i}"), json!(3)))
        .collect();
    let t = Instant::now();
    let quick: Vec<_> = (0..40)
        .map(|i| spawn_write(&http, &master, format!("one{i}"), json!(1)))
        .collect();
    for h in quick {
        let (st, body) = h.await??;
        assert_eq!(st, 201, "{body}");
    }
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "w=1 writers were held up"
    );
    let (st, _) = http.write(&master, "two", json!(2)).await?;
    assert_eq!(st, 201, "w=2 is met by m + s1");
    assert!(blocked.iter().all(|h| !h.is_finished()));

    s2.restart()?;
    for h in blocked {
        let (st, body) = actix_rt::time::timeout(LONG, h).await???;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["acks"], 3);
    }
    wait_converged(&http, &master, &[&s1, &s2], 44, LONG).await?;
    Ok(())
}

/// Under random delays in both directions, every snapshot of a secondary's log is a
/// prefix of the master's.
#[actix_rt::test]
async fn secondary_snapshots_are_always_prefixes_under_random_delays() -> anyhow::Result<()> {
    let dir = TestDir::new("prefix");
    let http = Http::new();
    let (master, nodes) = cluster(
        &dir,
        &http,
        &["--delay-ms", "0-300", "--ack-timeout-ms", "200"],
        &[
            &["--delay-ms", "0-300"],
            &["--delay-ms", "0-300", "--drop-rate", "0.2"],
        ],
    )
    .await?;
    let (s1, s2) = (&nodes[0], &nodes[1]);

    const N: usize = 80;
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let http = http.clone();
            let url = master.url("/newMessage");
            actix_rt::spawn(async move {
                for i in 0..N / 8 {
                    let wc = 1 + (i + w) % 3;
                    let (st, body) = http
                        .post(
                            &url,
                            &json!({"message": format!("w{w}-{i}"), "writeConcern": wc}),
                        )
                        .await?;
                    anyhow::ensure!(st == 201, "{st} {body}");
                    anyhow::ensure!(body["acks"].as_u64().unwrap() >= wc as u64, "{body}");
                }
                anyhow::Ok(())
            })
        })
        .collect();
    let mut snapshots = Vec::new();
    while writers.iter().any(|h| !h.is_finished()) {
        snapshots.push(http.messages(s1).await?);
        snapshots.push(http.messages(s2).await?);
    }
    for h in writers {
        h.await??;
    }
    let log = wait_converged(&http, &master, &[s1, s2], N, LONG).await?;
    assert_gap_free(&log);
    assert!(snapshots.len() > 4, "too few snapshots to mean anything");
    for snap in &snapshots {
        assert!(
            snap.len() <= log.len() && snap[..] == log[..snap.len()],
            "a secondary showed {snap:?}, not a prefix of the master's log"
        );
    }
    let distinct: std::collections::BTreeSet<usize> = snapshots.iter().map(Vec::len).collect();
    assert!(
        distinct.len() > 2,
        "snapshots never saw the log grow: {distinct:?}"
    );
    Ok(())
}

/// Slow links: every frame delayed 1000-2000 ms, ack timeout 1500 ms (resends race acks).
#[actix_rt::test]
async fn seed_homework_delays_end_with_identical_logs() -> anyhow::Result<()> {
    let dir = TestDir::new("seed-delays");
    let http = Http::new();
    let delayed: &[&str] = &["--delay-ms", "1000-2000"];
    let (master, nodes) = cluster(
        &dir,
        &http,
        &["--delay-ms", "1000-2000", "--ack-timeout-ms", "1500"],
        &[delayed, delayed],
    )
    .await?;
    let writes: Vec<_> = (0..12)
        .map(|i| spawn_write(&http, &master, format!("d{i}"), json!(1 + i % 3)))
        .collect();
    for h in writes {
        let (st, body) = h.await??;
        assert_eq!(st, 201, "{body}");
    }
    let log = wait_converged(&http, &master, &[&nodes[0], &nodes[1]], 12, LONG).await?;
    assert_gap_free(&log);
    let h = http.health(&master).await?;
    let resends: u64 = h["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["resends"].as_u64().unwrap())
        .sum();
    assert!(
        resends > 0,
        "round trips above the ack timeout must cause resends: {h}"
    );
    Ok(())
}

/// Half the acknowledgements lost: the master retries, secondaries ignore duplicates.
#[actix_rt::test]
async fn drop_rate_half_converges_without_duplicates() -> anyhow::Result<()> {
    let dir = TestDir::new("drop");
    let http = Http::new();
    let lossy: &[&str] = &["--drop-rate", "0.5"];
    let (master, nodes) =
        cluster(&dir, &http, &["--ack-timeout-ms", "100"], &[lossy, lossy]).await?;
    let (s1, s2) = (&nodes[0], &nodes[1]);
    for i in 0..40 {
        let (st, body) = http.write(&master, &format!("x{i}"), json!(3)).await?;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["acks"], 3);
    }
    let log = wait_converged(&http, &master, &[s1, s2], 40, LONG).await?;
    assert_gap_free(&log);
    let dups = http.health(s1).await?["duplicatesIgnored"]
        .as_u64()
        .unwrap()
        + http.health(s2).await?["duplicatesIgnored"]
            .as_u64()
            .unwrap();
    assert!(
        dups > 0,
        "lost acks must lead to resends the secondaries ignore"
    );
    Ok(())
}

/// kill -9 a secondary, keep writing, restart it: it catches up.
#[actix_rt::test]
async fn a_killed_secondary_catches_up_after_restart() -> anyhow::Result<()> {
    let dir = TestDir::new("kill9");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let (mut s1, s2) = (nodes.remove(0), nodes.remove(0));
    for i in 0..30 {
        assert_eq!(
            http.write(&master, &format!("a{i}"), json!(3)).await?.0,
            201
        );
    }
    s1.kill9();
    for i in 0..30 {
        assert_eq!(
            http.write(&master, &format!("b{i}"), json!(2)).await?.0,
            201
        );
    }
    let h = http.health(&master).await?;
    let s1h = h["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "s1")
        .unwrap()
        .clone();
    assert_eq!(s1h["connected"], false, "{h}");
    assert_eq!(s1h["status"], "Unhealthy", "{h}");
    s1.restart()?;
    let log = wait_converged(&http, &master, &[&s1, &s2], 60, LONG).await?;
    assert_gap_free(&log);
    Ok(())
}

/// A secondary started before its master keeps trying until the master is up.
#[actix_rt::test]
async fn a_secondary_may_start_before_the_master() -> anyhow::Result<()> {
    let dir = TestDir::new("early");
    let http = Http::new();
    let port = free_port();
    let addr = format!("127.0.0.1:{port}").parse()?;
    let s1 = Node::secondary(&dir, "s1", addr, &[])?;
    let h = http.health(&s1).await?;
    assert_eq!(h["connected"], false, "{h}");
    let master = Node::master_on(&dir, "m", port, &[])?;
    wait_member_live(&http, &master, "s1").await?;
    let (st, body) = http.write(&master, "hi", json!(2)).await?;
    assert_eq!(st, 201, "{body}");
    assert_eq!(http.messages(&s1).await?, vec![(1, "hi".to_string())]);
    Ok(())
}

/// SIGTERM: a write still waiting for its write concern is answered (503, not a cut
/// connection), new writes are refused, and both kinds of node exit 0.
#[actix_rt::test]
async fn sigterm_answers_waiting_writes_and_exits_0() -> anyhow::Result<()> {
    let dir = TestDir::new("sigterm");
    let http = Http::new();
    let (mut master, mut nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let mut s1 = nodes.remove(0);
    let waiting = spawn_write(&http, &master, "never 5", json!(5));
    wait_for("the write to be pending", LONG, || async {
        Ok((http.health(&master).await?["pendingWrites"] == 1).then_some(()))
    })
    .await?;

    let status = s1.terminate(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(0), "{}", s1.log_tail(10));
    let status = master.terminate(Duration::from_secs(10))?;
    assert_eq!(status.code(), Some(0), "{}", master.log_tail(10));
    let (st, body) = waiting.await??;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    assert!(
        body["error"].as_str().unwrap_or("").contains("stored"),
        "says the message is stored: {body}"
    );
    Ok(())
}

/// Write concern 1 waits for no secondary, so the master marks those batches as not
/// urgent and the secondaries put their syncs off (docs/protocol.md, "Deferred
/// syncs"). They still acknowledge everything on their own, within a few milliseconds,
/// with no later write, no heartbeat and no resend (each a minute away here) to carry
/// the acks along; and a w=3 write right after is answered at once.
#[actix_rt::test]
async fn secondaries_acknowledge_w1_writes_on_their_own() -> anyhow::Result<()> {
    let dir = TestDir::new("deferred-acks");
    let http = Http::new();
    let (master, _nodes) = cluster(
        &dir,
        &http,
        &[
            "--heartbeat-ms",
            "60000",
            "--ack-timeout-ms",
            "60000",
            // No heartbeat for a minute: no election for longer than that either.
            "--election-timeout-ms",
            "120000",
        ],
        &[
            &["--election-timeout-ms", "120000"],
            &["--election-timeout-ms", "120000"],
        ],
    )
    .await?;
    for i in 1..=20 {
        let (st, body) = http.write(&master, &format!("w1-{i}"), json!(1)).await?;
        assert_eq!(st, 201, "{body}");
    }
    // Well past the deferral (10 ms), well before any resend or heartbeat (60 s).
    let within = Duration::from_secs(10);
    wait_for("both secondaries to acknowledge 20", within, || async {
        let (_, st) = http.get(&master.url("/status")).await?;
        let acked: Vec<u64> = st["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .filter(|m| m["role"] == "secondary")
                    .filter_map(|m| m["lastAckedId"].as_u64())
                    .collect()
            })
            .unwrap_or_default();
        Ok((acked == [20, 20]).then_some(()))
    })
    .await?;
    let (st, body) = http
        .post(
            &master.url("/newMessage"),
            &json!({"message": "w3", "writeConcern": 3, "timeoutMs": 5000}),
        )
        .await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(21)), "{body}");
    Ok(())
}
