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
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::cancel::CancelScope;
use crate::cancel::node::Node;
use crate::context::{self, InNode};
use crate::error::{Error, NotStarted, NurseryClosed};
use crate::group::ErrorGroup;
use crate::instrument::{Instruments, TaskId};

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
/// let handles = trellis::open_nursery(|n| async move {
///     let a = n.start_soon(async {
///         trellis::sleep(Duration::from_millis(10)).await?;
///         Ok::<_, trellis::Error>(1)
///     })?;
///     let b = n.start_soon(async { Ok::<_, trellis::Error>(2) })?;
///     Ok::<_, trellis::Error>((a, b))
/// })
/// .await?
/// .expect("not cancelled");
/// assert_eq!(handles.0.into_value(), Some(1));
/// assert_eq!(handles.1.into_value(), Some(2));
/// # Ok(()) }
/// ```
pub async fn open_nursery<B, Fut, R, E>(body: B) -> Result<Option<R>, Error>
where
    B: FnOnce(Nursery) -> Fut,
    Fut: Future<Output = Result<R, E>>,
    E: Into<Error>,
{
    let parent = context::current();
    let node = Node::new_child(parent.as_ref());
    let instruments = node.instruments().cloned();
    let shared = Arc::new(Shared {
        node: node.clone(),
        span: tracing::debug_span!("nursery"),
        state: Mutex::new(State {
            tasks: JoinSet::new(),
            closed: false,
            errors: Vec::new(),
            panic: None,
        }),
        saw_cancelled: AtomicBool::new(false),
        instruments,
    });
    let mut guard = AbortOnDrop { shared: Some(shared.clone()) };
    let mut body = pin!(InNode { inner: body(Nursery { shared: shared.clone() }), node });
    let mut body_done = false;
    let mut body_value = None;
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
                    shared.record_error(error.into());
                }
                Err(payload) => {
                    body_done = true;
                    shared.record_panic(payload);
                }
            }
        }
        shared.poll_tasks(cx, body_done)
    })
    .await;
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
        let state = self.shared.lock();
        f.debug_struct("Nursery")
            .field("tasks", &state.tasks.len())
            .field("closed", &state.closed)
            .field("errors", &state.errors.len())
            .finish()
    }
}

impl Nursery {
    /// Starts `future` as a task of the nursery and returns a handle to its value.
    ///
    /// The task runs inside the nursery's cancel scope. If it fails, the nursery is cancelled and
    /// the error goes into the nursery's group. The value of a successful task can be taken from
    /// the handle once the nursery has returned (or earlier, once the task finished).
    ///
    /// # Errors
    ///
    /// [`NurseryClosed`] when the nursery has already finished.
    pub fn start_soon<F, T, E>(&self, future: F) -> Result<TaskHandle<T>, NurseryClosed>
    where
        F: Future<Output = Result<T, E>> + Send + 'static,
        T: Send + 'static,
        E: Into<Error> + 'static,
    {
        let slot = Arc::new(Slot { value: Mutex::new(SlotState::Running) });
        let shared = self.shared.clone();
        let task_slot = slot.clone();
        let child = Child {
            future,
            node: self.shared.node.clone(),
            on_done: Some(move |outcome| match outcome {
                Outcome::Value(value) => task_slot.set(SlotState::Done(value)),
                Outcome::Failed(error) => {
                    task_slot.set(SlotState::Failed);
                    shared.record_error(error);
                }
                Outcome::Panicked(payload) => {
                    task_slot.set(SlotState::Failed);
                    shared.record_panic(payload);
                }
            }),
            id: self.shared.instruments.as_ref().map(|_| TaskId::next()),
            instruments: self.shared.instruments.clone(),
        };
        self.shared.spawn(child)?;
        Ok(TaskHandle { slot })
    }

    /// Starts a task and waits until it reports that it is ready, returning the value it passed
    /// to [`TaskStatus::started`] (Trio's `nursery.start`).
    ///
    /// Until it calls `started`, the task runs inside the *caller's* cancel scope, and if it
    /// fails, returns, or panics, that comes out of `start` itself and the nursery is not
    /// affected. From `started` on, it is an ordinary task of the nursery.
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
        E: Into<Error> + 'static,
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
        let shared = self.shared.clone();
        let child = Child {
            future,
            node: node.clone(),
            on_done: Some(move |outcome: Outcome<T>| {
                // Until `started` takes the sender, the outcome belongs to the `start` caller.
                let outcome = match link.take_sender() {
                    None => outcome,
                    Some(tx) => {
                        let report = match outcome {
                            Outcome::Value(_) => match link.take_held() {
                                Some(value) => StartOutcome::Started(value),
                                None => StartOutcome::NotStarted,
                            },
                            Outcome::Failed(error) => StartOutcome::Failed(error),
                            Outcome::Panicked(payload) => StartOutcome::Panicked(payload),
                        };
                        match tx.send(report) {
                            // The caller stopped waiting: a panic must still surface somewhere.
                            Err(StartOutcome::Panicked(payload)) => Outcome::Panicked(payload),
                            _ => return,
                        }
                    }
                };
                match outcome {
                    Outcome::Value(_) => {}
                    Outcome::Failed(error) => shared.record_error(error),
                    Outcome::Panicked(payload) => shared.record_panic(payload),
                }
            }),
            id: self.shared.instruments.as_ref().map(|_| TaskId::next()),
            instruments: self.shared.instruments.clone(),
        };
        self.shared.spawn(child)?;
        let cancel_on_drop = CancelOnDrop(Some(node));
        let outcome = rx.await;
        std::mem::forget(cancel_on_drop);
        match outcome {
            Ok(StartOutcome::Started(value)) => Ok(value),
            Ok(StartOutcome::Failed(error)) => Err(error),
            Ok(StartOutcome::NotStarted) => Err(NotStarted.into()),
            Ok(StartOutcome::Panicked(payload)) => resume_unwind(payload),
            // The task was aborted (its runtime is shutting down) before reporting.
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
        self.shared.node.cancel();
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
        let tx = self.link.take_sender();
        if let Some(tx) = tx {
            self.link.node.attach(&self.link.nursery.node);
            // The caller may have stopped waiting; the task stays in the nursery either way.
            let _ = tx.send(StartOutcome::Started(value));
        }
    }
}

/// A handle to the value of a task started with [`Nursery::start_soon`] (what Trio users ask for
/// in python-trio/trio#2633).
pub struct TaskHandle<T> {
    slot: Arc<Slot<T>>,
}

impl<T> std::fmt::Debug for TaskHandle<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskHandle").field("finished", &self.is_finished()).finish()
    }
}

impl<T> TaskHandle<T> {
    /// True once the task has finished, successfully or not.
    pub fn is_finished(&self) -> bool {
        !matches!(*self.slot.lock(), SlotState::Running)
    }

    /// Takes the task's value: `Some` once it finished successfully (and only the first time),
    /// `None` while it runs or when it failed, panicked or was cancelled.
    pub fn take_value(&self) -> Option<T> {
        let mut state = self.slot.lock();
        match std::mem::replace(&mut *state, SlotState::Taken) {
            SlotState::Done(value) => Some(value),
            other => {
                *state = other;
                None
            }
        }
    }

    /// The task's value, if it finished successfully.
    pub fn into_value(self) -> Option<T> {
        self.take_value()
    }
}

struct Slot<T> {
    value: Mutex<SlotState<T>>,
}

enum SlotState<T> {
    Running,
    Done(T),
    Failed,
    Taken,
}

impl<T> Slot<T> {
    fn lock(&self) -> MutexGuard<'_, SlotState<T>> {
        self.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set(&self, state: SlotState<T>) {
        *self.lock() = state;
    }
}

struct Shared {
    node: Arc<Node>,
    span: tracing::Span,
    state: Mutex<State>,
    saw_cancelled: AtomicBool,
    instruments: Option<Arc<Instruments>>,
}

struct State {
    tasks: JoinSet<()>,
    closed: bool,
    errors: Vec<Error>,
    panic: Option<Box<dyn Any + Send>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn spawn<F, D>(&self, child: Child<F, D>) -> Result<(), NurseryClosed>
    where
        Child<F, D>: Future<Output = ()> + Send + 'static,
    {
        let mut state = self.lock();
        if state.closed {
            return Err(NurseryClosed);
        }
        if let (Some(instruments), Some(id)) = (&self.instruments, child.id) {
            instruments.task_spawned(id);
        }
        let span = tracing::trace_span!(parent: &self.span, "task");
        state.tasks.spawn(child.instrument(span));
        Ok(())
    }

    fn record_error(&self, error: Error) {
        if error.is_cancelled() {
            // Not a failure: whether it is caught here or goes on outward is decided at the end.
            self.saw_cancelled.store(true, Ordering::SeqCst);
            return;
        }
        self.lock().errors.push(error);
        self.node.cancel();
    }

    fn record_panic(&self, payload: Box<dyn Any + Send>) {
        self.lock().panic.get_or_insert(payload);
        self.node.cancel();
    }

    /// Reaps finished tasks; ready once the body is done and no task is left, at which point
    /// the nursery closes to new tasks.
    fn poll_tasks(&self, cx: &mut Context<'_>, body_done: bool) -> Poll<()> {
        let mut state = self.lock();
        loop {
            match state.tasks.poll_join_next(cx) {
                Poll::Ready(Some(Ok(()))) => {}
                Poll::Ready(Some(Err(join_error))) => {
                    if join_error.is_panic() {
                        // Only a panic in a `Drop` of the task escapes `Child`'s catch.
                        state.panic.get_or_insert(join_error.into_panic());
                        drop(state);
                        self.node.cancel();
                        state = self.lock();
                    } else {
                        // Aborted by runtime shutdown.
                        self.saw_cancelled.store(true, Ordering::SeqCst);
                    }
                }
                Poll::Ready(None) => break,
                Poll::Pending => return Poll::Pending,
            }
        }
        if body_done {
            state.closed = true;
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    fn finish<R>(&self, body_value: Option<R>) -> Result<Option<R>, Error> {
        let (errors, panic) = {
            let mut state = self.lock();
            (std::mem::take(&mut state.errors), state.panic.take())
        };
        let caught = self.saw_cancelled.load(Ordering::SeqCst) && self.node.try_catch();
        self.node.detach();
        if let Some(payload) = panic {
            resume_unwind(payload);
        }
        if !errors.is_empty() {
            return Err(ErrorGroup::new(GROUP_MESSAGE, errors).into());
        }
        if self.saw_cancelled.load(Ordering::SeqCst) && !caught {
            return Err(Error::cancelled());
        }
        Ok(body_value)
    }
}

/// Aborts the tasks of a nursery whose future is dropped before it finished.
struct AbortOnDrop {
    shared: Option<Arc<Shared>>,
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            shared.node.cancel();
            let mut state = shared.lock();
            state.closed = true;
            state.tasks.abort_all();
            drop(state);
            shared.node.detach();
        }
    }
}

/// Cancels a `start` task whose caller stopped waiting for it.
struct CancelOnDrop(Option<Arc<Node>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(node) = self.0.take() {
            node.cancel();
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
    Failed(Error),
    Panicked(Box<dyn Any + Send>),
}

pin_project_lite::pin_project! {
    /// A nursery task: polls the user's future in the task's cancel node, catches its panic and
    /// hands the outcome to `on_done`.
    struct Child<F, D> {
        #[pin]
        future: F,
        node: Arc<Node>,
        on_done: Option<D>,
        id: Option<TaskId>,
        instruments: Option<Arc<Instruments>>,
    }
}

impl<F, T, E, D> Future for Child<F, D>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
    D: FnOnce(Outcome<T>),
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let entered = context::enter(this.node.clone());
        let polled = match (this.instruments.as_ref(), *this.id) {
            (Some(instruments), Some(id)) => instruments.step(id, cx, |cx| {
                catch_unwind(AssertUnwindSafe(|| this.future.poll(cx)))
            }),
            _ => catch_unwind(AssertUnwindSafe(|| this.future.poll(cx))),
        };
        let outcome = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(value))) => Outcome::Value(value),
            Ok(Poll::Ready(Err(error))) => Outcome::Failed(error.into()),
            Err(payload) => Outcome::Panicked(payload),
        };
        drop(entered);
        if let Some(on_done) = this.on_done.take() {
            on_done(outcome);
        }
        if let (Some(instruments), Some(id)) = (this.instruments.as_ref(), *this.id) {
            instruments.task_exited(id);
        }
        Poll::Ready(())
    }
}
