//! # secondary-node
//!
//! A thin shell around [`common::replication::SecondaryCore`]:
//! - [`replication`]: a thread that keeps a connection to the master (reconnecting
//!   with backoff), feeds the frames to the core and writes what it answers, applying
//!   `--delay-ms` and `--drop-rate`;
//! - [`http`]: the actix-web API (reads only; writes go to the master).

pub mod http;
pub mod replication;

use anyhow::Context;
use common::config::DelaySpec;
use common::replication::SecondaryCore;
use common::storage::LogStore;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug)]
pub struct Config {
    pub name: String,
    pub host: String,
    pub http_port: u16,
    pub master_ip: String,
    pub master_comm_port: u16,
    pub data_dir: PathBuf,
    pub delay: DelaySpec,
    pub drop_rate: f64,
    pub durability: common::storage::Durability,
}

/// The store the secondary keeps its log in; the binary chooses the implementation.
pub type Store = Arc<dyn LogStore>;

/// The secondary's replication state machine over its store.
pub type Core = SecondaryCore<Store>;

/// The core, shared by the replication thread and the HTTP handlers. The lock is only
/// held for a single synchronous step of the core.
pub type SharedCore = Arc<Mutex<Core>>;

/// Bind the HTTP port, follow the master, serve until SIGINT/SIGTERM.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let http = std::net::TcpListener::bind((cfg.host.as_str(), cfg.http_port))
        .with_context(|| format!("cannot listen on http port {}:{}", cfg.host, cfg.http_port))?;
    let http_addr = http.local_addr()?;
    let file = common::storage::open_for_node(&cfg.data_dir, cfg.durability)
        .with_context(|| format!("cannot open the log in {}", cfg.data_dir.display()))?;
    let store: Store = file.clone();
    let core: SharedCore = Arc::new(Mutex::new(SecondaryCore::new(
        cfg.name.clone(),
        store.clone(),
    )));
    let metrics = common::metrics::install()
        .map_err(|e| anyhow::anyhow!("cannot install the metrics recorder: {e}"))?;
    // After the recorder: the thread's frame and sync counters bind to it when created.
    let progress = common::stream::Progress::new(store.written_id());
    let link = replication::Link::start(cfg.clone(), core.clone(), store.clone(), progress.clone())
        .context("cannot start the replication thread")?;
    let server = http::server(&cfg, http, core, store, progress.clone(), metrics)?;
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        let signal = common::shutdown::signal().await;
        tracing::info!(signal, "stopping");
        progress.stop(); // change streams end, so that the server can
        handle.stop(true).await;
    });
    tracing::info!(
        master = format!("{}:{}", cfg.master_ip, cfg.master_comm_port),
        data_dir = %cfg.data_dir.display(),
        "listening http={http_addr}"
    );
    let served = server.await.context("http server failed");
    if !link.stop(Duration::from_secs(5)) {
        tracing::warn!("the replication thread did not stop within 5 s");
    }
    served?;
    // Acknowledged entries are durable already (in relaxed mode: written); put
    // everything appended on the disk, and give the preallocated space back.
    let durable = file.close().context("final sync")?;
    tracing::info!(durable, "stopped");
    Ok(())
}
