//! The connection layer: one connection to a peer actor, driven by `trellis-wire`'s engine.
//!
//! * `conn.rs`: the handle (the engine under a lock, the local ends of live calls), the
//!   handshake, making calls;
//! * `outgoing.rs`: the outgoing buffer, flushed at once or by the writer task, and the
//!   high-water mark stream senders wait on;
//! * `driver.rs`: the reader and writer tasks, and routing the engine's events;
//! * `frames.rs`: large incoming frames, read into buffers of their own from a small pool;
//! * `serving.rs`: running the peer's calls;
//! * `chan.rs` and `link.rs`: a stream or context call's local buffer and its end;
//! * `spin.rs`: the lock of the receiving end's share of that buffer, taken for every item.

mod chan;
mod conn;
mod driver;
mod frames;
mod link;
mod outgoing;
mod serving;
#[allow(unsafe_code)]
mod spin;

pub(crate) use chan::CallEnd;
pub(crate) use conn::{Conn, End, Incoming, Service};
pub(crate) use driver::ReadLimits;
pub(crate) use frames::FramePool;
pub(crate) use link::Link;
pub(crate) use serving::{BoxFuture, Prepared};
