//! The tree-wide terminal lock, on a real pseudo-terminal: prompts of different actors never
//! interleave, and Ctrl-C while one actor holds the terminal (and another waits for it) tears
//! the tree down instead of deadlocking. tractor's originals: the debugger lock tests of
//! `test_debugger.py` (`test_multi_subactors`, `test_root_nursery_cancels_before_child_releases_tty_lock`)
//! and its issues 148 and 320.
//!
//! The program under test is this test binary's `terminal_program`, started by `setsid -c` as
//! the session leader of a fresh pseudo-terminal; the test plays the person at the keyboard.

mod common;

use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use trellis_actor::{Config, Functions, open_nursery, with_terminal};

const PROMPT: &str = "] your answer? ";

/// Asks a question at the terminal and echoes the answer.
async fn ask(name: String) -> Result<String, trellis::Error> {
    with_terminal(|term| async move {
        let answer = term
            .prompt(format!("[{name}] your answer? "))
            .await?
            .unwrap_or_default();
        term.write(format!("[{name}] got: {answer}\n")).await?;
        Ok(answer)
    })
    .await
}

fn config() -> Config {
    Config::new(Functions::new().register(ask)).child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "-q",
    ])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// In `killed` mode: alice and bob each in an actor nursery of their own, so that one dying
/// does not cancel the other; says how each ended.
async fn ask_apart() -> Result<(), trellis::Error> {
    trellis::open_nursery(|n| async move {
        for name in ["alice", "bob"] {
            n.start_soon(async move {
                let outcome = open_nursery(|an| async move {
                    let portal = an.start_actor(name).await?;
                    println!("pid {name} {}\r", portal.pid());
                    portal.run(ask, (name.to_owned(),)).await?;
                    an.cancel();
                    Ok(())
                })
                .await;
                match outcome {
                    Ok(()) => println!("{name} answered\r"),
                    Err(e) if e.is_cancelled() => return Err(e),
                    Err(_) => println!("{name} died\r"),
                }
                Ok::<_, trellis::Error>(())
            })?;
        }
        Ok::<_, trellis::Error>(())
    })
    .await?;
    println!("all answered\r");
    Ok(())
}

/// The program on the terminal, when `TRELLIS_TERMINAL_PROGRAM` names what it does:
/// `prompts`: alice, bob and the root ask at once; `ctrl-c`: alice and bob ask, nobody answers;
/// `killed`: alice and bob ask, each in a nursery of its own.
#[test]
fn terminal_program() {
    let Ok(mode) = std::env::var("TRELLIS_TERMINAL_PROGRAM") else {
        return;
    };
    let outcome = trellis::Runner::multi_thread().run(trellis_actor::run_root(
        "root",
        config(),
        || async move {
            if mode == "killed" {
                return ask_apart().await;
            }
            open_nursery(|an| async move {
                let mut portals = Vec::new();
                for name in ["alice", "bob"] {
                    let portal = an.start_actor(name).await?;
                    println!("pid {name} {}\r", portal.pid());
                    portals.push((name, portal));
                }
                trellis::open_nursery(|n| async move {
                    for (name, portal) in portals {
                        n.start_soon(async move { portal.run(ask, (name.to_owned(),)).await })?;
                    }
                    if mode == "prompts" {
                        ask("root".to_owned()).await?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                an.cancel();
                Ok(())
            })
            .await?;
            println!("all answered\r");
            Ok::<_, trellis::Error>(())
        },
    ));
    common::exit_as(outcome);
}

/// The program, on a new pseudo-terminal; the master side's output arrives on the channel.
struct OnTerminal {
    child: Child,
    master: std::fs::File,
    output: mpsc::Receiver<Vec<u8>>,
    seen: String,
}

impl OnTerminal {
    fn start(mode: &str) -> Self {
        let pty = nix::pty::openpty(None, None).expect("a pseudo-terminal");
        let slave: OwnedFd = pty.slave;
        let child = Command::new("setsid")
            .arg("--ctty")
            .arg(std::env::current_exe().unwrap())
            .args(["terminal_program", "--exact", "--nocapture", "-q"])
            .env("TRELLIS_TERMINAL_PROGRAM", mode)
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .expect("setsid runs");
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().unwrap();
        let (tx, output) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // Ends with EIO once every process has closed the terminal.
            while let Ok(n @ 1..) = reader.read(&mut buf) {
                if tx.send(buf[..n].to_vec()).is_err() {
                    return;
                }
            }
        });
        OnTerminal {
            child,
            master,
            output,
            seen: String::new(),
        }
    }

    /// Reads until the output from `from` on contains `text`; returns where it starts.
    /// (The limit only keeps a broken build from hanging the suite.)
    fn expect(&mut self, from: usize, text: &str) -> usize {
        let limit = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(at) = self.seen[from..].find(text) {
                return from + at;
            }
            let left = limit.saturating_duration_since(Instant::now());
            match self.output.recv_timeout(left) {
                Ok(bytes) => self.seen.push_str(&String::from_utf8_lossy(&bytes)),
                Err(_) => panic!("no {text:?} on the terminal; it shows:\n{}", self.seen),
            }
        }
    }

    fn type_keys(&mut self, keys: &[u8]) {
        self.master.write_all(keys).unwrap();
    }

    fn wait(&mut self) -> Option<i32> {
        common::exit_code_within(&mut self.child, Duration::from_secs(60)).unwrap_or_else(|| {
            panic!(
                "the program did not exit; the terminal shows:\n{}",
                self.seen
            )
        })
    }

    fn pids(&self) -> Vec<u32> {
        self.seen
            .lines()
            .filter_map(|l| l.trim().strip_prefix("pid "))
            .filter_map(|l| l.split(' ').nth(1)?.parse().ok())
            .collect()
    }
}

impl Drop for OnTerminal {
    /// A failed test leaves nothing behind: the program (and with it, by their parent-death
    /// signal, its actors) is killed.
    fn drop(&mut self) {
        common::kill_unless_exited(&mut self.child);
    }
}

fn gone(pid: u32) -> bool {
    let limit = Instant::now() + Duration::from_secs(30);
    while Instant::now() < limit {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.is_empty() || stat.contains(") Z ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn prompts_of_different_actors_never_interleave() {
    let mut term = OnTerminal::start("prompts");
    let mut at = 0;
    let mut answered = Vec::new();
    for _ in 0..3 {
        let prompt = term.expect(at, PROMPT);
        let name_start = term.seen[..prompt].rfind('[').unwrap() + 1;
        let name = term.seen[name_start..prompt].to_owned();
        term.type_keys(format!("for {name}\n").as_bytes());
        let got = term.expect(prompt, &format!("[{name}] got: for {name}"));
        // Between a prompt and its answer, nobody else prompted.
        assert!(
            !term.seen[prompt + PROMPT.len()..got].contains("your answer?"),
            "prompts interleaved:\n{}",
            term.seen
        );
        at = got;
        answered.push(name);
    }
    term.expect(at, "all answered");
    assert_eq!(term.wait(), Some(0), "{}", term.seen);
    answered.sort();
    assert_eq!(answered, ["alice", "bob", "root"]);
}

#[test]
fn ctrl_c_while_an_actor_holds_the_terminal_does_not_deadlock() {
    let mut term = OnTerminal::start("ctrl-c");
    // One of alice and bob holds the terminal and waits for a line; the other waits for the
    // terminal. Nobody answers: Ctrl-C instead.
    let prompt = term.expect(0, PROMPT);
    term.expect(0, "pid bob ");
    term.type_keys(b"\x03");
    assert_eq!(term.wait(), Some(130), "{}", term.seen);
    assert!(
        !term.seen[prompt + PROMPT.len()..].contains("your answer?"),
        "the second actor got the terminal:\n{}",
        term.seen
    );
    let pids = term.pids();
    assert_eq!(pids.len(), 2, "{}", term.seen);
    for pid in pids {
        assert!(gone(pid), "actor process {pid} is still running");
    }
}

#[test]
fn an_actor_killed_while_holding_the_terminal_releases_it() {
    let mut term = OnTerminal::start("killed");
    // Whoever got the terminal first is killed at its prompt; the other must get it next.
    let prompt = term.expect(0, PROMPT);
    let name_start = term.seen[..prompt].rfind('[').unwrap() + 1;
    let holder = term.seen[name_start..prompt].to_owned();
    let other = if holder == "alice" { "bob" } else { "alice" };
    let pid = term.expect(0, &format!("pid {holder} "));
    let pid: i32 = term.seen[pid..]
        .split_whitespace()
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("a pid");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let next = term.expect(prompt + PROMPT.len(), &format!("[{other}{PROMPT}"));
    term.type_keys(format!("for {other}\n").as_bytes());
    term.expect(next, &format!("[{other}] got: for {other}"));
    term.expect(prompt, &format!("{holder} died"));
    term.expect(next, "all answered");
    assert_eq!(term.wait(), Some(0), "{}", term.seen);
    assert!(gone(pid as u32));
}
