//! A supervisor at work: its children's slots, the exits their tasks report, and the loop that
//! decides what stops, what restarts and when the supervisor ends.
//!
//! Child tasks never fail their nursery: each reports how it ended and returns. The loop runs
//! beside the body (polled in the same future, so it is in the nursery's cancel scope) and is
//! the only code that restarts anything; every decision is made under the state lock and every
//! task is started outside it.

use std::any::Any;
use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use tokio::sync::Notify;
use tokio::time::Instant;

use super::{
    Backoff, ChildPanicked, ChildReturned, ChildState, ChildStatus, Restart, StartError, Strategy,
    Supervision, Supervisor, gave_up,
};
use crate::cancel::{CancelScope, cancellable, move_on_at};
use crate::context;
use crate::error::{Cancelled, Error, IsCancelled};
use crate::group::ErrorGroup;
use crate::nursery::{Nursery, open_nursery};
use crate::time::current_time;

/// What makes a child's task, once per start.
pub(super) type Factory =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send>;

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

struct State {
    /// In the order they were first started; a restart keeps a child's place.
    slots: Vec<Slot>,
    exits: VecDeque<Exit>,
    next_id: u64,
    restarts: u64,
    /// The restarts counted within the period, oldest first.
    window: VecDeque<Counted>,
    /// Children to start again together once every one of them has ended.
    plan: Option<Plan>,
    ending: Option<Ending>,
    body_done: bool,
    /// `shutdown` was called.
    shut_down: bool,
    /// No child may start any more.
    closed: bool,
}

struct Slot {
    id: u64,
    name: String,
    restart: Restart,
    factory: Arc<Mutex<Factory>>,
    phase: Phase,
    /// Starts so far; an exit of an older start is ignored.
    generation: u64,
    restarts: u64,
    last_cause: Option<String>,
    /// `stop` asked for it: removed, not restarted, when it ends.
    removing: bool,
}

enum Phase {
    Running {
        scope: CancelScope,
        stopping: bool,
    },
    /// Ended; waits for its plan's other members.
    Down,
    /// Starts again at this time.
    Due(Instant),
    /// Chosen to start (by the loop or a reporting task), its task not spawned yet.
    Starting,
}

struct Exit {
    id: u64,
    generation: u64,
    ended: Ended,
}

enum Ended {
    Returned,
    Failed(Error),
    /// `None`: its own scope caught the cancellation (the supervisor stopped it).
    Cancelled(Option<Error>),
}

struct Counted {
    at: Instant,
    id: u64,
    cause: Error,
}

struct Plan {
    members: Vec<u64>,
    due: Instant,
}

enum Ending {
    Shutdown,
    GaveUp(Vec<Error>),
    BodyFailed,
}

/// What the loop does next.
enum Step {
    Launch(Vec<u64>),
    Wait(Option<Instant>),
    Done(Option<Ending>),
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) async fn run<B, Fut, T, E>(config: Supervision, body: B) -> Result<Option<T>, Error>
where
    B: FnOnce(Supervisor) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: Into<Error> + IsCancelled,
{
    let outcome = open_nursery(|nursery| {
        let shared = Arc::new(Shared {
            config,
            nursery,
            state: Mutex::new(State {
                slots: Vec::new(),
                exits: VecDeque::new(),
                next_id: 0,
                restarts: 0,
                window: VecDeque::new(),
                plan: None,
                ending: None,
                body_done: false,
                shut_down: false,
                closed: false,
            }),
            wake: Notify::new(),
        });
        let body = body(Supervisor {
            shared: shared.clone(),
        });
        async move {
            let (body, control) = join_body(&shared, body).await;
            let shutdown = lock(&shared.state).shut_down;
            Ok::<_, Error>((body, control, shutdown))
        }
    })
    .await?;
    let Some((body, control, shutdown)) = outcome else {
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

    pub(super) fn add(
        self: &Arc<Self>,
        name: String,
        restart: Restart,
        factory: Arc<Mutex<Factory>>,
    ) -> Result<(), StartError> {
        let id = {
            let mut state = self.lock();
            if state.closed {
                return Err(StartError::Closed);
            }
            if state.slots.iter().any(|s| s.name == name) {
                return Err(StartError::DuplicateName(name));
            }
            let id = state.next_id;
            state.next_id += 1;
            state.slots.push(Slot {
                id,
                name,
                restart,
                factory,
                phase: Phase::Starting,
                generation: 0,
                restarts: 0,
                last_cause: None,
                removing: false,
            });
            id
        };
        self.launch(id);
        self.wake.notify_one();
        Ok(())
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
                state.slots.retain(|s| s.id != id);
                drop(state);
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
            self.lock().slots.retain(|s| s.id != id);
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
            state.due_now(now)
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
        let found = {
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
                state.remove(index);
            }
            true
        };
        self.wake.notify_one();
        found
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
        let state = self.lock();
        state
            .slots
            .iter()
            .map(|slot| ChildStatus {
                name: slot.name.clone(),
                restart: slot.restart,
                state: match slot.phase {
                    Phase::Running {
                        stopping: false, ..
                    } => ChildState::Running,
                    Phase::Running { stopping: true, .. } => ChildState::Stopping,
                    Phase::Down | Phase::Due(_) | Phase::Starting => ChildState::Restarting,
                },
                restarts: slot.restarts,
                last_cause: slot.last_cause.clone(),
            })
            .collect()
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
                let now = current_time();
                while let Some(exit) = state.exits.pop_front() {
                    state.handle_exit(exit, now, &self.config);
                }
                state.step(now)
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

impl State {
    fn remove(&mut self, index: usize) {
        let slot = self.slots.remove(index);
        if let Some(plan) = &mut self.plan {
            plan.members.retain(|&id| id != slot.id);
        }
    }

    fn in_plan(&self, id: u64) -> bool {
        self.plan.as_ref().is_some_and(|p| p.members.contains(&id))
    }

    fn handle_exit(&mut self, exit: Exit, now: Instant, config: &Supervision) {
        let Some(index) = self.slots.iter().position(|s| s.id == exit.id) else {
            return;
        };
        let slot = &mut self.slots[index];
        if slot.generation != exit.generation {
            return;
        }
        let stopping = matches!(slot.phase, Phase::Running { stopping: true, .. });
        slot.phase = Phase::Down;
        let failure = match exit.ended {
            Ended::Returned => None,
            Ended::Failed(error) => Some(error),
            Ended::Cancelled(_) if stopping => None,
            // Cancelled from outside: the loop sees it too and ends; not a failure.
            Ended::Cancelled(_) if context::is_cancelled() => None,
            Ended::Cancelled(error) => Some(error.unwrap_or_else(|| Cancelled::new().into())),
        };
        if let Some(error) = &failure {
            slot.last_cause = Some(error.to_string());
        }
        let name = slot.name.clone();
        let temporary = slot.restart == Restart::Temporary;
        if stopping || slot.removing || self.ending.is_some() || context::is_cancelled() {
            if let Some(error) = &failure {
                tracing::warn!(supervisor = %config.name, child = %name, cause = %error,
                    "child failed while it was being stopped");
            }
            if slot.removing || (temporary && self.ending.is_none()) {
                self.remove(index);
            }
            return;
        }
        let restart = match slot.restart {
            Restart::Permanent => true,
            Restart::Transient => failure.is_some(),
            Restart::Temporary => false,
        };
        if !restart {
            if let Some(error) = &failure {
                tracing::warn!(supervisor = %config.name, child = %name, cause = %error,
                    "child failed; its policy does not restart it");
            }
            self.remove(index);
            return;
        }
        let mut cause = failure.unwrap_or_else(|| {
            ChildReturned {
                child: name.clone(),
            }
            .into()
        });
        cause.add_note(format!(
            "in child `{name}` of supervisor `{}` (its run {})",
            config.name,
            slot.restarts + 1
        ));
        self.window.push_back(Counted {
            at: now,
            id: exit.id,
            cause,
        });
        while self
            .window
            .front()
            .is_some_and(|c| now.saturating_duration_since(c.at) > config.period)
        {
            self.window.pop_front();
        }
        if self.window.len() > config.max_restarts as usize {
            let causes: Vec<Error> = self.window.drain(..).map(|c| c.cause).collect();
            tracing::error!(supervisor = %config.name, restarts = causes.len(),
                period = ?config.period, "restart intensity exceeded: the supervisor gives up");
            self.ending = Some(Ending::GaveUp(causes));
            self.closed = true;
            self.plan = None;
            return;
        }
        // Counted only for a backoff: the window holds up to `max_restarts` entries.
        let attempt = if config.backoff == Backoff::NONE {
            1
        } else {
            self.window.iter().filter(|c| c.id == exit.id).count()
        };
        let delay = config
            .backoff
            .jittered(u32::try_from(attempt).unwrap_or(u32::MAX));
        let due = now + delay;
        let restarts = self.slots[index].restarts + 1;
        let cause = &self.window.back().expect("just counted").cause;
        tracing::warn!(supervisor = %config.name, child = %name, restarts, %cause, ?delay,
            strategy = ?config.strategy, "child ended; restarting it");
        let members: Vec<u64> = match config.strategy {
            Strategy::OneForOne => {
                if !self.in_plan(exit.id) {
                    self.slots[index].phase = Phase::Due(due);
                    return;
                }
                Vec::new()
            }
            Strategy::OneForAll => self.slots.iter().map(|s| s.id).collect(),
            Strategy::RestForOne => self.slots[index..].iter().map(|s| s.id).collect(),
        };
        for slot in &mut self.slots {
            if slot.id != exit.id && members.contains(&slot.id) {
                slot.last_cause = Some(format!("restarted with `{name}`"));
            }
        }
        match &mut self.plan {
            Some(plan) => {
                plan.due = plan.due.max(due);
                for id in members {
                    if !plan.members.contains(&id) {
                        plan.members.push(id);
                    }
                }
            }
            None => self.plan = Some(Plan { members, due }),
        }
    }

    /// The children due to start now, when nothing else is under way (no siblings to stop
    /// first, no ending): what a child's own task may start.
    fn due_now(&mut self, now: Instant) -> Vec<u64> {
        if self.plan.is_some() || self.ending.is_some() {
            return Vec::new();
        }
        self.start_due(now)
    }

    /// Marks the children due by `now` as starting, and returns them in their order.
    fn start_due(&mut self, now: Instant) -> Vec<u64> {
        let mut due = Vec::new();
        for slot in &mut self.slots {
            if matches!(slot.phase, Phase::Due(at) if at <= now) {
                slot.phase = Phase::Starting;
                due.push(slot.id);
            }
        }
        due
    }

    /// Moves things along: stops the next child that must stop, completes a plan, launches
    /// what is due, or says how long to wait.
    fn step(&mut self, now: Instant) -> Step {
        let stopping_all = self.ending.is_some();
        let one_stopping = self
            .slots
            .iter()
            .any(|s| matches!(s.phase, Phase::Running { stopping: true, .. }));
        if !one_stopping {
            let plan = self.plan.as_ref();
            let next = self.slots.iter_mut().rev().find(|s| {
                matches!(
                    s.phase,
                    Phase::Running {
                        stopping: false,
                        ..
                    }
                ) && (stopping_all || plan.is_some_and(|p| p.members.contains(&s.id)))
            });
            if let Some(Slot {
                phase: Phase::Running { scope, stopping },
                ..
            }) = next
            {
                scope.cancel_with_reason(if stopping_all {
                    "its supervisor is ending"
                } else {
                    "its supervisor restarts it with a sibling"
                });
                *stopping = true;
            }
        }
        // A starting child counts: its task is about to run (or `launch` puts it down).
        let running = |s: &Slot| matches!(s.phase, Phase::Running { .. } | Phase::Starting);
        if stopping_all {
            if self.slots.iter().any(running) {
                return Step::Wait(None);
            }
            return Step::Done(self.ending.take());
        }
        if let Some(plan) = &self.plan
            && !self
                .slots
                .iter()
                .any(|s| running(s) && plan.members.contains(&s.id))
        {
            let Plan { members, due } = self.plan.take().expect("checked");
            for slot in &mut self.slots {
                if members.contains(&slot.id) {
                    slot.phase = Phase::Due(due);
                }
            }
        }
        let due = self.start_due(now);
        if !due.is_empty() {
            return Step::Launch(due);
        }
        if self.body_done && self.slots.is_empty() {
            self.closed = true;
            return Step::Done(None);
        }
        let next = self
            .slots
            .iter()
            .filter_map(|s| match s.phase {
                Phase::Due(at) => Some(at),
                _ => None,
            })
            .min();
        Step::Wait(next)
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
    shared.report(Exit {
        id,
        generation,
        ended,
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
