//! The replication logic as plain state machines, with no I/O and no clock.
//!
//! [`NodeCore`] is one member's role decisions around its election (which term, whom
//! to vote for, when to stand, lead or follow), for any role.
//! [`MasterCore`] decides what to send to each secondary, what is acknowledged, when a
//! write concern is met and when to resend. [`SecondaryCore`] orders and deduplicates
//! what arrives and decides what to acknowledge. Both take the current time as an
//! argument and hand their decisions back as output values; the node binaries turn
//! those into socket writes, timers and HTTP responses.
//!
//! Tests drive both cores through a seeded simulated network (`sim` tests) with delays,
//! reordering, lost acknowledgements, duplicates and dropped connections.

mod defer;
pub mod election;
mod master;
mod node;
mod retry;
mod secondary;
#[cfg(test)]
mod set_sim;
#[cfg(test)]
mod sim;
mod spin;

pub use defer::{SYNC_DEFER, SyncSchedule, is_urgent};
pub use master::{
    HttpAddress, MAX_PENDING_WRITES, MasterConfig, MasterCore, MasterOutput, MasterStatus,
    MemberStatus, MembershipError, REFUSED_MAX, Receipt, RefusedPeer, Rejected, Token,
    WriteOutcome, WriteRequest,
};
pub use node::{NodeConfig, NodeCore, NodeInput, NodeOutput, VoteId};
pub use retry::RetryPolicy;
pub use spin::{SPIN_BUDGET, SPIN_MAX_WAITING, SpinPolicy};

pub use secondary::{Identity, SecondaryCore, SecondaryOutput, SecondaryStatus};

use serde::{Deserialize, Serialize};

/// Identifies one TCP connection on the master, assigned by the shell.
pub type ConnId = u64;

/// How many members (the master included) must hold a message before the write returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WriteConcern {
    /// This many members.
    Count(u32),
    /// More than half of the members when the acknowledgements are counted.
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

/// A member's health, from when the master last heard from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub enum Health {
    /// Connected and heard from recently.
    Healthy,
    /// Connected, but silent for `suspect_after` heartbeat intervals.
    Suspected,
    /// Disconnected, or silent for `unhealthy_after` heartbeat intervals.
    Unhealthy,
}

/// When a silent member turns Suspected, then Unhealthy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HealthPolicy {
    pub heartbeat: std::time::Duration,
    /// Heartbeat intervals of silence before Suspected (default 2).
    pub suspect_after: u32,
    /// Heartbeat intervals of silence before Unhealthy (default 5).
    pub unhealthy_after: u32,
}

impl HealthPolicy {
    pub fn new(heartbeat: std::time::Duration) -> Self {
        Self {
            heartbeat,
            suspect_after: 2,
            unhealthy_after: 5,
        }
    }

    /// The health of a member that is `connected` and was last heard `silent_for` ago.
    pub fn of(&self, connected: bool, silent_for: Option<std::time::Duration>) -> Health {
        match (connected, silent_for) {
            (false, _) | (true, None) => Health::Unhealthy,
            (true, Some(d)) if d >= self.heartbeat * self.unhealthy_after => Health::Unhealthy,
            (true, Some(d)) if d >= self.heartbeat * self.suspect_after => Health::Suspected,
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
