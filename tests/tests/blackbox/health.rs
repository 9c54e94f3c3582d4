//! Member health as the master sees it, and the quorum it decides writes by.

use chorus_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

async fn status_of(http: &Http, master: &Node, name: &str) -> anyhow::Result<String> {
    let h = http.health(master).await?;
    Ok(h["members"]
        .as_array()
        .and_then(|ms| ms.iter().find(|m| m["name"] == name))
        .and_then(|m| m["status"].as_str())
        .unwrap_or_default()
        .to_string())
}

/// SIGSTOP a secondary: Suspected after 2 heartbeats of silence, Unhealthy after 5, on
/// time; Healthy again soon after SIGCONT.
#[actix_rt::test]
async fn a_stopped_secondary_turns_suspected_then_unhealthy_on_time() -> anyhow::Result<()> {
    let dir = TestDir::new("sigstop");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &["--heartbeat-ms", "200"], &[&[], &[]]).await?;
    let s1 = &nodes[0];
    wait_for("s1 healthy", LONG, || async {
        Ok((status_of(&http, &master, "s1").await? == "Healthy").then_some(()))
    })
    .await?;
    // Its last heartbeat answer was at most one interval before the stop.
    s1.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let mut suspected = None;
    let unhealthy = loop {
        let st = status_of(&http, &master, "s1").await?;
        let t = stopped.elapsed();
        match st.as_str() {
            "Suspected" if suspected.is_none() => suspected = Some(t),
            "Unhealthy" => break t,
            _ => {}
        }
        anyhow::ensure!(t < Duration::from_secs(10), "s1 never turned Unhealthy");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    };
    let suspected = suspected.expect("s1 was never reported Suspected before Unhealthy");
    // Suspected from 2 silent intervals (400 ms), Unhealthy from 5 (1000 ms), counted from
    // the last heartbeat answer, which is up to one interval (plus scheduling) before the
    // stop: allow 200 ms early and 600 ms late.
    let ms = |d: Duration| d.as_millis() as i64;
    assert!(
        (200..=1000).contains(&ms(suspected)),
        "Suspected after {suspected:?}"
    );
    assert!(
        (800..=1600).contains(&ms(unhealthy)),
        "Unhealthy after {unhealthy:?}"
    );
    // The other two members are a majority: writes go on.
    assert_eq!(http.write(&master, "during", json!(2)).await?.0, 201);

    s1.signal(libc::SIGCONT);
    let resumed = Instant::now();
    wait_for("s1 healthy again", LONG, || async {
        Ok((status_of(&http, &master, "s1").await? == "Healthy").then_some(()))
    })
    .await?;
    assert!(
        resumed.elapsed() < Duration::from_secs(2),
        "took {:?}",
        resumed.elapsed()
    );
    // And what it missed reaches it.
    wait_converged(&http, &master, &[s1], 1, LONG).await?;
    Ok(())
}

/// Both secondaries killed: the master turns read-only (503 not_writable, saying how
/// many members it reaches); reads keep working; writes resume by themselves.
#[actix_rt::test]
async fn without_a_majority_the_master_is_read_only_until_it_returns() -> anyhow::Result<()> {
    let dir = TestDir::new("quorum");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "before", json!(3)).await?.0, 201);
    for n in &mut nodes {
        n.kill9();
    }
    let h = wait_for("the master to report no quorum", LONG, || async {
        let h = http.health(&master).await?;
        Ok((h["hasQuorum"] == false).then_some(h))
    })
    .await?;
    assert_eq!(h["writable"], false, "{h}");
    let before = http.messages(&master).await?;
    let (st, body) = http.write(&master, "refused", json!(1)).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    let msg = body["error"].as_str().unwrap_or_default();
    assert!(msg.contains("reaches 1 of its 3 members"), "{msg}");
    // Reads keep working, and nothing refused was stored.
    assert_eq!(http.messages(&master).await?, before);
    assert_eq!(before.last().map(|e| e.1.as_str()), Some("before"));

    nodes[0].restart()?;
    let (st, body) = write_once_writable(&http, &master, "after", json!(2), LONG).await?;
    assert_eq!(
        (st, body["id"].as_u64()),
        (201, Some(before.len() as u64 + 1)),
        "{body}"
    );
    Ok(())
}
