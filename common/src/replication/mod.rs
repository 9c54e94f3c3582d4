//! The replication logic as plain state machines, with no I/O and no clock.
//!
//! [`MasterCore`] decides what to send to each secondary, what is acknowledged, when a
//! write concern is met and when to resend. [`SecondaryCore`] orders and deduplicates
//! what arrives and decides what to acknowledge. Both take the current time as an
//! argument and hand their decisions back as output values; the node binaries turn
//! those into socket writes, timers and HTTP responses.
//!
//! Tests drive both cores through a seeded simulated network (`sim` tests) with delays,
//! reordering, lost acknowledgements, duplicates and dropped connections.

mod master;
mod retry;
mod secondary;
#[cfg(test)]
mod sim;

pub use master::{
    MasterConfig, MasterCore, MasterOutput, MasterStatus, MemberStatus, Receipt, Token,
    WriteOutcome, WriteRequest,
};
pub use retry::RetryPolicy;

pub use secondary::{SecondaryCore, SecondaryOutput, SecondaryStatus};

use serde::{Deserialize, Serialize};

/// Identifies one TCP connection on the master, assigned by the shell.
pub type ConnId = u64;

/// How many members (the master included) must hold a message before the write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WriteConcern {
    /// This many members.
    Count(u32),
    /// More than half of the members known when the write is accepted.
    Majority,
}

impl std::fmt::Display for WriteConcern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteConcern::Count(n) => write!(f, "{n}"),
            WriteConcern::Majority => f.write_str("majority"),
        }
    }
}

/// A member's health as `/health` reports it, from what the master last heard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    /// Connected and heard from within two heartbeat intervals.
    Healthy,
    /// Connected, but silent for two heartbeat intervals or more.
    Suspected,
    /// Disconnected, or silent for five heartbeat intervals or more.
    Unhealthy,
}

impl Health {
    pub fn of(connected: bool, last_heard_ms_ago: Option<u64>, heartbeat_ms: u64) -> Self {
        match (connected, last_heard_ms_ago) {
            (false, _) | (true, None) => Health::Unhealthy,
            (true, Some(ms)) if ms >= 5 * heartbeat_ms => Health::Unhealthy,
            (true, Some(ms)) if ms >= 2 * heartbeat_ms => Health::Suspected,
            _ => Health::Healthy,
        }
    }
}

impl WriteConcern {
    /// The number of members needed, given the current membership size (master included).
    pub fn required(self, members: usize) -> usize {
        match self {
            WriteConcern::Count(n) => n as usize,
            WriteConcern::Majority => members / 2 + 1,
        }
    }
}
