//! Structured concurrency on tokio, with Trio's semantics.
//!
//! * [`open_nursery`]: tasks that never outlive the code that started them; every failure
//!   gathered into an [`ErrorGroup`].
//! * [`CancelScope`]: cancellation by call or deadline, with shielding; delivered as
//!   `Err(Cancelled)` at every checkpoint, level-triggered, so `?` unwinds and async cleanup can
//!   still run.
//! * [`move_on_after`], [`fail_after`], [`sleep`], [`checkpoint`], [`cancellable`]: the
//!   operations that deliver cancellation.
//! * [`run`]: the entry point; Ctrl-C cancels the program and it exits 130 after cleanup.
//! * [`testing`]: the autojump clock, `wait_all_tasks_blocked`, a sequencer.
//!
//! Everything runs on tokio: trellis tasks are tokio tasks, every tokio library works inside
//! them, and trellis primitives work in any tokio runtime, multi-thread or current-thread.
//!
//! ```
//! use std::time::Duration;
//!
//! async fn fetch(id: u32) -> Result<String, trellis::Error> {
//!     trellis::sleep(Duration::from_millis(u64::from(id))).await?;
//!     if id == 3 {
//!         return Err(trellis::Error::msg(format!("item {id} is missing")));
//!     }
//!     Ok(format!("item {id}"))
//! }
//!
//! let outcome = trellis::Runner::current_thread().run(async {
//!     trellis::open_nursery(|n| async move {
//!         for id in 1..=4 {
//!             n.start_soon(fetch(id))?;
//!         }
//!         Ok::<_, trellis::Error>(())
//!     })
//!     .await
//! });
//! let error = outcome.unwrap_err();
//! let group = error.as_group().unwrap();
//! assert_eq!(group.leaves().count(), 1); // item 4 was cancelled, not failed
//! assert_eq!(error.into_single().unwrap().to_string(), "item 3 is missing");
//! ```
#![forbid(unsafe_code)]

pub mod backtrace;
pub mod broadcast;
mod cancel;
mod carried;
pub mod channel;
mod context;
pub mod dump;
mod error;
mod group;
pub mod instrument;
mod local;
mod loom;
mod nursery;
pub mod resource;
mod runner;
mod slab;
pub mod supervisor;
pub mod sync;
pub mod testing;
pub mod threads;
mod time;
pub mod token;

pub use cancel::{
    CancelScope, Cancellable, Checkpoint, FailAfter, MoveOn, ScopeRun, cancellable, checkpoint,
    checkpoint_if_cancelled, current_effective_deadline, fail_after, fail_at, move_on_after,
    move_on_at, sleep, sleep_forever, sleep_until,
};
pub use carried::Carried;
pub use channel::channel;
pub use error::{
    CancelReason, CancelSource, CancelSplit, Cancelled, Error, Interrupted, IsCancelled,
    NotStarted, NurseryClosed, TooSlow,
};
pub use group::ErrorGroup;
pub use local::{local, with_local};
pub use nursery::{Nursery, TaskHandle, TaskStatus, open_nursery};
pub use runner::{Root, Runner, root};
#[cfg(feature = "rt-multi-thread")]
pub use runner::{main, run};
pub use time::current_time;

/// `Result` with trellis's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
