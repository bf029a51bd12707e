//! Deadlines as atomically storable numbers.
//!
//! A cancel node keeps its deadline in an `AtomicI64` so that a checkpoint can read it without a
//! lock. The number is nanoseconds relative to one process-wide base instant; instants before the
//! base are negative. `tokio::time::Instant` is used throughout so that a paused (test) clock
//! drives deadlines exactly as it drives tokio's timers.

use std::sync::OnceLock;
use std::time::Duration;
use tokio::time::Instant;

/// The encoding of "no deadline".
pub(crate) const NO_DEADLINE: i64 = i64::MAX;

fn base() -> std::time::Instant {
    static BASE: OnceLock<std::time::Instant> = OnceLock::new();
    *BASE.get_or_init(std::time::Instant::now)
}

/// Encodes an instant; saturates rather than wrapping for instants centuries away.
pub(crate) fn encode(at: Instant) -> i64 {
    let at = at.into_std();
    let base = base();
    if at >= base {
        i64::try_from((at - base).as_nanos()).unwrap_or(NO_DEADLINE - 1)
    } else {
        i64::try_from((base - at).as_nanos()).map_or(i64::MIN, |n| -n)
    }
}

pub(crate) fn decode(nanos: i64) -> Instant {
    let base = base();
    let at = if nanos >= 0 {
        base.checked_add(Duration::from_nanos(nanos as u64))
    } else {
        base.checked_sub(Duration::from_nanos(nanos.unsigned_abs()))
    };
    // Instants beyond what the platform can represent are clamped to a year away.
    Instant::from_std(at.unwrap_or_else(|| base + Duration::from_secs(365 * 24 * 3600)))
}

/// The deadline `timeout` from now, saturating: a duration too large for the clock (up to
/// `Duration::MAX`) means no deadline at all, as tokio's `sleep` treats it as "never".
pub(crate) fn deadline_after(timeout: Duration) -> i64 {
    match Instant::now().checked_add(timeout).map(encode) {
        // Beyond the encoding's ~292 years is "never" too.
        Some(at) if at < NO_DEADLINE - 1 => at,
        _ => NO_DEADLINE,
    }
}

/// `now + timeout`, or `None` when that is beyond what the clock can represent.
pub(crate) fn instant_after(timeout: Duration) -> Option<Instant> {
    Instant::now().checked_add(timeout)
}

/// The trellis clock's current time (Trio's `current_time`): tokio's clock, so it is the
/// virtual time of a paused (test) runtime, and what deadlines are measured against.
///
/// ```
/// # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() {
/// use std::time::Duration;
/// let t0 = trellis::current_time();
/// trellis::sleep(Duration::from_secs(3)).await.unwrap();
/// assert_eq!(trellis::current_time() - t0, Duration::from_secs(3));
/// # }
/// ```
pub fn current_time() -> Instant {
    Instant::now()
}

pub(crate) fn now() -> i64 {
    encode(Instant::now())
}

pub(crate) fn encode_opt(at: Option<Instant>) -> i64 {
    at.map_or(NO_DEADLINE, encode)
}

pub(crate) fn decode_opt(nanos: i64) -> Option<Instant> {
    (nanos != NO_DEADLINE).then(|| decode(nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_past_and_future() {
        let now = Instant::now();
        for at in [
            now,
            now + Duration::from_secs(5),
            now - Duration::from_millis(3),
        ] {
            assert_eq!(decode(encode(at)), at);
        }
        assert_eq!(decode_opt(encode_opt(None)), None);
    }
}
