//! Nurseries: tasks that never outlive the code that started them.
//!
//! [`open_nursery`] runs a body with a [`Nursery`] handle; tasks started through the handle run
//! concurrently on tokio, inside the nursery's cancel scope, and `open_nursery` returns only when
//! the body and every task have finished. It is Trio's `async with open_nursery()`.
//!
//! # Failures
//!
//! The first task (or body) that fails cancels the nursery's scope, so the others unwind; every
//! failure is gathered into an [`ErrorGroup`] — always a group, even for one failure, as Trio's
//! strict exception groups. A task that returns `Err(Cancelled)` has not failed: the cancellation
//! is caught by the nursery's scope when the nursery was cancelled itself, and goes on outward
//! otherwise.
//!
//! # Panics
//!
//! A task that panics cancels its siblings like a failure; once every task has finished, the
//! panic resumes in the task that opened the nursery.
//!
//! # Dropping
//!
//! Dropping an `open_nursery` future before it finished (for example in a `select!`) aborts every
//! task of the nursery: each is dropped at its next suspension point, as `JoinSet` does on drop.
//! Cooperative cancellation is the normal way to stop a nursery; this is the backstop that keeps
//! any task from outliving it.

use std::any::Any;
use std::borrow::Cow;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::Instrument as _;

use crate::cancel::CancelScope;
use crate::cancel::node::Node;
use crate::context::{self, InNode};
use crate::dump::{TaskName, TaskSlot};
use crate::error::{
    CancelReason, CancelSource, CancelSplit, Cancelled, Error, IsCancelled, NotStarted,
    NurseryClosed,
};
use crate::group::ErrorGroup;
use crate::instrument::Instruments;

mod task;

use task::{Child, NurseryScope, OwnScope};

/// The message of the group a failed nursery returns.
pub(crate) const GROUP_MESSAGE: &str = "errors in nursery";

/// Runs `body` with a new nursery and waits until the body and every task started in the
/// nursery have finished.
///
/// Returns `Ok(Some(value))` with the body's value, `Ok(None)` when the body was cancelled by the
/// nursery's own scope (see [`Nursery::cancel`]), `Err(group)` with every failure when the body or
/// a task failed, and `Err(Cancelled)` when a scope outside the nursery is cancelled.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// use std::time::Duration;
///
/// let (a, b) = trellis::open_nursery(|n| async move {
///     let a = n.start_soon(async {
///         trellis::sleep(Duration::from_millis(10)).await?;
///         Ok::<_, trellis::Error>(1)
///     })?;
///     let b = n.start_soon(async { Ok::<_, trellis::Error>(2) })?;
///     Ok::<_, trellis::Error>((a, b))
/// })
/// .await?
/// .expect("not cancelled");
/// assert_eq!(a.into_value(), Some(1));
/// assert_eq!(b.into_value(), Some(2));
/// # Ok(()) }
/// ```
pub async fn open_nursery<B, Fut, R, E>(body: B) -> Result<Option<R>, Error>
where
    B: FnOnce(Nursery) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: Into<Error> + IsCancelled,
{
    let parent = context::current();
    let node = Node::new_child(parent.as_ref());
    let shared = Arc::new(Shared {
        instruments: node.instruments().cloned(),
        node: node.clone(),
        span: tracing::debug_span!("nursery"),
        live: AtomicUsize::new(0),
        state: Mutex::new(State {
            handles: Vec::new(),
            waker: None,
            errors: Vec::new(),
            cancelled: None,
            panic: None,
        }),
        saw_cancelled: AtomicBool::new(false),
    });
    node.set_nursery(Arc::downgrade(&shared));
    let mut guard = AbortOnDrop {
        shared: Some(shared.clone()),
    };
    let mut body = pin!(InNode::new(
        body(Nursery {
            shared: shared.clone()
        }),
        node
    ));
    let mut body_done = false;
    let mut body_value = None;
    // What the task that opened the nursery waits on once the body is done, for a dump.
    let mut closing: Option<crate::dump::Recorded> = None;
    poll_fn(|cx| {
        if !body_done {
            match catch_unwind(AssertUnwindSafe(|| body.as_mut().poll(cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(Ok(value))) => {
                    body_done = true;
                    body_value = Some(value);
                }
                Ok(Poll::Ready(Err(error))) => {
                    body_done = true;
                    let cancelled = error.is_cancelled();
                    shared.record_error(error.into(), cancelled, Origin::Body);
                }
                Err(payload) => {
                    body_done = true;
                    shared.record_panic(payload, Origin::Body);
                }
            }
        }
        if !body_done {
            return Poll::Pending;
        }
        let closed = shared.poll_close(cx);
        if closed.is_pending() && closing.is_none() {
            closing = crate::dump::Recorded::start("the nursery's tasks".into());
        }
        closed
    })
    .await;
    drop(closing);
    guard.shared = None;
    shared.finish(body_value)
}

/// A handle to a nursery: starts tasks in it and cancels it. Cheap to clone; tasks may keep a
/// clone and start siblings (Trio's pattern of passing the nursery down).
#[derive(Clone)]
pub struct Nursery {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Nursery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let live = self.shared.live.load(Ordering::SeqCst);
        let errors = self.shared.lock().errors.len();
        f.debug_struct("Nursery")
            .field("tasks", &(live & !CLOSED))
            .field("closed", &(live & CLOSED != 0))
            .field("errors", &errors)
            .finish()
    }
}

impl Nursery {
    /// Starts `future` as a task of the nursery and returns a handle to its value.
    ///
    /// The task runs inside the nursery's cancel scope. If it fails, the nursery is cancelled and
    /// the error goes into the nursery's group. The value of a successful task can be taken from
    /// the handle once the task has finished — in particular once the nursery has returned.
    ///
    /// # Errors
    ///
    /// [`NurseryClosed`] when the nursery has already finished.
    pub fn start_soon<F, T, E>(&self, future: F) -> Result<TaskHandle<T>, NurseryClosed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + IsCancelled + 'static,
    {
        self.start_soon_as(crate::dump::name_of::<F>(), future)
    }

    /// [`start_soon`](Nursery::start_soon) with a name for the task, which a
    /// [`dump`](crate::dump::dump) shows (an unnamed task is named after the function its
    /// future comes from).
    ///
    /// # Errors
    ///
    /// [`NurseryClosed`] when the nursery has already finished.
    pub fn start_soon_named<F, T, E>(
        &self,
        name: impl Into<Cow<'static, str>>,
        future: F,
    ) -> Result<TaskHandle<T>, NurseryClosed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + IsCancelled + 'static,
    {
        self.start_soon_as(TaskName::Given(name.into()), future)
    }

    fn start_soon_as<F, T, E>(
        &self,
        name: TaskName,
        future: F,
    ) -> Result<TaskHandle<T>, NurseryClosed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + IsCancelled + 'static,
    {
        let join = self.shared.spawn(
            None,
            (future, name),
            |outcome, shared: &Shared| match outcome {
                Outcome::Value(value) => Some(value),
                Outcome::Failed(error, cancelled) => {
                    shared.record_error(error, cancelled, Origin::Task);
                    None
                }
                Outcome::Panicked(payload) => {
                    shared.record_panic(payload, Origin::Task);
                    None
                }
            },
        )?;
        Ok(TaskHandle { join: Some(join) })
    }

    /// Starts a task and waits until it reports that it is ready, returning the value it passed
    /// to [`TaskStatus::started`] (Trio's `nursery.start`).
    ///
    /// Until it calls `started`, the task runs inside the *caller's* cancel scope, and if it
    /// fails, returns, or panics, that comes out of `start` itself and the nursery is not
    /// affected. From `started` on, it is an ordinary task of the nursery. A pending `start`
    /// keeps the nursery open.
    ///
    /// ```
    /// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
    /// trellis::open_nursery(|n| async move {
    ///     let port = n
    ///         .start(|status| async move {
    ///             status.started(8080u16); // e.g. once the listener is bound
    ///             Ok::<_, trellis::Error>(())
    ///         })
    ///         .await?;
    ///     assert_eq!(port, 8080);
    ///     Ok::<_, trellis::Error>(())
    /// })
    /// .await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The task's error if it fails before `started`; [`NotStarted`] if it returns without
    /// calling it; [`NurseryClosed`] if the nursery has finished; `Cancelled` if the caller is
    /// cancelled while the task starts.
    ///
    /// # Panics
    ///
    /// Resumes the task's panic when it panics before `started`.
    pub async fn start<F, Fut, V, T, E>(&self, task: F) -> Result<V, Error>
    where
        F: FnOnce(TaskStatus<V>) -> Fut,
        Fut: Future<Output = Result<T, E>> + Send + 'static,
        V: Send + 'static,
        T: Send + 'static,
        E: Into<Error> + IsCancelled + 'static,
    {
        let caller = context::current();
        let node = Node::new_child(caller.as_ref());
        let (tx, rx) = oneshot::channel();
        let link = Arc::new(StartLink {
            tx: Mutex::new(Some(tx)),
            held: Mutex::new(None),
            node: node.clone(),
            nursery: self.shared.clone(),
        });
        let future = task(TaskStatus { link: link.clone() });
        let on_done = move |outcome: Outcome<T>, shared: &Shared| {
            // Until `started` takes the sender, the outcome belongs to the `start` caller.
            let outcome = match link.take_sender() {
                None => outcome,
                Some(tx) => {
                    let report = match outcome {
                        Outcome::Value(_) => match link.take_held() {
                            Some(value) => StartOutcome::Started(value),
                            None => StartOutcome::NotStarted,
                        },
                        // A cancellation by the task's own rule reaches the caller as one.
                        Outcome::Failed(error, true) => {
                            StartOutcome::Failed(Error::from(error.into_cancelled()))
                        }
                        Outcome::Failed(error, false) => StartOutcome::Failed(error),
                        Outcome::Panicked(payload) => StartOutcome::Panicked(payload),
                    };
                    match tx.send(report) {
                        // The caller stopped waiting: a panic must still surface somewhere.
                        Err(StartOutcome::Panicked(payload)) => Outcome::Panicked(payload),
                        _ => return None,
                    }
                }
            };
            match outcome {
                Outcome::Value(_) => {}
                Outcome::Failed(error, cancelled) => {
                    shared.record_error(error, cancelled, Origin::Task);
                }
                Outcome::Panicked(payload) => shared.record_panic(payload, Origin::Task),
            }
            None::<()>
        };
        let name = crate::dump::name_of::<Fut>();
        let join = self
            .shared
            .spawn(Some(node.clone()), (future, name), on_done)?;
        drop(join);
        let cancel_on_drop = CancelOnDrop(Some(node));
        let outcome = rx.await;
        std::mem::forget(cancel_on_drop);
        match outcome {
            Ok(StartOutcome::Started(value)) => Ok(value),
            Ok(StartOutcome::Failed(error)) => Err(error),
            Ok(StartOutcome::NotStarted) => Err(NotStarted.into()),
            Ok(StartOutcome::Panicked(payload)) => resume_unwind(payload),
            // The task was dropped (its runtime is shutting down) before reporting.
            Err(_) => Err(Error::cancelled()),
        }
    }

    /// The nursery's cancel scope.
    pub fn cancel_scope(&self) -> CancelScope {
        CancelScope::from_node(self.shared.node.clone())
    }

    /// Cancels the nursery's scope: the body and every task get `Cancelled` at their next
    /// checkpoint, and the nursery catches those cancellations.
    pub fn cancel(&self) {
        self.cancel_scope().cancel();
    }

    /// [`cancel`](Nursery::cancel) with a reason that the tasks' `Cancelled` carries.
    pub fn cancel_with_reason(&self, reason: impl Into<String>) {
        self.cancel_scope().cancel_with_reason(reason);
    }
}

/// The handle a [`Nursery::start`] task uses to report that it has started.
pub struct TaskStatus<V> {
    link: Arc<StartLink<V>>,
}

impl<V> std::fmt::Debug for TaskStatus<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskStatus").finish_non_exhaustive()
    }
}

impl<V> TaskStatus<V> {
    /// Reports that the task has started: moves it into the nursery's cancel scope and makes
    /// `start` return `value`.
    ///
    /// When the caller of `start` has been cancelled meanwhile, the task is not moved: it goes
    /// on under `start`, which returns once the task finishes — with `value` if it succeeds, or
    /// with its error (usually `Cancelled`), as in Trio.
    pub fn started(self, value: V) {
        if self.link.node.is_cancelled() {
            *self.link.held.lock().unwrap_or_else(|e| e.into_inner()) = Some(value);
            return;
        }
        if let Some(tx) = self.link.take_sender() {
            self.link.node.attach(&self.link.nursery.node);
            // The caller may have stopped waiting; the task stays in the nursery either way.
            let _ = tx.send(StartOutcome::Started(value));
        }
    }
}

/// A handle to the value of a task started with [`Nursery::start_soon`] (what Trio users ask for
/// in python-trio/trio#2633). Dropping it does not affect the task.
pub struct TaskHandle<T> {
    join: Option<JoinHandle<Option<T>>>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle")
            .field("finished", &self.is_finished())
            .finish()
    }
}

impl<T> TaskHandle<T> {
    /// True once the task has finished, successfully or not.
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Takes the task's value: `Some` once it finished successfully (and only the first time),
    /// `None` while it runs or when it failed, panicked or was cancelled.
    pub fn take_value(&mut self) -> Option<T> {
        if !self.is_finished() {
            return None;
        }
        let mut join = self.join.take()?;
        // A finished task's output is ready: one poll takes it, no waker needed.
        match Pin::new(&mut join).poll(&mut Context::from_waker(Waker::noop())) {
            Poll::Ready(Ok(value)) => value,
            Poll::Ready(Err(_)) => None,
            Poll::Pending => {
                self.join = Some(join);
                None
            }
        }
    }

    /// The task's value, if it finished successfully.
    pub fn into_value(mut self) -> Option<T> {
        self.take_value()
    }

    /// Waits for the task to finish and takes its value (`None` if it failed, panicked or was
    /// cancelled, or the value was taken before). A checkpoint.
    pub async fn join(&mut self) -> Result<Option<T>, Cancelled> {
        let Some(join) = self.join.as_mut() else {
            return Ok(None);
        };
        let output = crate::cancel::cancellable_on("a task's end", join).await?;
        self.join = None;
        Ok(output.ok().flatten())
    }
}

/// The state of a nursery, shared by its handle, its tasks and the `open_nursery` future.
pub(crate) struct Shared {
    node: Arc<Node>,
    span: tracing::Span,
    /// The number of running tasks, with [`CLOSED`] set once the nursery has closed. Tasks count
    /// themselves out without a lock; only the last one wakes the nursery.
    live: AtomicUsize,
    state: Mutex<State>,
    saw_cancelled: AtomicBool,
    instruments: Option<Arc<Instruments>>,
}

/// Set in [`Shared::live`] once the nursery has closed to new tasks.
const CLOSED: usize = 1 << (usize::BITS - 1);

struct State {
    /// Abort handles of the tasks, for dropping the nursery mid-flight, with what a dump shows
    /// of each. Finished tasks' are pruned as the list grows, so it stays within twice the
    /// number of running tasks.
    handles: Vec<(AbortHandle, Arc<TaskSlot>)>,
    /// The nursery future, once its body is done and it waits for the tasks.
    waker: Option<Waker>,
    errors: Vec<Error>,
    /// The first cancellation a task returned, with its reason.
    cancelled: Option<Cancelled>,
    panic: Option<Box<dyn Any + Send>>,
}

impl Shared {
    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }

    /// The tasks still running, for a dump.
    pub(crate) fn live_tasks(&self) -> Vec<(tokio::task::Id, Arc<TaskSlot>)> {
        (self.lock().handles.iter())
            .filter(|(h, _)| !h.is_finished())
            .map(|(h, slot)| (h.id(), slot.clone()))
            .collect()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Spawns a task running `future` in the nursery's node, or in `own_node` (for `start`);
    /// `on_done` routes its outcome and gives the value its `JoinHandle` yields.
    fn spawn<F, T, E, U, D>(
        self: &Arc<Self>,
        own_node: Option<Arc<Node>>,
        (future, name): (F, TaskName),
        on_done: D,
    ) -> Result<JoinHandle<Option<U>>, NurseryClosed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        E: Into<Error> + IsCancelled,
        U: Send + 'static,
        D: FnOnce(Outcome<T>, &Shared) -> Option<U> + Send + 'static,
    {
        let mut live = self.live.load(Ordering::Relaxed);
        loop {
            if live & CLOSED != 0 {
                return Err(NurseryClosed);
            }
            match self.live.compare_exchange_weak(
                live,
                live + 1,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => live = now,
            }
        }
        let slot = TaskSlot::new(name);
        let join = match own_node {
            None => self.spawn_child(Child {
                future: Some(future),
                scope: NurseryScope(Some(self.clone())),
                on_done: Some(on_done),
                polled: false,
                slot: Some(slot.clone()),
            }),
            Some(node) => self.spawn_child(Child {
                future: Some(future),
                scope: OwnScope {
                    node: Some(node),
                    nursery: self.clone(),
                },
                on_done: Some(on_done),
                polled: false,
                slot: Some(slot.clone()),
            }),
        };
        let mut state = self.lock();
        if state.handles.len() >= 64 && state.handles.len() >= 2 * (live & !CLOSED) {
            state.handles.retain(|(h, _)| !h.is_finished());
        }
        state.handles.push((join.abort_handle(), slot));
        Ok(join)
    }

    fn spawn_child<C>(&self, child: C) -> JoinHandle<C::Output>
    where
        C: Future + Send + 'static,
        C::Output: Send + 'static,
    {
        if self.span.is_none() {
            tokio::spawn(child)
        } else {
            tokio::spawn(child.instrument(tracing::trace_span!(parent: &self.span, "task")))
        }
    }

    /// A task (or the body) ended with an error. `cancelled` is what the error's own
    /// [`IsCancelled`] said: the one rule, as for `CancelScope::run`.
    fn record_error(&self, error: Error, cancelled: bool, from: Origin) {
        if cancelled {
            // Not a failure: whether it is caught here or goes on outward is decided at the end.
            // Checked first so that 10,000 cancelled tasks do not all write the shared line.
            if !self.saw_cancelled.load(Ordering::Relaxed) {
                self.saw_cancelled.store(true, Ordering::Relaxed);
                let mut state = self.lock();
                if state.cancelled.is_none() {
                    // Kept (with its reason) in case the cancellation goes on outward with
                    // failures beside it.
                    state.cancelled = Some(error.into_cancelled());
                }
            }
            return;
        }
        let reason = || {
            let first_line = error.to_string();
            let first_line = first_line.lines().next().unwrap_or_default();
            CancelReason::new(CancelSource::Nursery)
                .with_message(format!("{} failed: {first_line}", from.as_str()))
        };
        self.node.cancel(reason);
        self.lock().errors.push(error);
    }

    fn record_panic(&self, payload: Box<dyn Any + Send>, from: Origin) {
        self.node.cancel(|| {
            CancelReason::new(CancelSource::Nursery)
                .with_message(format!("{} panicked", from.as_str()))
        });
        self.lock().panic.get_or_insert(payload);
    }

    fn task_done(&self) {
        if self.live.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = self.lock().waker.take();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// Once the body is done: ready when no task is left, at which point the nursery closes to
    /// new tasks. Every task has then counted itself out; the nursery still waits until tokio
    /// has finished each one too, so that no task outlives it even by a few instructions and
    /// every value is in its `TaskHandle` when `open_nursery` returns.
    fn poll_close(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.live.load(Ordering::Acquire) != CLOSED {
            {
                let mut state = self.lock();
                if !state
                    .waker
                    .as_ref()
                    .is_some_and(|w| w.will_wake(cx.waker()))
                {
                    state.waker = Some(cx.waker().clone());
                }
            }
            // After registering: a task that finishes now either sees our waker or we see zero.
            if self
                .live
                .compare_exchange(0, CLOSED, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                return Poll::Pending;
            }
        }
        let mut state = self.lock();
        state.waker = None;
        state.handles.retain(|(h, _)| !h.is_finished());
        if state.handles.is_empty() {
            return Poll::Ready(());
        }
        // The stragglers are between counting themselves out and tokio marking them complete,
        // on another worker: a matter of instructions, so poll again soon. This thread gives
        // its CPU away first: when threads outnumber CPUs, the straggler's may be the one it
        // would spin on.
        std::thread::yield_now();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn finish<R>(&self, body_value: Option<R>) -> Result<Option<R>, Error> {
        let (errors, panic) = {
            let mut state = self.lock();
            state.handles = Vec::new();
            (std::mem::take(&mut state.errors), state.panic.take())
        };
        let saw_cancelled = self.saw_cancelled.load(Ordering::Relaxed);
        // A failed task's group may hold cancellations too (a nursery of its own, cancelled
        // from here): the nursery's scope catches those as well.
        let nested_cancelled = errors.iter().any(|e| {
            e.as_group()
                .is_some_and(|g| g.leaves().any(Error::is_cancelled))
        });
        let caught = (saw_cancelled || nested_cancelled) && self.node.try_catch();
        let errors: Vec<Error> = if caught && nested_cancelled {
            errors
                .into_iter()
                .filter_map(|e| match e.split_cancelled() {
                    CancelSplit::Cancelled => None,
                    CancelSplit::Mixed(failures) | CancelSplit::Failure(failures) => Some(failures),
                })
                .collect()
        } else {
            errors
        };
        let cancelled = self.lock().cancelled.take();
        self.node.leave();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        let cancelled = (saw_cancelled && !caught)
            .then(|| cancelled.map_or_else(Error::cancelled, Error::from));
        match (errors.is_empty(), cancelled) {
            (true, Some(cancelled)) => Err(cancelled),
            (true, None) => Ok(body_value),
            (false, cancelled) => {
                // A cancellation from outside goes on outward beside the failures (Trio keeps
                // the `Cancelled` in the group); the scope that catches it takes it out.
                let mut errors = errors;
                errors.extend(cancelled);
                Err(ErrorGroup::new(GROUP_MESSAGE, errors).into())
            }
        }
    }
}

/// Aborts the tasks of a nursery whose future is dropped before it finished.
struct AbortOnDrop {
    shared: Option<Arc<Shared>>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.node.cancel(|| {
                CancelReason::new(CancelSource::Nursery)
                    .with_message("the nursery's future was dropped")
            });
            shared.live.fetch_or(CLOSED, Ordering::AcqRel);
            let handles = std::mem::take(&mut shared.lock().handles);
            handles.iter().for_each(|(h, _)| h.abort());
            shared.node.detach();
        }
    }
}

/// Cancels a `start` task whose caller stopped waiting for it.
struct CancelOnDrop(Option<Arc<Node>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            node.cancel(|| {
                CancelReason::new(CancelSource::Nursery)
                    .with_message("the caller of start stopped waiting")
            });
        }
    }
}

struct StartLink<V> {
    tx: Mutex<Option<oneshot::Sender<StartOutcome<V>>>>,
    /// The value of a `started` call made while the caller was cancelled.
    held: Mutex<Option<V>>,
    node: Arc<Node>,
    nursery: Arc<Shared>,
}

impl<V> StartLink<V> {
    fn take_sender(&self) -> Option<oneshot::Sender<StartOutcome<V>>> {
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take()
    }

    fn take_held(&self) -> Option<V> {
        self.held.lock().unwrap_or_else(|e| e.into_inner()).take()
    }
}

enum StartOutcome<V> {
    Started(V),
    Failed(Error),
    NotStarted,
    Panicked(Box<dyn Any + Send>),
}

enum Outcome<T> {
    Value(T),
    /// The error, and whether the task's own error type called it a cancellation.
    Failed(Error, bool),
    Panicked(Box<dyn Any + Send>),
}

/// Where a failure in a nursery came from, for the reason its siblings are cancelled with.
#[derive(Clone, Copy)]
enum Origin {
    Task,
    Body,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Task => "task",
            Origin::Body => "nursery body",
        }
    }
}
