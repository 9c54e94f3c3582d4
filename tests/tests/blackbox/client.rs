//! The client crate and the `chorus` CLI against real nodes: finding the master from
//! any seed, retryable writes across a kill -9 of the master, `read --follow` without
//! gap or repeat across the failover, `status` like rs.status(), exit codes.

use chorus_client::topology::ServerType;
use chorus_client::{Client, Options, Read, ReadPreference, Write};
use chorus_tests::*;
use serde_json::{Value, json};
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// Run `chorus ARGS` to the end: (exit code, stdout, stderr).
fn chorus(args: &[&str]) -> anyhow::Result<(i32, String, String)> {
    let out = Command::new(bin("chorus")).args(args).output()?;
    Ok((
        out.status.code().unwrap_or(-1),
        String::from_utf8(out.stdout)?,
        String::from_utf8(out.stderr)?,
    ))
}

fn addr(n: &Node) -> String {
    n.http.to_string()
}

#[actix_rt::test]
async fn the_cli_writes_reads_and_shows_the_set_from_any_seed() -> anyhow::Result<()> {
    let dir = TestDir::new("cli");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    // A secondary as the only seed: the client finds the master through it.
    let hosts = addr(&nodes[0]);
    let (code, out, err) = chorus(&[
        "--hosts", &hosts, "--json", "write", "hello", "-w", "majority",
    ])?;
    assert_eq!(code, 0, "{out}{err}");
    let w: Value = serde_json::from_str(&out)?;
    assert_eq!(
        (w["id"].as_u64(), w["server"].as_str()),
        (Some(1), Some(&*addr(&master))),
        "{w}"
    );
    assert!(w["acks"].as_u64() >= Some(2), "{w}");
    let key = w["requestId"].as_str().unwrap_or_default().to_string();
    assert!(!key.is_empty(), "a request id is generated: {w}");
    // The same request id again: the first write's id, nothing appended.
    let (code, out, _) = chorus(&[
        "--hosts",
        &hosts,
        "--json",
        "write",
        "hello",
        "--request-id",
        &key,
    ])?;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<Value>(&out)?["id"], 1, "{out}");
    let (code, out, err) = chorus(&["--hosts", &hosts, "write", "second message", "-w", "3"])?;
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("stored as id 2 in term "), "{out}");

    // Reads: JSON as GET /messages; text as `id<TAB>message`; from/limit; majority.
    wait_converged(&http, &master, &[&nodes[0], &nodes[1]], 2, LONG).await?;
    let (code, out, _) = chorus(&[
        "--hosts",
        &hosts,
        "--json",
        "read",
        "--read-concern",
        "majority",
    ])?;
    assert_eq!(code, 0);
    assert_eq!(
        serde_json::from_str::<Value>(&out)?,
        json!([{"id": 1, "message": "hello"}, {"id": 2, "message": "second message"}])
    );
    let (code, out, _) = chorus(&[
        "--hosts",
        &hosts,
        "read",
        "--from",
        "2",
        "--limit",
        "5",
        "--read-preference",
        "secondary",
    ])?;
    assert_eq!((code, out.as_str()), (0, "2\tsecond message\n"));

    // status: every member, the master named, like rs.status().
    let (code, out, err) = chorus(&["--hosts", &hosts, "--json", "status"])?;
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(&out)?;
    assert_eq!(st["primary"].as_str(), Some(&*addr(&master)), "{st}");
    assert_eq!(st["topology"], "ReplicaSetWithPrimary", "{st}");
    let members = st["members"].as_array().cloned().unwrap_or_default();
    assert_eq!(members.len(), 3, "{st}");
    for n in [&master, &nodes[0], &nodes[1]] {
        let m = members
            .iter()
            .find(|m| m["name"] == *n.name)
            .expect("listed");
        assert_eq!(m["address"].as_str(), Some(&*addr(n)), "{st}");
        let want = if n.name == master.name {
            "PRIMARY"
        } else {
            "SECONDARY"
        };
        assert_eq!(m["state"], want, "{st}");
        assert_eq!(m["lastId"], 2, "{st}");
    }
    let (code, out, _) = chorus(&["--hosts", &hosts, "status"])?;
    assert_eq!(code, 0);
    assert!(
        out.lines()
            .next()
            .is_some_and(|l| l.contains("term 1") && l.contains(&addr(&master))),
        "{out}"
    );
    assert!(
        out.lines().nth(1).is_some_and(|l| l.starts_with("NAME")),
        "{out}"
    );
    assert_eq!(
        out.lines().filter(|l| l.contains("SECONDARY")).count(),
        2,
        "{out}"
    );

    // verify: every member holds the same entries.
    let (code, out, err) = chorus(&["--hosts", &hosts, "--json", "verify"])?;
    assert_eq!(code, 0, "{out}{err}");
    let v: Value = serde_json::from_str(&out)?;
    assert_eq!(
        (v["upTo"].as_u64(), v["agree"].as_bool()),
        (Some(2), Some(true)),
        "{v}"
    );
    assert_eq!(v["members"].as_array().map(Vec::len), Some(3), "{v}");
    let (code, out, _) = chorus(&["--hosts", &hosts, "verify", "--up-to", "1"])?;
    assert_eq!(code, 0);
    assert!(
        out.starts_with("entries 1..1: every member holds the same"),
        "{out}"
    );
    let (code, _, err) = chorus(&["--hosts", &hosts, "verify", "--up-to", "99"])?;
    assert_eq!(code, 1, "nobody holds 99: {err}");
    // Bad usage: 2, with a message; a failed operation: 1.
    for bad in [
        &["write", "x"][..],
        &["--hosts", &hosts, "write", "x", "-w", "0"],
        &["--hosts", &hosts, "read", "--read-concern", "linearizable"],
        &["--hosts", &hosts, "frobnicate"],
    ] {
        let (code, _, err) = chorus(bad)?;
        assert_eq!(code, 2, "{bad:?}: {err}");
        assert!(!err.is_empty(), "{bad:?}");
    }
    let nobody = format!("127.0.0.1:{}", free_port());
    let (code, _, err) = chorus(&[
        "--hosts",
        &nobody,
        "--selection-timeout-ms",
        "300",
        "write",
        "x",
    ])?;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no master found"), "{err}");
    let (code, out, _) = chorus(&[
        "--hosts",
        &hosts,
        "--json",
        "write",
        "x",
        "-w",
        "9",
        "--timeout-ms",
        "100",
    ])?;
    assert_eq!(code, 1, "w=9 of 3 members cannot be met");
    let e: Value = serde_json::from_str(&out)?;
    assert_eq!(e["status"], 504, "{e}");
    let (code, out, _) = chorus(&["--help"])?;
    assert_eq!(code, 0);
    assert!(
        out.contains("Examples:") && out.contains("read --follow"),
        "{out}"
    );
    Ok(())
}

/// The client follows the set through a kill -9 of the master: a write in flight is
/// retried once on the new master under the same request id, and a `read --follow`
/// started before the kill prints every message once, in order.
#[actix_rt::test]
async fn writes_and_follow_survive_a_failover() -> anyhow::Result<()> {
    let dir = TestDir::new("client-failover");
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let seeds = [addr(&master), addr(&nodes[0]), addr(&nodes[1])];
    let client = Client::new(&seeds, Options::default());
    let write = |i: usize| Write {
        message: format!("m{i}"),
        write_concern: Some(json!("majority")),
        ..Write::default()
    };
    for i in 1..=5 {
        assert_eq!(client.write(&write(i)).await?.id, i as u64);
    }

    // Follow the majority-committed log from the master, through the CLI.
    let mut follower = Command::new(bin("chorus"))
        .args([
            "--hosts",
            &seeds.join(","),
            "read",
            "--follow",
            "--read-concern",
            "majority",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let (tx, lines) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().expect("piped");
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut shown = Vec::new();
    let mut take = |n: usize| -> anyhow::Result<()> {
        while shown.len() < n {
            shown.push(lines.recv_timeout(LONG)?);
        }
        Ok(())
    };
    take(5)?;

    master.kill9();
    // The client still believes in the dead master: the first attempt fails on the
    // network and the retry goes to the new one.
    let w = client.write(&write(6)).await?;
    assert_eq!(w.id, 6, "{:?}", w.body);
    assert!(w.body["term"].as_u64() > Some(1), "{:?}", w.body);
    assert_ne!(w.server, addr(&master));
    for i in 7..=10 {
        let w = client.write(&write(i)).await?;
        assert_eq!((w.id, w.retried), (i as u64, false));
    }
    take(10)?;
    let _ = follower.kill();
    let _ = follower.wait();
    let want: Vec<String> = (1..=10).map(|i| format!("{i}\tm{i}")).collect();
    assert_eq!(
        shown, want,
        "every message once, in order, across the failover"
    );

    // The topology names the new master and no longer the old one.
    let t = client.topology();
    assert_eq!(t.primary().map(|s| s.addr.clone()), Some(w.server.clone()));
    assert!(t.newest().is_some_and(|(term, _)| term > 1));
    // A secondary learns the commit point with the next heartbeat.
    let read = Read {
        from: 9,
        limit: Some(5),
        majority: true,
        preference: ReadPreference::Secondary,
    };
    wait_for("a secondary's majority read to reach 10", LONG, || async {
        let page = client.read(&read).await?;
        Ok((page.iter().map(|m| m.id).collect::<Vec<_>>() == [9, 10]).then_some(()))
    })
    .await?;
    Ok(())
}

/// A write sent to a master that has just stepped down is answered 503 `not_writable`;
/// the client marks it unknown, finds the new master and retries there once, with the
/// same request id. (Monitors that check only when asked keep the stale view until the
/// write fails, so the retry is certain to happen.)
#[actix_rt::test]
async fn a_write_refused_by_a_former_master_is_retried_once_on_the_new_one() -> anyhow::Result<()> {
    let dir = TestDir::new("client-retry");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let seeds = [addr(&master), addr(&nodes[0]), addr(&nodes[1])];
    let opts = Options {
        heartbeat: Duration::from_secs(3600),
        ..Options::default()
    };
    let client = Client::new(&seeds, opts);
    // Every monitor's one check done, before anything asks for another: from here on
    // the client's view changes only when an operation fails.
    wait_for("the client's first view of the set", LONG, || async {
        let t = client.topology();
        let kinds: Vec<_> = t.servers().map(|s| s.kind).collect();
        let primaries = kinds.iter().filter(|k| **k == ServerType::Primary).count();
        let secondaries = kinds
            .iter()
            .filter(|k| **k == ServerType::Secondary)
            .count();
        Ok((primaries == 1 && secondaries == 2).then_some(()))
    })
    .await?;
    let first = client
        .write(&Write {
            message: "before".into(),
            write_concern: Some(json!("majority")),
            ..Write::default()
        })
        .await?;
    assert_eq!((first.id, first.retried), (1, false));
    let (st, body) = http
        .post(&master.url("/stepDown"), &json!({"seconds": 60}))
        .await?;
    assert_eq!(st, 200, "{body}");
    let w = client
        .write(&Write {
            message: "after".into(),
            write_concern: Some(json!("majority")),
            request_id: Some("retry-me".into()),
            ..Write::default()
        })
        .await?;
    assert!(
        w.retried,
        "the first attempt went to the former master: {:?}",
        w.body
    );
    assert_eq!(w.id, 2);
    assert_eq!(w.request_id, "retry-me");
    assert_ne!(w.server, addr(&master));
    // Stored once: every member ends with the two messages.
    let all = [&master, &nodes[0], &nodes[1]];
    let log = wait_converged(&http, &master, &all, 2, LONG).await?;
    assert_eq!(log[1].1, "after");
    Ok(())
}
