//! `chorus`: the command-line client of a chorus replica set. It finds the master from
//! a seed list and follows it across elections (the `chorus-client` crate does the
//! work; this file parses flags and prints).

use chorus_client::topology::{ServerType, Topology};
use chorus_client::{Client, Error, Message, Options, Read, ReadPreference, Write};
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use std::io::Write as _;
use std::process::ExitCode;
use std::time::Duration;

const EXAMPLES: &str = "\
Examples:
  chorus --hosts 127.0.0.1:8080,127.0.0.1:8081 write 'hello' -w majority
  chorus --hosts 127.0.0.1:8081 read --from 1 --limit 10 --read-concern majority
  chorus --hosts 127.0.0.1:8081 read --follow --read-concern majority
  chorus --hosts 127.0.0.1:8080 status
  chorus --hosts 127.0.0.1:8080 verify
  chorus --hosts 127.0.0.1:8080 --json status | jq .members

Any member's HTTP address will do as a seed: the client asks each for the set's
members (GET /hello), finds the master, and follows it when another is elected.
Exit status: 0 success, 1 a failed operation, 2 bad usage.";

/// The chorus command-line client.
#[derive(Parser, Debug)]
#[command(name = "chorus", version, about, after_help = EXAMPLES)]
struct Cli {
    /// Seed list: HTTP addresses of members of the set, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        value_name = "HOST:PORT,..."
    )]
    hosts: Vec<String>,
    /// Machine output: JSON (one document; one per line for `read --follow`).
    #[arg(long, global = true)]
    json: bool,
    /// How long to wait for a suitable member (a master for writes) before failing.
    #[arg(long, default_value_t = 10_000, value_name = "MS", global = true)]
    selection_timeout_ms: u64,
    /// Speak HTTPS to members started with --tls-cert, verifying them against this
    /// certificate authority (PEM).
    #[arg(long, value_name = "F", global = true, value_parser = chorus_client::tls_config_from)]
    tls_ca: Option<std::sync::Arc<rustls::ClientConfig>>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Append a message on the master (retried once on a new master after a failover,
    /// with the same request id, so it is stored at most once).
    Write {
        message: String,
        /// Write concern: a number of members, or `majority`.
        #[arg(short = 'w', long = "write-concern", value_parser = write_concern, value_name = "N|majority")]
        w: Option<Value>,
        /// How long the master waits for the write concern.
        #[arg(long, value_name = "MS")]
        timeout_ms: Option<u64>,
        /// Idempotency key (generated when not given).
        #[arg(long, value_name = "KEY")]
        request_id: Option<String>,
    },
    /// Print messages of the log, in id order.
    Read {
        /// First id.
        #[arg(long, default_value_t = 1, value_name = "ID")]
        from: u64,
        /// At most this many messages.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// `local` (default) or `majority`: only messages that can no longer be rolled
        /// back.
        #[arg(long, default_value = "local", value_parser = ["local", "majority"])]
        read_concern: String,
        /// Which members to read from.
        #[arg(long, default_value = "primary", value_parser = |s: &str| s.parse::<ReadPreference>(), value_name = "primary|secondary|nearest")]
        read_preference: ReadPreference,
        /// Keep printing new messages as they come, across failovers, until stopped.
        #[arg(long)]
        follow: bool,
    },
    /// Show the set like MongoDB's rs.status(): members, states, lag, term.
    Status,
    /// Check that every member holds the same log: compares their checksums of the
    /// entries 1..N (GET /checksum), N being the shortest member's last id unless
    /// given. Exit 1 if they differ or a member does not answer.
    Verify {
        /// Compare the entries 1..N.
        #[arg(long, value_name = "N")]
        up_to: Option<u64>,
    },
}

fn write_concern(s: &str) -> Result<Value, String> {
    if s == "majority" {
        return Ok(json!("majority"));
    }
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(json!(n)),
        _ => Err(format!(
            "expected a number of members (1 or more) or `majority`, got {s:?}"
        )),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_out = cli.json;
    let result = actix_rt::System::new().block_on(run(cli));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if json_out {
                let (code, status) = match &e {
                    Error::Refused { code, status, .. } => (code.clone(), Some(*status)),
                    Error::NoServer { .. } => ("no_server".to_string(), None),
                    Error::Network { .. } => ("network".to_string(), None),
                };
                println!(
                    "{}",
                    json!({"error": e.to_string(), "code": code, "status": status})
                );
            } else {
                eprintln!("chorus: {e}");
            }
            ExitCode::from(1)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Error> {
    let opts = Options {
        selection_timeout: Duration::from_millis(cli.selection_timeout_ms),
        tls: cli.tls_ca.clone(),
        ..Options::default()
    };
    let client = Client::new(&cli.hosts, opts);
    match cli.command {
        Command::Write {
            message,
            w,
            timeout_ms,
            request_id,
        } => {
            let done = client
                .write(&Write {
                    message,
                    write_concern: w,
                    timeout_ms,
                    request_id,
                })
                .await?;
            if cli.json {
                let mut body = done.body.clone();
                body["server"] = json!(done.server);
                body["retried"] = json!(done.retried);
                body["requestId"] = json!(done.request_id);
                println!("{body}");
            } else {
                let b = &done.body;
                let by: Vec<&str> = b["ackedBy"]
                    .as_array()
                    .map(|a| a.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                println!(
                    "stored as id {} in term {} on {}, held by {} member(s): {}{}",
                    done.id,
                    b["term"],
                    done.server,
                    b["acks"],
                    by.join(", "),
                    if done.retried { " (after a retry)" } else { "" }
                );
            }
            Ok(())
        }
        Command::Read {
            from,
            limit,
            read_concern,
            read_preference,
            follow,
        } => {
            let r = Read {
                from,
                limit,
                majority: read_concern == "majority",
                preference: read_preference,
            };
            if follow {
                follow_log(&client, &r, cli.json).await
            } else {
                read_pages(&client, &r, cli.json).await
            }
        }
        Command::Status => status(&client, cli.json).await,
        Command::Verify { up_to } => verify(&client, up_to, cli.json).await,
    }
}

fn print_message(m: &Message, json_out: bool) -> bool {
    let mut out = std::io::stdout().lock();
    let line = if json_out {
        json!(m).to_string()
    } else {
        format!("{}\t{}", m.id, m.message)
    };
    // A closed stdout (`| head`) ends the command quietly.
    writeln!(out, "{line}").and_then(|()| out.flush()).is_ok()
}

async fn follow_log(client: &Client, r: &Read, json_out: bool) -> Result<(), Error> {
    client.follow(r, |m| print_message(&m, json_out)).await
}

/// Read page by page (1,000 messages each), each page from a server selected afresh,
/// with a progress line on a terminal.
async fn read_pages(client: &Client, r: &Read, json_out: bool) -> Result<(), Error> {
    const PAGE: usize = 1000;
    let progress = indicatif::ProgressBar::new_spinner();
    progress.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    let mut all = Vec::new();
    let mut next = r.from.max(1);
    let mut left = r.limit;
    loop {
        let want = left.map_or(PAGE, |l| l.min(PAGE));
        if want == 0 {
            break;
        }
        let page = client
            .read(&Read {
                from: next,
                limit: Some(want),
                ..*r
            })
            .await?;
        let got = page.len();
        if let Some(last) = page.last() {
            next = last.id + 1;
        }
        if json_out {
            all.extend(page);
        } else {
            for m in &page {
                if !print_message(m, false) {
                    return Ok(());
                }
            }
        }
        left = left.map(|l| l - got);
        progress.inc(got as u64);
        progress.set_message(format!(
            "{} messages, up to id {}",
            progress.position(),
            next - 1
        ));
        if got < want {
            break;
        }
    }
    progress.finish_and_clear();
    if json_out {
        println!("{}", json!(all));
    }
    Ok(())
}

async fn status(client: &Client, json_out: bool) -> Result<(), Error> {
    // Wait for the monitors' first round, and for a master a little longer.
    let master = tokio::time::timeout(Duration::from_secs(3), client.select_primary()).await;
    client.wait_checked(Duration::from_secs(2)).await;
    let topology = client.topology();
    let report = match master {
        Ok(Ok(addr)) => match client.get_json(&addr, "/status").await {
            Ok(st) => from_master(&topology, &addr, &st),
            Err(_) => from_hellos(&topology),
        },
        _ => from_hellos(&topology),
    };
    if report["members"].as_array().is_none_or(Vec::is_empty) {
        return Err(Error::NoServer {
            wanted: "member",
            waited: Duration::from_secs(3),
            topology: topology.describe(),
        });
    }
    if json_out {
        println!("{report}");
    } else {
        print_table(&report);
    }
    Ok(())
}

/// The set as the master's `/status` shows it, with each member's HTTP address from
/// the monitors.
fn from_master(t: &Topology, addr: &str, st: &Value) -> Value {
    let http_of = |name: &str| {
        t.servers()
            .find(|s| s.name.as_deref() == Some(name))
            .map(|s| s.addr.clone())
    };
    let members: Vec<Value> = st["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| {
            let name = m["name"].as_str().unwrap_or_default();
            json!({
                "name": name,
                "address": if m["self"] == true { Some(addr.to_string()) } else { http_of(name) },
                "state": m["state"],
                "health": m["health"],
                "lastId": m["lastAckedId"],
                "lagMessages": m["lagMessages"],
                "lagMs": m["lagMs"],
                "rttMs": m["rttMs"],
                "self": m["self"],
            })
        })
        .collect();
    json!({
        "setName": st["set"],
        "topology": format!("{:?}", t.kind()),
        "primary": addr,
        "term": st["term"],
        "configVersion": st["configVersion"],
        "commitId": st["commitId"],
        "lastId": st["lastId"],
        "members": members,
        "warnings": st["warnings"],
    })
}

/// Without a master: what each server said to `/hello`.
fn from_hellos(t: &Topology) -> Value {
    let members: Vec<Value> = t
        .servers()
        .map(|s| {
            let state = match s.kind {
                ServerType::Primary => "PRIMARY",
                ServerType::Secondary => "SECONDARY",
                ServerType::Other => "OTHER",
                ServerType::Unknown => "(not reachable/healthy)",
            };
            json!({
                "name": s.name,
                "address": s.addr,
                "state": state,
                "health": if s.kind == ServerType::Unknown { "Unhealthy" } else { "Healthy" },
                "lastId": s.hello.as_ref().map(|h| h.last_write.id),
                "rttMs": s.rtt.map(|r| r.as_secs_f64() * 1000.0),
                "error": s.error,
            })
        })
        .collect();
    let term = t
        .servers()
        .filter_map(|s| s.hello.as_ref())
        .map(|h| h.term)
        .max();
    json!({
        "setName": t.set_name(),
        "topology": format!("{:?}", t.kind()),
        "primary": null,
        "term": term,
        "members": members,
    })
}

fn print_table(r: &Value) {
    let text = |v: &Value| match v {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .filter(|f| f.fract() != 0.0)
            .map_or_else(|| n.to_string(), |f| format!("{f:.1}")),
        other => other.to_string(),
    };
    println!(
        "set {}  {}  term {}  master {}{}",
        text(&r["setName"]),
        text(&r["topology"]),
        text(&r["term"]),
        text(&r["primary"]),
        r["commitId"]
            .as_u64()
            .map_or_else(String::new, |c| format!("  commitId {c}")),
    );
    let cols = [
        "name",
        "address",
        "state",
        "health",
        "lastId",
        "lagMessages",
        "rttMs",
    ];
    let heads = [
        "NAME", "ADDRESS", "STATE", "HEALTH", "LAST ID", "LAG", "RTT MS",
    ];
    let rows: Vec<Vec<String>> = r["members"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| cols.iter().map(|c| text(&m[*c])).collect())
        .collect();
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            rows.iter()
                .map(|row| row[i].chars().count())
                .chain([heads[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(&heads.map(str::to_string));
    for row in &rows {
        line(row);
    }
    for w in r["warnings"].as_array().into_iter().flatten() {
        println!("warning: {}", text(w));
    }
}

/// Every member's checksum of the same prefix.
async fn verify(client: &Client, up_to: Option<u64>, json_out: bool) -> Result<(), Error> {
    client.wait_checked(Duration::from_secs(3)).await;
    let topology = client.topology();
    let servers: Vec<_> = topology.servers().cloned().collect();
    if servers.is_empty() {
        return Err(Error::NoServer {
            wanted: "member",
            waited: Duration::from_secs(3),
            topology: topology.describe(),
        });
    }
    // How far each member's log reaches, from its /hello (asked afresh).
    let mut lasts = Vec::new();
    for s in &servers {
        let last = client
            .get_json(&s.addr, "/hello")
            .await
            .ok()
            .and_then(|h| h["lastWrite"]["id"].as_u64());
        lasts.push(last);
    }
    let n = up_to.unwrap_or_else(|| lasts.iter().flatten().copied().min().unwrap_or(0));
    let mut rows = Vec::new();
    let mut sums = Vec::new();
    for (s, last) in servers.iter().zip(&lasts) {
        let sum = client
            .get_json(&s.addr, &format!("/checksum?upTo={n}"))
            .await
            .map(|v| v["checksum"].as_str().unwrap_or_default().to_string());
        let (checksum, error) = match &sum {
            Ok(c) => (Some(c.clone()), None),
            Err(e) => (None, Some(e.to_string())),
        };
        sums.push(checksum.clone());
        rows.push(json!({
            "name": s.name,
            "address": s.addr,
            "lastId": last,
            "checksum": checksum,
            "error": error,
        }));
    }
    let agree = sums.iter().all(|c| c.is_some() && *c == sums[0]);
    if json_out {
        println!("{}", json!({"upTo": n, "agree": agree, "members": rows}));
    } else {
        println!(
            "entries 1..{n}: {}",
            if agree {
                "every member holds the same"
            } else {
                "MEMBERS DIFFER"
            }
        );
        for r in &rows {
            let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_string);
            let sum = r["checksum"].as_str().map_or_else(
                || format!("({})", text(&r["error"])),
                |c| c.get(..16).unwrap_or(c).to_string(),
            );
            println!(
                "  {:<8} {:<22} last id {:<8} {sum}",
                text(&r["name"]),
                text(&r["address"]),
                text(&r["lastId"])
            );
        }
    }
    if agree {
        Ok(())
    } else {
        Err(Error::Refused {
            server: "the set".into(),
            status: 409,
            code: "members_differ".into(),
            message: format!("the members do not all hold the same entries 1..{n}"),
            body: json!({"upTo": n}),
        })
    }
}
