/// mimalloc, as in the master (docs/benchmarks.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use common::config::{DelaySpec, parse_cli, parse_probability};
use std::{path::PathBuf, process::ExitCode, time::Duration};

/// A chorus node that joins a replica set through any member's address and follows
/// its master; it may be elected master later.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    /// This node's name: its identity as a member of the set.
    #[arg(long, value_name = "NAME")]
    name: String,
    /// Port of the HTTP API (0 picks a free port; the log says which).
    #[arg(long, value_name = "P")]
    http_port: u16,
    /// Host or IP of a member of the set to join through (the master, or any member:
    /// it says where the master is). After the first join the node remembers every
    /// member's address in its data directory.
    #[arg(long, value_name = "HOST", default_value = "127.0.0.1")]
    master_ip: String,
    /// That member's comm port (its `--comm-port`).
    #[arg(long, value_name = "C", default_value_t = 4000)]
    master_comm_port: u16,
    /// Port other members connect to, for replication and elections (default 0: the
    /// port this node had last time, or a free one; announced to the set).
    #[arg(long, value_name = "C", default_value_t = 0)]
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
    /// Probability (0.0 to 1.0) that the acknowledgement of a received message is
    /// "lost": the message is stored, the ack never sent, so the master must retry.
    /// For testing.
    #[arg(long, value_name = "R", default_value = "0", value_parser = parse_probability)]
    drop_rate: f64,
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
    let dir = data_dir.clone();
    let tls = cli.security.tls();
    let cfg = node::Config {
        name: cli.name,
        host: cli.host,
        advertise_host: cli.member.advertise_host,
        data_dir,
        delay: cli.delay_ms,
        drop_rate: cli.drop_rate,
        durability: cli.durability.durability(),
        max_message_bytes: cli.master.max_message_bytes,
        priority: cli.member.priority,
        admin_token: cli.security.admin_token_file,
        tls,
        cluster_key: cli.security.cluster_key_file,
        election_timeout: Duration::from_millis(cli.member.election_timeout_ms),
        master: node::primary::Settings::from(&cli.master),
        start: node::Start::Secondary {
            master_ip: cli.master_ip,
            master_comm_port: cli.master_comm_port,
        },
    };
    common::config::run_node("secondary-node", async move {
        let listeners = node::Listeners::bind_remembering(&host, http_port, comm_port, &dir)?;
        node::run(cfg, listeners, common::shutdown::signal())
            .await
            .map_err(|e| format!("{e:#}").into())
    })
}
