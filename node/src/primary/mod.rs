//! The master's side of a node: the replicator actor and one session actor per
//! secondary connection, on the HTTP worker's event loop. A node runs them while it
//! is the elected master ([`crate::member`]).

pub mod replicator;
pub mod session;

use std::time::Duration;

/// How a node runs as the master.
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

impl From<&common::config::MasterArgs> for Settings {
    fn from(a: &common::config::MasterArgs) -> Self {
        Self {
            ack_timeout: Duration::from_millis(a.ack_timeout_ms),
            heartbeat: Duration::from_millis(a.heartbeat_ms),
            suspect_after: a.suspect_after_heartbeats,
            unhealthy_after: a.unhealthy_after_heartbeats.max(a.suspect_after_heartbeats),
            spin: Duration::from_micros(a.spin_us),
        }
    }
}
