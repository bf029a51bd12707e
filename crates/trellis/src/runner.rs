//! The entry point: build a runtime, run `main` in a root cancel scope, turn Ctrl-C into
//! cancellation.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::process::ExitCode;
use std::sync::Arc;
use std::task::Poll;

use crate::cancel::node::Node;
use crate::context::InNode;
use crate::dump::{TaskName, TaskSlot};
use crate::error::{CancelReason, CancelSource};
use crate::error::{Error, Interrupted};
use crate::group::ErrorGroup;
use crate::instrument::{Instrument, Instruments};

/// Runs `main` on a new multi-thread tokio runtime, inside a root cancel scope.
///
/// The first Ctrl-C (SIGINT) cancels the root scope: every checkpoint in the program returns
/// `Err(Cancelled)`, cleanup in shielded scopes runs, and once `main` has returned, `run` returns
/// [`Interrupted`] (the analogue of Python's `KeyboardInterrupt`). A second Ctrl-C exits the
/// process at once with status 130.
///
/// Note that once `run` has installed its Ctrl-C handler, SIGINT no longer ends the process by
/// default, also after `run` returns (tokio's signal handling stays installed).
///
/// ```no_run
/// fn main() -> Result<(), trellis::Error> {
///     trellis::run(async {
///         trellis::sleep(std::time::Duration::from_millis(10)).await?;
///         Ok::<_, trellis::Error>(())
///     })
/// }
/// ```
#[cfg(feature = "rt-multi-thread")]
pub fn run<F, T, E>(main: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    Runner::multi_thread().run(main)
}

/// Like [`run`], for a `main` returning [`ExitCode`](std::process::ExitCode): prints the error
/// (a group draws as a tree) to stderr and exits with 130 when interrupted, 1 on other errors.
///
/// ```no_run
/// fn main() -> std::process::ExitCode {
///     trellis::main(async {
///         trellis::sleep_forever().await?;
///         Ok::<_, trellis::Error>(())
///     })
/// }
/// ```
#[cfg(feature = "rt-multi-thread")]
pub fn main<F, T, E>(main: F) -> ExitCode
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    Runner::multi_thread().main(main)
}

/// Builds the runtime for [`run`]: its flavour, threads, instruments and signal handling.
///
/// ```
/// let answer = trellis::Runner::current_thread()
///     .run(async { Ok::<_, trellis::Error>(42) })
///     .unwrap();
/// assert_eq!(answer, 42);
/// ```
pub struct Runner {
    flavor: Flavor,
    worker_threads: Option<usize>,
    instruments: Vec<Arc<dyn Instrument>>,
    ctrl_c: bool,
}

#[derive(Debug, Clone, Copy)]
enum Flavor {
    CurrentThread,
    #[cfg(feature = "rt-multi-thread")]
    MultiThread,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("flavor", &self.flavor)
            .field("worker_threads", &self.worker_threads)
            .field("instruments", &self.instruments.len())
            .field("ctrl_c", &self.ctrl_c)
            .finish()
    }
}

impl Runner {
    fn new(flavor: Flavor) -> Self {
        Runner {
            flavor,
            worker_threads: None,
            instruments: Vec::new(),
            ctrl_c: true,
        }
    }

    /// A multi-thread runtime (one worker per core unless set). Needs the `rt-multi-thread`
    /// feature (on by default).
    #[cfg(feature = "rt-multi-thread")]
    pub fn multi_thread() -> Self {
        Runner::new(Flavor::MultiThread)
    }

    /// A current-thread runtime.
    pub fn current_thread() -> Self {
        Runner::new(Flavor::CurrentThread)
    }

    /// The number of worker threads of a multi-thread runtime.
    pub fn worker_threads(mut self, threads: usize) -> Self {
        self.worker_threads = Some(threads);
        self
    }

    /// Adds an instrument that hears about every nursery task of the run.
    pub fn instrument(mut self, instrument: Arc<dyn Instrument>) -> Self {
        self.instruments.push(instrument);
        self
    }

    /// Whether Ctrl-C cancels the run (default: yes). Needs the `signal` feature (on by
    /// default); without it Ctrl-C is not handled.
    pub fn handle_ctrl_c(mut self, enabled: bool) -> Self {
        self.ctrl_c = enabled;
        self
    }

    /// Runs `main` to completion; see [`run`]. A runtime that cannot be built (the OS refuses
    /// threads or an event queue) is an error of this run, not a panic: see
    /// [`try_run`](Runner::try_run) to tell it apart.
    ///
    /// # Errors
    ///
    /// `main`'s error, [`Interrupted`], or the `std::io::Error` of building the runtime.
    pub fn run<F, T, E>(self, main: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<Error>,
    {
        self.try_run(main).unwrap_or_else(|e| Err(Error::new(e)))
    }

    /// [`run`](Runner::run), with the failure to build the runtime apart: `Err` when tokio's
    /// builder fails, else `main`'s outcome.
    ///
    /// # Errors
    ///
    /// The `std::io::Error` of building the runtime.
    pub fn try_run<F, T, E>(self, main: F) -> std::io::Result<Result<T, Error>>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<Error>,
    {
        let mut builder = match self.flavor {
            Flavor::CurrentThread => tokio::runtime::Builder::new_current_thread(),
            #[cfg(feature = "rt-multi-thread")]
            Flavor::MultiThread => tokio::runtime::Builder::new_multi_thread(),
        };
        if let Some(threads) = self.worker_threads {
            builder.worker_threads(threads);
        }
        // Even an empty list: `instrument::add` may fill it during the run.
        let instruments = Instruments::new(self.instruments);
        let (parked, unparked) = (instruments.clone(), instruments.clone());
        let runtime = builder
            .enable_all()
            .on_thread_park(move || parked.before_io_wait())
            .on_thread_unpark(move || unparked.after_io_wait())
            .build()?;
        let root = Node::new_root();
        root.set_instruments(instruments.clone());
        let ctrl_c = self.ctrl_c;
        instruments.before_run();
        let outcome = runtime.block_on(run_in_root(root, ctrl_c, main));
        drop(runtime);
        instruments.after_run();
        Ok(outcome)
    }

    /// Runs `main` and turns its outcome into an exit status; see [`main`].
    pub fn main<F, T, E>(self, main: F) -> ExitCode
    where
        F: Future<Output = Result<T, E>>,
        E: Into<Error>,
    {
        match self.run(main) {
            Ok(_) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("Error: {error:?}");
                if error.is_interrupted() {
                    ExitCode::from(130)
                } else {
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// A trellis root inside a tokio runtime that is already running (`#[tokio::main]`, a
/// service's runtime, a library's caller): a root cancel scope, instruments, and optionally
/// Ctrl-C → cancellation, for one future, without building a runtime. See [`root`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let value = trellis::Root::new()
///     .run(async {
///         trellis::open_nursery(|n| async move {
///             n.start_soon(async { trellis::checkpoint().await })?;
///             Ok::<_, trellis::Error>(42)
///         })
///         .await
///     })
///     .await
///     .unwrap();
/// assert_eq!(value, Some(42));
/// # }
/// ```
#[derive(Default)]
pub struct Root {
    instruments: Vec<Arc<dyn Instrument>>,
    ctrl_c: bool,
}

impl std::fmt::Debug for Root {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Root")
            .field("instruments", &self.instruments.len())
            .field("ctrl_c", &self.ctrl_c)
            .finish()
    }
}

impl Root {
    /// A root without Ctrl-C handling (the program around owns its signals) and without
    /// instruments.
    pub fn new() -> Self {
        Root::default()
    }

    /// Adds an instrument that hears about every nursery task of the run. The runtime is not
    /// this root's: `before_io_wait`/`after_io_wait` are not called.
    pub fn instrument(mut self, instrument: Arc<dyn Instrument>) -> Self {
        self.instruments.push(instrument);
        self
    }

    /// Whether Ctrl-C cancels the root (default: no), as with [`Runner`]: the first cancels,
    /// [`run`](Root::run) then returns [`Interrupted`]; a second exits the process with status
    /// 130. Needs the `signal` feature.
    pub fn handle_ctrl_c(mut self, enabled: bool) -> Self {
        self.ctrl_c = enabled;
        self
    }

    /// Runs `main` in a new root cancel scope, on the runtime that polls this future.
    ///
    /// # Errors
    ///
    /// `main`'s error; [`Interrupted`] after Ctrl-C (when handled).
    pub async fn run<F, T, E>(self, main: F) -> Result<T, Error>
    where
        F: Future<Output = Result<T, E>>,
        E: Into<Error>,
    {
        let instruments = Instruments::new(self.instruments);
        let root = Node::new_root();
        root.set_instruments(instruments.clone());
        instruments.before_run();
        let outcome = run_in_root(root, self.ctrl_c, main).await;
        instruments.after_run();
        outcome
    }
}

/// Runs `main` in a trellis root inside the tokio runtime that is already running (both
/// flavours): `Root::new().run(main)`. Use it where a program starts with `#[tokio::main]` or
/// another framework's runtime; [`run`] builds a runtime of its own instead.
///
/// ```
/// #[tokio::main]
/// async fn main() -> Result<(), trellis::Error> {
///     trellis::root(async {
///         trellis::sleep(std::time::Duration::from_millis(1)).await?;
///         Ok::<_, trellis::Error>(())
///     })
///     .await
/// }
/// ```
///
/// # Errors
///
/// `main`'s error.
pub async fn root<F, T, E>(main: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    Root::new().run(main).await
}

async fn run_in_root<F, T, E>(root: Arc<Node>, handle_ctrl_c: bool, main: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, E>>,
    E: Into<Error>,
{
    let mut main = pin!(InNode::new(main, root.clone()));
    // The main future is the run's first task, as a dump shows it.
    let slot = TaskSlot::new(TaskName::Given("main".into()));
    root.set_main(slot.clone());
    let mut ctrl_c = handle_ctrl_c.then(ctrl_c_signal).flatten();
    let mut interrupted = false;
    let outcome = poll_fn(|cx| {
        let mut cancel_now = false;
        while let Some(signal) = ctrl_c.as_mut() {
            match signal.as_mut().poll(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(_)) => ctrl_c = None, // no signal handling on this platform
                Poll::Ready(Ok(())) => {
                    if interrupted {
                        eprintln!("interrupted twice: exiting without cleanup");
                        std::process::exit(130);
                    }
                    tracing::info!("interrupted: cancelling the root scope");
                    interrupted = true;
                    cancel_now = true;
                    // Listen for the second Ctrl-C (polled by the next turn of this loop) before
                    // cancelling anything, so that no cleanup can run before we listen.
                    match ctrl_c_signal() {
                        Some(next) => *signal = next,
                        None => ctrl_c = None,
                    }
                }
            }
        }
        if cancel_now {
            root.cancel(|| {
                CancelReason::new(CancelSource::Interrupt).with_message("Ctrl-C (SIGINT)")
            });
        }
        let outer = crate::dump::enter(Some(slot.clone()));
        let polled = main.as_mut().poll(cx);
        crate::dump::enter(outer);
        polled
    })
    .await;
    match (interrupted, outcome.map_err(Into::into)) {
        (false, outcome) => outcome,
        (true, Err(error)) if !error.is_cancelled() => {
            Err(ErrorGroup::new("interrupted", vec![Interrupted.into(), error]).into())
        }
        (true, _) => Err(Interrupted.into()),
    }
}

type CtrlC = Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>>;

/// The next Ctrl-C, when signal handling is compiled in.
fn ctrl_c_signal() -> Option<CtrlC> {
    #[cfg(feature = "signal")]
    {
        Some(Box::pin(tokio::signal::ctrl_c()))
    }
    #[cfg(not(feature = "signal"))]
    {
        None
    }
}
