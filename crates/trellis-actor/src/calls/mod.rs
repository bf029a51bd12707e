//! The calls layer: what a caller and a served function hold.
//!
//! * `portal.rs`: [`Portal`], calling another actor (run, stream, context);
//! * `stream.rs`: [`MsgStream`], items within one call, and its broadcast to local tasks;
//! * `context.rs`: [`Context`] and [`PortalContext`], the two sides of a context;
//! * `options.rs`: [`StreamOptions`], a receiving end's buffer and flow control.

mod context;
mod options;
mod portal;
mod stream;

pub use context::{Context, PortalContext};
pub use options::{DEFAULT_CAPACITY, Flow, GROWN_CAPACITY, StreamOptions, WINDOW_BYTES};
pub use portal::Portal;
pub use stream::{MsgStream, Subscription};
