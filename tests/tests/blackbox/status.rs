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
    let writes: Vec<_> = (0..60)
        .map(|i| spawn_write(&http, &master, format!("m{i}"), json!(1)))
        .collect();
    let mut seen_held_back = false;
    for _ in 0..400 {
        let (_, st) = http.get(&s1.url("/status")).await?;
        let last = st["lastId"].as_u64().unwrap_or(0);
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
        if seen_held_back && writes.iter().all(|w| w.is_finished()) {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    for w in writes {
        assert_eq!(w.await??.0, 201);
    }
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
