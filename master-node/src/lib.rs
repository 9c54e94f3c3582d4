//! # master-node
//!
//! A thin shell around [`common::replication::MasterCore`]:
//! - [`replicator::Replicator`], one actor that owns the core, its timers and the
//!   waiting client writes;
//! - [`session::Session`], one actor per secondary connection, which only turns frames
//!   into messages for the replicator and back (and applies `--delay-ms`);
//! - [`http`], the actix-web API.
//!
//! All three run on one thread, the HTTP worker's event loop ([`Engine`]): a write
//! crosses no thread between its request and its answer, the way Redis serves from one
//! loop, and the replicator writes frames straight into each connection's
//! [`session::Outbox`]. Only fsync runs elsewhere (the blocking pool), and the relaxed
//! mode's flusher.

pub mod http;
pub mod replicator;
pub mod session;

use anyhow::Context;
use common::config::DelaySpec;
use std::{path::PathBuf, time::Duration};

/// Everything the master needs to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub host: String,
    pub http_port: u16,
    pub comm_port: u16,
    pub data_dir: PathBuf,
    pub delay: DelaySpec,
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    /// Heartbeat intervals of silence before a member is Suspected.
    pub suspect_after: u32,
    /// Heartbeat intervals of silence before a member is Unhealthy.
    pub unhealthy_after: u32,
    pub max_message_bytes: usize,
    /// The longest the replicator polls for acknowledgements before it sleeps
    /// ([`common::replication::SpinPolicy`]).
    pub spin: Duration,
    pub durability: common::storage::Durability,
}

/// What the HTTP worker thread starts when it comes up: the replicator and the comm
/// port's accept loop (and so every session), on its own event loop.
pub struct Engine {
    replicator: replicator::Replicator,
    comm: std::net::TcpListener,
    delay: DelaySpec,
    started: tokio::sync::oneshot::Sender<actix::Addr<replicator::Replicator>>,
}

impl Engine {
    /// Start on the current thread's event loop; tell `run` where the replicator is.
    fn start(self) -> actix::Addr<replicator::Replicator> {
        use actix::Actor;
        let addr = self.replicator.start();
        match tokio::net::TcpListener::from_std(self.comm) {
            Ok(comm) => {
                actix_web::rt::spawn(session::accept_loop(comm, addr.clone(), self.delay));
            }
            Err(e) => tracing::error!(error = %e, "cannot serve the comm port"),
        }
        let _ = self.started.send(addr.clone());
        addr
    }
}

/// Bind both ports, run until SIGINT/SIGTERM, then stop cleanly. Must be called inside
/// an actix system.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let comm = std::net::TcpListener::bind((cfg.host.as_str(), cfg.comm_port))
        .with_context(|| format!("cannot listen on comm port {}:{}", cfg.host, cfg.comm_port))?;
    comm.set_nonblocking(true)?;
    let http = std::net::TcpListener::bind((cfg.host.as_str(), cfg.http_port))
        .with_context(|| format!("cannot listen on http port {}:{}", cfg.host, cfg.http_port))?;
    let comm_addr = comm.local_addr()?;
    let http_addr = http.local_addr()?;

    let file = common::storage::open_for_node(&cfg.data_dir, cfg.durability)
        .with_context(|| format!("cannot open the log in {}", cfg.data_dir.display()))?;
    let store: replicator::Store = file.clone();
    let (started, replicator) = tokio::sync::oneshot::channel();
    let progress = common::stream::Progress::new(store.written_id());
    let engine = Engine {
        replicator: replicator::Replicator::new(
            &cfg,
            store.clone(),
            http_addr.port(),
            progress.clone(),
        )?,
        comm,
        delay: cfg.delay,
        started,
    };

    let metrics = common::metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    let server = http::server(&cfg, http, engine, store, progress, metrics)?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let signal = common::shutdown::signal().await;
        tracing::info!(
            signal,
            "stopping: refusing new writes, answering waiting ones"
        );
        let Ok(replicator) = replicator.await else {
            handle.stop(true).await;
            return;
        };
        let failed = replicator
            .send(replicator::Shutdown)
            .await
            .unwrap_or_default();
        if failed > 0 {
            tracing::warn!(
                failed,
                "writes still waiting for their write concern were answered 503"
            );
        }
        handle.stop(true).await;
    });
    tracing::info!(
        data_dir = %cfg.data_dir.display(),
        "listening http={http_addr} comm={comm_addr}"
    );
    server.await.context("http server failed")?;
    // Acknowledged entries are durable already (in relaxed mode: written); put
    // everything appended on the disk, and give the preallocated space back.
    let durable = file.close().context("final sync")?;
    tracing::info!(durable, "stopped");
    Ok(())
}
