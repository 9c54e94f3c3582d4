//! A hostile peer and hostile HTTP clients against a set with a cluster key (the
//! peer without the key, with a wrong key or a replayed handshake is in
//! cluster_key.rs; malformed and half-written frames in bad_input.rs). After each
//! attack the set still takes a w=3 write, every node answers, and no node panicked.

use bytes::BytesMut;
use chorus_tests::*;
use common::protocol::codec::FrameCodec;
use common::protocol::{MasterFrame, SecondaryFrame};
use serde_json::json;
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

const LONG: Duration = Duration::from_secs(60);

/// The set still replicates: a w=3 write is acknowledged, and every node answers.
async fn still_serves(nodes: &[&Node], what: &str) -> anyhow::Result<()> {
    eprintln!("checking the set after: {what}");
    // A client of its own: a pooled connection of the test's client may have been
    // closed by the node while the attack went on (awc then fails the request with
    // "connector has been disconnected" instead of dialling again).
    let http = Http::new();
    let (st, b) = http.write(nodes[0], what, json!(3)).await?;
    anyhow::ensure!(st == 201, "after {what}: a w=3 write answered {st} {b}");
    for n in nodes {
        let (st, _) = http.get(&n.url("/health")).await?;
        anyhow::ensure!(st == 200, "after {what}: {} answered {st}", n.name);
    }
    Ok(())
}

/// Everything readable on `s` within `wait`, and whether the peer closed it.
fn read_for(s: &mut TcpStream, wait: Duration) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while Instant::now() < deadline {
        let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
        match s.read(&mut buf) {
            Ok(0) => return (out, true),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
            Err(_) => return (out, true),
        }
    }
    (out, false)
}

fn frames(bytes: &[u8]) -> Vec<MasterFrame> {
    let mut codec = FrameCodec::<MasterFrame, SecondaryFrame>::new();
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(f)) = codec.decode(&mut buf) {
        out.push(f);
    }
    out
}

/// [`read_for`] off the test's event loop (a blocking read there would stall the
/// HTTP client's connection pool).
async fn read_off(mut s: TcpStream, wait: Duration) -> anyhow::Result<(TcpStream, Vec<u8>, bool)> {
    Ok(tokio::task::spawn_blocking(move || {
        let (got, closed) = read_for(&mut s, wait);
        (s, got, closed)
    })
    .await?)
}

/// Send raw bytes to the HTTP port; the response's status line (or "" if closed first).
async fn raw_http(addr: SocketAddr, request: &[u8]) -> anyhow::Result<String> {
    let mut s = TcpStream::connect(addr)?;
    // A refusal may come (and the connection close) before all of it is written.
    let _ = s.write_all(request);
    let (_, got, _) = read_off(s, Duration::from_secs(10)).await?;
    Ok(String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string())
}

#[actix_rt::test]
async fn a_keyed_set_survives_hostile_peers_and_clients() -> anyhow::Result<()> {
    raise_fd_limit(8192);
    let dir = TestDir::new("hostile");
    let key = dir.path().join("cluster.key");
    std::fs::write(&key, "hostile-test-key-0123456789")?;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))?;
    let flag = ["--cluster-key-file", key.to_str().unwrap_or_default()];
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &flag, &[&flag, &flag]).await?;
    let all = [&master, &nodes[0], &nodes[1]];
    let comm = master.comm.expect("the master listens on a comm port");
    still_serves(&all, "start").await?;

    // 1,000 connections that never say a word. Past the first 128, each is refused at
    // once, and told why; the members' own links keep their places.
    let mut idle = Vec::new();
    for _ in 0..1000 {
        idle.push(TcpStream::connect(comm)?);
    }
    let last = idle.pop().expect("1,000 of them");
    let (_, got, closed) = read_off(last, Duration::from_secs(5)).await?;
    let said = frames(&got);
    assert!(
        closed
            && matches!(said.first(), Some(MasterFrame::Error(e)) if e.message.contains("too many connections")),
        "the 1,000th idle connection: {said:?} (closed: {closed})"
    );
    still_serves(&all, "1,000 idle connections").await?;
    // The first ones never sent their handshake: closed after its deadline (10 s).
    let first = idle.remove(0);
    let (_, _, closed) = read_off(first, Duration::from_secs(20)).await?;
    assert!(
        closed,
        "a connection that never sends its handshake is closed"
    );
    drop(idle);
    // Places are free again: a new connection is not refused at once.
    wait_for("a new comm connection to be heard again", LONG, || async {
        let s = TcpStream::connect(comm)?;
        let (_, got, closed) = read_off(s, Duration::from_millis(300)).await?;
        Ok((!closed && got.is_empty()).then_some(()))
    })
    .await?;
    still_serves(&all, "the idle connections closed").await?;

    // Slowloris: a request head trickling in a line at a time is cut off after 5 s.
    let mut slow = TcpStream::connect(master.http)?;
    slow.write_all(b"POST /newMessage HTTP/1.1\r\nHost: x\r\n")?;
    let started = Instant::now();
    let mut cut = false;
    while started.elapsed() < Duration::from_secs(20) {
        if slow.write_all(b"X-Slow: 1\r\n").is_err() {
            cut = true;
            break;
        }
        let (s, got, closed) = read_off(slow, Duration::from_millis(500)).await?;
        slow = s;
        if closed || !got.is_empty() {
            cut = true;
            break;
        }
    }
    assert!(cut, "a slowloris client is cut off");
    still_serves(&all, "slowloris").await?;

    // A body announced as 1 GiB is refused before any of it is read.
    let status = raw_http(
        master.http,
        b"POST /newMessage HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n{\"message\": \"",
    )
    .await?;
    assert!(status.contains("413"), "a 1 GiB Content-Length: {status:?}");
    still_serves(&all, "a 1 GiB Content-Length").await?;

    // A head over the limits.
    let mut big = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: ".to_vec();
    big.extend(std::iter::repeat_n(b'a', 256 * 1024));
    big.extend_from_slice(b"\r\n\r\n");
    let status = raw_http(master.http, &big).await?;
    assert!(
        status.is_empty() || status.contains("431") || status.contains("400"),
        "a 256 KiB header: {status:?}"
    );
    still_serves(&all, "a 256 KiB header").await?;

    // Deeply nested JSON and invalid UTF-8: 400 invalid_json, nothing stored.
    let nested = format!(
        "{{\"message\": {}1{}}}",
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let (st, b) = http.post_raw(&master.url("/newMessage"), nested).await?;
    assert_eq!((st, b["code"].as_str()), (400, Some("invalid_json")), "{b}");
    let (st, b) = http
        .post_raw(
            &master.url("/newMessage"),
            b"{\"message\": \"\xff\xfe\"}".to_vec(),
        )
        .await?;
    assert_eq!((st, b["code"].as_str()), (400, Some("invalid_json")), "{b}");
    still_serves(&all, "nested JSON and invalid UTF-8").await?;

    // Nothing acknowledged was lost on the way, and no node panicked.
    let log = wait_converged(&http, &master, &all, 7, LONG).await?;
    assert_gap_free(&log);
    for n in all {
        let text = std::fs::read_to_string(n.log_path()).unwrap_or_default();
        assert!(
            !text.contains("panicked"),
            "{} panicked:\n{}",
            n.name,
            n.log_tail(30)
        );
    }
    Ok(())
}
