//! The zygote spawn backend, the parent's side ([`SpawnBackend::Zygote`]): the zygote process
//! (started at the first spawn, `tree/spawn.rs`), the requests written to it, and the thread
//! that starts it, reads its answers and its children's ends, and reaps it. The zygote's own
//! side, and the protocol, are in `zygote.rs`.
//!
//! A forked child is the zygote's child, not ours: the zygote reaps it and tells us its wait
//! status. Each `spawned` answer carries a pidfd of the child (`SCM_RIGHTS`), through which we
//! signal it — never by pid, which the zygote frees when it reaps — and see it end even when
//! the zygote does not say so.
//!
//! The thread lives exactly as long as the zygote: the zygote's parent-death signal, tied to
//! the thread that started it, fires when the actor lets it go, not when some runtime worker
//! happens to exit.
//!
//! [`SpawnBackend::Zygote`]: crate::SpawnBackend::Zygote

use std::collections::{HashMap, VecDeque};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg, send, setsockopt, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, watch};

use super::config::{Config, env};
use super::launch::{LAUNCH_ENV, Launch};
use super::zygote::ZYGOTE;
use crate::secret::SECRET_ENV;

/// A child's end as the zygote reports it (`None` while it runs).
type Ended = watch::Receiver<Option<ExitStatus>>;

/// An answer to a spawn request: the child's pid, a pidfd of it, and where its end is told.
type Answer = Result<(u32, OwnedFd, Ended), String>;

/// How long a child that has ended may go unreported before its zygote is taken for wedged.
const REPORT_WITHIN: Duration = Duration::from_secs(2);

/// A running zygote.
pub(crate) struct Zygote {
    /// Our end of its socket, for requests (blocking, with a send timeout; the thread reads a
    /// clone). Shut down, it ends the zygote: the thread then kills and reaps it.
    requests: UnixStream,
    /// Held while a request is queued and written: answers come in the order of the writes.
    writing: Mutex<()>,
    shared: Arc<Mutex<Shared>>,
    /// True once the thread has reaped the zygote.
    reaped: watch::Receiver<bool>,
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

/// A child forked by a zygote. Dropped before it was reaped, it is killed.
pub(crate) struct Forked {
    pid: u32,
    pidfd: AsyncFd<OwnedFd>,
    ended: Ended,
    /// Kept while the child lives: the zygote's end would take the child along.
    zygote: Arc<Zygote>,
}

impl Forked {
    pub(crate) fn id(&self) -> u32 {
        self.pid
    }

    /// Its wait status, once the zygote has reaped it. A zygote that does not report a child
    /// its pidfd shows ended is taken for wedged and ended (and the child reported killed).
    pub(crate) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        let (pidfd, zygote) = (&self.pidfd, &self.zygote);
        let wedged = async move {
            if let Ok(mut ready) = pidfd.readable().await {
                ready.retain_ready();
            }
            tokio::time::sleep(REPORT_WITHIN).await;
            tracing::warn!("the zygote did not report the end of a child: ending the zygote");
            zygote.abandon();
            std::future::pending::<()>().await;
        };
        tokio::select! {
            status = self.ended.wait_for(Option::is_some) => Ok(match status {
                Ok(status) => status.expect("waited for"),
                // The thread always reports an end before it lets go.
                Err(_) => ExitStatus::from_raw(Signal::SIGKILL as i32),
            }),
            () = wedged => unreachable!("pending"),
        }
    }

    /// Sends SIGKILL through its pidfd (nothing happens once it has been reaped).
    pub(crate) fn start_kill(&mut self) {
        if self.ended.borrow().is_none() {
            let _ = pidfd_kill(self.pidfd.get_ref());
        }
    }
}

impl Drop for Forked {
    fn drop(&mut self) {
        self.start_kill();
    }
}

impl Zygote {
    /// Starts a zygote of this program with `config`'s child arguments and environment, for
    /// the actor of uid `uid`, from a thread of its own.
    pub(crate) fn start(config: &Config, uid: &str) -> std::io::Result<Arc<Zygote>> {
        let (ours, theirs) = UnixStream::pair()?;
        // A zygote that takes no request within the spawn timeout is wedged.
        // In microseconds, at least one: zero would mean no timeout at all.
        let micros = i64::try_from(config.spawn_timeout.as_micros()).unwrap_or(i64::MAX);
        let timeout = TimeVal::microseconds(micros.max(1));
        setsockopt(&ours, sockopt::SendTimeout, &timeout)?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
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
            .stdin(Stdio::from(OwnedFd::from(theirs)))
            // Its own process group, as every child's: a Ctrl-C reaches the root only.
            .process_group(0);
        let shared = Arc::new(Mutex::new(Shared::default()));
        let (reaped_tx, reaped) = watch::channel(false);
        let (started_tx, started) = std::sync::mpsc::channel();
        let reader = ours.try_clone()?;
        let read_into = shared.clone();
        std::thread::Builder::new()
            .name("trellis-zygote".into())
            .spawn(move || {
                let spawned = command.spawn();
                // The command holds the zygote's end of the socket: closed here, so that the
                // zygote's exit reads as the end of the socket.
                drop(command);
                let mut zygote = match spawned {
                    Ok(zygote) => zygote,
                    Err(e) => {
                        let _ = started_tx.send(Err(e));
                        return;
                    }
                };
                let _ = started_tx.send(Ok(()));
                read_answers(&reader, &read_into);
                // Whatever ended the reading, the zygote goes (its children with it).
                let _ = reader.shutdown(std::net::Shutdown::Both);
                let _ = zygote.kill();
                let _ = zygote.wait();
                gone(&read_into);
                let _ = reaped_tx.send(true);
            })?;
        started
            .recv()
            .map_err(|_| std::io::Error::other("the zygote's thread ended"))??;
        Ok(Arc::new(Zygote {
            requests: ours,
            writing: Mutex::new(()),
            shared,
            reaped,
        }))
    }

    /// Asks for a child as `launch` says. Cancelled while waiting for the answer, the child
    /// is killed when it comes.
    pub(crate) async fn fork(
        self: &Arc<Self>,
        launch: &Launch,
    ) -> Result<Result<Forked, String>, trellis::Cancelled> {
        let (answer, answered) = oneshot::channel();
        let block = launch.encode();
        let zygote = self.clone();
        // On a thread: a blocking write, which runs to its end (a block half written would
        // leave the socket unusable), bounded by the send timeout.
        let written = trellis::threads::run_sync(move || zygote.request(&block, answer)).await;
        match written {
            Ok(Ok(())) => {}
            Ok(Err(reason)) => return Ok(Err(reason)),
            Err(e) => {
                return match e.downcast_ref::<trellis::Cancelled>() {
                    Some(cancelled) => Err(cancelled.clone()),
                    None => Ok(Err(e.to_string())),
                };
            }
        }
        Ok(match trellis::cancellable(answered).await? {
            Ok(Ok((pid, pidfd, ended))) => match watch_pidfd(pidfd) {
                Ok(pidfd) => Ok(Forked {
                    pid,
                    pidfd,
                    ended,
                    zygote: self.clone(),
                }),
                Err(e) => Err(format!("watching the child's pidfd: {e}")),
            },
            Ok(Err(reason)) => Err(reason),
            Err(_) => Err("the zygote exited".into()),
        })
    }

    /// Queues `answer` and writes `block`, in that order under the write lock.
    fn request(&self, block: &str, answer: oneshot::Sender<Answer>) -> Result<(), String> {
        let _writing = lock(&self.writing);
        {
            let mut shared = lock(&self.shared);
            if shared.gone {
                return Err("the zygote has exited".into());
            }
            shared.answers.push_back(answer);
        }
        let mut rest = block.as_bytes();
        while !rest.is_empty() {
            // Not SIGPIPE when it is gone: an error.
            match send(self.requests.as_raw_fd(), rest, MsgFlags::MSG_NOSIGNAL) {
                Ok(n) => rest = &rest[n..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => {
                    // Wedged (the send timed out) or gone: it cannot be used any more. The
                    // thread fails the queued answer, this one included.
                    self.abandon();
                    return Err(format!("the zygote took no request: {e}"));
                }
            }
        }
        Ok(())
    }

    /// Gives the zygote up: its thread kills and reaps it, and reports its children ended.
    pub(crate) fn abandon(&self) {
        lock(&self.shared).gone = true;
        let _ = self.requests.shutdown(std::net::Shutdown::Both);
    }

    /// Ends the zygote, its children ended already, and waits until it is reaped (at most
    /// `grace`: the thread reaps it on its own), whatever the caller's cancellation.
    pub(crate) async fn end(&self, grace: Duration) {
        self.abandon();
        let mut reaped = self.reaped.clone();
        let _ = trellis::CancelScope::shielded()
            .run(trellis::move_on_after(grace, async move {
                let _ = trellis::cancellable(reaped.wait_for(|r| *r)).await?;
                Ok::<_, trellis::Error>(())
            }))
            .await;
    }

    pub(crate) fn is_gone(&self) -> bool {
        lock(&self.shared).gone
    }
}

impl Drop for Zygote {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The thread's reading: answers and ends, with the pidfds that come with `spawned`, until
/// the socket ends or says something it should not.
fn read_answers(socket: &UnixStream, shared: &Mutex<Shared>) {
    let mut pending: Vec<u8> = Vec::new();
    let mut pidfds: VecDeque<OwnedFd> = VecDeque::new();
    let mut buf = [0u8; 4096];
    loop {
        let mut cmsg = nix::cmsg_space!([RawFd; 8]);
        let mut iov = [IoSliceMut::new(&mut buf)];
        let received = match recvmsg::<()>(
            socket.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                if let Ok(cmsgs) = msg.cmsgs() {
                    for cmsg in cmsgs {
                        if let ControlMessageOwned::ScmRights(fds) = cmsg {
                            // The kernel gave us these descriptors; nothing else owns them.
                            pidfds.extend(fds.into_iter().map(owned));
                        }
                    }
                }
                msg.bytes
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        };
        if received == 0 {
            return;
        }
        pending.extend_from_slice(&buf[..received]);
        while let Some(end) = pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = pending.drain(..=end).collect();
            let Ok(line) = std::str::from_utf8(&line) else {
                return;
            };
            if !answer(line.trim_end(), &mut pidfds, shared) {
                return;
            }
        }
        if pending.len() > 64 << 10 {
            return;
        }
    }
}

/// Takes one line from the zygote; false when it makes no sense (the zygote is then ended).
fn answer(line: &str, pidfds: &mut VecDeque<OwnedFd>, shared: &Mutex<Shared>) -> bool {
    let mut words = line.split(' ');
    let mut shared = lock(shared);
    match (words.next(), words.next(), words.next()) {
        (Some("spawned"), Some(pid), None) => {
            let (Ok(pid), Some(pidfd), Some(answer)) = (
                pid.parse::<u32>(),
                pidfds.pop_front(),
                shared.answers.pop_front(),
            ) else {
                return false;
            };
            let (ended, watch) = watch::channel(None);
            shared.running.insert(pid, ended);
            if let Err(Ok((_, pidfd, _))) = answer.send(Ok((pid, pidfd, watch))) {
                // Its spawner was cancelled meanwhile: the child is not wanted.
                let _ = pidfd_kill(&pidfd);
            }
            true
        }
        (Some("failed"), _, _) => match shared.answers.pop_front() {
            Some(answer) => {
                let reason = line.strip_prefix("failed ").unwrap_or(line).to_owned();
                let _ = answer.send(Err(reason));
                true
            }
            None => false,
        },
        (Some("exited"), Some(pid), Some(raw)) => {
            let (Ok(pid), Ok(raw)) = (pid.parse::<u32>(), raw.parse::<i32>()) else {
                return false;
            };
            if let Some(ended) = shared.running.remove(&pid) {
                let _ = ended.send(Some(ExitStatus::from_raw(raw)));
            }
            true
        }
        _ => false,
    }
}

/// After the zygote was reaped: no more requests; every answer awaited fails and every child
/// still running is reported killed (they died with the zygote).
fn gone(shared: &Mutex<Shared>) {
    let mut shared = lock(shared);
    shared.gone = true;
    for answer in shared.answers.drain(..) {
        let _ = answer.send(Err("the zygote exited".into()));
    }
    for (_, ended) in shared.running.drain() {
        let _ = ended.send(Some(ExitStatus::from_raw(Signal::SIGKILL as i32)));
    }
}

/// `pidfd` registered with the runtime, to wait until it turns readable (the process ended).
#[allow(unsafe_code)]
fn watch_pidfd(pidfd: OwnedFd) -> std::io::Result<AsyncFd<OwnedFd>> {
    // SAFETY: the `AsyncFd` owns the descriptor and deregisters it before closing it.
    unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) }
        .map_err(|e| e.into())
}

/// A descriptor received with `SCM_RIGHTS`, owned.
#[allow(unsafe_code)]
fn owned(fd: RawFd) -> OwnedFd {
    // SAFETY: the kernel installed this descriptor in our table for this message; nothing
    // else knows of it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// SIGKILL through a pidfd: the process it was opened for, or nothing (never a reused pid).
#[allow(unsafe_code)]
fn pidfd_kill(pidfd: &OwnedFd) -> std::io::Result<()> {
    // SAFETY: a plain system call with integer arguments and a null `siginfo`.
    let done = unsafe {
        nix::libc::syscall(
            nix::libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            Signal::SIGKILL as i32,
            std::ptr::null::<nix::libc::siginfo_t>(),
            0,
        )
    };
    if done < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}
