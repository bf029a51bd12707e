//! The task-local view of cancellation: which cancel node the running code sits in.
//!
//! Every future that trellis polls on behalf of a scope or a nursery task installs its node in a
//! thread-local for the duration of the poll and restores the previous one afterwards, also when
//! the poll unwinds. Checkpoints read it. Code running outside any trellis scope sees no node and
//! is never cancelled, so trellis primitives also work in plain tokio tasks.

use std::cell::{Cell, RefCell};
use std::sync::Arc;

use crate::cancel::node::Node;

thread_local! {
    static CURRENT: RefCell<Option<Arc<Node>>> = const { RefCell::new(None) };
    static CHECKPOINTS: Cell<u64> = const { Cell::new(0) };
}

/// The node of the code being polled on this thread, if any.
pub(crate) fn current() -> Option<Arc<Node>> {
    CURRENT.with(|c| c.borrow().clone())
}

/// Runs `f` with the current node borrowed (no reference-count traffic).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<Node>>) -> R) -> R {
    CURRENT.with(|c| f(c.borrow().as_ref()))
}

/// Installs `node` as current until the guard drops.
pub(crate) fn enter(node: Arc<Node>) -> Entered {
    let prev = CURRENT.with(|c| c.replace(Some(node)));
    Entered { prev }
}

/// Restores the previously current node when dropped.
pub(crate) struct Entered {
    prev: Option<Arc<Node>>,
}

impl Drop for Entered {
    fn drop(&mut self) {
        let prev = self.prev.take();
        CURRENT.with(|c| *c.borrow_mut() = prev);
    }
}

/// Counts one checkpoint for [`crate::testing::assert_checkpoints`].
#[inline]
pub(crate) fn count_checkpoint() {
    CHECKPOINTS.with(|c| c.set(c.get().wrapping_add(1)));
}

/// The running total of checkpoints executed on this thread.
pub(crate) fn checkpoint_count() -> u64 {
    CHECKPOINTS.with(Cell::get)
}

pin_project_lite::pin_project! {
    /// Polls `inner` with `node` installed as the current node.
    pub(crate) struct InNode<F> {
        #[pin]
        pub(crate) inner: F,
        pub(crate) node: Arc<Node>,
    }
}

impl<F: std::future::Future> std::future::Future for InNode<F> {
    type Output = F::Output;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<F::Output> {
        let this = self.project();
        let _entered = enter(this.node.clone());
        this.inner.poll(cx)
    }
}
