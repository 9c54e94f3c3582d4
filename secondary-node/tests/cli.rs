//! The command line: `--help` explains every flag; a bad value is one line and exit 2.

use std::process::Command;

fn run(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_secondary-node"))
        .args(args)
        .output()
        .expect("run secondary-node");
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
        "--master-ip",
        "--master-comm-port",
        "--host",
        "--data-dir",
        "--durability",
        "--sync-interval-ms",
        "--delay-ms",
        "--drop-rate",
    ] {
        assert!(out.contains(flag), "--help does not mention {flag}:\n{out}");
    }
}

#[test]
fn bad_values_are_refused_with_one_line_and_exit_2() {
    let base = ["--name", "s", "--http-port", "0"];
    let bad: &[&[&str]] = &[
        &["--drop-rate", "1.5"],
        &["--drop-rate", "-0.1"],
        &["--drop-rate", "half"],
        &["--master-comm-port", "65536"],
        &["--delay-ms", "5-"],
        &["--durability", "sometimes"],
        &["--sync-interval-ms", "0"],
    ];
    for extra in bad {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        let (code, _, err) = run(&args);
        assert_eq!(code, 2, "{extra:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{extra:?}: {err}");
    }
    let (code, _, _) = run(&["--name", "s"]);
    assert_eq!(code, 2, "missing --http-port");
}
