//! The change stream, `GET /messages/stream`, on the master and on secondaries, read
//! as an `EventSource` would.

use chorus_tests::*;
use serde_json::json;
use std::time::{Duration, Instant};

const LONG: Duration = Duration::from_secs(60);

/// The (id, message) pairs of the next `n` events.
async fn take(s: &mut EventStream, n: usize) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out = Vec::new();
    while out.len() < n {
        let (id, v) = s
            .message(LONG)
            .await?
            .ok_or_else(|| anyhow::anyhow!("the stream ended after {out:?}"))?;
        out.push((id, v["message"].as_str().unwrap_or_default().to_string()));
    }
    Ok(out)
}

fn msgs(ids: std::ops::RangeInclusive<u64>) -> Vec<(u64, String)> {
    ids.map(|i| (i, format!("m{i}"))).collect()
}

/// Every node streams its log from where the client asks (`from`, or `Last-Event-ID`,
/// which wins), then each new message live, in order; `limit` ends a stream.
#[actix_rt::test]
async fn streams_start_where_asked_then_follow_the_log_on_every_node() -> anyhow::Result<()> {
    let dir = TestDir::new("stream");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let (s1, s2) = (&nodes[0], &nodes[1]);
    for i in 1..=3 {
        assert_eq!(
            http.write(&master, &format!("m{i}"), json!(3)).await?.0,
            201
        );
    }
    let mut on_master = EventStream::open(&master.url("/messages/stream"), None).await?;
    let mut on_s1 = EventStream::open(&s1.url("/messages/stream?from=2"), None).await?;
    let mut on_s2 = EventStream::open(&s2.url("/messages/stream?from=1"), Some("2")).await?;
    let mut limited = EventStream::open(&s1.url("/messages/stream?limit=2"), None).await?;
    assert_eq!(take(&mut on_master, 3).await?, msgs(1..=3));
    assert_eq!(take(&mut on_s1, 2).await?, msgs(2..=3));
    assert_eq!(take(&mut on_s2, 1).await?, msgs(3..=3));
    assert_eq!(take(&mut limited, 2).await?, msgs(1..=2));
    assert_eq!(
        limited.message(LONG).await?,
        None,
        "limit=2 ends the stream"
    );

    // Live: each stream gets the new messages in order, once.
    for i in 4..=6 {
        assert_eq!(
            http.write(&master, &format!("m{i}"), json!(1)).await?.0,
            201
        );
    }
    assert_eq!(take(&mut on_master, 3).await?, msgs(4..=6));
    assert_eq!(take(&mut on_s1, 3).await?, msgs(4..=6));
    assert_eq!(take(&mut on_s2, 3).await?, msgs(4..=6));
    Ok(())
}

/// A long backlog comes whole, in order, batch after batch, and the stream then goes on
/// live.
#[actix_rt::test]
async fn a_stream_serves_a_long_backlog_from_the_log() -> anyhow::Result<()> {
    let dir = TestDir::new("stream-backlog");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let n = 1500u64;
    let writers: Vec<_> = (0..10)
        .map(|w| {
            let (http, url) = (http.clone(), master.url("/newMessage"));
            actix_rt::spawn(async move {
                for i in (w..n).step_by(10) {
                    let (st, v) = http
                        .post(&url, &json!({"message": format!("x{i}")}))
                        .await?;
                    anyhow::ensure!(st == 201, "{v}");
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    wait_converged(&http, &master, &[&nodes[0]], n as usize, LONG).await?;
    let want = http.messages(&master).await?;
    let mut s = EventStream::open(&nodes[0].url("/messages/stream"), None).await?;
    assert_eq!(take(&mut s, n as usize).await?, want);
    assert_eq!(http.write(&master, "live", json!(2)).await?.0, 201);
    assert_eq!(take(&mut s, 1).await?, vec![(n + 1, "live".to_string())]);
    Ok(())
}

/// `readConcern=majority` holds back what only the master has: with both secondaries
/// stopped, a w=1 write shows at once on a local stream, and on the majority stream only
/// after a secondary has it again.
#[actix_rt::test]
async fn a_majority_stream_sends_nothing_that_could_be_rolled_back() -> anyhow::Result<()> {
    let dir = TestDir::new("stream-majority");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    assert_eq!(http.write(&master, "m1", json!(3)).await?.0, 201);
    let mut majority =
        EventStream::open(&master.url("/messages/stream?readConcern=majority"), None).await?;
    let mut local = EventStream::open(&master.url("/messages/stream"), None).await?;
    assert_eq!(take(&mut majority, 1).await?, msgs(1..=1));
    assert_eq!(take(&mut local, 1).await?, msgs(1..=1));

    for n in &nodes {
        n.signal(libc::SIGSTOP);
    }
    // Within the heartbeats before they turn Unhealthy, the master still takes writes.
    let (st, v) = http.write(&master, "m2", json!(1)).await?;
    assert_eq!(st, 201, "{v}");
    assert_eq!(take(&mut local, 1).await?, msgs(2..=2));
    // Only the master holds m2 while both are stopped: the majority stream, which would
    // have sent it as soon as the local one did, has nothing.
    match majority.next(Duration::from_millis(500)).await {
        Err(_) | Ok(Some(SseItem::Comment)) => {}
        other => panic!("the majority stream sent {other:?} while only the master held m2"),
    }
    for n in &nodes {
        n.signal(libc::SIGCONT);
    }
    assert_eq!(take(&mut majority, 1).await?, msgs(2..=2));
    // And a secondary's majority stream agrees.
    let mut s1 =
        EventStream::open(&nodes[0].url("/messages/stream?readConcern=majority"), None).await?;
    assert_eq!(take(&mut s1, 2).await?, msgs(1..=2));
    Ok(())
}

/// An idle stream carries a comment line at least every 15 s; bad starts are 400s.
#[actix_rt::test]
async fn an_idle_stream_is_kept_alive_and_bad_starts_are_refused() -> anyhow::Result<()> {
    let dir = TestDir::new("stream-idle");
    let http = Http::new();
    let (master, _nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let mut s = EventStream::open(&master.url("/messages/stream"), None).await?;
    // One comment as the stream opens, then one per interval: measure a whole one.
    let most = Duration::from_secs(15); // what the API promises
    assert_eq!(s.next(most).await?, Some(SseItem::Comment));
    let since = Instant::now();
    assert_eq!(s.next(most).await?, Some(SseItem::Comment));
    let gap = since.elapsed();
    assert!(gap <= most, "{gap:?} between keep-alives");

    for (url, header) in [
        (master.url("/messages/stream?from=x"), None),
        (master.url("/messages/stream?readConcern=linear"), None),
        (master.url("/messages/stream"), Some("abc")),
    ] {
        let err = EventStream::open(&url, header)
            .await
            .err()
            .expect("refused");
        assert!(
            err.to_string().contains("400") && err.to_string().contains("invalid_query"),
            "{err}"
        );
    }
    Ok(())
}

/// Open streams do not hold a node up when it is told to stop: SIGTERM ends them, and
/// the node exits 0 at once (not after the HTTP server's 5 s grace for requests).
#[actix_rt::test]
async fn sigterm_ends_open_streams_and_the_node_exits() -> anyhow::Result<()> {
    let dir = TestDir::new("stream-stop");
    let http = Http::new();
    let (mut master, mut nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let mut on_master = EventStream::open(&master.url("/messages/stream"), None).await?;
    let mut on_s1 = EventStream::open(&nodes[0].url("/messages/stream"), None).await?;
    for (node, stream) in [(&mut nodes[0], &mut on_s1), (&mut master, &mut on_master)] {
        let t = Instant::now();
        let status = node.terminate(Duration::from_secs(4))?;
        assert!(status.success(), "{} exited {status}", node.name);
        assert!(
            t.elapsed() < Duration::from_secs(3),
            "{} took {:?}",
            node.name,
            t.elapsed()
        );
        // The stream ends (cleanly, or the connection closes under it), with no event.
        loop {
            match stream.next(Duration::from_secs(5)).await {
                Ok(Some(SseItem::Comment)) => continue,
                Ok(None) | Err(_) => break,
                Ok(Some(e)) => panic!("{} sent {e:?} while stopping", node.name),
            }
        }
    }
    Ok(())
}
