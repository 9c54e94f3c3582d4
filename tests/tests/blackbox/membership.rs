//! What a new user meets first about membership: a removed member stays out until it
//! is re-admitted, a master started on the wrong data directory says so, and a
//! secondary sends writers to the master's HTTP address.

use chorus_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);

/// The entry for `name` in a master's `refused` list, once it has been refused at
/// least `times` times.
async fn refused(http: &Http, master: &Node, name: &str, times: u64) -> anyhow::Result<Value> {
    wait_for(&format!("{name} refused {times} times"), LONG, || async {
        let h = http.health(master).await?;
        Ok(h["refused"].as_array().and_then(|rs| {
            rs.iter()
                .find(|r| r["name"] == name && r["times"].as_u64() >= Some(times))
                .cloned()
        }))
    })
    .await
}

fn warnings(v: &Value) -> String {
    v["warnings"].to_string()
}

/// DELETE /members/s2 sticks: s2 keeps knocking and is refused every time (it no longer
/// counts), also after the master restarts, until POST /members re-admits it; then it
/// joins by itself and catches up.
#[actix_rt::test]
async fn a_removed_member_stays_out_until_it_is_readmitted() -> anyhow::Result<()> {
    let dir = TestDir::new("removal");
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    let s2 = &nodes[1];
    assert_eq!(http.write(&master, "a", json!(3)).await?.0, 201);

    let (code, v) = http.delete(&master.url("/members/s2")).await?;
    assert_eq!((code, v["memberCount"].as_u64()), (200, Some(2)), "{v}");
    // It reconnects on its own and is refused, twice: removal held across a retry.
    let r = refused(&http, &master, "s2", 2).await?;
    assert_eq!(r["code"], "Removed", "{r}");
    let h = http.health(&master).await?;
    assert_eq!(h["memberCount"], 2, "{h}");
    assert_eq!(h["removed"], json!(["s2"]), "{h}");
    assert!(warnings(&h).contains("POST /members"), "{h}");
    let st = http.get(&s2.url("/status")).await?.1;
    assert_eq!(
        (st["state"].as_str(), st["removed"].as_bool()),
        (Some("REMOVED"), Some(true)),
        "{st}"
    );
    assert!(
        st["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("re-admits")),
        "{st}"
    );
    // Writes go on without it (w=majority of 2), and it does not get them.
    let (code, v) = http.write(&master, "b", json!("majority")).await?;
    assert_eq!((code, v["acks"].as_u64()), (201, Some(2)), "{v}");
    assert_eq!(http.messages(s2).await?.len(), 1);

    // Restart the master: the set elects one (m or s1; never s2, which is not a voter
    // of theirs), and it still refuses s2: the removal was replicated with the member
    // list and saved by every member.
    master.restart()?;
    let voters = [&master, &nodes[0]];
    let now = voters[wait_master(&http, &voters, LONG).await?];
    refused(&http, now, "s2", 1).await?;
    assert_eq!(http.health(now).await?["memberCount"], 2);

    // Bad bodies are refused; re-admitting a name that is not removed changes nothing.
    let (code, v) = http
        .post(&now.url("/members"), &json!({"nom": "s2"}))
        .await?;
    assert_eq!(
        (code, v["code"].as_str()),
        (400, Some("invalid_request")),
        "{v}"
    );
    let other = if now.name == "m" { "s1" } else { "m" };
    let (code, v) = http
        .post(&now.url("/members"), &json!({"name": other}))
        .await?;
    assert_eq!((code, v["readmitted"].as_bool()), (200, Some(false)), "{v}");

    let (code, v) = http
        .post(&now.url("/members"), &json!({"name": "s2"}))
        .await?;
    assert_eq!((code, v["readmitted"].as_bool()), (200, Some(true)), "{v}");
    wait_member_live(&http, now, "s2").await?;
    let h = http.health(now).await?;
    assert_eq!(
        (h["memberCount"].as_u64(), h["removed"].clone()),
        (Some(3), json!([])),
        "{h}"
    );
    wait_converged(&http, now, &[s2], 2, LONG).await?;
    let st = http.get(&s2.url("/status")).await?.1;
    assert_eq!(
        (st["state"].as_str(), st["removed"].as_bool()),
        (Some("SECONDARY"), Some(false)),
        "{st}"
    );
    assert_eq!(http.write(now, "c", json!(3)).await?.0, 201);
    Ok(())
}

/// A master started on a fresh data directory where the set's master was: it does not
/// just report itself writable with one member, it says which secondaries hold another
/// log and what to do.
#[actix_rt::test]
async fn a_master_on_another_log_says_so() -> anyhow::Result<()> {
    let dir = TestDir::new("other-log");
    let http = Http::new();
    let (mut old, nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let s1 = &nodes[0];
    assert_eq!(http.write(&old, "kept", json!(2)).await?.0, 201);
    let comm = old.comm.expect("comm address").port();
    old.kill9();
    // Another name, so another data directory (./data/NAME): an empty log.
    let fresh = Node::master_on(&dir, "m2", comm, &[])?;
    let r = refused(&http, &fresh, "s1", 1).await?;
    assert_eq!(r["code"], "LogMismatch", "{r}");
    for path in ["/health", "/status"] {
        let v = http.get(&fresh.url(path)).await?.1;
        let w = warnings(&v);
        assert!(
            w.contains("s1") && w.contains("another data directory"),
            "{path}: {v}"
        );
        assert_eq!(v["memberCount"], 1, "{path}: {v}");
    }
    // The secondary keeps its log and says why it is not following.
    assert_eq!(http.messages(s1).await?, vec![(1, "kept".to_string())]);
    let h = http.health(s1).await?;
    assert!(
        h["lastError"]
            .as_str()
            .is_some_and(|e| e.contains("LogMismatch")),
        "{h}"
    );
    Ok(())
}

/// POST /newMessage on a secondary: 503 not_writable naming the master's HTTP address
/// (where a client can send the write), and null once it no longer reaches a master.
#[actix_rt::test]
async fn a_secondary_sends_writers_to_the_masters_http_address() -> anyhow::Result<()> {
    let dir = TestDir::new("primary-hint");
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    let s1 = &nodes[0];
    let (code, v) = http.write(s1, "x", json!(1)).await?;
    let want = master.http.to_string();
    assert_eq!(
        (code, v["code"].as_str()),
        (503, Some("not_writable")),
        "{v}"
    );
    assert_eq!(v["primary"].as_str(), Some(want.as_str()), "{v}");
    assert!(
        v["error"]
            .as_str()
            .is_some_and(|e| e.contains(&format!("http://{want}"))),
        "{v}"
    );
    // The address works: the same write there is taken.
    assert_eq!(http.write(&master, "x", json!(2)).await?.0, 201);
    assert_eq!(
        http.health(s1).await?["primary"].as_str(),
        Some(want.as_str())
    );

    master.kill9();
    let v = wait_for("the secondary to forget the master", LONG, || async {
        let (code, v) = http.write(s1, "y", json!(1)).await?;
        anyhow::ensure!(code == 503, "{v}");
        Ok(v["primary"].is_null().then_some(v))
    })
    .await?;
    assert_eq!(v["code"], "not_writable", "{v}");
    Ok(())
}
