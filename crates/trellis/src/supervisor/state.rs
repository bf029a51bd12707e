//! A supervisor's state and the decisions made on it: what a child's end means, what stops
//! next, what starts, when the supervisor ends. No I/O, no task, no user code: the callers
//! (`control.rs`) hold the lock around these, and start tasks, log, and drop what was removed
//! only once it is released.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::time::Instant;

use super::{Backoff, ChildReturned, ChildState, ChildStatus, Restart, Strategy, Supervision};
use crate::cancel::CancelScope;
use crate::context;
use crate::error::{Cancelled, Error};
use crate::sync::Event;

/// What makes a child's task, once per start.
pub(super) type Factory =
    Box<dyn FnMut() -> Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send>;

#[derive(Default)]
pub(super) struct State {
    /// In the order they were first started; a restart keeps a child's place.
    pub(super) slots: Vec<Slot>,
    pub(super) next_id: u64,
    pub(super) restarts: u64,
    /// The restarts counted within the period, oldest first.
    window: VecDeque<Counted>,
    /// Children to start again together once every one of them has ended.
    plan: Option<Plan>,
    pub(super) ending: Option<Ending>,
    pub(super) body_done: bool,
    /// `shutdown` was called.
    pub(super) shut_down: bool,
    /// No child may start any more.
    pub(super) closed: bool,
    /// Removed children, dropped (their factories with them) once the lock is released.
    pub(super) graveyard: Vec<Slot>,
    /// Events to log once the lock is released.
    pub(super) logs: Vec<Log>,
}

pub(super) struct Slot {
    pub(super) id: u64,
    pub(super) name: String,
    pub(super) restart: Restart,
    pub(super) factory: Arc<Mutex<Factory>>,
    pub(super) phase: Phase,
    /// Starts so far; an exit of an older start is ignored.
    pub(super) generation: u64,
    pub(super) restarts: u64,
    last_cause: Option<String>,
    /// `stop` asked for it: removed, not restarted, when it ends.
    pub(super) removing: bool,
    pub(super) removal: Arc<Removal>,
}

/// Why a child is removed when its supervisor ends (or had ended when it was added).
pub(super) const SUPERVISOR_ENDED: &str = "its supervisor has ended";

/// Set once a child is removed for good: what its [`ChildHandle`](super::ChildHandle)s watch.
#[derive(Default)]
pub(super) struct Removal {
    pub(super) event: Event,
    pub(super) reason: OnceLock<&'static str>,
}

pub(super) enum Phase {
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

pub(super) struct Exit {
    pub(super) id: u64,
    pub(super) generation: u64,
    pub(super) ended: Ended,
    /// The error's text, made before the lock was taken (a `Display` is user code).
    pub(super) text: Option<String>,
}

pub(super) enum Ended {
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

pub(super) enum Ending {
    Shutdown,
    GaveUp(Vec<Error>),
    BodyFailed,
}

/// What the loop does next.
pub(super) enum Step {
    Launch(Vec<u64>),
    Wait(Option<Instant>),
    Done(Option<Ending>),
}

/// What is logged, once the lock is released.
pub(super) enum Log {
    FailedStopping {
        child: String,
        cause: String,
    },
    NotRestarted {
        child: String,
        cause: String,
    },
    Restarting {
        child: String,
        restarts: u64,
        cause: String,
        delay: Duration,
    },
    GaveUp {
        restarts: usize,
    },
}

impl Log {
    pub(super) fn emit(self, config: &Supervision) {
        let supervisor = &config.name;
        match self {
            Log::FailedStopping { child, cause } => tracing::warn!(%supervisor, %child, %cause,
                "child failed while it was being stopped"),
            Log::NotRestarted { child, cause } => tracing::warn!(%supervisor, %child, %cause,
                "child failed; its policy does not restart it"),
            Log::Restarting {
                child,
                restarts,
                cause,
                delay,
            } => tracing::warn!(%supervisor, %child, restarts, %cause, ?delay,
                strategy = ?config.strategy, "child ended; restarting it"),
            Log::GaveUp { restarts } => tracing::error!(%supervisor, restarts,
                period = ?config.period, "restart intensity exceeded: the supervisor gives up"),
        }
    }
}

impl Slot {
    pub(super) fn new(
        id: u64,
        name: String,
        restart: Restart,
        factory: Arc<Mutex<Factory>>,
    ) -> Self {
        Slot {
            id,
            name,
            restart,
            factory,
            phase: Phase::Starting,
            generation: 0,
            restarts: 0,
            last_cause: None,
            removing: false,
            removal: Arc::new(Removal::default()),
        }
    }

    pub(super) fn status(&self) -> ChildStatus {
        ChildStatus {
            name: self.name.clone(),
            restart: self.restart,
            state: match self.phase {
                Phase::Running {
                    stopping: false, ..
                } => ChildState::Running,
                Phase::Running { stopping: true, .. } => ChildState::Stopping,
                Phase::Starting if self.generation == 0 => ChildState::Starting,
                Phase::Down | Phase::Due(_) | Phase::Starting => ChildState::Restarting,
            },
            restarts: self.restarts,
            last_cause: self.last_cause.clone(),
        }
    }
}

impl State {
    /// Removes the child at `index` for good: its handles learn `reason`, and it is dropped
    /// once the lock is released.
    pub(super) fn remove(&mut self, index: usize, reason: &'static str) {
        let slot = self.slots.remove(index);
        if let Some(plan) = &mut self.plan {
            plan.members.retain(|&id| id != slot.id);
        }
        let _ = slot.removal.reason.set(reason);
        slot.removal.event.set();
        self.graveyard.push(slot);
    }

    /// Removes the child `id`, if it is there.
    pub(super) fn remove_id(&mut self, id: u64, reason: &'static str) {
        if let Some(index) = self.slots.iter().position(|s| s.id == id) {
            self.remove(index, reason);
        }
    }

    /// The supervisor is over: no child may start, and every child left is removed.
    pub(super) fn close(&mut self) {
        self.closed = true;
        while !self.slots.is_empty() {
            self.remove(0, SUPERVISOR_ENDED);
        }
    }

    fn in_plan(&self, id: u64) -> bool {
        self.plan.as_ref().is_some_and(|p| p.members.contains(&id))
    }

    pub(super) fn handle_exit(&mut self, exit: Exit, now: Instant, config: &Supervision) {
        let Some(index) = self.slots.iter().position(|s| s.id == exit.id) else {
            return;
        };
        let in_plan = self.in_plan(exit.id);
        let ending = self.ending.is_some();
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
        let text = failure
            .as_ref()
            .map(|_| exit.text.unwrap_or_else(|| "cancelled".to_owned()));
        if let Some(text) = &text {
            slot.last_cause = Some(text.clone());
        }
        let name = slot.name.clone();
        let temporary = slot.restart == Restart::Temporary;
        // Stopped, or ended while its group is restarting anyway (one incident counts once,
        // as OTP drops the exits of children it is shutting down).
        if stopping || in_plan || slot.removing || ending || context::is_cancelled() {
            if let Some(cause) = text {
                self.logs.push(Log::FailedStopping { child: name, cause });
            }
            if slot.removing {
                self.remove(index, "stopped by its supervisor");
            } else if temporary && !ending {
                self.remove(index, "temporary: not restarted");
            }
            return;
        }
        let restart = match slot.restart {
            Restart::Permanent => true,
            Restart::Transient => failure.is_some(),
            Restart::Temporary => false,
        };
        if !restart {
            if let Some(cause) = text {
                self.logs.push(Log::NotRestarted { child: name, cause });
            }
            self.remove(
                index,
                if temporary {
                    "temporary: not restarted"
                } else {
                    "transient, and it ended normally: not restarted"
                },
            );
            return;
        }
        let mut cause = failure.unwrap_or_else(|| {
            ChildReturned {
                child: name.clone(),
            }
            .into()
        });
        let cause_text = text.unwrap_or_else(|| cause.to_string());
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
            self.logs.push(Log::GaveUp {
                restarts: causes.len(),
            });
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
        self.logs.push(Log::Restarting {
            child: name.clone(),
            restarts: self.slots[index].restarts + 1,
            cause: cause_text,
            delay,
        });
        let members: Vec<u64> = match config.strategy {
            Strategy::OneForOne => {
                self.slots[index].phase = Phase::Due(due);
                return;
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
    pub(super) fn due_now(&mut self, now: Instant) -> Vec<u64> {
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
    pub(super) fn step(&mut self, now: Instant) -> Step {
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
