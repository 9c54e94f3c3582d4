//! The command line: `--help` explains every flag; a bad value is one line and exit 2.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_master-node"))
        .args(args)
        .output()
        .expect("run master-node");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_explains_every_flag() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--name",
        "--http-port",
        "--comm-port",
        "--host",
        "--data-dir",
        "--durability",
        "--sync-interval-ms",
        "--delay-ms",
        "--ack-timeout-ms",
        "--heartbeat-ms",
        "--max-message-bytes",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
}

#[test]
fn bad_values_are_refused_with_one_line_and_exit_2() {
    let base = ["--name", "m", "--http-port", "0"];
    let bad: &[&[&str]] = &[
        &["--http-port", "70000"],
        &["--comm-port", "x"],
        &["--delay-ms", "2000-1000"],
        &["--delay-ms", "abc"],
        &["--ack-timeout-ms", "0"],
        &["--ack-timeout-ms", "-5"],
        &["--heartbeat-ms", "soon"],
        &["--max-message-bytes", "999999999999"],
        &["--durability", "sometimes"],
        &["--sync-interval-ms", "0"],
        &["--unknown-flag"],
    ];
    for extra in bad {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
        assert!(err.starts_with("error:"), "{extra:?}: {err}");
    }
    let (code, _, err) = run(&["--http-port", "0"]);
    assert_eq!(code, 2, "missing --name: {err}");
}

#[test]
fn a_port_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, _, err) = run(&["--name", "m", "--http-port", "0", "--comm-port", &port]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("cannot listen on comm port"), "{err}");
}
