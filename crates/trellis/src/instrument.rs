//! Instruments: hooks into the life of every nursery task (Trio's `Instrument`).
//!
//! Install instruments on a run with [`Runner::instrument`](crate::Runner::instrument), or from
//! inside it with [`add`] (and take them out with [`remove`]); every task started in a nursery
//! under that run reports to them. When no instrument is installed the hooks cost one atomic
//! load per task step.
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

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
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
    /// The run is about to start (called on the thread that starts it).
    fn before_run(&self) {}
    /// The run is over: its main returned and its runtime is shut down.
    fn after_run(&self) {}
    /// A worker thread of the run has nothing to run and is about to wait for I/O, timers or
    /// wake-ups (Trio's `before_io_wait`; called on that thread).
    fn before_io_wait(&self) {}
    /// A worker thread woke from that wait.
    fn after_io_wait(&self) {}
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

/// Adds `instrument` to the current run: it hears about every nursery task event from now on
/// (Trio's `add_instrument`). Adding one that is already installed does nothing.
///
/// # Errors
///
/// [`InstrumentError::NoRun`] outside a run started by [`Runner`](crate::Runner) or
/// [`run`](crate::run).
pub fn add(instrument: Arc<dyn Instrument>) -> Result<(), InstrumentError> {
    current()?.add(instrument);
    Ok(())
}

/// Removes `instrument` from the current run (Trio's `remove_instrument`): it hears nothing
/// more, starting with the hooks of the step that removes it.
///
/// # Errors
///
/// [`InstrumentError::NotInstalled`] when it is not installed (Trio's `KeyError`),
/// [`InstrumentError::NoRun`] outside a run.
pub fn remove(instrument: &Arc<dyn Instrument>) -> Result<(), InstrumentError> {
    if current()?.remove(instrument) {
        Ok(())
    } else {
        Err(InstrumentError::NotInstalled)
    }
}

fn current() -> Result<Arc<Instruments>, InstrumentError> {
    crate::context::with_current(|node| node.and_then(|n| n.instruments()).cloned())
        .ok_or(InstrumentError::NoRun)
}

/// Why [`add`] or [`remove`] failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InstrumentError {
    /// Not inside a run started by [`Runner`](crate::Runner) or [`run`](crate::run).
    #[error("not inside a trellis run: instruments belong to a run")]
    NoRun,
    /// The instrument to remove is not installed.
    #[error("this instrument is not installed")]
    NotInstalled,
}

/// The instruments of one run: a list replaced as a whole when one is added or removed, so a
/// hook runs on a snapshot and may itself add or remove instruments.
pub(crate) struct Instruments {
    list: RwLock<Arc<[Arc<dyn Instrument>]>>,
    /// Whether the list is non-empty: all an uninstrumented task step pays for.
    active: AtomicBool,
}

impl Instruments {
    pub(crate) fn new(list: Vec<Arc<dyn Instrument>>) -> Arc<Self> {
        Arc::new(Instruments {
            active: AtomicBool::new(!list.is_empty()),
            list: RwLock::new(list.into()),
        })
    }

    #[inline]
    pub(crate) fn is_active(&self) -> bool {
        self.active.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> Arc<[Arc<dyn Instrument>]> {
        self.list.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn each(&self, hook: impl Fn(&dyn Instrument)) {
        if self.is_active() {
            self.snapshot().iter().for_each(|i| hook(&**i));
        }
    }

    fn add(&self, instrument: Arc<dyn Instrument>) {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if list.iter().any(|i| same(i, &instrument)) {
            return;
        }
        let mut grown = list.to_vec();
        grown.push(instrument);
        *list = grown.into();
        self.active.store(true, Ordering::Relaxed);
    }

    fn remove(&self, instrument: &Arc<dyn Instrument>) -> bool {
        let mut list = self.list.write().unwrap_or_else(|e| e.into_inner());
        if !list.iter().any(|i| same(i, instrument)) {
            return false;
        }
        let kept: Vec<_> = list
            .iter()
            .filter(|i| !same(i, instrument))
            .cloned()
            .collect();
        self.active.store(!kept.is_empty(), Ordering::Relaxed);
        *list = kept.into();
        true
    }

    pub(crate) fn before_run(&self) {
        self.each(|i| i.before_run());
    }

    pub(crate) fn after_run(&self) {
        self.each(|i| i.after_run());
    }

    pub(crate) fn before_io_wait(&self) {
        self.each(|i| i.before_io_wait());
    }

    pub(crate) fn after_io_wait(&self) {
        self.each(|i| i.after_io_wait());
    }

    pub(crate) fn task_spawned(&self, task: TaskId) {
        self.each(|i| i.task_spawned(task));
    }

    pub(crate) fn task_exited(&self, task: TaskId) {
        self.each(|i| i.task_exited(task));
    }

    /// Runs one step of `task` between the step hooks, with a waker that reports scheduling.
    pub(crate) fn step<R>(
        self: &Arc<Self>,
        task: TaskId,
        cx: &mut Context<'_>,
        poll: impl FnOnce(&mut Context<'_>) -> R,
    ) -> R {
        self.each(|i| i.before_task_step(task));
        let waker = Waker::from(Arc::new(ReportingWaker {
            inner: cx.waker().clone(),
            instruments: self.clone(),
            task,
        }));
        let result = poll(&mut Context::from_waker(&waker));
        self.each(|i| i.after_task_step(task));
        result
    }
}

/// The same instrument: the same object (whatever vtable the pointer carries).
fn same(a: &Arc<dyn Instrument>, b: &Arc<dyn Instrument>) -> bool {
    std::ptr::addr_eq(Arc::as_ptr(a), Arc::as_ptr(b))
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
        self.instruments.each(|i| i.task_scheduled(self.task));
        self.inner.wake_by_ref();
    }
}
