//! How long a supervisor waits before a restart.

use std::hash::{BuildHasher, Hasher, RandomState};
use std::time::Duration;

/// The wait before a child restarts: exponential in the number of times it restarted within
/// the intensity period, capped, with random jitter so that children that failed together do
/// not restart in lockstep.
///
/// The `n`-th restart waits `min(max, first × 2ⁿ⁻¹)`, less a random part of up to `jitter` of
/// that (0.0: exact; 1.0: anywhere between zero and it, "full jitter").
///
/// ```
/// use std::time::Duration;
/// use trellis::supervisor::Backoff;
///
/// let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(2))
///     .with_jitter(0.0);
/// assert_eq!(backoff.delay(1), Duration::from_millis(100));
/// assert_eq!(backoff.delay(3), Duration::from_millis(400));
/// assert_eq!(backoff.delay(10), Duration::from_secs(2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    jitter: f64,
}

impl Backoff {
    /// Restart at once (OTP's behaviour).
    pub const NONE: Backoff = Backoff {
        first: Duration::ZERO,
        max: Duration::ZERO,
        jitter: 0.0,
    };

    /// `first` before the first restart, doubling up to `max`, with a jitter of 0.5.
    pub fn exponential(first: Duration, max: Duration) -> Self {
        Backoff {
            first,
            max: max.max(first),
            jitter: 0.5,
        }
    }

    /// The part of each wait that is random, from 0.0 to 1.0 (clamped).
    pub fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = if jitter.is_nan() {
            0.0
        } else {
            jitter.clamp(0.0, 1.0)
        };
        self
    }

    /// The wait before the `attempt`-th restart (counted from 1) with no jitter: the longest
    /// it can be.
    pub fn delay(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(31);
        self.first.saturating_mul(1u32 << doublings).min(self.max)
    }

    /// The wait before the `attempt`-th restart, jitter included.
    pub(crate) fn jittered(&self, attempt: u32) -> Duration {
        let delay = self.delay(attempt);
        if self.jitter == 0.0 || delay.is_zero() {
            return delay;
        }
        let unit = (random() >> 11) as f64 / (1u64 << 53) as f64;
        delay.mul_f64(1.0 - self.jitter * unit)
    }
}

/// 64 random bits: std's per-map hash keys are random, and that is all the randomness jitter
/// needs.
fn random() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(0x9e37_79b9_7f4a_7c15);
    hasher.finish()
}
