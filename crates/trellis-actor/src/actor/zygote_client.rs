//! The zygote spawn backend, the parent's side ([`SpawnBackend::Zygote`]): the zygote process
//! (started with `exec` at the first spawn, `tree/spawn.rs`), the requests written to it, and
//! a thread that reads its answers and its children's ends. The zygote's own side, and the
//! protocol, are in `zygote.rs`.
//!
//! A forked child is the zygote's child, not ours: the zygote reaps it and tells us its wait
//! status, which [`Forked::wait`] gives. We signal it by pid only while it has not been
//! reported ended (the zygote reaps it only then, so its pid cannot have been reused).
//!
//! [`SpawnBackend::Zygote`]: crate::SpawnBackend::Zygote

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use nix::sys::signal::{Signal, kill};
use nix::sys::socket::{MsgFlags, send};
use nix::unistd::Pid;
use tokio::sync::{oneshot, watch};

use super::config::{Config, env};
use super::launch::{LAUNCH_ENV, Launch};
use super::zygote::ZYGOTE;
use crate::secret::SECRET_ENV;

/// A child's end as the zygote reports it (`None` while it runs).
type Ended = watch::Receiver<Option<ExitStatus>>;

/// An answer to a spawn request: the child's pid and where its end will be told.
type Answer = Result<(u32, Ended), String>;

/// A running zygote.
pub(crate) struct Zygote {
    /// Its process; killed when this is dropped (its children die with it), unless
    /// [`end`](Zygote::end) took it.
    process: Mutex<Option<tokio::process::Child>>,
    /// Our end of its socket, for requests (the reader thread reads a clone).
    requests: UnixStream,
    shared: Arc<Mutex<Shared>>,
}

#[derive(Default)]
struct Shared {
    /// Answers awaited, in the order the requests were written.
    answers: VecDeque<oneshot::Sender<Answer>>,
    /// Children started and not yet reported ended.
    running: HashMap<u32, watch::Sender<Option<ExitStatus>>>,
    /// Set when the zygote is gone (or unusable): a new one is started for the next spawn.
    gone: bool,
}

/// A child forked by a zygote.
pub(crate) struct Forked {
    pid: u32,
    ended: Ended,
    /// Kept while the child lives: the zygote's end would take the child along.
    _zygote: Arc<Zygote>,
}

impl Forked {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Its wait status, once the zygote has reaped it.
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self.ended.wait_for(Option::is_some).await {
            Ok(status) => Ok(status.expect("waited for")),
            // The reader thread always reports an end before it lets go.
            Err(_) => Ok(ExitStatus::from_raw(Signal::SIGKILL as i32)),
        }
    }

    /// Sends SIGKILL, unless it has been reported ended.
    pub(crate) fn start_kill(&mut self) {
        if self.ended.borrow().is_none() {
            let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGKILL);
        }
    }
}

impl Zygote {
    /// Starts a zygote of this program for the actor of uid `uid`, with `config`'s child
    /// arguments and environment.
    pub(crate) fn start(config: &Config, uid: &str) -> std::io::Result<Arc<Zygote>> {
        let program = std::env::current_exe()?;
        let (ours, theirs) = UnixStream::pair()?;
        let mut command = tokio::process::Command::new(program);
        command
            .args(&config.child_args)
            .envs(config.child_env.iter().map(|(k, v)| (k, v)))
            .env(LAUNCH_ENV, ZYGOTE)
            .env(env::PARENT_PID, std::process::id().to_string())
            // Not an actor, but found as one of the tree's processes by those who look.
            .env(env::UID, format!("{uid}.zygote"))
            .env_remove(env::NAME)
            .env_remove(env::PARENT)
            .env_remove(SECRET_ENV)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            // Its own process group, as every child's: a Ctrl-C reaches the root only.
            .process_group(0)
            .kill_on_drop(true);
        let process = command.spawn()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let reader = ours.try_clone()?;
        let read_into = shared.clone();
        std::thread::Builder::new()
            .name("trellis-zygote".into())
            .spawn(move || read_answers(reader, &read_into))?;
        Ok(Arc::new(Zygote {
            process: Mutex::new(Some(process)),
            requests: ours,
            shared,
        }))
    }

    /// Asks for a child as `launch` says; its pid and where its end will be told. Cancelled
    /// while waiting, the request's child is killed when it comes.
    pub(crate) async fn fork(
        self: &Arc<Self>,
        launch: &Launch,
    ) -> Result<Result<Forked, String>, trellis::Cancelled> {
        let (answer, answered) = oneshot::channel();
        {
            let mut shared = lock(&self.shared);
            if shared.gone {
                return Ok(Err("the zygote has exited".into()));
            }
            // In the order of the writes: both under this lock.
            let block = launch.encode();
            match send(
                self.requests.as_raw_fd(),
                block.as_bytes(),
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) if n == block.len() => shared.answers.push_back(answer),
                outcome => {
                    // A zygote that does not read, or a block cut short: it cannot be used.
                    shared.gone = true;
                    drop(shared);
                    if let Some(process) = &mut *lock(&self.process) {
                        let _ = process.start_kill();
                    }
                    return Ok(Err(format!("the zygote took no request: {outcome:?}")));
                }
            }
        }
        Ok(match trellis::cancellable(answered).await? {
            Ok(Ok((pid, ended))) => Ok(Forked {
                pid,
                ended,
                _zygote: self.clone(),
            }),
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err("the zygote exited".into()),
        })
    }

    /// Ends the zygote, its children ended already: closes its socket and reaps it (killed if
    /// it has not exited within `grace`), whatever the caller's cancellation.
    pub(crate) async fn end(&self, grace: std::time::Duration) {
        let _ = self.requests.shutdown(std::net::Shutdown::Both);
        let Some(mut process) = lock(&self.process).take() else {
            return;
        };
        let _ = trellis::CancelScope::shielded()
            .run(async {
                let exited =
                    trellis::move_on_after(grace, trellis::cancellable(process.wait())).await;
                if !matches!(exited, Ok(Some(_))) {
                    let _ = process.start_kill();
                    let _ = trellis::cancellable(process.wait()).await;
                }
                Ok::<_, trellis::Error>(())
            })
            .await;
    }

    pub(crate) fn is_gone(&self) -> bool {
        lock(&self.shared).gone
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        // Closing the socket ends it; the kill (on drop of its process) makes sure.
        let _ = self.requests.shutdown(std::net::Shutdown::Both);
    }
}

/// The reader thread: answers and ends, until the zygote's socket closes; then every child
/// still running is reported ended (killed: they die with the zygote) and every answer still
/// awaited fails.
fn read_answers(socket: UnixStream, shared: &Mutex<Shared>) {
    let mut lines = BufReader::new(socket);
    let mut line = String::new();
    loop {
        line.clear();
        match lines.read_line(&mut line) {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let mut words = line.split_ascii_whitespace();
        let mut shared = lock(shared);
        match (words.next(), words.next(), words.next()) {
            (Some("spawned"), Some(pid), None) => {
                let Some(answer) = shared.answers.pop_front() else {
                    break;
                };
                let Ok(pid) = pid.parse::<u32>() else { break };
                let (ended, watch) = watch::channel(None);
                shared.running.insert(pid, ended);
                if answer.send(Ok((pid, watch))).is_err() {
                    // Its spawner was cancelled meanwhile: the child is not wanted.
                    let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
                }
            }
            (Some("failed"), _, _) => {
                let reason = line.trim_end().trim_start_matches("failed ").to_owned();
                if let Some(answer) = shared.answers.pop_front() {
                    let _ = answer.send(Err(reason));
                }
            }
            (Some("exited"), Some(pid), Some(raw)) => {
                let (Ok(pid), Ok(raw)) = (pid.parse::<u32>(), raw.parse::<i32>()) else {
                    break;
                };
                if let Some(ended) = shared.running.remove(&pid) {
                    let _ = ended.send(Some(ExitStatus::from_raw(raw)));
                }
            }
            _ => break,
        }
    }
    let mut shared = lock(shared);
    shared.gone = true;
    for answer in shared.answers.drain(..) {
        let _ = answer.send(Err("the zygote exited".into()));
    }
    for (_, ended) in shared.running.drain() {
        let _ = ended.send(Some(ExitStatus::from_raw(Signal::SIGKILL as i32)));
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
