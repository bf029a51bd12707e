//! Instruments: hooks into the life of every nursery task (Trio's `Instrument`).
//!
//! Install instruments on a run with [`Runner::instrument`](crate::Runner::instrument); every task
//! started in a nursery under that run reports to them. When no instrument is installed the hooks
//! cost one branch per task step.
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use trellis::instrument::{Instrument, TaskId};
//!
//! #[derive(Default)]
//! struct CountSpawns(AtomicUsize);
//!
//! impl Instrument for CountSpawns {
//!     fn task_spawned(&self, _task: TaskId) {
//!         self.0.fetch_add(1, Ordering::Relaxed);
//!     }
//! }
//!
//! let counter = Arc::new(CountSpawns::default());
//! trellis::Runner::current_thread()
//!     .instrument(counter.clone())
//!     .run(async {
//!         trellis::open_nursery(|n| async move {
//!             n.start_soon(async { Ok::<_, trellis::Error>(()) })?;
//!             n.start_soon(async { Ok::<_, trellis::Error>(()) })?;
//!             Ok::<_, trellis::Error>(())
//!         })
//!         .await
//!     })
//!     .unwrap();
//! assert_eq!(counter.0.load(Ordering::Relaxed), 2);
//! ```

use std::sync::Arc;
use std::task::{Context, Wake, Waker};

/// Identifies a nursery task to instruments: its tokio task id, so it matches what tokio's own
/// tooling (tokio-console, `tokio::task::id()`) shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TaskId(tokio::task::Id);

impl From<tokio::task::Id> for TaskId {
    fn from(id: tokio::task::Id) -> Self {
        TaskId(id)
    }
}

impl std::fmt::Display for TaskId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl TaskId {
    /// The tokio task id.
    pub fn tokio_id(self) -> tokio::task::Id {
        self.0
    }
}

/// Hooks called as tasks live. Every method has an empty default; implement the ones you need.
/// Hooks run on the task's thread, inside its poll: keep them short and never block.
pub trait Instrument: Send + Sync + 'static {
    /// A task was started in a nursery.
    fn task_spawned(&self, task: TaskId) {
        let _ = task;
    }
    /// A task was woken and will run again.
    fn task_scheduled(&self, task: TaskId) {
        let _ = task;
    }
    /// A task is about to run one step (one poll).
    fn before_task_step(&self, task: TaskId) {
        let _ = task;
    }
    /// A task finished one step.
    fn after_task_step(&self, task: TaskId) {
        let _ = task;
    }
    /// A task finished, with whatever outcome.
    fn task_exited(&self, task: TaskId) {
        let _ = task;
    }
}

/// The instruments of one run.
pub(crate) struct Instruments {
    list: Vec<Arc<dyn Instrument>>,
}

impl Instruments {
    pub(crate) fn new(list: Vec<Arc<dyn Instrument>>) -> Arc<Self> {
        Arc::new(Instruments { list })
    }

    pub(crate) fn task_spawned(&self, task: TaskId) {
        self.list.iter().for_each(|i| i.task_spawned(task));
    }

    pub(crate) fn task_exited(&self, task: TaskId) {
        self.list.iter().for_each(|i| i.task_exited(task));
    }

    /// Runs one step of `task` between the step hooks, with a waker that reports scheduling.
    pub(crate) fn step<R>(
        self: &Arc<Self>,
        task: TaskId,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> R,
    ) -> R {
        self.list.iter().for_each(|i| i.before_task_step(task));
        let waker = Waker::from(Arc::new(ReportingWaker {
            inner: cx.waker().clone(),
            instruments: self.clone(),
            task,
        }));
        let result = poll(&mut Context::from_waker(&waker));
        self.list.iter().for_each(|i| i.after_task_step(task));
        result
    }
}

struct ReportingWaker {
    inner: Waker,
    instruments: Arc<Instruments>,
    task: TaskId,
}

impl Wake for ReportingWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.instruments
            .list
            .iter()
            .for_each(|i| i.task_scheduled(self.task));
        self.inner.wake_by_ref();
    }
}
