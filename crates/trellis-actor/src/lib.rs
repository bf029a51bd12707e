//! tractor's structured multi-process actors, on trellis: a parent spawns child actor
//! *processes* in a supervised tree, calls functions in them by name with serde-typed
//! arguments and results, and gets their failures back as errors (or groups of them). Closing
//! or cancelling an actor nursery tears its whole subtree down, gracefully and then by signal;
//! no child outlives its parent.
//!
//! The same executable runs as the root and as every child: call [`main`] first in `main`.
//! The wire protocol is `trellis-wire`'s (`docs/wire-protocol.md`).
//!
//! ```no_run
//! use trellis_actor::{Config, Functions};
//!
//! async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
//!     Ok(a + b)
//! }
//!
//! fn main() -> std::process::ExitCode {
//!     trellis_actor::main(Config::new(Functions::new().register(add)), || async {
//!         trellis_actor::open_nursery(|an| async move {
//!             let calc = an.start_actor("calc").await?;
//!             assert_eq!(calc.run(add, (1, 2)).await?, 3);
//!             Ok(())
//!         })
//!         .await
//!     })
//! }
//! ```

#![forbid(unsafe_code)]

mod actor;
mod child;
mod conn;
mod error;
mod functions;
mod introspect;
mod logs;
mod nursery;
mod panic;
mod registry;
mod stream;
mod terminal;
mod transport;

pub use actor::{
    Actor, Config, current, find_actor, main, main_with, run_root, try_current, wait_for_actor,
};
pub use error::{ActorError, BadArguments, RemoteActorError, UnknownFunction};
pub use functions::{
    ContextCall, ContextFn, Functions, Register, RemoteFn, RunCall, ServeContextFn, ServeFn,
    ServeStreamFn, StreamCall, StreamFn,
};
pub use introspect::{ActorInfo, Registered};
pub use nursery::{ActorNursery, Portal, RunHandle, open_nursery};
pub use stream::{
    Context, DEFAULT_CAPACITY, Flow, MsgStream, PortalContext, StreamOptions, StreamOverrun,
    Subscription,
};
pub use terminal::{Terminal, with_terminal};
pub use transport::{Addr, BadAddr, Transport};
pub use trellis_wire::{ActorId, ErrorKind, ErrorReport};

/// Serves as a child actor if this process was started as one, and then exits; otherwise
/// returns at once. [`main`] does this first; call it yourself at the top of a `main` that
/// does not use [`main`] (a benchmark runner, say), or from the one `#[test]` of a test binary
/// that its root's [`Config::child_args`] runs (`["that_test", "--exact", "--nocapture"]`).
pub fn serve_if_child(config: Config) {
    if actor::is_child() {
        child::serve(config);
    }
}

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
