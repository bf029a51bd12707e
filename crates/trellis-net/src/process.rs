//! Subprocesses, Trio's way: `run_process` runs a command to completion (capturing or
//! inheriting its output, checking its exit status), and when the caller is cancelled it
//! terminates the process, waits a grace period, kills it, and always reaps it.
//! `open_process` gives a running process with its pipes as trellis streams.

use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{ChildStderr, ChildStdin, ChildStdout, Command};
use trellis::CancelScope;

use crate::socket::{SocketStream, send_all_on, shutdown_briefly};
use crate::stream::{ReceiveStream, SendStream, StreamError};

/// How long a cancelled process gets between SIGTERM and SIGKILL by default.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(5);

/// What [`run_process`] does with the process's input and output.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Bytes written to its standard input (which is then closed); `None` inherits ours.
    pub stdin: Option<Vec<u8>>,
    /// Capture standard output (else inherit ours).
    pub capture_stdout: bool,
    /// Capture standard error (else inherit ours).
    pub capture_stderr: bool,
    /// Fail with [`ProcessError::Failed`] when the exit status is not success.
    pub check: bool,
    /// Between SIGTERM and SIGKILL when the caller is cancelled.
    pub grace: Duration,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            stdin: Some(Vec::new()),
            capture_stdout: false,
            capture_stderr: false,
            check: true,
            grace: DEFAULT_GRACE,
        }
    }
}

impl RunOptions {
    /// Captures both standard output and standard error.
    #[must_use]
    pub fn capture(mut self) -> Self {
        self.capture_stdout = true;
        self.capture_stderr = true;
        self
    }
}

/// A process that ran to completion.
#[derive(Debug, Clone)]
pub struct Completed {
    /// How it exited.
    pub status: ExitStatus,
    /// Its standard output, if captured.
    pub stdout: Vec<u8>,
    /// Its standard error, if captured.
    pub stderr: Vec<u8>,
}

/// Why a subprocess failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// It could not be started.
    #[error("cannot start {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// It exited unsuccessfully (Trio's `CalledProcessError`); what it printed, if captured.
    #[error("{program} failed: {}", .completed.status)]
    Failed {
        /// The program.
        program: String,
        /// Its status and captured output.
        completed: Completed,
    },
    /// Talking to it, waiting for it or signalling it failed.
    #[error("I/O with {program}: {source}")]
    Io {
        /// The program.
        program: String,
        /// Why.
        source: std::io::Error,
    },
    /// The caller's scope was cancelled; the process was terminated, killed after its grace
    /// period, and reaped first.
    #[error("{0}")]
    Cancelled(#[from] trellis::Cancelled),
    /// A deadline set around the operation with [`trellis::fail_after`] (or `fail_at`)
    /// passed.
    #[error("{0}")]
    TooSlow(#[from] trellis::TooSlow),
}

impl trellis::IsCancelled for ProcessError {
    fn is_cancelled(&self) -> bool {
        matches!(self, ProcessError::Cancelled(_))
    }
}

/// Runs `command` to completion (Trio's `run_process`).
///
/// Input, output and waiting all run concurrently, so a process that writes a lot before
/// reading its input cannot deadlock. When the caller is cancelled, the process gets SIGTERM,
/// then SIGKILL after `options.grace`, and is reaped before this returns `Cancelled`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), trellis::Error> {
/// use trellis_net::{RunOptions, run_process};
/// let mut cmd = tokio::process::Command::new("echo");
/// cmd.arg("hello");
/// let done = run_process(cmd, RunOptions::default().capture()).await?;
/// assert_eq!(done.stdout, b"hello\n");
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// A [`ProcessError`]: it did not start, it failed (with `options.check`), talking to it
/// failed, or the caller was cancelled.
pub async fn run_process(
    mut command: Command,
    options: RunOptions,
) -> Result<Completed, ProcessError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    let pipe = |capture: bool| {
        if capture {
            Stdio::piped()
        } else {
            Stdio::inherit()
        }
    };
    command
        .stdin(if options.stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::inherit()
        })
        .stdout(pipe(options.capture_stdout))
        .stderr(pipe(options.capture_stderr))
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pid = child.id().expect("a process just spawned has a pid");
    let (stdin, stdout, stderr) = (child.stdin.take(), child.stdout.take(), child.stderr.take());
    let input = options.stdin.clone().unwrap_or_default();
    let io_error = |source| ProcessError::Io {
        program: program.clone(),
        source,
    };
    let outcome = trellis::open_nursery(|n| async move {
        let out = n.start_soon(read_all(stdout))?;
        let err = n.start_soon(read_all(stderr))?;
        if let Some(mut stdin) = stdin.map(PipeWriter::new) {
            n.start_soon(async move {
                // A process that exits without reading all its input is not an error.
                let _ = stdin.send_all(&input).await;
                let _ = stdin.close().await;
                Ok::<_, trellis::Error>(())
            })?;
        }
        let status = trellis::cancellable(child.wait()).await;
        let status = match status {
            Ok(status) => status,
            Err(cancelled) => {
                terminate_and_reap(&mut child, pid, options.grace).await;
                return Err(cancelled.into());
            }
        };
        Ok::<_, trellis::Error>((status, out, err))
    })
    .await;
    let outcome = match outcome {
        Ok(Some(outcome)) => outcome,
        Ok(None) => return Err(trellis::Cancelled::new().into()),
        Err(error) if error.is_cancelled() => return Err(error.into_cancelled().into()),
        // Reading a pipe failed.
        Err(error) => return Err(io_error(std::io::Error::other(error.into_std()))),
    };
    let (status, out, err) = outcome;
    let status = status.map_err(io_error)?;
    let completed = Completed {
        status,
        stdout: out.into_value().unwrap_or_default(),
        stderr: err.into_value().unwrap_or_default(),
    };
    if options.check && !status.success() {
        return Err(ProcessError::Failed { program, completed });
    }
    Ok(completed)
}

async fn read_all<R>(pipe: Option<R>) -> Result<Vec<u8>, trellis::Error>
where
    R: tokio::io::AsyncRead + Unpin + Send,
{
    let Some(pipe) = pipe else {
        return Ok(Vec::new());
    };
    let mut pipe = SocketStream::new(pipe);
    let mut all = Vec::new();
    loop {
        let chunk = pipe.receive_some(64 * 1024).await?;
        if chunk.is_empty() {
            return Ok(all);
        }
        all.extend_from_slice(&chunk);
    }
}

/// SIGTERM, up to `grace` to exit, then SIGKILL; waits for the exit whatever the caller's
/// cancellation.
async fn terminate_and_reap(child: &mut tokio::process::Child, pid: u32, grace: Duration) {
    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
    let exited = CancelScope::shielded()
        .run(trellis::move_on_after(grace, async {
            trellis::cancellable(child.wait()).await
        }))
        .await;
    if !matches!(exited, Ok(Some(Some(Ok(_))))) {
        let _ = child.start_kill();
        let _ = CancelScope::shielded()
            .run(async { trellis::cancellable(child.wait()).await })
            .await;
    }
}

/// The writing end of a pipe (a process's standard input) as a trellis [`SendStream`].
#[derive(Debug)]
pub struct PipeWriter<W> {
    io: Option<W>,
    broken: Option<std::io::ErrorKind>,
}

impl<W> PipeWriter<W> {
    /// Wraps `io`.
    pub fn new(io: W) -> Self {
        PipeWriter {
            io: Some(io),
            broken: None,
        }
    }
}

impl<W: tokio::io::AsyncWrite + Unpin + Send> SendStream for PipeWriter<W> {
    async fn send_all(&mut self, data: &[u8]) -> Result<(), StreamError> {
        let Some(io) = self.io.as_mut() else {
            return Err(StreamError::Closed);
        };
        send_all_on(io, &mut self.broken, data).await
    }

    async fn wait_send_all_might_not_block(&mut self) -> Result<(), StreamError> {
        if self.io.is_none() {
            return Err(StreamError::Closed);
        }
        trellis::checkpoint().await?;
        Ok(())
    }

    async fn close(&mut self) -> Result<(), StreamError> {
        if let Some(mut io) = self.io.take() {
            shutdown_briefly(&mut io).await;
        }
        trellis::checkpoint().await?;
        Ok(())
    }
}

/// A running process whose pipes are trellis streams (Trio's `Process` from
/// `open_process`). Dropping it kills the process (tokio reaps it in the background); call
/// [`wait`](Process::wait) to reap it yourself.
#[derive(Debug)]
pub struct Process {
    child: tokio::process::Child,
    pid: u32,
    program: String,
    /// Its standard input, when piped.
    pub stdin: Option<PipeWriter<ChildStdin>>,
    /// Its standard output, when piped.
    pub stdout: Option<SocketStream<ChildStdout>>,
    /// Its standard error, when piped.
    pub stderr: Option<SocketStream<ChildStderr>>,
}

/// Starts `command` with its standard input and output piped (standard error as the command
/// says, inherited by default).
///
/// # Errors
///
/// [`ProcessError::Spawn`].
pub fn open_process(mut command: Command) -> Result<Process, ProcessError> {
    let program = command
        .as_std()
        .get_program()
        .to_string_lossy()
        .into_owned();
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    Ok(Process {
        program,
        pid: child.id().expect("a process just spawned has a pid"),
        stdin: child.stdin.take().map(PipeWriter::new),
        stdout: child.stdout.take().map(SocketStream::new),
        stderr: child.stderr.take().map(SocketStream::new),
        child,
    })
}

impl Process {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits for it to exit and reaps it; a checkpoint. When the caller is cancelled, the
    /// process is terminated, killed after [`DEFAULT_GRACE`] and reaped first.
    ///
    /// # Errors
    ///
    /// [`ProcessError::Io`] (the wait's error), or [`ProcessError::Cancelled`].
    pub async fn wait(&mut self) -> Result<ExitStatus, ProcessError> {
        match trellis::cancellable(self.child.wait()).await {
            Ok(status) => status.map_err(|e| self.io_error(e)),
            Err(cancelled) => {
                terminate_and_reap(&mut self.child, self.pid, DEFAULT_GRACE).await;
                Err(cancelled.into())
            }
        }
    }

    /// Sends `signal` (if it has not been reaped yet).
    ///
    /// # Errors
    ///
    /// [`ProcessError::Io`] with the system call's error.
    pub fn send_signal(&mut self, signal: Signal) -> Result<(), ProcessError> {
        let running = self.child.try_wait().map_err(|e| self.io_error(e))?;
        if running.is_none() {
            kill(Pid::from_raw(self.pid as i32), signal)
                .map_err(|e| self.io_error(std::io::Error::from(e)))?;
        }
        Ok(())
    }

    fn io_error(&self, source: std::io::Error) -> ProcessError {
        ProcessError::Io {
            program: self.program.clone(),
            source,
        }
    }

    /// Sends SIGTERM.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](Process::send_signal).
    pub fn terminate(&mut self) -> Result<(), ProcessError> {
        self.send_signal(Signal::SIGTERM)
    }

    /// Sends SIGKILL.
    ///
    /// # Errors
    ///
    /// As [`send_signal`](Process::send_signal).
    pub fn kill(&mut self) -> Result<(), ProcessError> {
        self.send_signal(Signal::SIGKILL)
    }
}
