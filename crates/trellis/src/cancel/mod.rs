//! Cancel scopes, checkpoints and timeouts.
//!
//! A [`CancelScope`] is where cancellation originates: code run inside it with
//! [`CancelScope::run`] gets `Err(Cancelled)` from every checkpoint once the scope is cancelled
//! (by [`cancel`](CancelScope::cancel), from any task or thread, or by its deadline), and keeps
//! getting it until it leaves the scope. Cancellation is level-triggered and cooperative: nothing
//! is dropped, `?` carries `Cancelled` out to the scope, and the scope turns it into `Ok(None)`.
//!
//! A scope is *effectively cancelled* when it or any scope around it, up to the nearest shielded
//! one, is cancelled. A scope catches the `Cancelled` that reaches it only when it was cancelled
//! itself and no cancellation from outside is visible; otherwise the error continues outward to
//! the scope that caused it.

mod checkpoint;
pub(crate) mod node;
mod scope;
mod timeouts;

pub(crate) use checkpoint::{CancelWait, cancellable_on};
pub use checkpoint::{
    Cancellable, Checkpoint, cancellable, checkpoint, checkpoint_if_cancelled,
    current_effective_deadline, sleep, sleep_forever, sleep_until,
};
pub use scope::{CancelScope, ScopeRun};
pub use timeouts::{FailAfter, MoveOn, fail_after, fail_at, move_on_after, move_on_at};
