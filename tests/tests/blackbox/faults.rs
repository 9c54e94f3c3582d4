//! Fault injection at run time (`PUT/GET/DELETE /admin/faults`) on the real binaries:
//! the API, then a set partitioned on one machine without containers: a master cut
//! off from both secondaries, a secondary cut off from the others, a bridge member
//! between two halves, a lossy, slow link that writes get through anyway, and a link
//! that flaps.

use chorus_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn put_faults(http: &Http, node: &Node, rules: Value) -> anyhow::Result<(u16, Value)> {
    http.put(&node.url("/admin/faults"), &rules).await
}

#[actix_rt::test]
async fn delay_ms_and_drop_rate_are_the_first_rules_and_stay() -> anyhow::Result<()> {
    let dir = TestDir::new("faults-startup");
    let http = Http::new();
    let flags = ["--delay-ms", "5-20", "--drop-rate", "0.2"];
    let (master, nodes) = cluster(&dir, &http, &["--delay-ms", "5"], &[&flags]).await?;
    let startup = |delay: Value, drop: Option<f64>| {
        let mut rules = vec![
            json!({"peer": "*", "direction": "out", "frames": "replication", "drop": 0.0, "delayMs": delay, "partition": false}),
        ];
        if let Some(d) = drop {
            rules.push(json!({"peer": "*", "direction": "out", "frames": "acks", "drop": d, "delayMs": [0, 0], "partition": false}));
        }
        Value::Array(rules)
    };
    let shown = http.get(&nodes[0].url("/admin/faults")).await?.1;
    assert_eq!(shown["rules"], json!([]), "{shown}");
    assert_eq!(
        shown["startup"]["rules"],
        startup(json!([5, 20]), Some(0.2))
    );
    // Rules set at run time add to them; DELETE clears only those.
    let rules = json!({"seed": 1, "rules": [{"peer": "m", "delayMs": [1, 2]}]});
    assert_eq!(put_faults(&http, &nodes[0], rules).await?.0, 200);
    let (st, shown) = http.delete(&nodes[0].url("/admin/faults")).await?;
    assert_eq!(st, 200);
    assert_eq!(shown["rules"], json!([]));
    assert_eq!(
        shown["startup"]["rules"],
        startup(json!([5, 20]), Some(0.2))
    );
    let shown = http.get(&master.url("/admin/faults")).await?.1;
    assert_eq!(shown["startup"]["rules"], startup(json!([5, 5]), None));
    // And they do what the flags always did: the writes still reach everyone.
    for i in 0..20 {
        let (st, body) = http.write(&master, &format!("m{i}"), json!(2)).await?;
        assert_eq!(st, 201, "{body}");
    }
    wait_converged(&http, &master, &[&master, &nodes[0]], 20, LONG).await?;
    Ok(())
}

#[actix_rt::test]
async fn the_fault_api_sets_shows_and_clears_rules() -> anyhow::Result<()> {
    let dir = TestDir::new("faults-api");
    let http = Http::new();
    let (master, _nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let url = master.url("/admin/faults");
    assert_eq!(
        http.get(&url).await?,
        (200, json!({"seed": 0, "rules": []}))
    );
    let rules = json!({"seed": 42, "rules": [
        {"peer": "s1", "drop": 0.3, "delayMs": [10, 50], "partition": false}]});
    let (st, body) = put_faults(&http, &master, rules.clone()).await?;
    assert_eq!((st, &body), (200, &rules));
    assert_eq!(http.get(&url).await?, (200, rules));
    for (bad, code) in [
        (
            json!({"rules": [{"peer": "s1", "drop": 2}]}),
            "invalid_request",
        ),
        (
            json!({"rules": [{"peer": "s1", "delayMs": [9, 1]}]}),
            "invalid_request",
        ),
        (
            json!({"rules": [{"peer": "s1", "lossy": true}]}),
            "invalid_request",
        ),
        (json!([1]), "invalid_request"),
    ] {
        let (st, body) = put_faults(&http, &master, bad.clone()).await?;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some(code)),
            "{bad}: {body}"
        );
    }
    let (st, body) = http.put_raw(&url, "{not json").await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (400, Some("invalid_json")),
        "{body}"
    );
    assert_eq!(
        http.get(&url).await?.1["seed"],
        42,
        "a refused PUT changes nothing"
    );
    assert_eq!(
        http.delete(&url).await?,
        (200, json!({"seed": 0, "rules": []}))
    );
    assert_eq!(http.get(&url).await?.1["rules"], json!([]));
    Ok(())
}

/// The master's rules cut it off from both secondaries: it cannot reach a majority, so
/// it steps down; the two others elect a master of a newer term that takes majority
/// writes. Once the rules are cleared the old master rejoins as a secondary and every
/// member holds the same log.
#[actix_rt::test]
async fn a_master_partitioned_from_the_others_steps_down_and_they_elect_another()
-> anyhow::Result<()> {
    let dir = TestDir::new("faults-minority-master");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "before", json!(3)).await?.0, 201);
    let cut = json!({"seed": 1, "rules": [
        {"peer": "s1", "partition": true}, {"peer": "s2", "partition": true}]});
    assert_eq!(put_faults(&http, &master, cut).await?.0, 200);
    let new = wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    let (st, body) =
        write_once_writable(&http, &nodes[new], "during", json!("majority"), LONG).await?;
    assert_eq!((st, body["id"].as_u64()), (201, Some(2)), "{body}");
    assert!(body["term"].as_u64() > Some(1), "{body}");
    // The old master no longer takes writes (it steps down without a quorum).
    wait_for("the cut-off master to stop taking writes", LONG, || async {
        let h = http.get(&master.url("/hello")).await?.1;
        Ok((h["isWritablePrimary"] == false).then_some(()))
    })
    .await?;
    let (st, body) = http.write(&master, "refused", json!(1)).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );

    assert_eq!(http.delete(&master.url("/admin/faults")).await?.0, 200);
    let all = [&master, &nodes[0], &nodes[1]];
    let log = wait_converged(&http, &nodes[new], &all, 2, LONG).await?;
    assert_eq!(
        log,
        vec![(1, "before".to_string()), (2, "during".to_string())]
    );
    let mut sums = Vec::new();
    for n in all {
        sums.push(http.get(&n.url("/checksum?upTo=2")).await?.1);
    }
    assert!(sums.windows(2).all(|w| w[0] == w[1]), "{sums:?}");
    let st = http.get(&master.url("/status")).await?.1;
    assert_eq!(st["state"], "SECONDARY", "{st}");
    Ok(())
}

/// A secondary whose rules cut it off from the others: the master keeps a majority and
/// takes writes; the cut-off member never wins an election (its pre-votes go nowhere)
/// and catches up once the rules are cleared. Then a lossy, slow link between the
/// master and a secondary (30 % of the frames dropped, 5-20 ms delays, both ways):
/// writes that need every member still get through, by resends.
#[actix_rt::test]
async fn a_cut_off_secondary_and_a_lossy_link_lose_nothing() -> anyhow::Result<()> {
    let dir = TestDir::new("faults-secondary");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let s2 = &nodes[1];
    let cut =
        json!({"rules": [{"peer": "m", "partition": true}, {"peer": "s1", "partition": true}]});
    assert_eq!(put_faults(&http, s2, cut).await?.0, 200);
    for i in 1..=10 {
        let (st, body) = http.write(&master, &format!("m{i}"), json!(2)).await?;
        assert_eq!(st, 201, "{body}");
    }
    // Watch for three election timeouts: the master keeps its role and its term
    // while s2 times out and tries to stand.
    let watch_until = std::time::Instant::now() + Duration::from_millis(3000);
    while std::time::Instant::now() < watch_until {
        let h = http.get(&master.url("/hello")).await?.1;
        assert_eq!(
            (h["isWritablePrimary"].as_bool(), h["term"].as_u64()),
            (Some(true), Some(1)),
            "{h}"
        );
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(http.messages(s2).await?.len() < 10, "s2 was cut off");
    // s2 gave up on the silent master and dials again; the rules drop its Hello.
    wait_for("s2 to wait for an answer to its Hello", LONG, || async {
        let h = http.get(&s2.url("/health")).await?.1;
        Ok((h["phase"] == "handshaking").then_some(()))
    })
    .await?;
    assert_eq!(http.delete(&s2.url("/admin/faults")).await?.0, 200);
    // The Hello it is waiting on is given up after two election timeouts, as any
    // silence is. When a Hello could wait 30 s, s2 caught up only after that long.
    let rejoin = Duration::from_secs(10);
    wait_converged(&http, &master, &[&nodes[0], s2], 10, rejoin).await?;

    let lossy = json!({"seed": 9, "rules": [{"peer": "s1", "drop": 0.3, "delayMs": [5, 20]}]});
    assert_eq!(put_faults(&http, &master, lossy).await?.0, 200);
    for i in 11..=30 {
        let (st, body) = http.write(&master, &format!("m{i}"), json!(3)).await?;
        assert_eq!(st, 201, "w=3 across a lossy link: {body}");
    }
    assert_eq!(http.delete(&master.url("/admin/faults")).await?.0, 200);
    let log = wait_converged(&http, &master, &[&nodes[0], s2], 30, LONG).await?;
    assert_gap_free(&log);
    Ok(())
}

/// A bridge: the master and s2 cannot hear each other (rules on both), s1 hears both.
/// The master keeps its majority through s1 and its term: s2's pre-votes find s1
/// still hearing the master, so s2 never disturbs it. Cleared, s2 catches up.
#[actix_rt::test]
async fn a_bridge_member_keeps_the_set_writable_without_elections() -> anyhow::Result<()> {
    let dir = TestDir::new("faults-bridge");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let s2 = &nodes[1];
    let cut = |peer: &str| json!({"rules": [{"peer": peer, "partition": true}]});
    assert_eq!(put_faults(&http, &master, cut("s2")).await?.0, 200);
    assert_eq!(put_faults(&http, s2, cut("m")).await?.0, 200);
    let watch_until = std::time::Instant::now() + Duration::from_millis(3000);
    let mut written = 0;
    while std::time::Instant::now() < watch_until {
        written += 1;
        let (st, body) = http
            .write(&master, &format!("m{written}"), json!("majority"))
            .await?;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["term"], 1, "no election: {body}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
    let h = http.get(&s2.url("/hello")).await?.1;
    assert_eq!(h["term"], 1, "s2 never started a term of its own: {h}");
    for n in [&master, s2] {
        assert_eq!(http.delete(&n.url("/admin/faults")).await?.0, 200);
    }
    wait_converged(&http, &master, &[&nodes[0], s2], written, LONG).await?;
    Ok(())
}

/// A link that flaps: the master's link to s1 is cut and restored every 100 to 400 ms
/// for 4 s while majority writes go on. Every write is acknowledged in the first
/// term (the master still hears s2, and s1's silences are shorter than its election
/// timeout: pre-vote would not let it disturb the set anyway); every read of s1 in
/// between is a gap-free prefix; once the link holds, s1 has everything.
#[actix_rt::test]
async fn a_flapping_link_loses_nothing_and_elects_no_one() -> anyhow::Result<()> {
    let dir = TestDir::new("faults-flap");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let s1 = &nodes[0];
    let flapping = {
        let (http, url) = (http.clone(), master.url("/admin/faults"));
        actix_rt::spawn(async move {
            use rand::{RngExt, SeedableRng};
            let mut rng = rand::rngs::StdRng::seed_from_u64(7);
            let end = std::time::Instant::now() + Duration::from_secs(4);
            let mut flips = 0;
            while std::time::Instant::now() < end {
                let cut = json!({"rules": [{"peer": "s1", "partition": true}]});
                http.put(&url, &cut).await?;
                actix_rt::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                http.delete(&url).await?;
                actix_rt::time::sleep(Duration::from_millis(rng.random_range(100..400))).await;
                flips += 1;
            }
            anyhow::Ok(flips)
        })
    };
    let mut written = 0;
    while !flapping.is_finished() {
        written += 1;
        let (st, body) = http
            .write(&master, &format!("m{written}"), json!("majority"))
            .await?;
        assert_eq!(st, 201, "{body}");
        assert_eq!(body["term"], 1, "no election: {body}");
        if written % 5 == 0 {
            let log = http.messages(s1).await?;
            assert_gap_free(&log);
            for (id, m) in &log {
                assert_eq!(m, &format!("m{id}"), "s1 holds what the master wrote");
            }
        }
    }
    let flips = flapping.await??;
    assert!(flips >= 5, "the link flapped {flips} times");
    wait_converged(&http, &master, &[s1, &nodes[1]], written, LONG).await?;
    let h = http.get(&s1.url("/hello")).await?.1;
    assert_eq!(h["term"], 1, "{h}");
    Ok(())
}
