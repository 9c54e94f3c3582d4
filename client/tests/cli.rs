//! The `chorus` command line without a set: help with examples, and bad usage is a
//! message and exit 2 (the operations themselves are tested against real nodes in
//! `tests/tests/blackbox/client.rs`).

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_chorus"))
        .args(args)
        .output()
        .expect("run chorus");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn help_names_every_command_and_shows_examples() {
    let (code, out, _) = run(&["--help"]);
    assert_eq!(code, 0);
    for word in ["--hosts", "--json", "write", "read", "status", "Examples:"] {
        assert!(out.contains(word), "{word} missing from:\n{out}");
    }
    let (code, out, _) = run(&["read", "--help"]);
    assert_eq!(code, 0);
    for flag in [
        "--from",
        "--limit",
        "--read-concern",
        "--follow",
        "--read-preference",
    ] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
    let (code, out, _) = run(&["write", "--help"]);
    assert_eq!(code, 0);
    for flag in ["-w", "--timeout-ms", "--request-id"] {
        assert!(out.contains(flag), "{flag} missing from:\n{out}");
    }
}

#[test]
fn bad_usage_exits_2_with_a_message() {
    for args in [
        &[][..],
        &["status"],
        &["--hosts", "127.0.0.1:1", "write"],
        &["--hosts", "127.0.0.1:1", "write", "x", "-w", "none"],
        &["--hosts", "127.0.0.1:1", "read", "--limit", "-3"],
        &[
            "--hosts",
            "127.0.0.1:1",
            "read",
            "--read-preference",
            "fastest",
        ],
        &["--hosts", "127.0.0.1:1", "delete"],
    ] {
        let (code, out, err) = run(args);
        assert_eq!(code, 2, "{args:?}: {out}{err}");
        assert!(
            err.contains("error") || err.contains("Usage"),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn a_set_that_cannot_be_reached_is_a_failed_operation() {
    // Port 1 on loopback: nothing listens there.
    let (code, out, _) = run(&[
        "--hosts",
        "127.0.0.1:1",
        "--selection-timeout-ms",
        "200",
        "--json",
        "read",
    ]);
    assert_eq!(code, 1);
    let e: serde_json::Value = serde_json::from_str(&out).expect("a JSON error");
    assert_eq!(e["code"], "no_server", "{e}");
    assert!(
        e["error"]
            .as_str()
            .is_some_and(|m| m.contains("127.0.0.1:1")),
        "{e}"
    );
}
