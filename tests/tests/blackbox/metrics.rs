//! `GET /metrics` on every node, in Prometheus' text format.

use chorus_tests::*;
use serde_json::json;
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The value of the sample `name` whose labels include every `k="v"` in `labels`.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, ""));
        let matches = metric == name
            && labels
                .iter()
                .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\"")));
        matches.then(|| value.parse().ok()).flatten()
    })
}

async fn scrape(http: &Http, node: &Node) -> anyhow::Result<String> {
    let (status, text) = http.get_text(&node.url("/metrics")).await?;
    anyhow::ensure!(status == 200, "GET /metrics: {status}");
    Ok(text)
}

#[actix_rt::test]
async fn metrics_cover_writes_replication_and_syncs() -> anyhow::Result<()> {
    let dir = TestDir::new("metrics");
    let http = Http::new();
    let (master, mut nodes) = cluster(&dir, &http, &["--heartbeat-ms", "200"], &[&[], &[]]).await?;
    for i in 0..3 {
        assert_eq!(
            http.write(&master, &format!("one{i}"), json!(1)).await?.0,
            201
        );
    }
    for i in 0..2 {
        assert_eq!(
            http.write(&master, &format!("two{i}"), json!(2)).await?.0,
            201
        );
    }
    let timeout = json!({"message": "five", "writeConcern": 5, "timeoutMs": 100});
    assert_eq!(
        http.post(&master.url("/newMessage"), &timeout).await?.0,
        504
    );
    assert_eq!(http.post_raw(&master.url("/newMessage"), "{").await?.0, 400);
    nodes[1].kill9();
    assert_eq!(http.write(&master, "after", json!(2)).await?.0, 201);

    let text = wait_for("s1 caught up in the metrics", LONG, || async {
        let text = scrape(&http, &master).await?;
        let s1_lag = sample(&text, "chorus_member_lag_messages", &[("member", "s1")]);
        Ok((s1_lag == Some(0.0)).then_some(text))
    })
    .await?;
    let m = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(
        m("chorus_writes_total", &[("outcome", "committed")]),
        Some(6.0),
        "{text}"
    );
    assert_eq!(
        m("chorus_writes_total", &[("outcome", "timeout")]),
        Some(1.0)
    );
    assert_eq!(
        m("chorus_writes_total", &[("outcome", "invalid")]),
        Some(1.0)
    );
    assert_eq!(
        m(
            "chorus_write_duration_seconds_count",
            &[("write_concern", "2")]
        ),
        Some(3.0)
    );
    assert_eq!(
        m(
            "chorus_write_duration_seconds_count",
            &[("write_concern", "1")]
        ),
        Some(3.0)
    );
    assert!(
        m(
            "chorus_write_duration_seconds_bucket",
            &[("write_concern", "1"), ("le", "+Inf")]
        ) == Some(3.0),
        "histogram buckets: {text}"
    );
    assert_eq!(
        m("chorus_member_lag_messages", &[("member", "s2")]),
        Some(1.0),
        "{text}"
    );
    assert_eq!(m("chorus_members_connected", &[]), Some(1.0));
    assert_eq!(m("chorus_members", &[]), Some(3.0));
    assert!(
        m("chorus_resends_total", &[("member", "s1")]).is_some(),
        "{text}"
    );
    assert!(m("chorus_syncs_total", &[]).is_some_and(|v| v >= 1.0));
    for dir in ["in", "out"] {
        assert!(m("chorus_frames_total", &[("direction", dir)]).is_some_and(|v| v > 0.0));
        assert!(m("chorus_frame_bytes_total", &[("direction", dir)]).is_some_and(|v| v > 0.0));
    }

    let text = scrape(&http, &nodes[0]).await?;
    let s = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    assert_eq!(s("chorus_last_id", &[]), Some(7.0), "{text}");
    assert_eq!(s("chorus_connected", &[]), Some(1.0));
    assert!(s("chorus_syncs_total", &[]).is_some_and(|v| v >= 1.0));
    assert!(s("chorus_frames_total", &[("direction", "in")]).is_some_and(|v| v > 0.0));
    Ok(())
}
