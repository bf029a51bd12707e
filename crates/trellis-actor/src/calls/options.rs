//! How a stream's receiving end holds items and slows its sender down.
//!
//! By default a receiver grants its sender credit for as many items as its buffer holds and
//! more as it reads them, so a slow consumer slows its producer down across the process
//! boundary and nothing is ever dropped. [`Flow::Overrun`] fails the call with
//! [`StreamOverrun`](crate::StreamOverrun) instead once the buffer overflows (tractor's
//! default); [`Flow::Unbounded`] buffers without limit (tractor's `allow_overruns`).

use trellis_wire::Window;

/// How many unread items a stream's receiving end holds by default, at first. With
/// backpressure this is also how far the sender may run ahead: throughput is about this many
/// items per round trip, so a small window caps it (B7 in `BENCHMARKS.md`, 100,000 `u64`
/// between two processes: 512 took 25 ms, 2,048 12–17 ms, 4,096 11.5 ms). Unless a
/// [`capacity`](StreamOptions::capacity) is set, the window then follows the items' size: it
/// grows up to [`GROWN_CAPACITY`] items while they fit in [`WINDOW_BYTES`], and never drops
/// below this. The window bounds memory in items, each up to the largest frame: set a smaller
/// capacity for large items.
pub const DEFAULT_CAPACITY: usize = 4096;

/// The most items a default window grows to, for small items.
pub const GROWN_CAPACITY: usize = 4 * DEFAULT_CAPACITY;

/// What a default window's items may take as it grows beyond [`DEFAULT_CAPACITY`]: about
/// 1 MiB (each item counted with [`trellis_wire::ITEM_OVERHEAD`] bytes more than its encoded
/// payload).
pub const WINDOW_BYTES: usize = 1 << 20;

/// What a receiving end does when its sender is faster than its reader.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flow {
    /// The sender waits for room: the receiver grants credit as it reads. Nothing is lost and
    /// nothing fails.
    #[default]
    Backpressure,
    /// The sender never waits; once more than the capacity is unread the call fails with
    /// [`StreamOverrun`](crate::StreamOverrun) (tractor's default).
    Overrun,
    /// The sender never waits and the receiver buffers everything (tractor's
    /// `allow_overruns=True`).
    Unbounded,
}

/// The receiving end's buffer and flow control.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamOptions {
    capacity: usize,
    /// No capacity was set: the window grows for small items.
    grows: bool,
    flow: Flow,
    lossless_subscribers: bool,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            capacity: DEFAULT_CAPACITY,
            grows: true,
            flow: Flow::Backpressure,
            lossless_subscribers: false,
        }
    }
}

impl StreamOptions {
    /// Backpressure with a window of [`DEFAULT_CAPACITY`] that grows for small items.
    pub fn new() -> Self {
        StreamOptions::default()
    }

    /// How many unread items the receiving end holds (with [`Flow::Backpressure`], how many
    /// the sender may have in flight; with [`Flow::Overrun`], how many before the call fails).
    /// Subscribers of [`MsgStream::subscribe`](crate::MsgStream::subscribe) keep as many. A
    /// window set here stays this size.
    ///
    /// # Panics
    ///
    /// When `capacity` is 0 or above `u32::MAX - 1`.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        assert!(
            capacity > 0 && capacity < u32::MAX as usize,
            "a stream capacity is between 1 and 2^32 - 2"
        );
        self.capacity = capacity;
        self.grows = false;
        self
    }

    /// The flow control mode.
    #[must_use]
    pub fn flow(mut self, flow: Flow) -> Self {
        self.flow = flow;
        self
    }

    /// Makes [`MsgStream::subscribe`](crate::MsgStream::subscribe)'s subscribers lossless: none ever lags; the stream is
    /// read no faster than its slowest subscriber.
    #[must_use]
    pub fn lossless_subscribers(mut self) -> Self {
        self.lossless_subscribers = true;
        self
    }

    /// How the receiving end grants credit, as the engine counts it.
    pub(crate) fn window(&self) -> Window {
        // `capacity` checks the range.
        let capacity = u32::try_from(self.capacity).unwrap_or(u32::MAX - 1);
        match self.flow {
            Flow::Backpressure if self.grows => Window::Growing {
                start: capacity,
                max: GROWN_CAPACITY as u32,
                bytes: WINDOW_BYTES as u32,
            },
            Flow::Backpressure => Window::Credit(capacity),
            Flow::Overrun => Window::Unlimited(Some(capacity)),
            Flow::Unbounded => Window::Unlimited(None),
        }
    }

    /// How many items the receiving end holds (for a broadcast of its items).
    pub(crate) fn capacity_value(&self) -> usize {
        self.capacity
    }

    /// Whether subscribers never lag.
    pub(crate) fn lossless(&self) -> bool {
        self.lossless_subscribers
    }
}
