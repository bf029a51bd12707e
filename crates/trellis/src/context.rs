//! The task-local view of cancellation: which cancel node the running code sits in.
//!
//! Every future that trellis polls on behalf of a scope or a nursery task installs its node in a
//! thread-local for the duration of the poll and restores the previous one afterwards, also when
//! the poll unwinds. Checkpoints read it. Code running outside any trellis scope sees no node and
//! is never cancelled, so trellis primitives also work in plain tokio tasks.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::cancel::node::Node;
use crate::nursery::Shared;

/// What the running code sits in: a scope's node, or a nursery (whose node its tasks share).
/// Keeping the nursery itself lets a task own one reference that serves both purposes.
pub(crate) enum Current {
    Node(Arc<Node>),
    Nursery(Arc<Shared>),
}

impl Current {
    pub(crate) fn node(&self) -> &Arc<Node> {
        match self {
            Current::Node(node) => node,
            Current::Nursery(shared) => shared.node(),
        }
    }
}

/// Everything trellis keeps per thread, in one thread-local so that a checkpoint touches it
/// once.
struct Local {
    current: RefCell<Option<Current>>,
    checkpoints: Cell<u64>,
    /// Operations that completed without yielding since the last forced yield on this thread.
    unyielded: Cell<u32>,
}

thread_local! {
    static LOCAL: Local = const {
        Local { current: RefCell::new(None), checkpoints: Cell::new(0), unyielded: Cell::new(0) }
    };
}

/// How many operations may complete in a row on a thread before one yields: the same budget
/// tokio gives a task, kept in our own thread-local so that it costs nothing extra.
const YIELD_EVERY: u32 = 128;

/// The start of an operation that is a checkpoint: counts it, tells whether the current node
/// is cancelled, and whether the thread has run long enough that this operation should yield
/// first (a schedule point).
#[inline]
pub(crate) fn start_operation() -> (bool, bool) {
    LOCAL.with(|l| {
        l.checkpoints.set(l.checkpoints.get().wrapping_add(1));
        let n = l.unyielded.get() + 1;
        // Under loom the budget would carry over between explored executions (it lives in a
        // real thread-local) and make the model non-deterministic; it is not what is modelled.
        let yield_now = n >= YIELD_EVERY && !cfg!(trellis_loom);
        l.unyielded.set(if yield_now { 0 } else { n });
        let cancelled = l
            .current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.node().is_cancelled());
        (cancelled, yield_now)
    })
}

/// The node of the code being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    LOCAL.with(|l| l.current.borrow().as_ref().map(|c| c.node().clone()))
}

/// Runs `f` with the current node borrowed (no reference-count traffic).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    LOCAL.with(|l| f(l.current.borrow().as_ref().map(Current::node)))
}

/// Counts a checkpoint and tells whether the current node is cancelled, in one access.
#[inline]
pub(crate) fn checkpoint_is_cancelled() -> bool {
    LOCAL.with(|l| {
        l.checkpoints.set(l.checkpoints.get().wrapping_add(1));
        l.current
            .borrow()
            .as_ref()
            .is_some_and(|c| c.node().is_cancelled())
    })
}

/// Something that holds what a future runs in, and lends it to the thread-local while the future
/// is polled.
pub(crate) trait Slot {
    fn take(&mut self) -> Current;
    fn restore(&mut self, current: Current);
}

impl Slot for Option<Current> {
    fn take(&mut self) -> Current {
        Option::take(self).expect("a slot is entered once at a time")
    }

    fn restore(&mut self, current: Current) {
        *self = Some(current);
    }
}

/// Moves the slot's value into the thread-local for as long as the guard lives, then moves it
/// back: no reference counting per poll.
pub(crate) fn enter<S: Slot>(slot: &mut S) -> Entered<'_, S> {
    let prev = LOCAL.with(|l| l.current.replace(Some(slot.take())));
    Entered { slot, prev }
}

/// Puts the entered value back into its slot, and the previous one into the thread-local, when
/// dropped (also during unwinding).
pub(crate) struct Entered<'a, S: Slot> {
    slot: &'a mut S,
    prev: Option<Current>,
}

impl<S: Slot> Drop for Entered<'_, S> {
    fn drop(&mut self) {
        let prev = self.prev.take();
        if let Some(current) = LOCAL.with(|l| l.current.replace(prev)) {
            self.slot.restore(current);
        }
    }
}

/// Counts one checkpoint for [`crate::testing::assert_checkpoints`].
#[inline]
pub(crate) fn count_checkpoint() {
    LOCAL.with(|l| l.checkpoints.set(l.checkpoints.get().wrapping_add(1)));
}

/// The running total of checkpoints executed on this thread.
pub(crate) fn checkpoint_count() -> u64 {
    LOCAL.with(|l| l.checkpoints.get())
}

pin_project_lite::pin_project! {
    /// Polls `inner` with `node` installed as the current node.
    pub(crate) struct InNode<F> {
        #[pin]
        inner: F,
        current: Option<Current>,
    }
}

impl<F> InNode<F> {
    pub(crate) fn new(inner: F, node: Arc<Node>) -> Self {
        InNode {
            inner,
            current: Some(Current::Node(node)),
        }
    }
}

impl<F: std::future::Future> std::future::Future for InNode<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = enter(this.current);
        this.inner.poll(cx)
    }
}
