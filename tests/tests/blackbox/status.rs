//! The status endpoints: the replica set's state, a message's holders, member removal,
//! and what a secondary holds back.

use chorus_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

fn member<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .unwrap_or_else(|| panic!("no member {name} in {status}"))
}

#[actix_rt::test]
async fn status_message_holders_and_member_removal() -> anyhow::Result<()> {
    let dir = TestDir::new("status");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &["--heartbeat-ms", "100"], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);
    nodes[1].kill9();
    assert_eq!(http.write(&master, "b", json!(2)).await?.0, 201);

    // rs.status()-like view: set, commit id, each member's state and timings.
    let st = wait_for(
        "s2 seen down, and a heartbeat round trip to s1",
        LONG,
        || async {
            let (_, st) = http.get(&master.url("/status")).await?;
            let ready = member(&st, "s2")["state"] == "(not reachable/healthy)"
                && member(&st, "s1")["rttMs"].is_number();
            Ok(ready.then_some(st))
        },
    )
    .await?;
    assert!(
        st["set"].as_str().is_some_and(|s| s.starts_with("chorus-")),
        "{st}"
    );
    assert_eq!(
        (st["lastId"].as_u64(), st["commitId"].as_u64()),
        (Some(2), Some(2)),
        "{st}"
    );
    let m = member(&st, "m");
    assert_eq!(
        (m["state"].as_str(), m["self"].as_bool()),
        (Some("PRIMARY"), Some(true))
    );
    let s1 = member(&st, "s1");
    assert_eq!(s1["state"], "SECONDARY");
    assert_eq!(
        (
            s1["lastAckedId"].as_u64(),
            s1["lagMessages"].as_u64(),
            s1["lagMs"].as_u64()
        ),
        (Some(2), Some(0), Some(0))
    );
    assert!(s1["rttMs"].as_f64().is_some_and(|r| r >= 0.0), "{s1}");
    assert!(
        s1["uptimeMs"].as_u64().is_some() && s1["lastHeartbeatMsAgo"].as_u64().is_some(),
        "{s1}"
    );
    let s2 = member(&st, "s2");
    assert_eq!(
        (s2["lastAckedId"].as_u64(), s2["lagMessages"].as_u64()),
        (Some(1), Some(1)),
        "{s2}"
    );
    assert!(s2["lagMs"].as_u64().is_some(), "{s2}");

    // Which members hold message 2.
    let (code, v) = http.get(&master.url("/messages/2/status")).await?;
    assert_eq!(code, 200, "{v}");
    assert_eq!(v["ackedBy"], json!(["m", "s1"]));
    assert_eq!(v["majority"], true);
    assert_eq!(member(&v, "s2")["holds"], false);
    let (code, v) = http.get(&master.url("/messages/3/status")).await?;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let (code, v) = http.get(&master.url("/messages/x/status")).await?;
    assert_eq!((code, v["code"].as_str()), (400, Some("invalid_id")), "{v}");

    // s2 removed for good: two members left, it stays out after a restart of the master.
    let (code, v) = http.delete(&master.url("/members/s2")).await?;
    assert_eq!((code, v["memberCount"].as_u64()), (200, Some(2)), "{v}");
    let (code, v) = http.delete(&master.url("/members/s2")).await?;
    assert_eq!((code, v["code"].as_str()), (404, Some("not_found")), "{v}");
    let h = http.health(&master).await?;
    assert_eq!(h["memberCount"], 2, "{h}");
    let (code, v) = http.write(&master, "c", json!("majority")).await?;
    assert_eq!(
        (code, v["acks"].as_u64()),
        (201, Some(2)),
        "majority of 2: {v}"
    );
    Ok(())
}

/// A secondary's /status shows its prefix, what it holds back and what it misses; the
/// master's frames are delayed at random so they arrive out of order.
#[actix_rt::test]
async fn a_secondary_shows_what_it_holds_back() -> anyhow::Result<()> {
    let dir = TestDir::new("held-back");
    let http = Http::new();
    let (master, nodes) = cluster(
        &dir,
        &http,
        &["--delay-ms", "0-400", "--ack-timeout-ms", "1000"],
        &[&[]],
    )
    .await?;
    let s1 = &nodes[0];
    // One write at a time, so that each message travels in its own frame (concurrent
    // writes share a sync and leave in one frame, which cannot overtake itself).
    let writer = {
        let http = http.clone();
        let url = master.url("/newMessage");
        actix_rt::spawn(async move {
            for i in 0..60 {
                let (st, _) = http
                    .post(&url, &json!({"message": format!("m{i}")}))
                    .await?;
                anyhow::ensure!(st == 201);
                actix_rt::time::sleep(Duration::from_millis(5)).await;
            }
            anyhow::Ok(())
        })
    };
    let mut seen_held_back = false;
    for _ in 0..400 {
        let (_, st) = http.get(&s1.url("/status")).await?;
        // The gap-free prefix stored (lastId is the part of it already synced).
        let last = st["appendedId"].as_u64().unwrap_or(0);
        assert!(st["lastId"].as_u64().unwrap_or(0) <= last, "{st}");
        let held: Vec<(u64, u64)> = serde_json::from_value(st["heldBack"].clone())?;
        let missing: Vec<(u64, u64)> = serde_json::from_value(st["missing"].clone())?;
        if let Some(&(first, _)) = held.first() {
            seen_held_back = true;
            // Something is missing right after the prefix, and before every held range.
            assert_eq!(missing.first().map(|m| m.0), Some(last + 1), "{st}");
            assert!(missing.iter().all(|m| m.1 < held.last().unwrap().1), "{st}");
            assert!(first > last + 1, "{st}");
        } else {
            assert!(missing.is_empty(), "{st}");
        }
        if seen_held_back && writer.is_finished() {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    writer.await??;
    assert!(
        seen_held_back,
        "frames delayed 0-400 ms never arrived out of order"
    );
    wait_converged(&http, &master, &[s1], 60, LONG).await?;
    let (_, st) = http.get(&s1.url("/status")).await?;
    assert_eq!(
        (
            st["heldBack"].clone(),
            st["missing"].clone(),
            st["state"].clone()
        ),
        (json!([]), json!([]), json!("SECONDARY"))
    );
    Ok(())
}

/// `readConcern=majority` shows only what a majority holds, on the master and on the
/// secondaries, which learn the commit id from the master.
#[actix_rt::test]
async fn read_concern_majority_shows_only_what_a_majority_holds() -> anyhow::Result<()> {
    let dir = TestDir::new("read-concern");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &["--heartbeat-ms", "300"], &[&[], &[]]).await?;
    let (s1, s2) = (&nodes[0], &nodes[1]);
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);
    let majority = |n: &Node| n.url("/messages?readConcern=majority");
    wait_for("s1 to learn that a is committed", LONG, || async {
        let (_, v) = http.get(&majority(s1)).await?;
        Ok((v == json!([{"id": 1, "message": "a"}])).then_some(()))
    })
    .await?;

    // Both secondaries frozen: b is on the master only (still within the quorum's grace).
    s1.signal(libc::SIGSTOP);
    s2.signal(libc::SIGSTOP);
    let (st, body) = http.write(&master, "b", json!(1)).await?;
    assert_eq!(st, 201, "{body}");
    assert_eq!(http.messages(&master).await?.len(), 2);
    let (_, v) = http.get(&majority(&master)).await?;
    assert_eq!(
        v,
        json!([{"id": 1, "message": "a"}]),
        "b is not on a majority yet"
    );
    let (code, v) = http.get(&master.url("/messages?readConcern=all")).await?;
    assert_eq!((code, v["code"].as_str()), (400, Some("invalid_query")));

    // s1 thaws and takes b: now a majority (m, s1) holds it, on the master and on s1.
    s1.signal(libc::SIGCONT);
    let both = json!([{"id": 1, "message": "a"}, {"id": 2, "message": "b"}]);
    for node in [&master, s1] {
        wait_for(
            &format!("b to be majority-visible on {}", node.name),
            LONG,
            || async {
                let (_, v) = http.get(&majority(node)).await?;
                Ok((v == both).then_some(()))
            },
        )
        .await?;
    }
    s2.signal(libc::SIGCONT);
    Ok(())
}
