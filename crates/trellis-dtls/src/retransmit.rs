//! When a handshake flight is sent again, and when the handshake gives up on the MTU it
//! guessed (RFC 6347 §4.2.4, as Trio does it).

#![forbid(unsafe_code)]

use std::time::Duration;

/// The longest wait between two sends of a flight (OpenSSL's, and DTLS 1.3's advice).
pub const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// After this many sends of one flight went unanswered, the MTU drops to the minimum: the
/// flight's datagrams may be too big for the path.
pub const FAILURES_BEFORE_MIN_MTU: u32 = 2;

/// A handshake's retransmission timer: the wait starts at `initial`, doubles at each timeout
/// up to [`MAX_TIMEOUT`], and goes back to `initial` after a flight that was answered
/// without any resend ("retain the current timer value until a transmission without loss
/// occurs").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retransmit {
    initial: Duration,
    current: Duration,
    failed_sends: u32,
}

/// What a timeout asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout {
    /// Send the flight again and wait this long.
    pub next_wait: Duration,
    /// Drop the handshake MTU to the minimum for the address family first.
    pub use_min_mtu: bool,
}

impl Retransmit {
    /// A timer starting at `initial` (Trio's and OpenSSL's default: 1 s).
    pub fn new(initial: Duration) -> Self {
        Retransmit {
            initial,
            current: initial,
            failed_sends: 0,
        }
    }

    /// How long to wait for the peer's answer to the flight just sent.
    pub fn wait(&self) -> Duration {
        self.current
    }

    /// The wait passed without an answer.
    pub fn timed_out(&mut self) -> Timeout {
        self.current = (self.current * 2).min(MAX_TIMEOUT);
        self.failed_sends += 1;
        Timeout {
            next_wait: self.current,
            use_min_mtu: self.failed_sends == FAILURES_BEFORE_MIN_MTU,
        }
    }

    /// The peer answered the flight: a new flight starts. The wait returns to the initial
    /// value only if this flight needed no resend.
    pub fn answered(&mut self) {
        if self.failed_sends == 0 {
            self.current = self.initial;
        }
        self.failed_sends = 0;
    }
}

/// The smallest MTU every path of the address family carries (IPv4: 576 minus 28 bytes of
/// headers; IPv6: 1280 minus 48).
pub fn worst_case_mtu(ipv6: bool) -> usize {
    if ipv6 { 1280 - 48 } else { 576 - 28 }
}

/// The usual Ethernet MTU minus the IP and UDP headers: the first guess.
pub fn best_guess_mtu(ipv6: bool) -> usize {
    if ipv6 { 1500 - 48 } else { 1500 - 28 }
}
