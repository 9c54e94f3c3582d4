//! chorus-bench against a real master and secondary.

use chorus_tests::{Node, TestDir};
use std::process::Command;

fn bench(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chorus-bench"))
        .args(args)
        .output()
        .expect("run chorus-bench");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn closed_and_open_loop_runs_report_what_they_did() {
    let dir = TestDir::new("bench");
    let master = Node::master(&dir, "m", &[]).unwrap();
    let _s1 = Node::secondary(&dir, "s1", master.comm.unwrap(), &[]).unwrap();
    let url = format!("http://{}", master.http);
    let json = dir.path().join("closed.json");
    // w=1: the secondary need not have joined yet for the writes to succeed.
    let (code, out, err) = bench(&[
        "--url",
        &url,
        "--count",
        "300",
        "--concurrency",
        "8",
        "--threads",
        "2",
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("300 ok, 0 errors"), "{out}");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        (r["ok"].as_u64(), r["errors"].as_u64(), r["mode"].as_str()),
        (Some(300), Some(0), Some("closed"))
    );
    let l = &r["latencyMs"];
    let p: Vec<f64> = ["p50", "p90", "p99", "p999", "max"]
        .iter()
        .map(|k| l[*k].as_f64().unwrap())
        .collect();
    assert!(p.windows(2).all(|w| w[0] <= w[1]) && p[0] > 0.0, "{l}");
    assert!(r["throughput"].as_f64().unwrap() > 0.0);

    // Open loop: 200/s for one second starts about 200 writes, whatever the answers do.
    let (code, out, err) = bench(&["--url", &url, "--rate", "200", "--duration", "1", "--quiet"]);
    assert_eq!(code, 0, "{out}{err}");
    let ok: u64 = out
        .split(" ok")
        .next()
        .unwrap()
        .rsplit(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    assert!((190..=210).contains(&ok), "{out}");
    assert!(out.starts_with("open loop at 200/s"), "{out}");
}

#[test]
fn bad_values_are_one_line_and_exit_2() {
    for args in [
        &["--duration", "0"][..],
        &["--rate", "-1"],
        &["--concurrency", "0"],
        &["--threads", "x"],
    ] {
        let (code, _, err) = bench(args);
        assert_eq!(code, 2, "{args:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{args:?}: {err}");
    }
}
