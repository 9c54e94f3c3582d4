//! When the master polls for acknowledgements instead of sleeping.
//!
//! A write of concern 2 or more waits for secondaries. When few writes wait, the
//! master's event loop has nothing to do until their acknowledgements arrive, and going
//! to sleep costs each of them a wake-up: on this project's machine a sleeping thread
//! took tens of microseconds to run again once its acknowledgement had arrived, a fifth
//! of a lone w=3 write's time (docs/benchmarks.md). So for a short while the loop keeps
//! polling its sockets without sleeping (the way Aeron's or Seastar's idle strategies
//! spin before they park), and sleeps as usual when:
//! - many writes wait (then the loop has work often enough, and the CPU is better left
//!   to the other processes on the box),
//! - the budget runs out, or
//! - recent spins mostly ran out of budget (acknowledgements are slow: secondaries
//!   that fsync, a slow network, a member that is down): spinning rests for a while.
//!
//! Plain state, time passed in: the shell asks [`SpinPolicy::start`] and reports how
//! each spin ended.

use std::time::{Duration, Instant};

/// How long the master polls at most, by default.
pub const SPIN_BUDGET: Duration = Duration::from_micros(100);
/// Spin only while at most this many writes wait for secondaries.
pub const SPIN_MAX_WAITING: usize = 4;
/// Consecutive spins that ran out of budget before spinning rests.
pub const SPIN_MISSES: u32 = 8;
/// How long spinning rests after [`SPIN_MISSES`] misses.
pub const SPIN_REST: Duration = Duration::from_secs(1);

/// The master's spin decisions.
#[derive(Debug, Clone)]
pub struct SpinPolicy {
    budget: Duration,
    misses: u32,
    rest_until: Option<Instant>,
}

impl SpinPolicy {
    /// Spin for at most `budget` at a time (zero: never).
    pub fn new(budget: Duration) -> Self {
        Self {
            budget,
            misses: 0,
            rest_until: None,
        }
    }

    /// `waiting` writes wait for secondaries' acknowledgements: spin until the returned
    /// instant, or (None) do not spin.
    pub fn start(&mut self, now: Instant, waiting: usize) -> Option<Instant> {
        if self.budget.is_zero() || waiting == 0 || waiting > SPIN_MAX_WAITING {
            return None;
        }
        if let Some(until) = self.rest_until {
            if now < until {
                return None;
            }
            self.rest_until = None;
            self.misses = 0;
        }
        Some(now + self.budget)
    }

    /// A spin ended. `answered`: the writes it waited for were answered; otherwise it
    /// ran out of budget.
    pub fn ended(&mut self, now: Instant, answered: bool) {
        if answered {
            self.misses = 0;
            return;
        }
        self.misses += 1;
        if self.misses >= SPIN_MISSES {
            self.rest_until = Some(now + SPIN_REST);
        }
    }

    /// Whether spinning rests at `now` (for status and tests).
    pub fn resting(&self, now: Instant) -> bool {
        self.rest_until.is_some_and(|until| now < until)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spins_for_the_budget_only_while_few_writes_wait() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(SPIN_BUDGET);
        assert_eq!(p.start(t0, 1), Some(t0 + SPIN_BUDGET));
        assert_eq!(p.start(t0, SPIN_MAX_WAITING), Some(t0 + SPIN_BUDGET));
        assert_eq!(p.start(t0, SPIN_MAX_WAITING + 1), None, "busy: sleep");
        assert_eq!(p.start(t0, 0), None, "nothing waits");
        assert_eq!(SpinPolicy::new(Duration::ZERO).start(t0, 1), None, "off");
    }

    #[test]
    fn rests_after_repeated_misses_and_tries_again_later() {
        let t0 = Instant::now();
        let mut p = SpinPolicy::new(SPIN_BUDGET);
        for i in 0..SPIN_MISSES - 1 {
            assert!(p.start(t0, 1).is_some(), "miss {i}: still spinning");
            p.ended(t0, false);
        }
        // An answered spin resets the count.
        p.ended(t0, true);
        for _ in 0..SPIN_MISSES - 1 {
            p.ended(t0, false);
        }
        assert!(p.start(t0, 1).is_some());
        p.ended(t0, false);
        assert!(p.resting(t0));
        assert_eq!(p.start(t0 + SPIN_REST / 2, 1), None, "resting");
        assert_eq!(
            p.start(t0 + SPIN_REST, 1),
            Some(t0 + SPIN_REST + SPIN_BUDGET),
            "rested: spins again"
        );
        // And needs a full run of misses to rest again.
        for _ in 0..SPIN_MISSES - 1 {
            p.ended(t0 + SPIN_REST, false);
        }
        assert!(!p.resting(t0 + SPIN_REST));
    }
}
