//! `--tls-cert/--tls-key/--tls-ca`: members speak mutual TLS on the comm port
//! (replication and votes) and serve HTTPS. A TLS set replicates, elects and serves the
//! `chorus` CLI; a member whose certificate another CA signed, a plain-TCP peer and a
//! TLS peer without a certificate never join; plain HTTP gets no answer; files that do
//! not fit stop the node at start (exit 2).

use chorus_tests::*;
use common::protocol::codec::FrameCodec;
use common::protocol::{MasterFrame, PROTOCOL_VERSION, SecondaryFrame};
use serde_json::json;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use tokio_util::codec::Encoder;

const LONG: Duration = Duration::from_secs(60);

fn refs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// A plain-TCP peer that says Hello: what does it get back before the node closes?
fn plain_hello(comm: SocketAddr) -> anyhow::Result<Vec<u8>> {
    let mut s = TcpStream::connect(comm)?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut out = bytes::BytesMut::new();
    FrameCodec::<MasterFrame, SecondaryFrame>::new()
        .encode(fresh_hello("p1", PROTOCOL_VERSION), &mut out)?;
    s.write_all(&out)?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => return Ok(got),
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            // A reset after the node's TLS alert: closed too.
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok(got),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A TLS peer without a client certificate says Hello: Ok(frame) if it got one.
fn anonymous_tls_hello(comm: SocketAddr, ca: &std::path::Path) -> anyhow::Result<MasterFrame> {
    let tls = chorus_client::tls_config(ca).map_err(anyhow::Error::msg)?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let conn = rustls::ClientConnection::new(tls, name)?;
    let tcp = TcpStream::connect(comm)?;
    tcp.set_read_timeout(Some(Duration::from_secs(20)))?;
    let mut s = rustls::StreamOwned::new(conn, tcp);
    let mut out = bytes::BytesMut::new();
    FrameCodec::<MasterFrame, SecondaryFrame>::new()
        .encode(fresh_hello("p2", PROTOCOL_VERSION), &mut out)?;
    s.write_all(&out)?;
    let mut buf = bytes::BytesMut::new();
    let mut chunk = [0u8; 4096];
    loop {
        let mut codec = FrameCodec::<MasterFrame, SecondaryFrame>::new();
        if let Some(f) = tokio_util::codec::Decoder::decode(&mut codec, &mut buf)? {
            return Ok(f);
        }
        match s.read(&mut chunk)? {
            0 => anyhow::bail!("closed"),
            n => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

#[actix_rt::test]
async fn a_tls_set_replicates_elects_and_refuses_strangers() -> anyhow::Result<()> {
    let dir = TestDir::new("tls");
    let certs = tls_certs(&dir, "certs", &["m", "s1", "s2"])?;
    let http = Http::with_ca(&certs.join("ca.pem"))?;
    let (fm, f1, f2) = (
        tls_flags(&certs, "m"),
        tls_flags(&certs, "s1"),
        tls_flags(&certs, "s2"),
    );
    let (master, nodes) = cluster(&dir, &http, &refs(&fm), &[&refs(&f1), &refs(&f2)]).await?;
    assert!(master.url("/").starts_with("https://"));
    let (st, body) = http.write(&master, "over tls", json!(3)).await?;
    assert_eq!(st, 201, "{body}");
    assert_eq!(http.get(&master.url("/status")).await?.1["tls"], true);

    // Plain HTTP on the HTTPS port gets no HTTP answer.
    let plain = Http::new()
        .get(&format!("http://{}/hello", master.http))
        .await;
    assert!(plain.is_err(), "plain HTTP answered: {plain:?}");

    // Elections go over TLS too: a step-down hands over to another member.
    let (st, body) = http
        .post(&master.url("/stepDown"), &json!({"seconds": 5}))
        .await?;
    assert_eq!(st, 200, "{body}");
    let new = wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    let (st, body) = write_once_writable(&http, &nodes[new], "after", json!(3), LONG).await?;
    assert_eq!(st, 201, "{body}");
    let comm = nodes[new].comm.expect("comm address");

    // The CLI follows the set over HTTPS.
    let out = std::process::Command::new(bin("chorus"))
        .args(["--hosts", &master.http.to_string()])
        .args([
            "--tls-ca",
            certs.join("ca.pem").to_str().unwrap_or_default(),
        ])
        .args(["--json", "write", "by the cli", "-w", "3"])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(serde_json::from_str::<serde_json::Value>(&text)?["id"], 3);
    // Reads too: from a secondary (w=3 put everything there), and as a change stream
    // with majority read concern (`--follow` with a limit ends).
    for how in [
        &["--read-preference", "secondary"][..],
        &["--follow", "--read-concern", "majority"][..],
    ] {
        let out = std::process::Command::new(bin("chorus"))
            .args(["--hosts", &nodes[0].http.to_string()])
            .args([
                "--tls-ca",
                certs.join("ca.pem").to_str().unwrap_or_default(),
            ])
            .args(["--json", "read", "--limit", "3"])
            .args(how)
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{how:?}: {text} {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // One JSON array, or one document a line with --follow.
        let docs: Vec<serde_json::Value> = match serde_json::from_str(&text) {
            Ok(serde_json::Value::Array(a)) => a,
            _ => text
                .lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect(),
        };
        let ids: Vec<u64> = docs.iter().filter_map(|v| v["id"].as_u64()).collect();
        assert_eq!(ids, [1, 2, 3], "{how:?}: {text}");
    }
    // Without the CA it cannot verify the members: a failed operation, not a hang.
    let out = std::process::Command::new(bin("chorus"))
        .args([
            "--hosts",
            &master.http.to_string(),
            "--selection-timeout-ms",
            "1500",
        ])
        .args(["write", "unverified"])
        .output()?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");

    // A member whose certificate another CA signed never joins, though it trusts the
    // set's CA (so the master is the one that refuses).
    let other = tls_certs(&dir, "other-ca", &["s9"])?;
    let mut flags = tls_flags(&other, "s9");
    flags[5] = certs.join("ca.pem").to_string_lossy().into_owned();
    let intruder = Node::secondary(&dir, "s9", comm, &refs(&flags))?;
    wait_for("the refusal in the master's log", LONG, || async {
        let log = std::fs::read_to_string(nodes[new].log_path())?;
        Ok(log
            .lines()
            .any(|l| {
                l.contains("refused a peer on the comm port")
                    && l.contains("TLS handshake")
                    && l.contains("invalid peer certificate")
            })
            .then_some(()))
    })
    .await?;
    wait_for("the intruder to say why", LONG, || async {
        let log = std::fs::read_to_string(intruder.log_path())?;
        Ok(log
            .contains("the connection to the master failed")
            .then_some(()))
    })
    .await?;
    // A TLS peer that trusts the CA but has no certificate of its own.
    let ca = certs.join("ca.pem");
    let got = tokio::task::spawn_blocking(move || anonymous_tls_hello(comm, &ca)).await?;
    assert!(
        got.is_err(),
        "a peer without a certificate was answered: {got:?}"
    );

    // A plain-TCP peer's Hello: no frame comes back, only the end of the connection.
    let got = tokio::task::spawn_blocking(move || plain_hello(comm)).await??;
    let mut buf = bytes::BytesMut::from(&got[..]);
    let frame = tokio_util::codec::Decoder::decode(
        &mut FrameCodec::<MasterFrame, SecondaryFrame>::new(),
        &mut buf,
    );
    assert!(
        !matches!(frame, Ok(Some(_))),
        "a plain peer got a frame: {frame:?}"
    );

    let status = http.get(&nodes[new].url("/status")).await?.1;
    let text = status.to_string();
    for stranger in ["s9", "p1", "p2"] {
        assert!(
            !text.contains(&format!("\"{stranger}\"")),
            "{stranger}: {status}"
        );
    }

    // After all that, the set still takes and replicates writes.
    let all = [&master, &nodes[0], &nodes[1]];
    assert_eq!(http.write(&nodes[new], "last", json!(3)).await?.0, 201);
    wait_converged(&http, &nodes[new], &all, 4, LONG).await?;
    Ok(())
}

#[test]
fn tls_files_that_do_not_fit_stop_the_node_at_start() -> anyhow::Result<()> {
    let dir = TestDir::new("tls-bad");
    let certs = tls_certs(&dir, "certs", &["a", "b"])?;
    let f = |name: &str| certs.join(name).to_string_lossy().into_owned();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (
            vec!["--tls-cert".into(), f("a.pem")],
            "required", // the other two are missing
        ),
        (
            vec![
                "--tls-cert".into(),
                f("missing.pem"),
                "--tls-key".into(),
                f("a-key.pem"),
                "--tls-ca".into(),
                f("ca.pem"),
            ],
            "missing.pem",
        ),
        (
            vec![
                "--tls-cert".into(),
                f("a.pem"),
                "--tls-key".into(),
                f("b-key.pem"),
                "--tls-ca".into(),
                f("ca.pem"),
            ],
            "do not fit",
        ),
        (
            vec![
                "--tls-cert".into(),
                f("a.pem"),
                "--tls-key".into(),
                f("a.pem"), // a certificate, not a key
                "--tls-ca".into(),
                f("ca.pem"),
            ],
            "private key",
        ),
    ];
    for (flags, says) in cases {
        for binary in ["master-node", "secondary-node"] {
            let out = std::process::Command::new(bin(binary))
                .args(["--name", "x", "--http-port", "0"])
                .args([
                    "--data-dir",
                    dir.path().join("data").to_str().unwrap_or_default(),
                ])
                .args(&flags)
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{binary} {flags:?}: {err}");
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains(says), "{binary} {flags:?}: {err}");
        }
    }
    Ok(())
}
