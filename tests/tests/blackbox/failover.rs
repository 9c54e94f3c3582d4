//! Failover on the real binaries: kill -9 of the master under a stream of majority
//! writes, rollback of writes only the old master held, `stepDown`, priorities, and the
//! old master rejoining as a secondary.

use chorus_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// The index of the node whose `/hello` says it takes writes, if any answers so now.
async fn writable(http: &Http, urls: &[String]) -> Option<usize> {
    for (i, u) in urls.iter().enumerate() {
        if let Ok((200, h)) = http.get(&format!("{u}/hello")).await
            && h["isWritablePrimary"] == true
        {
            return Some(i);
        }
    }
    None
}

/// What a writer that follows the master saw.
#[derive(Default, Debug)]
struct Stream {
    /// requestId -> (id, term) of its 201.
    acked: BTreeMap<String, (u64, u64)>,
    /// When each 201 arrived, and its term.
    acked_at: Vec<(Instant, u64)>,
    /// Attempts answered by anything but 201 (503 while no master, connection refused).
    retries: usize,
}

/// Write `w=majority` messages one after another until `stop`, each with its own
/// requestId, to whichever node says it is master; a write that fails is retried with
/// the same requestId on the master found afresh, as a retryable-writes client does.
async fn majority_stream(http: Http, urls: Vec<String>, stop: Arc<AtomicBool>) -> Stream {
    let mut out = Stream::default();
    let mut target = 0;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w-{i}");
        loop {
            let body = json!({"message": key, "writeConcern": "majority", "requestId": key, "timeoutMs": 10000});
            match http
                .post(&format!("{}/newMessage", urls[target]), &body)
                .await
            {
                Ok((201, b)) => {
                    let id = b["id"].as_u64().expect("201 has an id");
                    let term = b["term"].as_u64().expect("201 has a term");
                    out.acked.insert(key.clone(), (id, term));
                    out.acked_at.push((Instant::now(), term));
                    break;
                }
                _ => {
                    out.retries += 1;
                    // Find the master again; poll gently while there is none.
                    match writable(&http, &urls).await {
                        Some(t) => target = t,
                        None => actix_rt::time::sleep(Duration::from_millis(20)).await,
                    }
                    if stop.load(Ordering::Relaxed) {
                        return out;
                    }
                }
            }
        }
        i += 1;
    }
    out
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// kill -9 of the master under a stream of w=majority writes: no acknowledged write is
/// lost or doubled, ids stay gap-free, a new master takes writes (the time is printed;
/// the contract's bound is 3 s at the defaults), and the old master restarted with the
/// same command rejoins as a secondary and ends with the same log.
/// `CHORUS_FAILOVER_RUNS=20` repeats it and prints the median and max.
#[actix_rt::test]
async fn kill9_master_under_majority_writes_loses_nothing_and_fails_over() -> anyhow::Result<()> {
    let runs: usize = std::env::var("CHORUS_FAILOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let mut times = Vec::new();
    for run in 0..runs {
        times.push(one_kill(run).await?);
    }
    let max = *times.iter().max().unwrap();
    eprintln!(
        "failover after kill -9 of the master, {runs} run(s): median {:?}, max {max:?}",
        median(&mut times)
    );
    Ok(())
}

/// One run: the time from the kill to the next majority write acknowledged.
async fn one_kill(run: usize) -> anyhow::Result<Duration> {
    let dir = TestDir::new(&format!("failover-kill-{run}"));
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let urls: Vec<String> = std::iter::once(&master)
        .chain(&nodes)
        .map(|n| n.url(""))
        .collect();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = actix_rt::spawn(majority_stream(http.clone(), urls.clone(), stop.clone()));
    // Some writes acknowledged, then the kill.
    wait_for("writes before the kill", LONG, || async {
        let h = http.get(&master.url("/hello")).await?.1;
        Ok((h["commitId"].as_u64().unwrap_or(0) >= 30).then_some(()))
    })
    .await?;
    master.kill9();
    let killed = Instant::now();
    let new = 1 + wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    // Writes go on through the new master.
    wait_for("majority writes after the failover", LONG, || async {
        let h = http.get(&format!("{}/hello", urls[new])).await?.1;
        Ok((h["commitId"].as_u64().unwrap_or(0) >= 60).then_some(()))
    })
    .await?;
    // The old master comes back with the same command, as a secondary.
    master.restart()?;
    wait_for("the old master to follow the new one", LONG, || async {
        let h = http.get(&master.url("/hello")).await?.1;
        Ok(
            (h["secondary"] == true && h["primary"].as_str() == Some(&urls[new][7..]))
                .then_some(()),
        )
    })
    .await?;
    // The new master stamped the member list with its term, and every member holds
    // that list (MongoDB's configTerm): a list of the dead master's term gives way.
    wait_for(
        "every member to hold the new master's list",
        LONG,
        || async {
            let mut stamps = Vec::new();
            for u in &urls {
                let h = http.get(&format!("{u}/hello")).await?.1;
                stamps.push((h["configTerm"].as_u64(), h["configVersion"].as_u64()));
            }
            let term = http.get(&format!("{}/hello", urls[new])).await?.1["term"].as_u64();
            Ok(
                (term > Some(1) && stamps.iter().all(|s| s.0 == term && *s == stamps[0]))
                    .then_some(()),
            )
        },
    )
    .await?;
    stop.store(true, Ordering::Relaxed);
    let seen = writer.await?;
    // The first write a new master acknowledged (a 201 of the old master may still
    // arrive just after the kill).
    let unavailable = seen
        .acked_at
        .iter()
        .find(|(t, term)| *t > killed && *term > 1)
        .map(|(t, _)| *t - killed)
        .expect("writes were acknowledged after the kill");
    eprintln!(
        "run {run}: a new master acknowledged a majority write {unavailable:?} after the kill ({} writes, {} retries)",
        seen.acked.len(),
        seen.retries
    );
    // Every node ends with the same gap-free log, holding each acknowledged write once,
    // at the id its 201 gave.
    let all = [&master, &nodes[0], &nodes[1]];
    let last = wait_for("a final write", LONG, || async {
        let (st, b) = http
            .post(
                &format!("{}/newMessage", urls[new]),
                &json!({"message": "end", "writeConcern": 3}),
            )
            .await?;
        Ok((st == 201).then(|| b["id"].as_u64().unwrap_or(0)))
    })
    .await?;
    let log = wait_converged(&http, all[new], &all, last as usize, LONG).await?;
    assert_gap_free(&log);
    let by_message: BTreeMap<&str, Vec<u64>> =
        log.iter().fold(BTreeMap::new(), |mut m, (id, msg)| {
            m.entry(msg.as_str()).or_default().push(*id);
            m
        });
    for (key, (id, _)) in &seen.acked {
        assert_eq!(
            by_message.get(key.as_str()),
            Some(&vec![*id]),
            "acknowledged write {key} (id {id}) is in the final log once, at its id"
        );
    }
    for (msg, ids) in &by_message {
        assert_eq!(ids.len(), 1, "{msg} was appended more than once: {ids:?}");
    }
    let terms: Vec<u64> = seen.acked.values().map(|(_, t)| *t).collect();
    assert!(
        terms.iter().max() > terms.iter().min(),
        "writes were acknowledged in two terms: {terms:?}"
    );
    Ok(unavailable)
}

/// SIGSTOP both secondaries, write w=1 to the master, kill it: the other two elect a
/// master without those writes. The old master, restarted, rolls them back into its
/// rollback file, reports it in `/status`, and converges.
///
/// A paused process still has a kernel that takes what is sent to it: frames the
/// master sent before it died would be read after SIGCONT. So the master holds its
/// frames back (`--delay-ms`), and the kill loses them as a partition would.
#[actix_rt::test]
async fn writes_only_the_old_master_held_are_rolled_back_when_it_returns() -> anyhow::Result<()> {
    let dir = TestDir::new("failover-rollback");
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &["--delay-ms", "1500"], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "kept", json!(3)).await?.0, 201);
    for n in &nodes {
        n.signal(libc::SIGSTOP);
    }
    let mut lost = Vec::new();
    for i in 0..3 {
        let msg = format!("lost-{i}");
        let (st, body) = http.write(&master, &msg, json!(1)).await?;
        assert_eq!(st, 201, "w=1 while the secondaries are paused: {body}");
        lost.push((body["id"].as_u64().unwrap(), msg));
    }
    let (st, before) = http.get(&master.url("/checksum?upTo=2")).await?;
    assert_eq!(st, 200, "{before}");
    master.kill9();
    for n in &nodes {
        n.signal(libc::SIGCONT);
    }
    let new = &nodes[wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?];
    let (st, body) = write_once_writable(&http, new, "after", json!(2), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    assert!(body["term"].as_u64() > Some(1), "a new term: {body}");
    master.restart()?;
    let all = [&master, &nodes[0], &nodes[1]];
    let log = wait_converged(&http, new, &all, 2, LONG).await?;
    assert_eq!(
        log,
        vec![(1, "kept".to_string()), (2, "after".to_string())],
        "the new master's log wins"
    );
    assert_eq!(
        rolled_back(&dir, &master.name),
        lost,
        "the old master's w=1 writes are in its rollback file"
    );
    // Its checksums are the set's again: the rollback refolded them from the cut.
    let (_, want) = http.get(&new.url("/checksum?upTo=2")).await?;
    assert_ne!(want, before, "id 2 holds another entry now");
    for n in all {
        let (st, got) = http.get(&n.url("/checksum?upTo=2")).await?;
        assert_eq!((st, &got), (200, &want), "{}", n.name);
    }
    // ROLLBACK until it has caught up again (its own frames are held back too), then
    // SECONDARY.
    let st = wait_for("the old master to be SECONDARY", LONG, || async {
        let st = http.get(&master.url("/status")).await?.1;
        Ok((st["state"] == "SECONDARY").then_some(st))
    })
    .await?;
    let r = &st["lastRollback"];
    assert_eq!(r["count"], 3, "{st}");
    assert_eq!(r["fromId"], 2, "{st}");
    assert!(
        r["file"].as_str().is_some_and(|f| f.contains("rollback")),
        "{st}"
    );
    assert!(r["time"].as_u64().is_some(), "{st}");
    // The new master says how it was elected (MongoDB's electionCandidateMetrics).
    let st = http.get(&new.url("/status")).await?.1;
    let m = &st["electionCandidateMetrics"];
    assert_eq!(m["term"], st["term"], "{st}");
    assert!(m["votesReceived"].as_u64() >= Some(2), "{st}");
    assert_eq!(m["votesNeeded"], 2, "{st}");
    assert!(m["lastElectionDate"].as_u64().is_some(), "{st}");
    Ok(())
}

/// `POST /stepDown`: the master hands over to a caught-up member and answers once it is
/// master; the old one is a secondary and stays so while quiet. A secondary answers 503.
#[actix_rt::test]
async fn step_down_hands_over_to_another_member() -> anyhow::Result<()> {
    let dir = TestDir::new("failover-stepdown");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);
    let (st, body) = http
        .post(&nodes[0].url("/stepDown"), &json!({"seconds": 60}))
        .await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    let (st, body) = http
        .post(&master.url("/stepDown"), &json!({"seconds": 60}))
        .await?;
    assert_eq!(st, 200, "{body}");
    let primary = body["primary"].as_str().unwrap_or_default().to_string();
    let new = nodes
        .iter()
        .find(|n| n.http.to_string() == primary)
        .unwrap_or_else(|| panic!("the new master is a secondary of before: {body}"));
    let h = http.get(&master.url("/hello")).await?.1;
    assert_eq!(
        (h["isWritablePrimary"].as_bool(), h["secondary"].as_bool()),
        (Some(false), Some(true)),
        "{h}"
    );
    let (st, body) = write_once_writable(&http, new, "b", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    // The old master follows the new one; a write sent to it names the master.
    let (st, body) = http.write(&master, "c", json!(1)).await?;
    assert_eq!(
        (st, body["primary"].as_str()),
        (503, Some(primary.as_str())),
        "{body}"
    );
    wait_converged(&http, new, &[&master, &nodes[0], &nodes[1]], 2, LONG).await?;
    Ok(())
}

/// A member of priority 0 never stands: with only such members left of a majority, the
/// set has no master (polled over several election timeouts) until a member that may
/// stand returns.
#[actix_rt::test]
async fn a_priority_0_member_never_becomes_master() -> anyhow::Result<()> {
    let dir = TestDir::new("failover-priority0");
    let http = Http::new();
    let fast = ["--election-timeout-ms", "300", "--heartbeat-ms", "50"];
    let p0 = [&fast[..], &["--priority", "0"]].concat();
    let (mut master, nodes) = cluster(&dir, &http, &fast, &[&p0, &p0]).await?;
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);
    master.kill9();
    // Ten election timeouts (each up to 2 x 300 ms): nobody may become master.
    let deadline = Instant::now() + Duration::from_secs(6);
    while Instant::now() < deadline {
        for n in &nodes {
            let h = http.get(&n.url("/hello")).await?.1;
            assert_eq!(
                h["isWritablePrimary"], false,
                "{} became master: {h}",
                n.name
            );
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    for n in &nodes {
        let st = http.get(&n.url("/status")).await?.1;
        assert_eq!(st["electionCandidateMetrics"], Value::Null, "{st}");
    }
    master.restart()?;
    let all = [&master, &nodes[0], &nodes[1]];
    assert_eq!(wait_master(&http, &all, LONG).await?, 0, "only m may stand");
    let (st, body) = write_once_writable(&http, &master, "b", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    Ok(())
}

/// A member that dials a paused master (the kernel takes the connection; nothing
/// answers the Hello) gives up on it after a short handshake bound and follows the
/// master the others elect. Here s2 restarts while m is stopped and dials m first (its
/// `--master-ip`); s2 has priority 0, so s1 is the one elected, with s2's vote. At the
/// default election timeout the first handshake bound is 2 s; when every handshake
/// could take 30 s, s2 missed the new master's writes for that long and the wait
/// below failed.
#[actix_rt::test]
async fn a_member_that_dialled_a_paused_master_follows_the_new_one() -> anyhow::Result<()> {
    let dir = TestDir::new("failover-paused-dial");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &[], &[&[], &["--priority", "0"]]).await?;
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);
    nodes[1].kill9();
    master.signal(libc::SIGSTOP);
    nodes[1].restart()?;
    let (s1, s2) = (&nodes[0], &nodes[1]);
    wait_master(&http, &[s1], LONG).await?;
    let (st, body) = write_once_writable(&http, s1, "b", json!(1), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    let short = Duration::from_secs(15);
    let log = wait_converged(&http, s1, &[s2], 2, short).await;
    master.signal(libc::SIGCONT);
    assert_eq!(
        log?,
        vec![(1, "a".to_string()), (2, "b".to_string())],
        "s2 follows s1"
    );
    wait_converged(&http, s1, &[&master, s2], 2, LONG).await?;
    Ok(())
}

/// MongoDB's priority takeover: a member of higher priority, once caught up, takes over
/// from the master that started the set.
#[actix_rt::test]
async fn a_caught_up_member_of_higher_priority_takes_over() -> anyhow::Result<()> {
    let dir = TestDir::new("failover-takeover");
    let http = Http::new();
    // Not `cluster()`: it waits for s1 to be live on m, and s1 may already be taking
    // over by then (m is no master to ask any more).
    let master = Node::master(&dir, "m", &[])?;
    let comm = master.comm.expect("the master's comm address");
    let nodes = [
        Node::secondary(&dir, "s1", comm, &["--priority", "2"])?,
        Node::secondary(&dir, "s2", comm, &[])?,
    ];
    let all = [&master, &nodes[0], &nodes[1]];
    wait_for("s1 (priority 2) to take over", LONG, || async {
        let h = http.get(&nodes[0].url("/hello")).await?.1;
        Ok((h["isWritablePrimary"] == true).then_some(()))
    })
    .await?;
    let (st, body) = write_once_writable(&http, &nodes[0], "a", json!(3), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(1)), "{body}");
    let st = http.get(&nodes[0].url("/status")).await?.1;
    assert_eq!(
        st["electionCandidateMetrics"]["reason"], "priorityTakeover",
        "{st}"
    );
    wait_converged(&http, &nodes[0], &all, 1, LONG).await?;
    Ok(())
}
