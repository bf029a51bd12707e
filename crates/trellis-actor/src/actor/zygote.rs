//! The zygote spawn backend, the zygote's side (tractor's forkserver, in Rust): a small
//! single-threaded process of the program, started by a parent before it needs it, that
//! forks child actors on request. A forked child skips `exec`, the dynamic loader and the
//! program's start-up; it builds its runtime and connects back to its parent as any child
//! does.
//!
//! The zygote runs no runtime and no thread of its own: it forks from a process that holds no
//! lock another thread could have left taken. Its standard input is a Unix socket to its
//! parent, carrying, one way, a launch block ([`super::launch`]) per child to start, and the
//! other way lines of text:
//!
//! ```text
//! spawned PID              (in answer to a block, in order; a pidfd of the child comes
//!                           with it, as SCM_RIGHTS)
//! failed REASON            (in answer to a block that could not be served)
//! exited PID STATUS        (a child it started has ended and was reaped; STATUS is the raw
//!                           wait status)
//! ```
//!
//! The zygote dies with its parent (`PR_SET_PDEATHSIG`), and its children with it: a parent
//! killed outright leaves nothing. When its input closes it exits, taking its children along.
//!
//! It must fork from a process in which no other thread can hold a lock the child needs:
//! `serve_if_child`, the entry, runs before any runtime; under a test harness one other
//! thread waits for the test, holding nothing.

use std::io::{Read, Write};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;
use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::{ForkResult, Pid, fork, getppid};

use super::config::env;
use super::launch::Launch;

/// The value of the launch variable that makes a process a zygote.
pub(crate) const ZYGOTE: &str = "zygote";

/// The most a parent may have written and the zygote not yet read as blocks: a launch block
/// is bounded (64 lines of 8 KiB), and requests come one at a time.
const MAX_PENDING: usize = 1 << 20;

/// Serves as a zygote until the parent closes the socket (or dies); `child` runs as each
/// forked child, given its launch block and the zygote's pid, and returns its exit status.
pub(crate) fn serve(child: impl Fn(Launch, Pid) -> i32) -> ! {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let parent_pid = std::env::var(env::PARENT_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if parent_pid.is_none_or(|pid| getppid().as_raw() != pid) {
        std::process::exit(super::config::EXIT_PARENT_LOST.into());
    }
    // Standard input is the socket the parent gave: its own descriptor, so that a forked
    // child can close it (fd 0 becomes `/dev/null` there).
    let control = match std::io::stdin().as_fd().try_clone_to_owned() {
        Ok(fd) => UnixStream::from(fd),
        Err(e) => {
            eprintln!("trellis-actor: the zygote has no control socket: {e}");
            std::process::exit(2);
        }
    };
    let code = Zygote::new(control).run(&child);
    std::process::exit(code);
}

struct Zygote {
    /// The socket to the parent (`None` only in a forked child, which closed it).
    control: Option<UnixStream>,
    /// The children running, each with a pidfd that turns readable when it ends. (Not
    /// SIGCHLD: the process may have other threads — a test harness's — that would take it.)
    children: Vec<(Pid, OwnedFd)>,
    /// What was read of the parent's blocks and not yet served.
    pending: Vec<u8>,
    /// How much of `pending` holds no block's end (searched already).
    searched: usize,
}

impl Zygote {
    fn new(control: UnixStream) -> Zygote {
        Zygote {
            control: Some(control),
            children: Vec::new(),
            pending: Vec::new(),
            searched: 0,
        }
    }

    /// Serves blocks and reports ends until the parent closes the socket; the exit status.
    fn run(&mut self, child: &impl Fn(Launch, Pid) -> i32) -> i32 {
        let mut buf = [0u8; 4096];
        loop {
            let Some(control) = &self.control else {
                return 2;
            };
            let (input, ended) = {
                let mut fds = vec![PollFd::new(control.as_fd(), PollFlags::POLLIN)];
                fds.extend(
                    (self.children.iter())
                        .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN)),
                );
                match poll(&mut fds, PollTimeout::NONE) {
                    Ok(_) => {}
                    Err(nix::errno::Errno::EINTR) => continue,
                    Err(_) => return 2,
                }
                let any = |fd: &PollFd<'_>| fd.revents().is_some_and(|r| !r.is_empty());
                let ended: Vec<usize> = (1..fds.len()).filter(|&i| any(&fds[i])).collect();
                (any(&fds[0]), ended)
            };
            // Last first: the indices stay valid as ended children leave the list.
            for &i in ended.iter().rev() {
                let (pid, _pidfd) = self.children.swap_remove(i - 1);
                if self.reap(pid).is_err() {
                    return 0;
                }
            }
            if input {
                match self.control.as_ref().map(|mut c| c.read(&mut buf)) {
                    // The parent is gone or done with us: the children go too.
                    None | Some(Ok(0) | Err(_)) => return 0,
                    Some(Ok(n)) => self.pending.extend_from_slice(&buf[..n]),
                }
                if self.pending.len() > MAX_PENDING {
                    eprintln!("trellis-actor: the zygote's parent wrote too much: exiting");
                    return 2;
                }
                while let Some(block) = self.next_block() {
                    let told = match Launch::read(&mut block.as_slice()) {
                        Ok(launch) => self.fork(launch, child),
                        Err(reason) => self.tell(&format!("failed {}\n", one_line(&reason))),
                    };
                    if told.is_err() {
                        return 0;
                    }
                }
            }
        }
    }

    /// Writes `line` to the parent.
    fn tell(&self, line: &str) -> std::io::Result<()> {
        match self.control.as_ref() {
            Some(mut control) => control.write_all(line.as_bytes()),
            None => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Writes `line` to the parent with `fd` attached (`SCM_RIGHTS`): one message, whole.
    fn tell_with(&self, line: &str, fd: &OwnedFd) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let control = self
            .control
            .as_ref()
            .ok_or(std::io::ErrorKind::NotConnected)?;
        let fds = [fd.as_raw_fd()];
        let rights = [ControlMessage::ScmRights(&fds)];
        let iov = [std::io::IoSlice::new(line.as_bytes())];
        let sent = sendmsg::<()>(control.as_raw_fd(), &iov, &rights, MsgFlags::empty(), None)?;
        if sent == line.len() {
            Ok(())
        } else {
            // A short write of a few bytes into a blocking socket: the rest follows.
            self.tell(&line[sent..])
        }
    }

    /// The next whole block the parent wrote (up to and with its `end` line).
    fn next_block(&mut self) -> Option<Vec<u8>> {
        const END: &[u8] = b"\nend\n";
        let from = self.searched.saturating_sub(END.len() - 1);
        let Some(at) = self.pending[from..]
            .windows(END.len())
            .position(|w| w == END)
        else {
            self.searched = self.pending.len();
            return None;
        };
        self.searched = 0;
        Some(self.pending.drain(..from + at + END.len()).collect())
    }

    /// Forks a child for `launch` and tells the parent (`spawned`, with its pidfd, or
    /// `failed`); `Err` when the parent cannot be told.
    #[allow(unsafe_code)]
    fn fork(&mut self, launch: Launch, child: &impl Fn(Launch, Pid) -> i32) -> std::io::Result<()> {
        let zygote = Pid::this();
        // SAFETY: the zygote starts no thread and runs no runtime. Another thread of the
        // process (a test harness's) waits, holding no lock the child could need: the child
        // inherits only this thread, and glibc makes `malloc` usable after `fork`.
        match unsafe { fork() } {
            Ok(ForkResult::Parent { child }) => {
                // Its group exists before anyone hears of it (the child says the same).
                let _ = nix::unistd::setpgid(child, child);
                match pidfd_open(child) {
                    Ok(pidfd) => {
                        // Watched from now on, whether or not the parent hears of it.
                        let told = self.tell_with(&format!("spawned {child}\n"), &pidfd);
                        self.children.push((child, pidfd));
                        told
                    }
                    Err(e) => {
                        // Unwatchable: it must not run unsupervised.
                        let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
                        let _ = waitpid(child, None);
                        self.tell(&format!("failed pidfd_open: {e}\n"))
                    }
                }
            }
            Ok(ForkResult::Child) => {
                let code = self.become_child().map_or(2, |()| child(launch, zygote));
                std::process::exit(code);
            }
            Err(e) => self.tell(&format!("failed fork: {e}\n")),
        }
    }

    /// In a forked child: leaves the zygote's pidfds and its socket (standard input becomes
    /// `/dev/null`).
    fn become_child(&mut self) -> std::io::Result<()> {
        self.children.clear();
        drop(self.control.take());
        let null = std::fs::File::open("/dev/null")?;
        nix::unistd::dup2_stdin(null)?;
        Ok(())
    }

    /// Reaps `pid`, which has ended, and tells the parent; `Err` when it cannot be told.
    fn reap(&mut self, pid: Pid) -> std::io::Result<()> {
        let raw = match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => (code & 0xff) << 8,
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                signal as i32 | if core { 0x80 } else { 0 }
            }
            // Not ours any more, or stopped (pidfds turn readable only at the end).
            _ => return Ok(()),
        };
        self.tell(&format!("exited {pid} {raw}\n"))
    }
}

/// A pidfd for `pid` (Linux 5.3): readable once the process has ended.
#[allow(unsafe_code)]
fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: a plain system call with integer arguments.
    let fd = unsafe { nix::libc::syscall(nix::libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::other("bad pidfd"))?;
    // SAFETY: the kernel just gave us this descriptor; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}
