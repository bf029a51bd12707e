//! The task-local view of cancellation: which cancel node the running code sits in.
//!
//! Every future that trellis polls on behalf of a scope or a nursery task installs its node in a
//! thread-local for the duration of the poll and restores the previous one afterwards, also when
//! the poll unwinds. Checkpoints read it. Code running outside any trellis scope sees no node and
//! is never cancelled, so trellis primitives also work in plain tokio tasks.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::sync::atomic::Ordering::SeqCst;

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

/// What the running code sits in, per thread. Holds references, so it has a destructor, which
/// makes every access check the thread-local's state: checkpoints read [`FAST`] instead.
struct Local {
    current: RefCell<Option<Current>>,
}

thread_local! {
    static LOCAL: Local = const { Local { current: RefCell::new(None) } };
}

/// The plain numbers a checkpoint needs, in a thread-local without a destructor (so that an
/// access is one instruction away).
struct Fast {
    checkpoints: Cell<u64>,
    /// Operations that completed without yielding since the last forced yield on this thread.
    unyielded: Cell<u32>,
    /// The id of the current node (0 for none).
    node: Cell<u64>,
    /// A node seen neither cancelled nor with a deadline, and [`EPOCH`] when it was seen: while
    /// the epoch stays the same, it still is.
    clear_node: Cell<u64>,
    clear_epoch: Cell<u64>,
}

thread_local! {
    static FAST: Fast = const {
        Fast {
            checkpoints: Cell::new(0),
            unyielded: Cell::new(0),
            node: Cell::new(0),
            clear_node: Cell::new(0),
            clear_epoch: Cell::new(0),
        }
    };
}

/// Advanced (after the node's state is stored) whenever a node that some thread may have cached
/// as clear becomes cancelled or gets a deadline: a thread's cached "clear" answer is good for
/// as long as the epoch has not moved. Nodes are cached by id, never reused, and a thread marks
/// a node before caching it, so a scope entered with a deadline (which nobody can have cached)
/// does not move it. Cancellation is rare next to checkpoints, so this shared word is read far
/// more than written.
static EPOCH: AtomicU64 = AtomicU64::new(1);

/// Called by a node whose effective state just became cancelled or deadline-bound.
pub(crate) fn node_no_longer_clear() {
    EPOCH.fetch_add(1, SeqCst);
}

/// How many operations may complete in a row on a thread before one yields: the same budget
/// tokio gives a task, kept in our own thread-local so that it costs nothing extra.
const YIELD_EVERY: u32 = 128;

/// Whether the current node is cancelled: from the thread's cache when the node was clear at
/// the current epoch, else from the node (refreshing the cache).
#[inline]
fn current_is_cancelled(f: &Fast) -> bool {
    let node = f.node.get();
    if node == 0 {
        return false;
    }
    if f.clear_node.get() == node && f.clear_epoch.get() == EPOCH.load(SeqCst) {
        return false;
    }
    current_is_cancelled_slow(f)
}

#[cold]
fn current_is_cancelled_slow(f: &Fast) -> bool {
    // The epoch first: a cancellation stored after the node is read below moves it after
    // this load, and the next check misses the cache.
    let epoch = EPOCH.load(SeqCst);
    LOCAL.with(|l| {
        let current = l.current.borrow();
        let Some(node) = current.as_ref().map(Current::node) else {
            return false;
        };
        if node.is_cancelled() {
            return true;
        }
        // Under loom the cache would outlive an explored execution (it is a real
        // thread-local), as the yield budget would.
        if cfg!(trellis_loom) {
            return false;
        }
        node.mark_observed_clear();
        if node.is_clear() {
            f.clear_node.set(node.id());
            f.clear_epoch.set(epoch);
        }
        false
    })
}

/// The start of an operation that is a checkpoint: counts it, tells whether the current node
/// is cancelled, and whether the thread has run long enough that this operation should yield
/// first (a schedule point).
#[inline]
pub(crate) fn start_operation() -> (bool, bool) {
    FAST.with(|f| {
        f.checkpoints.set(f.checkpoints.get().wrapping_add(1));
        let n = f.unyielded.get() + 1;
        // Under loom the budget would carry over between explored executions (it lives in a
        // real thread-local) and make the model non-deterministic; it is not what is modelled.
        let yield_now = n >= YIELD_EVERY && !cfg!(trellis_loom);
        f.unyielded.set(if yield_now { 0 } else { n });
        (current_is_cancelled(f), yield_now)
    })
}

/// Whether the current node is cancelled (not counted as a checkpoint).
#[inline]
pub(crate) fn is_cancelled() -> bool {
    FAST.with(current_is_cancelled)
}

/// The `Cancelled` that code here gets, with the reason of the scope that cancelled it.
#[cold]
pub(crate) fn cancelled() -> crate::error::Cancelled {
    with_current(|node| node.map_or_else(crate::error::Cancelled::new, |n| n.cancelled()))
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
    FAST.with(|f| {
        f.checkpoints.set(f.checkpoints.get().wrapping_add(1));
        current_is_cancelled(f)
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
    let current = slot.take();
    let id = current.node().id();
    let prev = LOCAL.with(|l| l.current.replace(Some(current)));
    let prev_id = FAST.with(|f| f.node.replace(id));
    Entered {
        slot,
        prev,
        prev_id,
    }
}

/// Puts the entered value back into its slot, and the previous one into the thread-local, when
/// dropped (also during unwinding).
pub(crate) struct Entered<'a, S: Slot> {
    slot: &'a mut S,
    prev: Option<Current>,
    prev_id: u64,
}

impl<S: Slot> Drop for Entered<'_, S> {
    fn drop(&mut self) {
        FAST.with(|f| f.node.set(self.prev_id));
        let prev = self.prev.take();
        if let Some(current) = LOCAL.with(|l| l.current.replace(prev)) {
            self.slot.restore(current);
        }
    }
}

/// Counts one checkpoint for [`crate::testing::assert_checkpoints`].
#[inline]
pub(crate) fn count_checkpoint() {
    FAST.with(|f| f.checkpoints.set(f.checkpoints.get().wrapping_add(1)));
}

/// The running total of checkpoints executed on this thread.
pub(crate) fn checkpoint_count() -> u64 {
    FAST.with(|f| f.checkpoints.get())
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
