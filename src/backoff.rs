//! Exponential backoff with jitter, for whatever retries something outside
//! the process: the MQTT collector between connection attempts, the
//! notifier between tries of a notification and of the store.
//!
//! The step doubles from a first wait up to a cap, and each wait is drawn
//! from the upper half of its step, so that many clients do not retry in
//! lockstep.

use std::time::Duration;

/// The most times a step doubles; past it the step stays put (below the
/// cap only when the cap is more than 65,536 first waits).
const MAX_DOUBLINGS: u32 = 16;

/// Waits that double from `first` up to `max`, with jitter; also counts
/// the retries of one thing for [`next_delay`](Self::next_delay).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    /// Waits handed out by `next_delay` since the last reset.
    tries: u32,
}

impl Backoff {
    /// Starts at `first`, never waits longer than `max`.
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff {
            first,
            max,
            tries: 0,
        }
    }

    /// The step of retry number `n` (1 for the first): `first` doubled for
    /// each retry before it, at most `max`. Without jitter.
    pub fn step(&self, n: u32) -> Duration {
        let doublings = n.saturating_sub(1).min(MAX_DOUBLINGS);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The wait before retry number `n` (1 for the first): drawn from the
    /// upper half of its [`step`](Self::step).
    pub fn delay(&self, n: u32) -> Duration {
        let half = self.step(n) / 2;
        half + half.mul_f64(fastrand::f64())
    }

    /// The wait before the next retry, counting this one.
    pub fn next_delay(&mut self) -> Duration {
        self.tries = self.tries.saturating_add(1);
        self.delay(self.tries)
    }

    /// Starts over at `first`: the thing retried worked for a while.
    pub fn reset(&mut self) {
        self.tries = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_double_up_to_the_cap_and_waits_stay_in_their_upper_half() {
        let b = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let steps: Vec<u64> = (1..=6).map(|n| b.step(n).as_millis() as u64).collect();
        assert_eq!(steps, [100, 200, 400, 800, 1000, 1000]);
        assert_eq!(b.step(0), b.step(1));
        assert_eq!(b.step(u32::MAX), Duration::from_secs(1));
        for n in 1..10 {
            let d = b.delay(n);
            assert!(d >= b.step(n) / 2 && d <= b.step(n), "retry {n}: {d:?}");
        }
    }

    #[test]
    fn next_delay_counts_retries_until_reset() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60));
        assert!(b.next_delay() <= Duration::from_secs(1));
        assert!(b.next_delay() >= Duration::from_secs(1));
        assert!(b.next_delay() >= Duration::from_secs(2));
        b.reset();
        assert!(b.next_delay() <= Duration::from_secs(1));
    }
}
