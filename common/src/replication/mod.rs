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

impl WriteConcern {
    /// The number of members needed, given the current membership size (master included).
    pub fn required(self, members: usize) -> usize {
        match self {
            WriteConcern::Count(n) => n as usize,
            WriteConcern::Majority => members / 2 + 1,
        }
    }
}
