use rand::{Rng, RngExt};
use std::time::Duration;

/// When to resend an unacknowledged message: after `base`, then doubling per attempt up
/// to `cap`, plus a random jitter of up to a quarter of that delay (never less than the
/// un-jittered delay, so nothing is resent before `base` has passed).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    pub base: Duration,
    pub cap: Duration,
}

impl RetryPolicy {
    /// The policy for an ack timeout: the cap is eight times the timeout.
    pub fn for_ack_timeout(base: Duration) -> Self {
        Self {
            base,
            cap: base.saturating_mul(8),
        }
    }

    /// The un-jittered delay before attempt `attempt + 1` (attempt 0 is the first send).
    pub fn delay(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.min(20);
        self.base
            .saturating_mul(factor)
            .min(self.cap)
            .max(self.base)
    }

    /// The delay with jitter drawn from `rng`.
    pub fn jittered(&self, attempt: u32, rng: &mut impl Rng) -> Duration {
        let d = self.delay(attempt);
        let spread = (d.as_micros() / 4) as u64;
        d + Duration::from_micros(if spread == 0 {
            0
        } else {
            rng.random_range(0..=spread)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{SeedableRng, rngs::StdRng};

    #[test]
    fn doubles_then_caps() {
        let p = RetryPolicy::for_ack_timeout(Duration::from_millis(1500));
        let ms: Vec<u128> = (0..7).map(|a| p.delay(a).as_millis()).collect();
        assert_eq!(ms, vec![1500, 3000, 6000, 12000, 12000, 12000, 12000]);
        assert_eq!(p.delay(u32::MAX), Duration::from_millis(12000));
    }

    #[test]
    fn jitter_stays_within_a_quarter_and_is_never_early() {
        let p = RetryPolicy::for_ack_timeout(Duration::from_millis(1000));
        let mut rng = StdRng::seed_from_u64(7);
        let mut seen_above = false;
        for attempt in 0..6 {
            for _ in 0..200 {
                let d = p.jittered(attempt, &mut rng);
                let plain = p.delay(attempt);
                assert!(d >= plain && d <= plain + plain / 4, "{d:?} vs {plain:?}");
                seen_above |= d > plain;
            }
        }
        assert!(seen_above, "jitter never applied");
    }
}
