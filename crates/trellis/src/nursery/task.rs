//! A nursery's task as tokio runs it: the scope it runs in (the nursery's node, or a node of
//! its own for `start`), and the future around the user's that catches its panic, hands its
//! outcome to the nursery and counts it out.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use super::{Outcome, Shared};
use crate::cancel::node::Node;
use crate::context::{self, Current, Slot};
use crate::error::{Error, IsCancelled};
use crate::instrument::TaskId;

/// Where a task runs and which nursery it belongs to.
pub(super) trait TaskScope: Slot {
    /// The nursery; only while the task is not being polled.
    fn nursery(&self) -> &Arc<Shared>;
}

/// A `start_soon` task: it runs in the nursery's node. One reference serves both roles.
pub(super) struct NurseryScope(pub(super) Option<Arc<Shared>>);

impl Slot for NurseryScope {
    fn take(&mut self) -> Current {
        Current::Nursery(self.0.take().expect("entered once at a time"))
    }

    fn restore(&mut self, current: Current) {
        if let Current::Nursery(shared) = current {
            self.0 = Some(shared);
        }
    }
}

impl TaskScope for NurseryScope {
    fn nursery(&self) -> &Arc<Shared> {
        self.0.as_ref().expect("not entered")
    }
}

/// A `start` task: it runs in a node of its own, which `started` moves into the nursery.
pub(super) struct OwnScope {
    pub(super) node: Option<Arc<Node>>,
    pub(super) nursery: Arc<Shared>,
}

impl Slot for OwnScope {
    fn take(&mut self) -> Current {
        Current::Node(self.node.take().expect("entered once at a time"))
    }

    fn restore(&mut self, current: Current) {
        if let Current::Node(node) = current {
            self.node = Some(node);
        }
    }
}

impl TaskScope for OwnScope {
    fn nursery(&self) -> &Arc<Shared> {
        &self.nursery
    }
}

pin_project_lite::pin_project! {
    /// A nursery task: polls the user's future in the task's cancel node, catches its panic,
    /// hands the outcome to `on_done`, and counts itself out of the nursery — also when it is
    /// dropped unfinished (aborted), which counts as a cancellation. Kept small: it is most of
    /// what a task costs in memory.
    pub(super) struct Child<F, S: TaskScope, D> {
        // Dropped as soon as it is done, before the task counts itself out: what it captured
        // is gone when the nursery sees the task end.
        #[pin]
        pub(super) future: Option<F>,
        pub(super) scope: S,
        // Taken when the task finishes; still there if it is dropped unfinished.
        pub(super) on_done: Option<D>,
        pub(super) polled: bool,
        // What a dump shows of the task; the current task's while it is polled.
        pub(super) slot: Option<Arc<crate::dump::TaskSlot>>,
    }

    impl<F, S: TaskScope, D> PinnedDrop for Child<F, S, D> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if this.on_done.is_some() {
                let shared = this.scope.nursery();
                shared.saw_cancelled.store(true, Ordering::Relaxed);
                shared.task_done();
            }
        }
    }
}

/// Polls a task's future; a finished task is never polled again (tokio does not).
fn poll_once<F: Future>(future: Pin<&mut Option<F>>, cx: &mut Context<'_>) -> Poll<F::Output> {
    match future.as_pin_mut() {
        Some(future) => future.poll(cx),
        None => Poll::Pending,
    }
}

impl<F, T, E, U, S, D> Future for Child<F, S, D>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
    S: TaskScope,
    D: FnOnce(Outcome<T>, &Shared) -> Option<U>,
{
    type Output = Option<U>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<U>> {
        let mut this = self.project();
        let instruments = (this.scope.nursery().instruments.as_ref())
            .filter(|i| i.is_active())
            .cloned();
        let outer = crate::dump::enter(this.slot.take());
        let polled = {
            let _entered = context::enter(this.scope);
            let first = !std::mem::replace(this.polled, true);
            match &instruments {
                Some(instruments) => {
                    let id = TaskId::from(tokio::task::id());
                    if first {
                        // Reported from inside the task, so it comes before its first step.
                        instruments.task_spawned(id);
                    }
                    instruments.step(id, cx, |cx| {
                        catch_unwind(AssertUnwindSafe(|| poll_once(this.future.as_mut(), cx)))
                    })
                }
                None => catch_unwind(AssertUnwindSafe(|| poll_once(this.future.as_mut(), cx))),
            }
        };
        *this.slot = crate::dump::enter(outer);
        let outcome = match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(Ok(value))) => Outcome::Value(value),
            Ok(Poll::Ready(Err(error))) => {
                let cancelled = error.is_cancelled();
                Outcome::Failed(error.into(), cancelled)
            }
            Err(payload) => Outcome::Panicked(payload),
        };
        // The future's captures are dropped here, in the task's context, before it counts out.
        let outcome = {
            let _entered = context::enter(this.scope);
            match catch_unwind(AssertUnwindSafe(|| this.future.set(None))) {
                Ok(()) => outcome,
                Err(payload) => Outcome::Panicked(payload),
            }
        };
        let shared = this.scope.nursery();
        let value = this
            .on_done
            .take()
            .and_then(|on_done| on_done(outcome, shared));
        if let Some(instruments) = instruments {
            instruments.task_exited(TaskId::from(tokio::task::id()));
        }
        shared.task_done();
        Poll::Ready(value)
    }
}
