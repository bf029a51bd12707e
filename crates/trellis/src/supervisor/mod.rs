//! Supervisors: a nursery that restarts its tasks instead of cancelling them.
//!
//! [`open_supervisor`] is Erlang/OTP's supervisor inside structured concurrency. Its children
//! are tasks made by a function that the supervisor calls again to restart one; when a child
//! fails, the [`Strategy`] decides which children restart, each child's [`Restart`] policy
//! decides whether it restarts at all, and the restart intensity bounds how often: more than
//! `max_restarts` restarts within `period` and the supervisor gives up. Nothing outlives it:
//! every child is a task of the supervisor's own nursery, and `open_supervisor` returns only
//! when every child has ended.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread", start_paused = true)] async fn main() -> Result<(), trellis::Error> {
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::time::Duration;
//! use trellis::supervisor::{Restart, Strategy, Supervision, open_supervisor};
//!
//! let attempts = Arc::new(AtomicU32::new(0));
//! let tries = attempts.clone();
//! open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
//!     // A worker that fails on its first run and succeeds on the second.
//!     sup.start("worker", Restart::Transient, move || {
//!         let attempt = tries.fetch_add(1, Ordering::Relaxed);
//!         async move {
//!             trellis::sleep(Duration::from_millis(10)).await?;
//!             if attempt == 0 {
//!                 return Err(trellis::Error::msg("flaky"));
//!             }
//!             Ok(())
//!         }
//!     })?;
//!     Ok::<_, trellis::Error>(())
//! })
//! .await?;
//! assert_eq!(attempts.load(Ordering::Relaxed), 2);
//! # Ok(()) }
//! ```
//!
//! # When a child ends
//!
//! | the child | `Permanent` | `Transient` | `Temporary` |
//! |---|---|---|---|
//! | returns `Ok(())` | restarted | removed | removed |
//! | fails (`Err`, a panic, a `Cancelled` its supervisor did not ask for) | restarted | restarted | removed |
//!
//! A restart counts towards the intensity once, whatever the strategy restarts with it. The
//! children a strategy restarts with the failed one are cancelled first, one at a time from the
//! last started (each one's cleanup runs, as in a nursery), and every one has ended before any
//! of them starts again, in the order they were first started.
//!
//! # Giving up
//!
//! When a restart would exceed the intensity, the supervisor cancels every child (last started
//! first) and returns an [`ErrorGroup`] of every cause counted in the window: its parent
//! decides, so supervisors nest as Erlang's do (a supervisor is a child like any other).
//!
//! # Ending
//!
//! `open_supervisor` returns once its body has returned and no child is left (children that
//! are not restarted are removed), when [`Supervisor::shutdown`] was called (children stopped
//! last started first, then `Ok(None)`), or when a scope outside is cancelled: then every child
//! is cancelled at once, as in a nursery, and it returns `Err(Cancelled)`. A supervisor that
//! is itself the child of another, stopped by it, sees a cancellation from outside too: its
//! own children are cancelled at once, not one by one.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, IsCancelled};
use crate::group::ErrorGroup;

mod backoff;
mod control;
mod state;

pub use backoff::Backoff;
use control::Shared;
use state::{Factory, Removal};

/// Which children restart when one fails (OTP's restart strategies).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Strategy {
    /// Only the child that failed restarts (`one_for_one`).
    OneForOne,
    /// Every child restarts (`one_for_all`): for children that cannot run without each other.
    OneForAll,
    /// The child that failed and every child started after it restart (`rest_for_one`): for
    /// children that depend on the ones started before them.
    RestForOne,
}

/// Whether a child restarts when it ends (OTP's restart types).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Restart {
    /// Always restarted, also after returning `Ok(())`: a child that should run forever.
    Permanent,
    /// Restarted only after a failure; removed when it returns `Ok(())`.
    Transient,
    /// Never restarted; removed when it ends. A strategy that stops it to restart its siblings
    /// removes it too.
    Temporary,
}

/// How a supervisor supervises: its strategy, restart intensity, backoff and name.
///
/// The defaults are OTP's: at most 1 restart within 5 seconds, restarts without delay.
#[derive(Clone, Debug)]
pub struct Supervision {
    pub(crate) name: Cow<'static, str>,
    pub(crate) strategy: Strategy,
    pub(crate) max_restarts: u32,
    pub(crate) period: Duration,
    pub(crate) backoff: Backoff,
}

impl Supervision {
    /// A supervisor with `strategy`, OTP's default intensity (1 restart within 5 s) and no
    /// backoff.
    pub fn new(strategy: Strategy) -> Self {
        Supervision {
            name: Cow::Borrowed("supervisor"),
            strategy,
            max_restarts: 1,
            period: Duration::from_secs(5),
            backoff: Backoff::NONE,
        }
    }

    /// The name its tracing events and errors give it.
    pub fn name(mut self, name: impl Into<Cow<'static, str>>) -> Self {
        self.name = name.into();
        self
    }

    /// Gives up when more than `max_restarts` restarts happen within `period` (OTP's intensity
    /// and period). `max_restarts` 0 gives up at the first failure that would restart.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Self {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }

    /// Waits before each restart, longer after each restart of the same child within the
    /// intensity period.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = backoff;
        self
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }
}

/// Runs `body` with a new [`Supervisor`] and returns once the body has returned and no child is
/// left, or the supervisor was shut down, gave up, or was cancelled (see the
/// [module](self)).
///
/// # Errors
///
/// An [`ErrorGroup`] with every cause when the restart intensity was exceeded; an `ErrorGroup`
/// holding the body's error when the body failed (every child is then cancelled);
/// `Cancelled` when a scope outside was cancelled. `Ok(None)` after
/// [`shutdown`](Supervisor::shutdown).
///
/// # Panics
///
/// A panic in the body resumes here once every child has ended, as in a nursery. A panic in a
/// child is that child's failure ([`ChildPanicked`]).
pub async fn open_supervisor<B, Fut, T, E>(
    supervision: Supervision,
    body: B,
) -> Result<Option<T>, Error>
where
    B: FnOnce(Supervisor) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
{
    control::run(supervision, body).await
}

/// The handle to a running supervisor: start and stop children, look at them, shut it down.
/// Cheap to clone; a clone may outlive the supervisor (then [`start`](Supervisor::start)
/// fails with [`StartError::Closed`]).
#[derive(Clone)]
pub struct Supervisor {
    shared: Arc<Shared>,
}

impl fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Supervisor")
            .field("name", &self.shared.config.name)
            .field("strategy", &self.shared.config.strategy)
            .field("children", &self.children())
            .finish()
    }
}

impl Supervisor {
    /// Starts a child named `name` (unique among this supervisor's children): `child` is
    /// called in the child's task to make its future, and again for each restart (a panic
    /// there is the child's failure). The child runs in a cancel scope of its own inside the
    /// supervisor's nursery. The returned handle tells when it is removed for good.
    ///
    /// # Errors
    ///
    /// [`StartError::DuplicateName`] when a child of that name is still supervised;
    /// [`StartError::Closed`] when the supervisor has ended or is ending.
    pub fn start<F, Fut, E>(
        &self,
        name: impl Into<String>,
        restart: Restart,
        mut child: F,
    ) -> Result<ChildHandle, StartError>
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Into<Error> + Send + 'static,
    {
        let factory: Factory = Box::new(move || {
            let future = child();
            Box::pin(async move { future.await.map_err(Into::into) })
                as Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>
        });
        self.shared
            .add(name.into(), restart, Arc::new(Mutex::new(factory)))
    }

    /// Stops the child named `name` and removes it (OTP's `terminate_child` and
    /// `delete_child`): it is cancelled and not restarted. Returns whether it was there.
    pub fn stop(&self, name: &str) -> bool {
        self.shared.stop(name)
    }

    /// Stops every child, last started first, each ending before the next is cancelled; then
    /// the body is cancelled and [`open_supervisor`] returns `Ok(None)`.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }

    /// The children now supervised, in the order they were started.
    pub fn children(&self) -> Vec<ChildStatus> {
        self.shared.children()
    }

    /// How many times a child was restarted, in all.
    pub fn restarts(&self) -> u64 {
        self.shared.restarts()
    }

    /// Its name (see [`Supervision::name`]).
    pub fn name(&self) -> &str {
        &self.shared.config.name
    }

    /// The configuration it runs with.
    pub fn supervision(&self) -> &Supervision {
        &self.shared.config
    }
}

/// A child started by [`Supervisor::start`]: tells when it is removed for good (its policy
/// did not restart it, it was stopped, or the supervisor ended). Cheap to clone.
#[derive(Clone)]
pub struct ChildHandle {
    name: String,
    removal: Arc<Removal>,
}

impl fmt::Debug for ChildHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildHandle")
            .field("name", &self.name)
            .field("removed", &self.removed_because())
            .finish()
    }
}

impl ChildHandle {
    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether it was removed for good.
    pub fn is_removed(&self) -> bool {
        self.removal.event.is_set()
    }

    /// Why it was removed, once it was.
    pub fn removed_because(&self) -> Option<&'static str> {
        self.is_removed()
            .then(|| self.removal.reason.get().copied())
            .flatten()
    }

    /// Waits until it is removed for good; a checkpoint.
    ///
    /// # Errors
    ///
    /// `Cancelled`.
    pub async fn removed(&self) -> Result<(), crate::Cancelled> {
        self.removal.event.wait().await
    }
}

/// One child, as [`Supervisor::children`] shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ChildStatus {
    /// Its name.
    pub name: String,
    /// Its restart policy.
    pub restart: Restart,
    /// Whether it runs now.
    pub state: ChildState,
    /// How many times it was restarted.
    pub restarts: u64,
    /// Why it last ended, when that was a failure or a sibling's.
    pub last_cause: Option<String>,
}

/// Where a child is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ChildState {
    /// Its first run is being started.
    Starting,
    /// Its task runs.
    Running,
    /// It was cancelled and is finishing.
    Stopping,
    /// It ended and will start again (after its siblings stop, or its backoff).
    Restarting,
}

/// Why [`Supervisor::start`] did not start a child.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// A child of that name is supervised already; stop it or choose another name.
    #[error("a child named `{0}` is supervised already")]
    DuplicateName(String),
    /// The supervisor has ended, or is shutting down or giving up.
    #[error("the supervisor is closed")]
    Closed,
}

/// A child panicked: the failure its supervisor counts and reports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("child `{child}` panicked: {message}")]
pub struct ChildPanicked {
    /// The child's name.
    pub child: String,
    /// The panic's message, when it was a string.
    pub message: String,
}

/// A permanent child returned: the cause its supervisor counts for restarting it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("permanent child `{child}` returned")]
pub struct ChildReturned {
    /// The child's name.
    pub child: String,
}

/// The message of the group a supervisor that gave up returns.
fn gave_up_message(config: &Supervision, restarts: usize) -> String {
    format!(
        "supervisor `{}` gave up: {restarts} restarts within {:?} (at most {} allowed)",
        config.name, config.period, config.max_restarts
    )
}

fn gave_up(config: &Supervision, causes: Vec<Error>) -> ErrorGroup {
    ErrorGroup::new(gave_up_message(config, causes.len()), causes)
}
