//! Time for the daemon: what the engine is told it is, and when to wake.
//!
//! The wall clock names times (texts, JSON, rotations, link expiry); it
//! does not schedule. A wall clock stepped back by an hour must not delay
//! a deputy by an hour, and one stepped forward must not fire every timer
//! at once. So the daemon's [`Clock`] reads the wall clock once, at start,
//! and from then on moves with the monotonic clock (tokio's, so tests can
//! pause it). The core and the notifier share one, and a timer due at an
//! engine time sleeps until the monotonic instant of that time.

use std::time::Duration;

use tokio::time::Instant;

use crate::engine::Ts;

/// How far the wall clock may move away from the daemon's clock before it
/// is logged: NTP slews by far less.
pub const STEP_WARNING: Duration = Duration::from_secs(60);

/// Wall-clock now.
pub fn wall_now() -> Ts {
    Ts::from_timestamp(jiff::Timestamp::now())
}

/// The daemon's clock: a wall-clock reading anchored to a monotonic
/// instant. Cheap to copy; every copy tells the same time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    anchor_ts: Ts,
    anchor: Instant,
}

impl Clock {
    /// A clock that starts at the wall clock's time, or at `not_before`
    /// when that is later (time already recorded must not run backwards
    /// after a restart on a machine whose clock was set back).
    pub fn start(not_before: Ts) -> Clock {
        Clock {
            anchor_ts: wall_now().max(not_before),
            anchor: Instant::now(),
        }
    }

    /// The time now.
    pub fn now(&self) -> Ts {
        self.anchor_ts.plus(self.anchor.elapsed())
    }

    /// The monotonic instant at which it will be `at` (now, if past).
    pub fn instant(&self, at: Ts) -> Instant {
        let ahead = at.millis_since(self.now()).max(0);
        Instant::now()
            + Duration::from_millis(u64::try_from(ahead).unwrap_or(u64::MAX))
                .min(Duration::from_secs(365 * 24 * 3600))
    }

    /// How far the wall clock is from this clock (positive: the wall clock
    /// is ahead), for a warning when someone stepped it.
    pub fn wall_offset(&self) -> Duration {
        let d = wall_now().millis_since(self.now()).unsigned_abs();
        Duration::from_millis(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_clock_moves_with_the_monotonic_clock() {
        let c = Clock::start(Ts(0));
        let t0 = c.now();
        tokio::time::advance(Duration::from_secs(90)).await;
        assert_eq!(c.now().millis_since(t0), 90_000);
        let at = c.now().plus(Duration::from_secs(10));
        assert_eq!(c.instant(at) - Instant::now(), Duration::from_secs(10));
        assert!(c.instant(t0) <= Instant::now(), "a past time is now");
    }

    #[test]
    fn a_recorded_time_later_than_the_wall_clock_wins() {
        let later = wall_now().plus(Duration::from_secs(3600));
        let c = Clock::start(later);
        assert!(c.now() >= later);
        assert!(c.wall_offset() > STEP_WARNING, "an hour apart is a step");
    }

    #[tokio::test(start_paused = true)]
    async fn absurd_times_do_not_overflow() {
        let c = Clock::start(Ts(0));
        let _ = c.instant(Ts(i64::MAX));
        let _ = c.instant(Ts(i64::MIN));
        assert!(Ts(i64::MAX).plus(Duration::MAX) == Ts(i64::MAX));
    }
}
