//! A supervisor at work: its children's slots, the exits their tasks report, and the loop that
//! decides what stops, what restarts and when the supervisor ends.
//!
//! Child tasks never fail their nursery: each reports how it ended and returns. The loop runs
//! beside the body (polled in the same future, so it is in the nursery's cancel scope) and is
//! the only code that restarts anything; every decision is made under the state lock and every
//! task is started outside it.

use std::any::Any;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::Notify;

use super::state::{
    Ended, Ending, Exit, Factory, Phase, Removal, SUPERVISOR_ENDED, Slot, State, Step,
};
use super::{
    ChildHandle, ChildPanicked, ChildStatus, Restart, StartError, Supervision, Supervisor, gave_up,
};
use crate::cancel::{CancelScope, cancellable, move_on_at};
use crate::error::{Cancelled, Error, IsCancelled};
use crate::group::ErrorGroup;
use crate::nursery::{Nursery, open_nursery};
use crate::sync::lock;
use crate::time::current_time;

/// The message of the group a supervisor whose body failed returns.
const BODY_FAILED: &str = "errors in supervisor";

pub(super) struct Shared {
    pub(super) config: Supervision,
    nursery: Nursery,
    state: Mutex<State>,
    /// Wakes the loop: an exit, a new child, a stop, the body's end. `notify_one` keeps a
    /// permit, so a wake-up between two waits is not lost.
    wake: Notify,
}

/// Closes the supervisor when `run` ends, or when its future is dropped: no child may start
/// any more, and every child left is removed (their handles learn it).
struct CloseOnDrop(Option<Arc<Shared>>);

impl Drop for CloseOnDrop {
    fn drop(&mut self) {
        if let Some(shared) = self.0.take() {
            let mut state = shared.lock();
            state.close();
            shared.settle(state);
        }
    }
}

pub(super) async fn run<B, Fut, T, E>(config: Supervision, body: B) -> Result<Option<T>, Error>
where
    B: FnOnce(Supervisor) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
{
    let mut closing = CloseOnDrop(None);
    let outcome = open_nursery(|nursery| {
        let shared = Arc::new(Shared {
            config,
            nursery,
            state: Mutex::new(State::default()),
            wake: Notify::new(),
        });
        closing.0 = Some(shared.clone());
        let body = body(Supervisor {
            shared: shared.clone(),
        });
        async move {
            let (body, control) = join_body(&shared, body).await;
            let shutdown = lock(&shared.state).shut_down;
            Ok::<_, Error>((body, control, shutdown))
        }
    })
    .await;
    drop(closing);
    let Some((body, control, shutdown)) = outcome? else {
        // The body's value is always returned, so the nursery's scope caught nothing.
        return Ok(None);
    };
    match (body, control) {
        (Some(Err(error)), _) if !error.is_cancelled() => {
            Err(ErrorGroup::new(BODY_FAILED, vec![error]).into())
        }
        (_, Ok(Some(group))) => Err(group.into()),
        _ if shutdown => Ok(None),
        (_, Err(cancelled)) => Err(cancelled.into()),
        (Some(Ok(value)), Ok(None)) => Ok(Some(value)),
        (Some(Err(cancelled)), Ok(None)) => Err(cancelled),
        (None, Ok(None)) => unreachable!("the loop ends after the body"),
    }
}

/// Polls the body and the loop together until both are done. When the loop ends first (it
/// gave up, or shut down), the body is cancelled and still runs to its end.
async fn join_body<T, E, Fut>(
    shared: &Arc<Shared>,
    body: Fut,
) -> (
    Option<Result<T, Error>>,
    Result<Option<ErrorGroup>, Cancelled>,
)
where
    Fut: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
{
    let mut body = pin!(body);
    let mut control = pin!(shared.control());
    let mut body_out = None;
    let mut control_out = None;
    poll_fn(|cx| {
        if body_out.is_none()
            && let Poll::Ready(out) = body.as_mut().poll(cx)
        {
            let out = out.map_err(Into::into);
            shared.body_ended(matches!(&out, Err(e) if !e.is_cancelled()));
            body_out = Some(out);
        }
        if control_out.is_none()
            && let Poll::Ready(out) = control.as_mut().poll(cx)
        {
            if body_out.is_none() && out.is_ok() {
                shared.nursery.cancel_with_reason(match &out {
                    Ok(Some(_)) => "the supervisor gave up",
                    _ => "the supervisor shut down",
                });
                // The body sees the cancellation at its next checkpoint: poll it again.
                cx.waker().wake_by_ref();
            }
            control_out = Some(out);
        }
        if control_out.is_some() && body_out.is_some() {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    })
    .await;
    (body_out, control_out.expect("both are done"))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Releases the lock, then logs what was decided and drops what was removed (a child's
    /// factory and error are user values: their `Drop` may call back into the supervisor).
    fn settle(&self, mut state: MutexGuard<'_, State>) {
        let logs = std::mem::take(&mut state.logs);
        let graveyard = std::mem::take(&mut state.graveyard);
        drop(state);
        for log in logs {
            log.emit(&self.config);
        }
        drop(graveyard);
    }

    pub(super) fn add(
        self: &Arc<Self>,
        name: String,
        restart: Restart,
        factory: Arc<Mutex<Factory>>,
    ) -> Result<ChildHandle, StartError> {
        let (id, removal) = {
            let mut state = self.lock();
            if state.closed {
                return Err(StartError::Closed);
            }
            if state.slots.iter().any(|s| s.name == name) {
                return Err(StartError::DuplicateName(name));
            }
            let id = state.next_id;
            state.next_id += 1;
            let slot = Slot::new(id, name.clone(), restart, factory);
            let removal = slot.removal.clone();
            state.slots.push(slot);
            (id, removal)
        };
        self.launch(id);
        self.wake.notify_one();
        if closed_before_start(&removal) {
            return Err(StartError::Closed);
        }
        Ok(ChildHandle { name, removal })
    }

    /// Starts a child's task (outside the lock: the nursery spawns it).
    fn launch(self: &Arc<Self>, id: u64) {
        let (scope, generation, name, factory) = {
            let mut state = self.lock();
            let (closed, ending) = (state.closed, state.ending.is_some());
            let Some(slot) = state.slots.iter_mut().find(|s| s.id == id) else {
                return;
            };
            if !matches!(slot.phase, Phase::Starting) {
                return;
            }
            if closed && slot.generation == 0 {
                // Added just before the supervisor closed: it never runs.
                state.remove_id(id, SUPERVISOR_ENDED);
                self.settle(state);
                self.wake.notify_one();
                return;
            }
            if ending {
                // The supervisor began to end after this restart was chosen.
                slot.phase = Phase::Down;
                drop(state);
                self.wake.notify_one();
                return;
            }
            slot.generation += 1;
            let restarted = slot.generation > 1;
            if restarted {
                slot.restarts += 1;
            }
            let scope = CancelScope::new();
            slot.phase = Phase::Running {
                scope: scope.clone(),
                stopping: false,
            };
            let started = (
                scope,
                slot.generation,
                slot.name.clone(),
                slot.factory.clone(),
            );
            if restarted {
                state.restarts += 1;
            }
            started
        };
        let task = child_task(self.clone(), id, generation, name, scope, factory);
        if self.nursery.start_soon(task).is_err() {
            // The nursery has closed: the supervisor is over.
            let mut state = self.lock();
            state.remove_id(id, SUPERVISOR_ENDED);
            self.settle(state);
        }
    }

    /// A child's task reports how it ended. The common case, a restart of this child alone
    /// and at once, is decided and started here, in the ending task, without waiting for the
    /// loop to be scheduled; the loop is woken for everything else (stopping siblings,
    /// backoff timers, ending) and to look again.
    fn report(self: &Arc<Self>, exit: Exit) {
        let launch = {
            let mut state = self.lock();
            let now = current_time();
            state.handle_exit(exit, now, &self.config);
            let launch = state.due_now(now);
            self.settle(state);
            launch
        };
        for id in launch {
            self.launch(id);
        }
        self.wake.notify_one();
    }

    fn body_ended(&self, failed: bool) {
        {
            let mut state = self.lock();
            state.body_done = true;
            if failed && state.ending.is_none() {
                state.ending = Some(Ending::BodyFailed);
                state.closed = true;
            }
        }
        self.wake.notify_one();
    }

    pub(super) fn stop(&self, name: &str) -> bool {
        let mut state = self.lock();
        let Some(index) = state.slots.iter().position(|s| s.name == name) else {
            return false;
        };
        let slot = &mut state.slots[index];
        slot.removing = true;
        if let Phase::Running { scope, stopping } = &mut slot.phase {
            scope.cancel_with_reason("stopped by its supervisor");
            *stopping = true;
        } else {
            state.remove(index, "stopped by its supervisor");
        }
        self.settle(state);
        self.wake.notify_one();
        true
    }

    pub(super) fn shutdown(&self) {
        {
            let mut state = self.lock();
            if state.ending.is_none() {
                state.ending = Some(Ending::Shutdown);
            }
            state.shut_down = true;
            state.closed = true;
        }
        self.wake.notify_one();
    }

    pub(super) fn children(&self) -> Vec<ChildStatus> {
        self.lock().slots.iter().map(Slot::status).collect()
    }

    pub(super) fn restarts(&self) -> u64 {
        self.lock().restarts
    }

    /// The loop: `Ok(Some(group))` when it gave up, `Ok(None)` when it ended otherwise,
    /// `Err` when a scope outside cancelled it.
    async fn control(self: &Arc<Self>) -> Result<Option<ErrorGroup>, Cancelled> {
        loop {
            let step = {
                let mut state = self.lock();
                let step = state.step(current_time());
                self.settle(state);
                step
            };
            match step {
                Step::Launch(ids) => {
                    for id in ids {
                        self.launch(id);
                    }
                }
                Step::Wait(due) => {
                    let woken = cancellable(self.wake.notified());
                    match due {
                        Some(due) => {
                            move_on_at(due, woken).await?;
                        }
                        None => woken.await?,
                    }
                }
                Step::Done(ending) => {
                    return Ok(match ending {
                        Some(Ending::GaveUp(causes)) => Some(gave_up(&self.config, causes)),
                        _ => None,
                    });
                }
            }
        }
    }
}

/// One run of a child: its task made, run in its own scope, panics caught, and how it ended
/// reported to the loop. It never fails the nursery.
async fn child_task(
    shared: Arc<Shared>,
    id: u64,
    generation: u64,
    name: String,
    scope: CancelScope,
    factory: Arc<Mutex<Factory>>,
) -> Result<(), Cancelled> {
    let run = scope.run(async move {
        let future = (lock(&factory))();
        future.await
    });
    let ended = match (CatchPanic { inner: run }).await {
        Ok(Ok(Some(()))) => Ended::Returned,
        Ok(Ok(None)) => Ended::Cancelled(None),
        Ok(Err(error)) if error.is_cancelled() => Ended::Cancelled(Some(error)),
        Ok(Err(error)) => Ended::Failed(error),
        Err(payload) => Ended::Failed(
            ChildPanicked {
                child: name,
                message: panic_message(payload.as_ref()),
            }
            .into(),
        ),
    };
    // The error's text is made here, outside the supervisor's lock: `Display` is user code.
    let text = match &ended {
        Ended::Returned | Ended::Cancelled(None) => None,
        Ended::Failed(error) | Ended::Cancelled(Some(error)) => Some(error.to_string()),
    };
    shared.report(Exit {
        id,
        generation,
        ended,
        text,
    });
    Ok(())
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_owned()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

pin_project_lite::pin_project! {
    /// Its future's output, or the payload of the panic one of its polls raised.
    struct CatchPanic<F> {
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for CatchPanic<F> {
    type Output = Result<F::Output, Box<dyn Any + Send>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.project().inner;
        match catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Ready(output)) => Poll::Ready(Ok(output)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(payload) => Poll::Ready(Err(payload)),
        }
    }
}

/// Whether a child's removal, seen right after it was added and launched, says that the
/// supervisor had closed before the child's task could start. A child that did start and
/// already ended (a temporary one failing at once on another thread while the adding thread
/// was preempted) was started: its handle tells the rest, and `start` must not say `Closed`.
fn closed_before_start(removal: &Removal) -> bool {
    removal.event.is_set() && removal.reason.get() == Some(&SUPERVISOR_ENDED)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn removed(reason: &'static str) -> Removal {
        let removal = Removal::default();
        let _ = removal.reason.set(reason);
        removal.event.set();
        removal
    }

    #[test]
    fn only_a_supervisor_that_ended_makes_a_start_closed() {
        assert!(!closed_before_start(&Removal::default()), "not removed");
        assert!(closed_before_start(&removed(SUPERVISOR_ENDED)));
        assert!(!closed_before_start(&removed("temporary: not restarted")));
        assert!(!closed_before_start(&removed("stopped by its supervisor")));
    }
}
