//! The master's side of a node: the replicator actor and one session actor per
//! secondary connection, on the HTTP worker's event loop.

pub mod replicator;
pub mod session;

use common::config::DelaySpec;
use common::storage::LogStore;
use std::sync::Arc;
use std::time::Duration;

/// What only a master needs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Resend what a secondary has not acknowledged after this long (backing off).
    pub ack_timeout: Duration,
    pub heartbeat: Duration,
    /// Heartbeat intervals of silence before a member is Suspected.
    pub suspect_after: u32,
    /// Heartbeat intervals of silence before a member is Unhealthy.
    pub unhealthy_after: u32,
    /// The longest the replicator polls for acknowledgements before it sleeps
    /// ([`common::replication::SpinPolicy`]).
    pub spin: Duration,
}

/// What the HTTP worker thread starts when it comes up: the replicator and the comm
/// port's accept loop (and so every session), on its own event loop.
pub struct Engine {
    replicator: replicator::Replicator,
    comm: std::net::TcpListener,
    delay: DelaySpec,
    started: tokio::sync::oneshot::Sender<actix::Addr<replicator::Replicator>>,
}

/// Where the replicator is, once the worker has started it.
pub type Started = tokio::sync::oneshot::Receiver<actix::Addr<replicator::Replicator>>;

impl Engine {
    /// Open the master's core over `store`; nothing runs until [`Engine::start`].
    pub fn new(
        cfg: &crate::Config,
        settings: &Settings,
        store: Arc<dyn LogStore>,
        comm: std::net::TcpListener,
        http_port: u16,
        progress: common::stream::Progress,
    ) -> anyhow::Result<(Self, Started)> {
        let (started, rx) = tokio::sync::oneshot::channel();
        let engine = Engine {
            replicator: replicator::Replicator::new(cfg, settings, store, http_port, progress)?,
            comm,
            delay: cfg.delay,
            started,
        };
        Ok((engine, rx))
    }

    /// Start on the current thread's event loop; tell `run` where the replicator is.
    pub fn start(self) -> actix::Addr<replicator::Replicator> {
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
