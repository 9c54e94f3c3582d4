//! # node
//!
//! Everything a member of a chorus replica set does, whatever its role. The binaries
//! `master-node` and `secondary-node` only parse flags and call [`run`]; the name says
//! how a node first joins the set (see [`Start`]).
//!
//! - [`primary`]: the master's side. [`primary::replicator::Replicator`], one actor that
//!   owns [`common::replication::MasterCore`], its timers and the waiting client
//!   writes; [`primary::session::Session`], one actor per secondary connection, which
//!   only turns frames into messages for the replicator and back (and applies
//!   `--delay-ms`). They run on the HTTP worker's event loop ([`primary::Engine`]): a
//!   write crosses no thread between its request and its answer, the way Redis serves
//!   from one loop. Only fsync runs elsewhere (the blocking pool), and the relaxed
//!   mode's flusher.
//! - [`follower`]: the secondary's side, a thread that keeps a connection to the master
//!   (reconnecting with backoff), feeds the frames to
//!   [`common::replication::SecondaryCore`] and writes what it answers, applying
//!   `--delay-ms` and `--drop-rate`.
//! - [`http`]: one actix-web API for every role; each handler asks the node's role.
//! - [`wire`]: the comm port's connections, plain TCP or mutual TLS, behind one
//!   surface per side.
//! - [`faults`]: drops, delays and partitions per peer at run time
//!   (`PUT /admin/faults`), on the same paths as the frames.

pub mod faults;
pub mod follower;
pub mod http;
pub mod member;
pub mod primary;
pub mod wire;

use anyhow::Context;
use common::config::DelaySpec;
use common::storage::{Durability, LogStore};
use std::future::Future;
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Everything a node needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    /// `--name`: the node's identity as a member, on every log line and in `ackedBy`.
    pub name: String,
    /// The address the ports listen on.
    pub host: String,
    /// The host other members and clients reach this node by (`--advertise-host`;
    /// None: `host`, or this machine's name when `host` is a wildcard).
    pub advertise_host: Option<String>,
    pub data_dir: PathBuf,
    /// `--delay-ms`: every replication frame this node sends is held back this long.
    pub delay: DelaySpec,
    /// `--drop-rate`: the probability that an acknowledgement this node sends as a
    /// secondary is "lost".
    pub drop_rate: f64,
    pub durability: Durability,
    /// The largest message a write may carry (413 above).
    pub max_message_bytes: usize,
    /// `--priority`: 0 never stands; a caught-up member of higher priority takes over.
    pub priority: u32,
    /// `--election-timeout-ms`: silence from the master before an election
    /// (randomised up to twice this).
    pub election_timeout: Duration,
    /// `--admin-token-file`: what admin operations need (None: loopback clients only).
    pub admin_token: Option<common::config::AdminToken>,
    /// `--cluster-key-file`: what every replication and election connection proves.
    pub cluster_key: Option<common::protocol::auth::ClusterKey>,
    /// `--tls-cert/--tls-key/--tls-ca`: mutual TLS between members, HTTPS for clients.
    pub tls: Option<common::tls::Tls>,
    /// How this node runs as the master.
    pub master: primary::Settings,
    /// How the node first joins.
    pub start: Start,
}

impl Config {
    /// The address the node was started with to find its set (`--master-ip` and
    /// `--master-comm-port`); empty for `master-node`.
    pub fn seed_address(&self) -> String {
        match &self.start {
            Start::Master => String::new(),
            Start::Secondary {
                master_ip,
                master_comm_port,
            } => join_host_port(master_ip, *master_comm_port),
        }
    }

    /// The host others reach this node by.
    pub fn public_host(&self) -> String {
        if let Some(h) = &self.advertise_host {
            return h.clone();
        }
        let unspecified = self
            .host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_unspecified());
        if unspecified {
            hostname().unwrap_or_else(|| "127.0.0.1".into())
        } else {
            self.host.clone()
        }
    }
}

/// `host:port`, with brackets around an IPv6 host.
pub fn join_host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// This machine's name (a container's name in a compose network resolves to it).
fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// How a node first joins the set (the name of its binary). Afterwards any member may
/// be elected master.
#[derive(Clone, Debug)]
pub enum Start {
    /// `master-node`: on a log no other member shares yet, it is the new set's first
    /// master at once; otherwise it rejoins its set and the set decides.
    Master,
    /// `secondary-node`: join the set through this address (any member's comm port).
    Secondary {
        master_ip: String,
        master_comm_port: u16,
    },
}

/// The sockets a node serves, bound by the caller (the binary, or a test that runs
/// several nodes in one process on ports it picked).
pub struct Listeners {
    pub http: TcpListener,
    /// The comm port, where other members connect (replication and votes).
    pub comm: TcpListener,
}

impl Listeners {
    /// Bind the comm and HTTP ports on `host` (0: a free port).
    pub fn bind(host: &str, http_port: u16, comm_port: u16) -> anyhow::Result<Self> {
        // The comm port first: it is the one other nodes are configured with.
        let comm = TcpListener::bind((host, comm_port))
            .with_context(|| format!("cannot listen on comm port {host}:{comm_port}"))?;
        comm.set_nonblocking(true)?;
        let http = TcpListener::bind((host, http_port))
            .with_context(|| format!("cannot listen on http port {host}:{http_port}"))?;
        Ok(Self { http, comm })
    }

    /// As [`Self::bind`], but a comm port of 0 means "the one this node had last time
    /// (kept in `data_dir/comm-port`), or any free one": the other members know a node
    /// by its address, so a restart should not move it.
    pub fn bind_remembering(
        host: &str,
        http_port: u16,
        comm_port: u16,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        if comm_port != 0 {
            return Self::bind(host, http_port, comm_port);
        }
        let file = data_dir.join("comm-port");
        let last = std::fs::read_to_string(&file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
            .filter(|p| *p != 0);
        let listeners = match last.map(|p| Self::bind(host, http_port, p)) {
            Some(Ok(l)) => l,
            _ => Self::bind(host, http_port, 0)?,
        };
        let port = listeners.comm.local_addr()?.port();
        if last != Some(port) {
            std::fs::create_dir_all(data_dir)
                .and_then(|()| std::fs::write(&file, format!("{port}\n")))
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        Ok(listeners)
    }
}

/// Serve as a member until `shutdown` resolves (with the reason, for the log), then stop
/// cleanly: refuse new writes, answer waiting ones, end change streams, let in-flight
/// requests finish (5 s at most), make everything appended durable. Must be called
/// inside an actix system. Installs nothing process-wide except, once per process, the
/// metrics recorder, which nodes running in one process share.
pub async fn run(
    cfg: Config,
    listeners: Listeners,
    shutdown: impl Future<Output = &'static str> + 'static,
) -> anyhow::Result<()> {
    let http_addr = listeners.http.local_addr()?;
    let comm_addr = listeners.comm.local_addr()?;
    let file = common::storage::open_for_node(&cfg.data_dir, cfg.durability)
        .with_context(|| format!("cannot open the log in {}", cfg.data_dir.display()))?;
    let store: Arc<dyn LogStore> = file.clone();
    let metrics = common::metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // After the recorder: counters bind to it when created.
    let progress = common::stream::Progress::new(store.written_id());
    let host = cfg.public_host();
    let addresses = member::Addresses {
        comm: join_host_port(&host, comm_addr.port()),
        http: join_host_port(&host, http_addr.port()),
    };
    let (node, events) = member::Node::new(
        cfg.clone(),
        store.clone(),
        progress.clone(),
        addresses,
        http_addr.port(),
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let (driver_done, driver_finished) = tokio::sync::oneshot::channel::<()>();
    let engine = http::Engine {
        node: node.clone(),
        events,
        comm: listeners.comm,
        stop: stop.clone(),
        done: driver_done,
    };
    let server = http::server(&cfg, listeners.http, engine, metrics)?;
    let handle = server.handle();
    {
        let progress = progress.clone();
        actix_web::rt::spawn(async move {
            let signal = shutdown.await;
            tracing::info!(
                signal,
                "stopping: refusing new writes, answering waiting ones"
            );
            stop.cancel();
            // The driver retires the replicator and stops following.
            let _ = driver_finished.await;
            progress.stop(); // change streams end, so that the server can
            handle.stop(true).await;
        });
    }
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        comm = %node.addresses.comm,
        http = %node.addresses.http,
        cluster_key = cfg.cluster_key.is_some(),
        tls = cfg.tls.is_some(),
        "listening http={http_addr} comm={comm_addr}"
    );
    // Mutual TLS proves membership too (a certificate of the set's CA), as MongoDB's
    // x.509 member authentication stands in for its keyFile.
    if cfg.cluster_key.is_none() && cfg.tls.is_none() {
        tracing::warn!(
            "no --cluster-key-file: anything that reaches the comm port can join this set and read its log (docs/security.md)"
        );
    }
    server.await.context("http server failed")?;
    // Acknowledged entries are durable already (in relaxed mode: written); put
    // everything appended on the disk, and give the preallocated space back.
    let durable = file.close().context("final sync")?;
    tracing::info!(durable, "stopped");
    Ok(())
}
