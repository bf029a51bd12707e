//! Testing support: deterministic runtimes, `wait_all_tasks_blocked`, a sequencer, and
//! checkpoint assertions (Trio's `trio.testing`).
//!
//! # Writing tests
//!
//! Run each async test with [`run_test`]: a current-thread runtime whose clock is paused and
//! *jumps ahead* whenever every task is blocked (Trio's `MockClock(autojump_threshold=0)`), so a
//! test that sleeps for an hour finishes at once and timeouts fire deterministically. It needs
//! this crate's `test-util` feature (add `trellis = { version = "…", features = ["test-util"] }`
//! to `[dev-dependencies]`).
//!
//! ```
//! use std::time::Duration;
//!
//! // In a test: `#[test] fn timeout_fires() { trellis::testing::run_test(async { ... }) }`
//! # #[cfg(feature = "test-util")]
//! trellis::testing::run_test(async {
//!     let start = tokio::time::Instant::now();
//!     let r = trellis::move_on_after(Duration::from_secs(3600), trellis::sleep_forever()).await;
//!     assert_eq!(r, Ok(None));
//!     assert_eq!(start.elapsed(), Duration::from_secs(3600)); // virtual time
//! });
//! ```
//!
//! Code without timers can also be tested on the multi-thread flavour with
//! [`run_test_multi_thread`] (tokio cannot pause a multi-thread runtime's clock).
//! [`wait_all_tasks_blocked`] works on both.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::Notify;

use crate::cancel::cancellable;
use crate::context;
use crate::error::{Cancelled, Error};

/// Idle detection for one runtime: how many workers are parked and who waits for all of them.
#[cfg_attr(
    not(any(feature = "test-util", feature = "rt-multi-thread")),
    allow(dead_code)
)]
struct Idle {
    workers: usize,
    parked: AtomicUsize,
    /// Every time a worker wakes up: activity that a cushion must not see.
    unparks: AtomicU64,
    wanted: AtomicBool,
    notify: Notify,
}

#[cfg_attr(
    not(any(feature = "test-util", feature = "rt-multi-thread")),
    allow(dead_code)
)]
impl Idle {
    fn parking(&self) {
        let parked = self.parked.fetch_add(1, Ordering::SeqCst) + 1;
        if parked >= self.workers && self.wanted.swap(false, Ordering::SeqCst) {
            self.notify.notify_waiters();
        }
    }

    fn unparked(&self) {
        self.unparks.fetch_add(1, Ordering::SeqCst);
        self.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

thread_local! {
    static IDLE: RefCell<Option<Arc<Idle>>> = const { RefCell::new(None) };
}

#[cfg_attr(
    not(any(feature = "test-util", feature = "rt-multi-thread")),
    allow(dead_code)
)]
fn builder(flavor_multi: bool, workers: usize) -> (tokio::runtime::Builder, Arc<Idle>) {
    let idle = Arc::new(Idle {
        workers,
        parked: AtomicUsize::new(0),
        unparks: AtomicU64::new(0),
        wanted: AtomicBool::new(false),
        notify: Notify::new(),
    });
    #[cfg(feature = "rt-multi-thread")]
    let mut builder = if flavor_multi {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(workers);
        b
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    #[cfg(not(feature = "rt-multi-thread"))]
    let mut builder = {
        let _ = flavor_multi;
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all();
    let (on_start, on_park, on_unpark) = (idle.clone(), idle.clone(), idle.clone());
    builder
        .on_thread_start(move || IDLE.with(|i| *i.borrow_mut() = Some(on_start.clone())))
        .on_thread_park(move || on_park.parking())
        .on_thread_unpark(move || on_unpark.unparked());
    (builder, idle)
}

#[cfg(feature = "test-util")]
fn with_idle<R>(idle: Arc<Idle>, f: impl FnOnce() -> R) -> R {
    let previous = IDLE.with(|i| i.replace(Some(idle)));
    let result = f();
    IDLE.with(|i| *i.borrow_mut() = previous);
    result
}

/// Runs `test` on a current-thread runtime with the autojump clock: tokio's paused time, which
/// jumps to the next timer whenever every task is blocked.
///
/// # Panics
///
/// Resumes the test's panic; panics when the runtime cannot be built.
#[cfg(feature = "test-util")]
#[doc(alias = "MockClock")]
#[doc(alias = "autojump_threshold")]
pub fn run_test<F: Future>(test: F) -> F::Output {
    let (mut builder, idle) = builder(false, 1);
    let runtime = builder
        .start_paused(true)
        .build()
        .expect("failed to build the test runtime");
    with_idle(idle, || runtime.block_on(test))
}

/// Runs `test` on a multi-thread runtime with two workers and the real clock. The test body runs
/// as a task on a worker, so [`wait_all_tasks_blocked`] sees it.
///
/// # Panics
///
/// Resumes the test's panic; panics when the runtime cannot be built.
#[cfg(feature = "rt-multi-thread")]
pub fn run_test_multi_thread<F>(test: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (mut builder, _idle) = builder(true, 2);
    let runtime = builder.build().expect("failed to build the test runtime");
    let task = runtime.spawn(test);
    match runtime.block_on(task) {
        Ok(output) => output,
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

/// Waits until every other task of the runtime is blocked (waiting for a timer, I/O, a channel,
/// anything but the CPU) — Trio's `wait_all_tasks_blocked`. On the autojump clock it returns
/// before the clock would jump. A checkpoint.
///
/// # Panics
///
/// Outside a runtime made by [`run_test`] or [`run_test_multi_thread`], which track idleness.
pub async fn wait_all_tasks_blocked() -> Result<(), Cancelled> {
    let idle = IDLE
        .with(|i| i.borrow().clone())
        .expect("wait_all_tasks_blocked needs a runtime from trellis::testing");
    let mut notified = pin!(idle.notify.notified());
    notified.as_mut().enable();
    idle.wanted.store(true, Ordering::SeqCst);
    cancellable(notified).await
}

/// Waits until every other task of the runtime has been blocked for `cushion` of real time
/// without a break (Trio's `wait_all_tasks_blocked(cushion)`): for tests where something
/// outside the runtime (a thread, a child process, the network) takes a moment to answer.
/// Timers of the autojump clock do not fire during the cushion. A checkpoint.
///
/// On [`run_test`] (one worker) any task running during the cushion starts it over; on
/// [`run_test_multi_thread`] a single wake-up of another task can go unnoticed if it lands
/// on the worker that would have woken for this one.
///
/// # Panics
///
/// Outside a runtime made by [`run_test`] or [`run_test_multi_thread`].
pub async fn wait_all_tasks_blocked_with_cushion(cushion: Duration) -> Result<(), Cancelled> {
    let idle = IDLE
        .with(|i| i.borrow().clone())
        .expect("wait_all_tasks_blocked needs a runtime from trellis::testing");
    loop {
        wait_all_tasks_blocked().await?;
        if cushion.is_zero() {
            return Ok(());
        }
        let before = idle.unparks.load(Ordering::SeqCst);
        // Real time, on a thread: a blocking task also holds the paused clock still.
        let pause = tokio::task::spawn_blocking(move || std::thread::sleep(cushion));
        let _ = cancellable(pause).await?;
        // Our own wake-up unparks at most every worker once.
        if idle.unparks.load(Ordering::SeqCst) - before <= idle.workers as u64 {
            return Ok(());
        }
    }
}

/// Makes blocks of code in different tasks run in a fixed order (Trio's `Sequencer`).
///
/// `sequencer.at(n).await` waits until the blocks numbered `0..n` have finished; the block runs
/// while the returned guard lives.
///
/// ```
/// # #[cfg(feature = "test-util")]
/// trellis::testing::run_test(async {
///     use std::sync::{Arc, Mutex};
///     let seq = trellis::testing::Sequencer::new();
///     let log = Arc::new(Mutex::new(Vec::new()));
///     trellis::open_nursery(|n| {
///         let (seq, log) = (seq.clone(), log.clone());
///         async move {
///             for i in [2, 0, 1] {
///                 let (seq, log) = (seq.clone(), log.clone());
///                 n.start_soon(async move {
///                     let _turn = seq.at(i).await?;
///                     log.lock().unwrap().push(i);
///                     Ok::<_, trellis::Error>(())
///                 })?;
///             }
///             Ok::<_, trellis::Error>(())
///         }
///     })
///     .await
///     .unwrap();
///     assert_eq!(*log.lock().unwrap(), [0, 1, 2]);
/// });
/// ```
#[derive(Clone, Default)]
pub struct Sequencer {
    inner: Arc<SequencerInner>,
}

#[derive(Default)]
struct SequencerInner {
    state: Mutex<SequencerState>,
    notify: Notify,
}

#[derive(Default)]
struct SequencerState {
    next: usize,
    claimed: BTreeSet<usize>,
    broken: bool,
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Sequencer")
            .field("next", &state.next)
            .field("broken", &state.broken)
            .finish()
    }
}

impl Sequencer {
    /// A sequencer at position 0.
    pub fn new() -> Self {
        Sequencer::default()
    }

    /// Waits for turn `position`.
    ///
    /// # Errors
    ///
    /// `Cancelled` when cancelled while waiting — which breaks the sequencer, since the order can
    /// no longer be kept, so every other waiter gets an error too (as in Trio).
    ///
    /// # Panics
    ///
    /// When `position` was already claimed.
    pub async fn at(&self, position: usize) -> Result<SequencerTurn, Error> {
        {
            let mut state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
            assert!(
                state.claimed.insert(position),
                "sequence position {position} used twice"
            );
        }
        loop {
            let mut notified = pin!(self.inner.notify.notified());
            notified.as_mut().enable();
            {
                let state = self.inner.state.lock().unwrap_or_else(|e| e.into_inner());
                if state.broken {
                    return Err(Error::msg(
                        "the sequencer is broken: a waiter was cancelled",
                    ));
                }
                if state.next == position {
                    return Ok(SequencerTurn {
                        inner: self.inner.clone(),
                    });
                }
            }
            if let Err(cancelled) = cancellable(notified).await {
                self.inner
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .broken = true;
                self.inner.notify.notify_waiters();
                return Err(cancelled.into());
            }
        }
    }
}

/// The turn of one block of a [`Sequencer`]; the next block may start when it is dropped.
#[derive(Debug)]
pub struct SequencerTurn {
    inner: Arc<SequencerInner>,
}

impl std::fmt::Debug for SequencerInner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SequencerInner").finish_non_exhaustive()
    }
}

impl Drop for SequencerTurn {
    fn drop(&mut self) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .next += 1;
        self.inner.notify.notify_waiters();
    }
}

/// Runs `future` and panics unless it executed at least one checkpoint (Trio's
/// `assert_checkpoints`). Only the calling task's own checkpoints count.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// trellis::testing::assert_checkpoints(trellis::checkpoint()).await.unwrap();
/// # }
/// ```
///
/// # Panics
///
/// When `future` finished without a checkpoint.
pub async fn assert_checkpoints<F: Future>(future: F) -> F::Output {
    let (output, count) = CountCheckpoints {
        inner: pin!(future),
        count: 0,
    }
    .await;
    assert!(
        count > 0,
        "assert_checkpoints: the operation executed no checkpoint"
    );
    output
}

/// Runs `future` and panics if it executed any checkpoint (Trio's `assert_no_checkpoints`).
///
/// # Panics
///
/// When `future` executed a checkpoint.
pub async fn assert_no_checkpoints<F: Future>(future: F) -> F::Output {
    let (output, count) = CountCheckpoints {
        inner: pin!(future),
        count: 0,
    }
    .await;
    assert_eq!(
        count, 0,
        "assert_no_checkpoints: the operation executed {count} checkpoint(s)"
    );
    output
}

struct CountCheckpoints<'a, F> {
    inner: Pin<&'a mut F>,
    count: u64,
}

impl<F: Future> Future for CountCheckpoints<'_, F> {
    type Output = (F::Output, u64);

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let before = context::checkpoint_count();
        let polled = self.inner.as_mut().poll(cx);
        self.count += context::checkpoint_count().wrapping_sub(before);
        polled.map(|output| (output, self.count))
    }
}
