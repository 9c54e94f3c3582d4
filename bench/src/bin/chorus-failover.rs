//! chorus-failover: what a client sees of failovers. Starts a set of three members
//! here (`master-node` and two `secondary-node`s from `--bin-dir`), writes through the
//! `chorus-client` crate at a steady rate (open loop, `writeConcern: "majority"`, one
//! `requestId` per write, retried once by the client), and kills the current master
//! with SIGKILL `--kills` times, restarting it a moment later so that the next kill
//! finds three members again. At the end it reads every member's log and reports:
//!
//! - per kill, the write unavailability: from the kill to the first write acknowledged
//!   by a master of a newer term (median and max over the kills), and the longest gap
//!   between two acknowledgements over the whole run;
//! - writes acknowledged, retried by the client, failed;
//! - acknowledged writes missing from the final log or not at their id (lost), and
//!   messages stored twice (duplicated): both must be 0;
//! - whether every member holds the same log (`GET /checksum`).
//!
//! ```sh
//! chorus-failover --bin-dir target/release --kills 20 --rate 200 --json out.json
//! ```

use anyhow::{Result, anyhow, bail};
use chorus_bench::localset::{Admin, members, percentile};
use chorus_client::{Client, Options, Write};
use clap::Parser;
use serde_json::json;
use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Kill the master of a local chorus set repeatedly under steady writes; report what the client saw"
)]
struct Cli {
    /// Directory holding master-node and secondary-node.
    #[arg(long, default_value = "target/release")]
    bin_dir: PathBuf,
    /// Times the master is killed.
    #[arg(long, default_value_t = 20)]
    kills: u32,
    /// Writes per second, open loop.
    #[arg(long, default_value_t = 200)]
    rate: u64,
    /// Seconds between two kills (the killed member is back after --down-ms).
    #[arg(long, default_value_t = 4.0)]
    interval: f64,
    /// How long a killed member stays down before it is restarted.
    #[arg(long, default_value_t = 1000)]
    down_ms: u64,
    /// Members' --election-timeout-ms.
    #[arg(long, default_value_t = 1000)]
    election_timeout_ms: u64,
    /// Also write the results here as JSON.
    #[arg(long)]
    json: Option<PathBuf>,
}

/// How one write ended.
struct Outcome {
    message: String,
    issued: Duration,
    done: Duration,
    /// The id it was stored at, whether the client retried it, and the term of the
    /// master that acknowledged it.
    result: Result<(u64, bool, u64), String>,
}

async fn run(cli: Cli) -> Result<bool> {
    let work = tempfile::Builder::new()
        .prefix("chorus-failover-")
        .tempdir()?;
    let extra = vec![
        "--election-timeout-ms".to_string(),
        cli.election_timeout_ms.to_string(),
    ];
    let mut set = members(
        &chorus_bench::localset::Runner::Process,
        &cli.bin_dir,
        work.path(),
        &["m", "s1", "s2"],
        &extra,
        None,
    )?;
    for m in &mut set {
        m.start()?;
    }
    let seeds: Vec<String> = set.iter().map(|m| m.http.clone()).collect();
    let client = Rc::new(Client::new(&seeds, Options::default()));
    // Ready once a write reaches all three.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let w = client
            .write(&Write {
                message: "ready".into(),
                write_concern: Some(json!(3)),
                timeout_ms: Some(2000),
                ..Write::default()
            })
            .await;
        if w.is_ok() {
            break;
        }
        if Instant::now() > deadline {
            bail!("the set never took a w=3 write: {:?}", w.err());
        }
    }

    let start = Instant::now();
    let outcomes: Rc<RefCell<Vec<Outcome>>> = Rc::default();
    let stop = Rc::new(std::cell::Cell::new(false));
    // The writer: one task per write, issued on schedule whatever the others do.
    let writer = {
        let (client, outcomes, stop) = (client.clone(), outcomes.clone(), stop.clone());
        let every = Duration::from_secs_f64(1.0 / cli.rate.max(1) as f64);
        actix_rt::spawn(async move {
            let mut tasks = Vec::new();
            let mut seq = 0u64;
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while !stop.get() {
                tick.tick().await;
                seq += 1;
                let message = format!("w{seq}");
                let (client, outcomes) = (client.clone(), outcomes.clone());
                tasks.push(actix_rt::spawn(async move {
                    let issued = start.elapsed();
                    let r = client
                        .write(&Write {
                            message: message.clone(),
                            write_concern: Some(json!("majority")),
                            timeout_ms: Some(5000),
                            request_id: Some(format!("failover-{message}")),
                        })
                        .await;
                    outcomes.borrow_mut().push(Outcome {
                        message,
                        issued,
                        done: start.elapsed(),
                        result: r
                            .map(|w| (w.id, w.retried, w.body["term"].as_u64().unwrap_or(0)))
                            .map_err(|e| e.to_string()),
                    });
                }));
            }
            for t in tasks {
                let _ = t.await;
            }
        })
    };

    let mut kills = Vec::new();
    let mut failovers = Vec::new();
    for k in 0..cli.kills {
        tokio::time::sleep(Duration::from_secs_f64(cli.interval)).await;
        let primary = client
            .select_primary()
            .await
            .map_err(|e| anyhow!("before kill {k}: {e}"))?;
        let Some(i) = set.iter().position(|m| m.http == primary) else {
            bail!("the master {primary} is not one of the set");
        };
        let at = start.elapsed();
        set[i].kill();
        kills.push((at, set[i].name.clone()));
        tokio::time::sleep(Duration::from_millis(cli.down_ms)).await;
        // The new master, as the client sees it (for the failover time).
        if let Ok(p) = client.select_primary().await {
            failovers.push((p, start.elapsed()));
        }
        set[i].start()?;
        eprintln!(
            "kill {}/{}: {} at {:.1} s",
            k + 1,
            cli.kills,
            set[i].name,
            at.as_secs_f64()
        );
    }
    tokio::time::sleep(Duration::from_secs_f64(cli.interval)).await;
    stop.set(true);
    let _ = writer.await;

    // The final logs: wait until all three hold the same prefix, as far as the longest.
    let addrs: Vec<String> = set.iter().map(|m| m.http.clone()).collect();
    let (log, checksums_agree, convergence) = Admin::default()
        .converge(&addrs, Duration::from_secs(30))
        .await;
    let mut count = std::collections::HashMap::<&str, usize>::new();
    for (_, m) in &log {
        *count.entry(m.as_str()).or_default() += 1;
    }
    let outcomes = outcomes.borrow();
    let (mut acked, mut retried, mut failed, mut lost, mut failed_but_stored) = (0, 0, 0, 0, 0);
    let mut ack_times: Vec<Duration> = Vec::new();
    let mut acks_by_time: Vec<(Duration, u64)> = Vec::new();
    for o in outcomes.iter() {
        match &o.result {
            Ok((id, was_retried, term)) => {
                acked += 1;
                retried += usize::from(*was_retried);
                ack_times.push(o.done);
                acks_by_time.push((o.done, *term));
                let at = log.get((*id as usize).wrapping_sub(1));
                if at.is_none_or(|(i, m)| *i != *id || *m != o.message) {
                    lost += 1;
                    eprintln!("LOST: {} acknowledged at id {id}", o.message);
                }
            }
            Err(_) => {
                failed += 1;
                failed_but_stored += usize::from(count.contains_key(o.message.as_str()));
            }
        }
    }
    let duplicated = count.values().filter(|c| **c > 1).count();
    ack_times.sort();
    let longest_gap = ack_times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    // Per kill: from the kill to the first write a master of a newer term than the
    // killed one acknowledged. (Answers the killed master wrote before it died still
    // arrive a few milliseconds after the kill; they do not count.)
    acks_by_time.sort();
    let mut unavailable: Vec<f64> = kills
        .iter()
        .filter_map(|(at, _)| {
            let old_term = acks_by_time
                .iter()
                .filter(|(t, _)| t <= at)
                .map(|(_, term)| *term)
                .max()
                .unwrap_or(0);
            acks_by_time
                .iter()
                .find(|(t, term)| t > at && *term > old_term)
                .map(|(t, _)| (*t - *at).as_secs_f64() * 1000.0)
        })
        .collect();
    unavailable.sort_by(f64::total_cmp);
    let worst_latency = outcomes
        .iter()
        .filter(|o| o.result.is_ok())
        .map(|o| o.done - o.issued)
        .max()
        .unwrap_or_default();
    let report = json!({
        "kills": kills.len(),
        "rate": cli.rate,
        "writesIssued": outcomes.len(),
        "acknowledged": acked,
        "retriedByClient": retried,
        "failed": failed,
        "failedButStored": failed_but_stored,
        "lost": lost,
        "duplicated": duplicated,
        "unavailabilityMs": {
            "median": percentile(&unavailable, 0.5),
            "max": unavailable.last().copied().unwrap_or(f64::NAN),
            "each": unavailable,
        },
        "longestAckGapMs": longest_gap.as_secs_f64() * 1000.0,
        "slowestAcknowledgedWriteMs": worst_latency.as_secs_f64() * 1000.0,
        "finalLogLength": log.len(),
        "checksumsAgree": checksums_agree,
        "convergenceMs": convergence.as_secs_f64() * 1000.0,
        "newMasters": failovers.len(),
    });
    println!(
        "{} kills at {} writes/s: {} writes, {} acknowledged ({} retried by the client), {} failed ({} of them stored)",
        kills.len(),
        cli.rate,
        outcomes.len(),
        acked,
        retried,
        failed,
        failed_but_stored
    );
    println!(
        "write unavailability after a kill: median {:.0} ms, max {:.0} ms; longest gap between acks {:.0} ms",
        percentile(&unavailable, 0.5),
        unavailable.last().copied().unwrap_or(f64::NAN),
        longest_gap.as_secs_f64() * 1000.0
    );
    println!(
        "lost {lost}, duplicated {duplicated}; final log {} entries, checksums agree: {checksums_agree} (after {:.0} ms)",
        log.len(),
        convergence.as_secs_f64() * 1000.0
    );
    if let Some(path) = &cli.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(lost == 0 && duplicated == 0 && checksums_agree)
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let ok = actix_rt::System::new().block_on(run(cli))?;
    if !ok {
        bail!("violations: see above");
    }
    Ok(())
}
