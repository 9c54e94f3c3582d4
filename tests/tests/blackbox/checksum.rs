//! `GET /checksum?upTo=N`: every member answers for any prefix it holds, and two
//! members agree exactly when they hold the same entries.

use chorus_tests::*;
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

async fn checksum(
    http: &Http,
    node: &Node,
    query: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    http.get(&node.url(&format!("/checksum{query}"))).await
}

#[actix_rt::test]
async fn every_member_reports_the_same_checksum_for_the_same_prefix() -> anyhow::Result<()> {
    let dir = TestDir::new("checksum");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let all = [&master, &nodes[0], &nodes[1]];
    for i in 1..=30 {
        let (st, body) = http.write(&master, &format!("m{i}"), json!(3)).await?;
        assert_eq!(st, 201, "{body}");
    }
    wait_converged(&http, &master, &[&nodes[0], &nodes[1]], 30, LONG).await?;

    let mut seen = std::collections::HashSet::new();
    for n in [0, 1, 15, 29, 30] {
        let (st, want) = checksum(&http, &master, &format!("?upTo={n}")).await?;
        assert_eq!(st, 200, "{want}");
        assert_eq!(want["upTo"], n, "{want}");
        let hex = want["checksum"].as_str().unwrap_or_default();
        assert_eq!(hex.len(), 64, "{want}");
        assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{want}");
        assert!(
            seen.insert(hex.to_string()),
            "each prefix has its own checksum: {want}"
        );
        for node in &all[1..] {
            let (st, got) = checksum(&http, node, &format!("?upTo={n}")).await?;
            assert_eq!((st, &got), (200, &want), "{} at {n}", node.name);
        }
    }
    // Without upTo: the whole log.
    let (st, whole) = checksum(&http, &nodes[1], "").await?;
    assert_eq!((st, whole["upTo"].as_u64()), (200, Some(30)), "{whole}");

    // Past the log: 404; not a whole number: 400. The node goes on serving.
    let (st, body) = checksum(&http, &nodes[0], "?upTo=31").await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("not_found")),
        "{body}"
    );
    for bad in [
        "?upTo=abc",
        "?upTo=-1",
        "?upTo=",
        "?upTo=1.5",
        "?upTo=99999999999999999999999",
    ] {
        let (st, body) = checksum(&http, &master, bad).await?;
        assert_eq!(
            (st, body["code"].as_str()),
            (400, Some("invalid_query")),
            "{bad}: {body}"
        );
    }

    // A member that holds a different entry at an id disagrees from that id on: the
    // next write makes the master's log longer; the checksum of 1..30 is unchanged.
    let (st, _) = http.write(&master, "m31", json!(1)).await?;
    assert_eq!(st, 201);
    let (_, again) = checksum(&http, &nodes[0], "?upTo=30").await?;
    assert_eq!(again, whole);
    Ok(())
}
