//! What one peer may hold of an actor: connections, memory, calls and time
//! (`docs/wire-protocol.md` §9).

use std::time::Duration;

/// The bounds an actor keeps on its peers, so that no peer, authenticated or not, can starve
/// it. Every limit has a default fit for a tree of a few hundred actors; set them with
/// [`Config::limits`](crate::Config::limits).
///
/// ```
/// use std::time::Duration;
/// use trellis_actor::Limits;
///
/// let limits = Limits::default()
///     .max_connections(256)
///     .idle_timeout(Some(Duration::from_secs(30)));
/// assert_eq!(limits.max_calls_per_connection, 1024);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Connections that completed the handshake, at most (default 1,024). A connection
    /// beyond it is refused after the `Hello`s with a connection-level error of kind
    /// `LimitExceeded`; existing connections and their calls go on.
    pub max_connections: usize,
    /// Handshakes in progress at once, at most (default 64). A new connection beyond it
    /// closes the oldest one still handshaking, so a flood of silent connections cannot keep
    /// a peer that does its handshake out.
    pub max_handshakes: usize,
    /// How long a handshake may take before the connection is closed (default 5 s).
    pub handshake_timeout: Duration,
    /// How long a connection from outside the tree (a peer with a client credential or none)
    /// may stay open with no call live before it is closed with a `Goodbye` (default 60 s;
    /// `None`: never). Connections between members are not idled out: TCP keepalive (see
    /// [`Config::keepalive`](crate::Config::keepalive)) finds the dead ones.
    pub idle_timeout: Option<Duration>,
    /// How long a frame may take to arrive once its first byte has (default 30 s); a peer
    /// slower than that is disconnected.
    pub frame_timeout: Duration,
    /// Bytes of incomplete frames all connections together may hold beyond the first
    /// 64 KiB of each (default 256 MiB). A frame that would take more closes its connection
    /// with a connection-level error.
    pub read_budget: usize,
    /// Calls a peer may have live at once on one connection (default 1,024); its next
    /// `Start` is refused with an error of kind `LimitExceeded`.
    pub max_calls_per_connection: usize,
}

/// What a connection may hold of its incomplete frame without taking from the shared
/// [`read_budget`](Limits::read_budget).
pub(crate) const FREE_FRAME_BYTES: usize = 64 * 1024;

/// The most a peer may send before its handshake is done: a `Hello` and an `Auth` fit many
/// times over.
pub(crate) const HANDSHAKE_BYTES: usize = 16 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            max_handshakes: 64,
            handshake_timeout: Duration::from_secs(5),
            idle_timeout: Some(Duration::from_secs(60)),
            frame_timeout: Duration::from_secs(30),
            read_budget: 256 * 1024 * 1024,
            max_calls_per_connection: 1024,
        }
    }
}

impl Limits {
    /// Sets [`max_connections`](Limits::max_connections).
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.max_connections = n;
        self
    }

    /// Sets [`max_handshakes`](Limits::max_handshakes) (at least 1).
    #[must_use]
    pub fn max_handshakes(mut self, n: usize) -> Self {
        self.max_handshakes = n.max(1);
        self
    }

    /// Sets [`handshake_timeout`](Limits::handshake_timeout).
    #[must_use]
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// Sets [`idle_timeout`](Limits::idle_timeout).
    #[must_use]
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// Sets [`frame_timeout`](Limits::frame_timeout).
    #[must_use]
    pub fn frame_timeout(mut self, timeout: Duration) -> Self {
        self.frame_timeout = timeout;
        self
    }

    /// Sets [`read_budget`](Limits::read_budget).
    #[must_use]
    pub fn read_budget(mut self, bytes: usize) -> Self {
        self.read_budget = bytes;
        self
    }

    /// Sets [`max_calls_per_connection`](Limits::max_calls_per_connection) (at least 1).
    #[must_use]
    pub fn max_calls_per_connection(mut self, n: usize) -> Self {
        self.max_calls_per_connection = n.max(1);
        self
    }
}

/// The bytes of incomplete frames the connections of one actor hold beyond their free
/// share, against [`Limits::read_budget`].
#[derive(Debug)]
pub(crate) struct ReadBudget {
    used: std::sync::atomic::AtomicUsize,
    limit: usize,
}

impl ReadBudget {
    pub(crate) fn new(limit: usize) -> Self {
        ReadBudget {
            used: std::sync::atomic::AtomicUsize::new(0),
            limit,
        }
    }

    /// Takes `bytes` from the budget, or `false` if they are not there.
    pub(crate) fn take(&self, bytes: usize) -> bool {
        use std::sync::atomic::Ordering;
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `bytes` taken before.
    pub(crate) fn give(&self, bytes: usize) {
        self.used
            .fetch_sub(bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::ReadBudget;

    #[test]
    fn the_budget_gives_what_it_has_and_takes_back_what_was_given() {
        let budget = ReadBudget::new(100);
        assert!(budget.take(60));
        assert!(!budget.take(41), "only 40 are left");
        assert!(budget.take(40));
        budget.give(60);
        assert!(budget.take(60));
        assert!(!budget.take(usize::MAX), "no overflow");
    }
}
