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

pub mod follower;
pub mod http;
pub mod primary;

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
    /// The address the ports listen on (and the master's HTTP address announced to
    /// secondaries, unless it is a wildcard).
    pub host: String,
    pub data_dir: PathBuf,
    /// `--delay-ms`: every replication frame this node sends is held back this long.
    pub delay: DelaySpec,
    pub durability: Durability,
    /// The largest message a write may carry (413 above).
    pub max_message_bytes: usize,
    /// How the node first joins the set.
    pub start: Start,
}

/// How a node first joins: as the master of the log in its data directory, or by
/// following a master.
#[derive(Clone, Debug)]
pub enum Start {
    /// `master-node`: serve the log in the data directory as its master.
    Master(primary::Settings),
    /// `secondary-node`: follow the master at this address.
    Secondary(follower::Settings),
}

/// The sockets a node serves, bound by the caller (the binary, or a test that runs
/// several nodes in one process on ports it picked).
pub struct Listeners {
    pub http: TcpListener,
    /// The comm port, where secondaries connect (only a master listens, for now).
    pub comm: Option<TcpListener>,
}

impl Listeners {
    /// Bind the HTTP port, and the comm port when `comm_port` is given, on `host`.
    pub fn bind(host: &str, http_port: u16, comm_port: Option<u16>) -> anyhow::Result<Self> {
        // The comm port first: it is the one other nodes are configured with.
        let comm = match comm_port {
            Some(port) => {
                let l = TcpListener::bind((host, port))
                    .with_context(|| format!("cannot listen on comm port {host}:{port}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let http = TcpListener::bind((host, http_port))
            .with_context(|| format!("cannot listen on http port {host}:{http_port}"))?;
        Ok(Self { http, comm })
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
    let comm_addr = listeners.comm.as_ref().and_then(|c| c.local_addr().ok());
    let file = common::storage::open_for_node(&cfg.data_dir, cfg.durability)
        .with_context(|| format!("cannot open the log in {}", cfg.data_dir.display()))?;
    let store: Arc<dyn LogStore> = file.clone();
    let metrics = common::metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // After the recorder: counters bind to it when created.
    let progress = common::stream::Progress::new(store.written_id());
    let (start, link, replicator) = match &cfg.start {
        Start::Master(settings) => {
            let comm = listeners
                .comm
                .context("a master needs its comm port to be bound")?;
            let (engine, replicator) = primary::Engine::new(
                &cfg,
                settings,
                store.clone(),
                comm,
                http_addr.port(),
                progress.clone(),
            )?;
            (
                http::RoleStart::Primary(Box::new(engine)),
                None,
                Some(replicator),
            )
        }
        Start::Secondary(settings) => {
            let core = follower::shared_core(&cfg.name, store.clone());
            let link = follower::Link::start(
                settings.clone(),
                core.clone(),
                store.clone(),
                progress.clone(),
            )
            .context("cannot start the replication thread")?;
            let handle = follower::Handle::new(core, settings);
            (http::RoleStart::Secondary(handle), Some(link), None)
        }
    };
    let server = http::server(
        &cfg,
        listeners.http,
        start,
        store,
        progress.clone(),
        metrics,
    )?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let signal = shutdown.await;
        tracing::info!(
            signal,
            "stopping: refusing new writes, answering waiting ones"
        );
        if let Some(replicator) = replicator
            && let Ok(replicator) = replicator.await
        {
            let failed = replicator
                .send(primary::replicator::Shutdown)
                .await
                .unwrap_or_default();
            if failed > 0 {
                tracing::warn!(
                    failed,
                    "writes still waiting for their write concern were answered 503"
                );
            }
        }
        progress.stop(); // change streams end, so that the server can
        handle.stop(true).await;
    });
    match (&cfg.start, comm_addr) {
        (Start::Master(_), Some(comm)) => tracing::info!(
            data_dir = %cfg.data_dir.display(),
            "listening http={http_addr} comm={comm}"
        ),
        (Start::Secondary(s), _) => tracing::info!(
            master = s.master_address(),
            data_dir = %cfg.data_dir.display(),
            "listening http={http_addr}"
        ),
        _ => {}
    }
    let served = server.await.context("http server failed");
    if let Some(link) = link
        && !link.stop(Duration::from_secs(5))
    {
        tracing::warn!("the replication thread did not stop within 5 s");
    }
    served?;
    // Acknowledged entries are durable already (in relaxed mode: written); put
    // everything appended on the disk, and give the preallocated space back.
    let durable = file.close().context("final sync")?;
    tracing::info!(durable, "stopped");
    Ok(())
}
