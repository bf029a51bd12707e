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

// Two audited exceptions: the zygote's `fork` (`actor/zygote.rs`), and the spin lock of a
// stream's receiving and sending shares (`connection/spin.rs`: a measured win, taken for
// every item).
#![deny(unsafe_code)]

// Layers, each using only those listed before it (`ARCHITECTURE.md` shows how this is
// checked): names and data → transport → connection → calls → functions → actor → tree.
mod actor;
mod actor_error;
mod calls;
mod cancel_reason;
mod connection;
mod dump;
mod error;
#[cfg(all(feature = "etcd", fuzzing))]
#[doc(hidden)]
pub mod etcd;
#[cfg(all(feature = "etcd", not(fuzzing)))]
mod etcd;
mod functions;
mod info;
mod limits;
mod logs;
mod names;
mod panic;
mod secret;
mod tls;
mod trace;
mod transport;
mod tree;

pub use actor::{
    Actor, Config, SpawnBackend, Terminal, current, find_actor, main, main_with, run_root,
    serve_if_child, serve_if_child_async, try_current, wait_for_actor, with_terminal,
};
pub use actor_error::ActorError;
pub use calls::{
    Context, DEFAULT_CAPACITY, Flow, GROWN_CAPACITY, MsgStream, Portal, PortalContext,
    StreamOptions, Subscription, WINDOW_BYTES,
};
pub use dump::{
    ActorDump, STALL_CHECK, STALLED, ScopeInfo, TaskInfo, deadlocks, draw as draw_dumps,
    draw_all as draw_all_dumps, stall_checked, stalled,
};
pub use error::{BadArguments, RemoteActorError, StreamOverrun, Unauthorized, UnknownFunction};
#[cfg(feature = "etcd")]
pub use etcd::{Etcd, EtcdError};
pub use functions::{
    ContextCall, ContextFn, Functions, Register, RemoteFn, RunCall, ServeContextFn, ServeFn,
    ServeStreamFn, StreamCall, StreamFn,
};
pub use info::{ActorInfo, FunctionInfo, Registered, StreamInfo, SupervisedChild};
pub use limits::Limits;
pub use secret::{SECRET_ENV, SECRET_FILE_ENV, SECRET_FILE_NAME, Secret, SecretError};
#[cfg(feature = "dev-certs")]
pub use tls::dev;
pub use tls::{TLS_DIR_FILES, TlsSetupError, TreeTls};
pub use transport::{Addr, BadAddr, Transport};
pub use tree::{
    ActorNursery, ActorPool, ActorSupervisor, CommandLauncher, Placement, Route, RunHandle,
    SshHost, SupervisedPortal, open_nursery, open_supervisor,
};
pub use trellis_wire::{ActorId, ErrorKind, ErrorReport};

/// The README's examples, compiled as doc tests.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
