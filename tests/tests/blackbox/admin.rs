//! Admin operations (`DELETE /members/*`, `POST /members`, `POST /stepDown`,
//! `/admin/faults`, `POST /admin/crash`) need the
//! admin token when the node has one, and come from loopback when it has none (the
//! loopback rule itself is unit-tested in node/src/http.rs: every client here is on
//! loopback).

use chorus_tests::*;
use serde_json::json;
use std::process::Command;

const TOKEN: &str = "adm-7f3c0e1b9a2d4c66";

#[actix_rt::test]
async fn with_a_token_file_admin_operations_need_the_token() -> anyhow::Result<()> {
    let dir = TestDir::new("admin");
    let file = dir.path().join("admin.token");
    std::fs::write(&file, format!("{TOKEN}\n"))?;
    let flag = ["--admin-token-file", file.to_str().unwrap_or_default()];
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &flag, &[&flag, &flag]).await?;

    let wrong = Http::with_bearer("adm-7f3c0e1b9a2d4c67");
    for (client, why) in [(&http, "no token"), (&wrong, "a wrong token")] {
        for (st, body) in [
            client.post(&master.url("/stepDown"), &json!({})).await?,
            client.delete(&master.url("/members/s2")).await?,
            client
                .post(&master.url("/members"), &json!({"name": "s2"}))
                .await?,
            client.post(&nodes[0].url("/stepDown"), &json!({})).await?,
            client
                .post(&nodes[1].url("/admin/crash"), &json!({"mode": "kill"}))
                .await?,
            client.get(&master.url("/admin/faults")).await?,
        ] {
            assert_eq!(
                (st, body["code"].as_str()),
                (401, Some("unauthorized")),
                "{why}: {body}"
            );
        }
    }
    // Everything else stays open.
    assert_eq!(http.write(&master, "m1", json!(3)).await?.0, 201);
    assert_eq!(http.get(&nodes[1].url("/status")).await?.0, 200);

    let admin = Http::with_bearer(TOKEN);
    let (st, body) = admin.delete(&master.url("/members/nobody")).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (404, Some("not_found")),
        "past the check: {body}"
    );
    let (st, body) = admin.post(&nodes[0].url("/stepDown"), &json!({})).await?;
    assert_eq!(
        (st, body["code"].as_str()),
        (503, Some("not_writable")),
        "{body}"
    );
    let (st, body) = admin
        .post(&master.url("/stepDown"), &json!({"seconds": 30}))
        .await?;
    assert_eq!(st, 200, "{body}");

    // The token is never written to a log.
    for n in [&master, &nodes[0], &nodes[1]] {
        let log = std::fs::read_to_string(n.log_path())?;
        assert!(!log.contains(TOKEN), "{} logged the token", n.name);
    }
    Ok(())
}

#[test]
fn a_missing_or_empty_token_file_stops_the_node_at_start() -> anyhow::Result<()> {
    let dir = TestDir::new("admin-bad");
    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n")?;
    let spaced = dir.path().join("spaced");
    std::fs::write(&spaced, "two words\n")?;
    let missing = dir.path().join("missing");
    for (binary, extra) in [
        ("master-node", &[][..]),
        (
            "secondary-node",
            &["--master-ip", "127.0.0.1", "--master-comm-port", "1"][..],
        ),
    ] {
        for file in [&empty, &spaced, &missing] {
            let out = Command::new(bin(binary))
                .args(["--name", "x", "--http-port", "0", "--comm-port", "0"])
                .args(extra)
                .args([
                    "--data-dir",
                    dir.path().join("data").to_str().unwrap_or_default(),
                ])
                .args(["--admin-token-file", file.to_str().unwrap_or_default()])
                .output()?;
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{binary} {}: {err}",
                file.display()
            );
            assert_eq!(err.lines().count(), 1, "one line: {err}");
            assert!(err.contains("admin token"), "{err}");
        }
    }
    Ok(())
}
