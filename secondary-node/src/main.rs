/// mimalloc, as in the master (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use common::config::{DelaySpec, parse_cli, parse_probability};
use std::{path::PathBuf, process::ExitCode};

/// A chorus secondary: follows the master's log over the replication protocol and
/// serves it over HTTP.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// This node's name: its identity as a member of the cluster.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Port of the HTTP API (0 picks a free port; the log says which).
    #[arg(long, value_name = "P")]
    http_port: u16,
    /// Host or IP of the master.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    master_ip: String,
    /// The master's comm port (its `--comm-port`).
    #[arg(long, value_name = "C", default_value_t = 4000)]
    master_comm_port: u16,
    /// Address the HTTP API listens on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1")]
    host: String,
    /// Directory of this node's log (default ./data/NAME). Created if missing; one
    /// process at a time.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Hold back every replication frame this node sends by MIN-MAX milliseconds
    /// (uniformly random; a single number is a fixed delay). For testing.
    #[arg(long, value_name = "MIN[-MAX]", default_value = "0")]
    delay_ms: DelaySpec,
    /// Probability (0.0 to 1.0) that the acknowledgement of a received message is
    /// "lost": the message is stored, the ack never sent, so the master must retry.
    /// For testing.
    #[arg(long, value_name = "R", default_value = "0", value_parser = parse_probability)]
    drop_rate: f64,
    #[command(flatten)]
    durability: common::config::DurabilityArgs,
}

fn main() -> ExitCode {
    let cli: Cli = parse_cli();
    common::telemetry::init(&cli.name);
    let data_dir = common::config::data_dir(cli.data_dir.clone(), &cli.name);
    let (host, http_port) = (cli.host.clone(), cli.http_port);
    let cfg = node::Config {
        name: cli.name,
        host: cli.host,
        data_dir,
        delay: cli.delay_ms,
        durability: cli.durability.durability(),
        // Only a master checks message sizes.
        max_message_bytes: common::api::DEFAULT_MAX_MESSAGE_BYTES,
        start: node::Start::Secondary(node::follower::Settings {
            master_ip: cli.master_ip,
            master_comm_port: cli.master_comm_port,
            delay: cli.delay_ms,
            drop_rate: cli.drop_rate,
        }),
    };
    common::config::run_node("secondary-node", async move {
        let listeners = node::Listeners::bind(&host, http_port, None)?;
        node::run(cfg, listeners, common::shutdown::signal())
            .await
            .map_err(|e| format!("{e:#}").into())
    })
}
