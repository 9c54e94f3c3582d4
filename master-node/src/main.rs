/// mimalloc: glibc's malloc and free were ~10 % of the master's samples under load,
/// and its CPU per write fell 12-30 % with mimalloc (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use common::config::{DelaySpec, parse_cli};
use std::{path::PathBuf, process::ExitCode, time::Duration};

/// A chorus node that starts a new replica set as its first master (on an empty data
/// directory), or rejoins its set after a restart. Any member may be elected master
/// later: this name only says how the node first joins.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// This node's name; it appears in every log line and in `ackedBy`.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Port of the HTTP API (0 picks a free port; the log says which).
    #[arg(long, value_name = "P")]
    http_port: u16,
    /// Port other members connect to, for replication and elections (0 picks a free
    /// port).
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
    #[command(flatten)]
    member: common::config::MemberArgs,
    #[command(flatten)]
    security: common::config::SecurityArgs,
    #[command(flatten)]
    master: common::config::MasterArgs,
    #[command(flatten)]
    durability: common::config::DurabilityArgs,
}

fn main() -> ExitCode {
    let cli: Cli = parse_cli();
    common::telemetry::init(&cli.name);
    let data_dir = common::config::data_dir(cli.data_dir.clone(), &cli.name);
    let (host, http_port, comm_port) = (cli.host.clone(), cli.http_port, cli.comm_port);
    let tls = cli.security.tls();
    let cfg = node::Config {
        name: cli.name,
        host: cli.host,
        advertise_host: cli.member.advertise_host,
        data_dir,
        delay: cli.delay_ms,
        drop_rate: 0.0,
        durability: cli.durability.durability(),
        max_message_bytes: cli.master.max_message_bytes,
        priority: cli.member.priority,
        admin_token: cli.security.admin_token_file,
        tls,
        cluster_key: cli.security.cluster_key_file,
        election_timeout: Duration::from_millis(cli.member.election_timeout_ms),
        master: node::primary::Settings::from(&cli.master),
        start: node::Start::Master,
    };
    common::config::run_node("master-node", async move {
        let listeners = node::Listeners::bind(&host, http_port, comm_port)?;
        node::run(cfg, listeners, common::shutdown::signal())
            .await
            .map_err(|e| format!("{e:#}").into())
    })
}
