/// mimalloc: glibc's malloc and free were ~10 % of the master's samples under load,
/// and its CPU per write fell 12-30 % with mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use common::config::{DelaySpec, parse_cli, parse_positive_ms};
use std::{path::PathBuf, process::ExitCode, time::Duration};

/// The chorus master: takes writes over HTTP and replicates them to the secondaries
/// that connect to its comm port.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// This node's name; it appears in every log line and in `ackedBy`.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Port of the HTTP API (0 picks a free port; the log says which).
    #[arg(long, value_name = "P")]
    http_port: u16,
    /// Port secondaries connect to for replication (0 picks a free port).
    #[arg(long, value_name = "C", default_value_t = 4000)]
    comm_port: u16,
    /// Address both ports listen on.
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
    /// Resend a message a secondary has not acknowledged within this many milliseconds;
    /// later resends back off exponentially (with jitter) up to 8 times this.
    #[arg(long, value_name = "T", default_value = "1000", value_parser = parse_positive_ms)]
    ack_timeout_ms: u64,
    /// Interval of the heartbeats on each replication connection.
    #[arg(long, value_name = "H", default_value = "1000", value_parser = parse_positive_ms)]
    heartbeat_ms: u64,
    /// Heartbeat intervals of silence after which a secondary is Suspected.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    suspect_after_heartbeats: u32,
    /// Heartbeat intervals of silence after which a secondary is Unhealthy: it no longer
    /// counts toward the quorum, and resends to it wait until it is heard from again.
    #[arg(long, value_name = "N", default_value_t = 5,
          value_parser = clap::value_parser!(u32).range(1..=1000))]
    unhealthy_after_heartbeats: u32,
    /// Largest message accepted, in bytes (larger ones get 413). At most 32 MiB.
    #[arg(long, value_name = "BYTES", default_value_t = common::api::DEFAULT_MAX_MESSAGE_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=32 * 1024 * 1024))]
    max_message_bytes: usize,
    /// While at most a few writes wait for secondaries' acknowledgements, poll for them
    /// for up to this many microseconds instead of sleeping: a little CPU for the
    /// latency of writes that come one at a time. Rests by itself when
    /// acknowledgements are slower than that; 0 never polls.
    #[arg(long, value_name = "US", default_value_t = common::replication::SPIN_BUDGET.as_micros() as u64,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    spin_us: u64,
    #[command(flatten)]
    durability: common::config::DurabilityArgs,
}

fn main() -> ExitCode {
    let cli: Cli = parse_cli();
    common::telemetry::init(&cli.name);
    let data_dir = common::config::data_dir(cli.data_dir.clone(), &cli.name);
    let (host, http_port, comm_port) = (cli.host.clone(), cli.http_port, cli.comm_port);
    let cfg = node::Config {
        name: cli.name,
        host: cli.host,
        data_dir,
        delay: cli.delay_ms,
        durability: cli.durability.durability(),
        max_message_bytes: cli.max_message_bytes,
        start: node::Start::Master(node::primary::Settings {
            ack_timeout: Duration::from_millis(cli.ack_timeout_ms),
            heartbeat: Duration::from_millis(cli.heartbeat_ms),
            suspect_after: cli.suspect_after_heartbeats,
            unhealthy_after: cli
                .unhealthy_after_heartbeats
                .max(cli.suspect_after_heartbeats),
            spin: Duration::from_micros(cli.spin_us),
        }),
    };
    common::config::run_node("master-node", async move {
        let listeners = node::Listeners::bind(&host, http_port, Some(comm_port))?;
        node::run(cfg, listeners, common::shutdown::signal())
            .await
            .map_err(|e| format!("{e:#}").into())
    })
}
