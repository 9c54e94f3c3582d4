//! The chat page (`GET /`) in a real browser: Debian's chromium, driven through
//! chromedriver (WebDriver). Two pages on different members exchange messages; the
//! master, which serves one of them, is killed; both pages keep sending and showing,
//! without gap or repeat; a message with HTML in it is shown as text.
//!
//! Skipped (with a line saying so) where chromium or chromedriver is missing, unless
//! `CHORUS_BROWSER_REQUIRED=1`, which `.ci/run` sets after installing them
//! (`scripts/browser-deps.sh`). `CHORUS_CHAT_SCREENSHOT=PATH` saves a screenshot.

use chorus_tests::*;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const LONG: Duration = Duration::from_secs(60);
const CHROMIUM: &str = "/usr/bin/chromium";

/// A chromedriver process, stopped when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    /// Start chromedriver on a free port; None (the test is skipped) if the browser
    /// or the driver is not installed and the environment does not require them.
    async fn start() -> anyhow::Result<Option<Driver>> {
        let installed = std::path::Path::new(CHROMIUM).exists()
            && Command::new("chromedriver")
                .arg("--version")
                .output()
                .is_ok();
        if !installed {
            if std::env::var("CHORUS_BROWSER_REQUIRED").is_ok_and(|v| v == "1") {
                anyhow::bail!(
                    "CHORUS_BROWSER_REQUIRED=1 but chromium or chromedriver is missing (scripts/browser-deps.sh installs them)"
                );
            }
            eprintln!(
                "SKIPPED: chromium or chromedriver not installed (scripts/browser-deps.sh installs them)"
            );
            return Ok(None);
        }
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        wait_for("chromedriver to listen", LONG, || async {
            Ok(std::net::TcpStream::connect(("127.0.0.1", port)).ok())
        })
        .await?;
        Ok(Some(driver))
    }

    async fn page(&self, url: &str) -> anyhow::Result<Client> {
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": CHROMIUM,
                "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                         "--disable-gpu", "--window-size=720,860"],
            }),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await?;
        client.goto(url).await?;
        Ok(client)
    }
}

/// What a page shows: (data-id, text) of every element of `#messages`.
async fn shown(page: &Client) -> anyhow::Result<Vec<(u64, String)>> {
    let v = page
        .execute(
            "return [...document.querySelectorAll('#messages > *')].map(e => [Number(e.dataset.id), e.textContent]);",
            vec![],
        )
        .await?;
    Ok(serde_json::from_value::<Vec<(u64, String)>>(v)?)
}

async fn wait_shown(page: &Client, n: usize) -> anyhow::Result<Vec<(u64, String)>> {
    wait_for(&format!("{n} messages on the page"), LONG, || async {
        let s = shown(page).await?;
        Ok((s.len() >= n).then_some(s))
    })
    .await
}

/// Type `text` into the compose form and send it.
async fn send(page: &Client, text: &str) -> anyhow::Result<()> {
    let input = page
        .find(Locator::Css("#compose input[name=message]"))
        .await?;
    input.send_keys(text).await?;
    page.find(Locator::Css("#compose button"))
        .await?
        .click()
        .await?;
    Ok(())
}

async fn text_of(page: &Client, css: &str) -> anyhow::Result<String> {
    Ok(page.find(Locator::Css(css)).await?.text().await?)
}

#[actix_rt::test]
async fn two_pages_chat_through_a_failover_and_html_stays_text() -> anyhow::Result<()> {
    let Some(driver) = Driver::start().await? else {
        return Ok(());
    };
    let dir = TestDir::new("chat");
    let http = Http::new();
    let (mut master, nodes) = cluster(&dir, &http, &[], &[&[], &[]]).await?;
    // Page A is served by the master, page B by a secondary.
    let a = driver.page(&master.url("/")).await?;
    let b = driver.page(&nodes[0].url("/")).await?;
    for p in [&a, &b] {
        wait_for("the page to name the master", LONG, || async {
            Ok((text_of(p, "#primary").await? == master.name).then_some(()))
        })
        .await?;
    }

    send(&a, "hello from A").await?;
    wait_shown(&b, 1).await?;
    send(&b, "hello from B").await?;
    let before = wait_shown(&a, 2).await?;
    assert_eq!(wait_shown(&b, 2).await?, before);
    assert!(
        before[0].1.contains("hello from A") && before[1].1.contains("hello from B"),
        "{before:?}"
    );
    // Sent with majority write concern: in the log of every member.
    let log = http.messages(&nodes[1]).await?;
    assert!(
        log.len() == 2 && log[0].1.ends_with(": hello from A"),
        "{log:?}"
    );

    // The master dies, and with it the node serving page A.
    master.kill9();
    send(&a, "A after the failover").await?;
    send(&b, "B after the failover").await?;
    let after_a = wait_shown(&a, 4).await?;
    let after_b = wait_shown(&b, 4).await?;
    assert_eq!(after_a, after_b, "both pages show the same log");
    assert_eq!(
        after_a.iter().map(|m| m.0).collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "no gap, no repeat"
    );
    let texts: Vec<&str> = after_a.iter().map(|m| m.1.as_str()).collect();
    assert!(
        texts.iter().any(|t| t.contains("A after the failover")),
        "{texts:?}"
    );
    assert!(
        texts.iter().any(|t| t.contains("B after the failover")),
        "{texts:?}"
    );
    let new = wait_master(&http, &[&nodes[0], &nodes[1]], LONG).await?;
    for p in [&a, &b] {
        wait_for("the page to name the new master", LONG, || async {
            Ok((text_of(p, "#primary").await? == nodes[new].name).then_some(()))
        })
        .await?;
    }

    // HTML is shown as text, never parsed.
    let evil = r#"<img src=x onerror="document.body.dataset.owned=1"><b id="evil">bold</b>"#;
    send(&a, evil).await?;
    let last = wait_shown(&b, 5).await?;
    assert!(last[4].1.contains(evil), "{last:?}");
    for p in [&a, &b] {
        let owned: Value = p
            .execute(
                "return [document.getElementById('evil'), document.body.dataset.owned || null];",
                vec![],
            )
            .await?;
        assert_eq!(owned, json!([null, null]), "the message's HTML was parsed");
    }
    // The nickname is kept in the browser.
    let nick: Value = a
        .execute("return localStorage.getItem('chorus-nick');", vec![])
        .await?;
    assert!(
        nick.as_str().is_some_and(|n| last[0].1.contains(n)),
        "{nick} / {last:?}"
    );

    if let Ok(path) = std::env::var("CHORUS_CHAT_SCREENSHOT") {
        std::fs::write(path, b.screenshot().await?)?;
    }
    a.close().await?;
    b.close().await?;
    Ok(())
}

/// Without a browser: every member serves the page with the contract's hooks, and the
/// API answers other origins (the page served by one member talks to the others).
#[actix_rt::test]
async fn every_member_serves_the_page_and_the_api_answers_other_origins() -> anyhow::Result<()> {
    let dir = TestDir::new("chat-page");
    let http = Http::new();
    let (master, nodes) = cluster(&dir, &http, &[], &[&[]]).await?;
    for n in [&master, &nodes[0]] {
        let (st, page) = http.get_text(&n.url("/")).await?;
        assert_eq!(st, 200);
        for hook in [
            r#"id="messages""#,
            r#"id="compose""#,
            r#"name="message""#,
            r#"id="primary""#,
        ] {
            assert!(page.contains(hook), "{hook} missing on {}", n.name);
        }
    }
    let resp = awc::Client::new()
        .get(nodes[0].url("/hello"))
        .insert_header(("origin", "http://127.0.0.1:1"))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        resp.headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("*")
    );
    // A page's request to an admin operation is refused even from loopback.
    let resp = awc::Client::new()
        .post(master.url("/stepDown"))
        .insert_header(("origin", "http://127.0.0.1:1"))
        .send_body("{}")
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(resp.status().as_u16(), 403);
    Ok(())
}
