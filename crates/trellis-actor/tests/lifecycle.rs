//! Process lifecycle with real signals: a root actor runs in a process of its own (this test
//! binary, re-executed in a role), holding a child and a grandchild; the test signals it and
//! checks that the whole tree is gone. Ported from tractor's `test_cancellation.py`
//! (`test_cancel_via_SIGINT`, `test_fast_graceful_cancel_when_spawn_task_in_soft_proc_wait_for_daemon`)
//! and `test_spawning.py`; the original is named on each test.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis_actor::{Config, Functions, SpawnBackend, Transport, open_nursery};

const ROLE: &str = "TRELLIS_TEST_ROLE";
const TRANSPORT: &str = "TRELLIS_TEST_TRANSPORT";
/// `zygote` runs the tree on the zygote spawn backend (its children inherit the variable).
const BACKEND: &str = "TRELLIS_TEST_SPAWN_BACKEND";
const GRACE: Duration = Duration::from_millis(1000);

/// Holds a grandchild actor; with `block`, the grandchild is stuck in blocking code that never
/// reaches a checkpoint, so only a kill ends it.
async fn hold_with_grandchild(block: bool) -> Result<(), trellis::Error> {
    open_nursery(|an| async move {
        let grandchild = an.start_actor("grandchild").await?;
        println!("pid grandchild {}", grandchild.pid());
        trellis::open_nursery(|n| async move {
            if block {
                let g = grandchild.clone();
                n.start_soon(async move { g.run(block_thread, ()).await })?;
                // Give the call time to reach the grandchild before saying ready.
                trellis::sleep(Duration::from_millis(100)).await?;
            }
            println!("ready");
            trellis::sleep_forever().await?;
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
}

/// Holds a grandchild actor running `report_cancel`.
async fn hold_reporting() -> Result<(), trellis::Error> {
    open_nursery(|an| async move {
        let grandchild = an.start_actor("grandchild").await?;
        println!("pid grandchild {}", grandchild.pid());
        trellis::open_nursery(|n| async move {
            n.start_soon(async move { grandchild.run(report_cancel, ()).await })?;
            // Give the call time to reach the grandchild before saying ready.
            trellis::sleep(Duration::from_millis(100)).await?;
            println!("ready");
            trellis::sleep_forever().await?;
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
}

/// Sleeps until cancelled, then says why on its standard output (the test's pipe).
async fn report_cancel() -> Result<(), trellis::Error> {
    let cancelled = trellis::sleep_forever().await.unwrap_err();
    println!("grandchild saw: {cancelled}");
    Err(cancelled.into())
}

/// Blocks its thread for good (the child runtime has one thread: nothing else runs).
async fn block_thread() -> Result<(), trellis::Error> {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn transport() -> Transport {
    match std::env::var(TRANSPORT).as_deref() {
        Ok("tcp") => Transport::tcp_loopback(),
        _ => Transport::Unix,
    }
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(hold_with_grandchild)
            .register(hold_reporting)
            .register(report_cancel)
            .register(block_thread),
    )
    .transport(transport())
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(GRACE)
    .spawn_backend(match std::env::var(BACKEND).as_deref() {
        Ok("zygote") => SpawnBackend::Zygote,
        _ => SpawnBackend::Exec,
    })
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// The root role: a child holding a grandchild (blocked or not), until signalled.
#[test]
fn role_root() {
    let Ok(role) = std::env::var(ROLE) else {
        return;
    };
    let block = role == "blocked";
    let release = role == "release";
    println!("pid root {}", std::process::id());
    let outcome = trellis::Runner::multi_thread().run(trellis_actor::run_root(
        "root",
        config(),
        || async move {
            open_nursery(|an| async move {
                let child = an.start_actor("child").await?;
                println!("pid child {}", child.pid());
                if role == "report" {
                    return Ok(child.run(hold_reporting, ()).await?);
                }
                if !release {
                    return Ok(child.run(hold_with_grandchild, (block,)).await?);
                }
                // Holds the call until a line arrives on this process's input; then, with no
                // call to the child live, ends the tree from its body (the connection to the
                // child still open) when the input closes.
                let held = child.clone();
                trellis::open_nursery(|n| async move {
                    n.start_soon(async move { held.run(hold_with_grandchild, (false,)).await })?;
                    trellis::threads::run_sync(|| std::io::stdin().read_line(&mut String::new()))
                        .await?
                        .map_err(trellis::Error::new)?;
                    n.cancel();
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                // The call is over (the child acknowledged its cancellation): say so.
                eprintln!("call ended");
                trellis::threads::run_sync(|| {
                    std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new())
                })
                .await?
                .map_err(trellis::Error::new)?;
                an.cancel();
                Ok(())
            })
            .await
        },
    ));
    let code = match outcome {
        Ok(()) => 0,
        Err(e) if e.is_interrupted() => 130,
        Err(e) => {
            eprintln!("root failed: {e:?}");
            1
        }
    };
    std::process::exit(code);
}

/// A running root role and the pids it reported.
struct Tree {
    root: Child,
    pids: Vec<(String, u32)>,
    /// The root's input: closing it releases a `release` root.
    input: Option<std::process::ChildStdin>,
    /// What the tree prints after `ready`.
    output: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// Starts the root role over `transport` (`unix` or `tcp`, with `+zygote` for that backend).
fn start_tree(role: &str, transport: &str) -> Tree {
    let (transport, backend) = transport.split_once('+').unwrap_or((transport, "exec"));
    let mut root = Command::new(std::env::current_exe().unwrap())
        .args([
            "role_root",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE, role)
        .env(TRANSPORT, transport)
        .env(BACKEND, backend)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = root.stdout.take().unwrap();
    let mut pids = Vec::new();
    let mut output = BufReader::new(stdout).lines();
    for line in output.by_ref() {
        let line = line.unwrap();
        if line == "ready" {
            break;
        }
        if let Some(rest) = line.strip_prefix("pid ") {
            let (who, pid) = rest.split_once(' ').unwrap();
            pids.push((who.to_owned(), pid.parse().unwrap()));
        }
    }
    assert_eq!(pids.len(), 3, "root, child and grandchild report: {pids:?}");
    let input = root.stdin.take();
    Tree {
        root,
        pids,
        input,
        output,
    }
}

/// Whether the process runs (a zombie, dead but not yet reaped by its new parent, counts as
/// gone: it runs no code and holds nothing but its process-table entry).
fn running(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
            state != Some(Some('Z')) && state != Some(Some('X'))
        }
        Err(_) => false,
    }
}

/// Waits up to `limit` for the root to exit; returns its status and how long it took.
fn wait_root(root: &mut Child, limit: Duration) -> (Option<i32>, Duration) {
    let t0 = Instant::now();
    loop {
        if let Some(status) = root.try_wait().unwrap() {
            return (status.code(), t0.elapsed());
        }
        if t0.elapsed() > limit {
            let _ = root.kill();
            let _ = root.wait();
            panic!("the root did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn wait_gone(pids: &[(String, u32)], limit: Duration) {
    let t0 = Instant::now();
    while pids.iter().any(|(_, pid)| running(*pid)) {
        assert!(
            t0.elapsed() < limit,
            "still running after {limit:?}: {:?}",
            pids.iter().filter(|(_, p)| running(*p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// tractor: test_cancellation.py::test_cancel_via_SIGINT — SIGINT at the root tears the whole
/// tree down gracefully, the root exits 130 within 2 s, and every actor is gone.
fn sigint_at_the_root_tears_the_tree_down(transport: &str) {
    let mut tree = start_tree("idle", transport);
    signal(tree.root.id(), Signal::SIGINT);
    let (code, _took) = wait_root(&mut tree.root, Duration::from_secs(2));
    assert_eq!(code, Some(130));
    wait_gone(&tree.pids, Duration::from_millis(100));
}

/// SIGINT at the root reaches a grandchild's function as a `Cancelled` that says so: its
/// reason crossed two processes ("cancelled due to interrupt in actor root#… with reason
/// 'Ctrl-C (SIGINT)'") — also when the root's connections go down with it (they cancel the
/// calls made on them first, with the reason), and whichever of the child's ways of learning
/// of the cancellation comes first.
fn a_grandchild_learns_that_the_root_got_sigint(transport: &str) {
    let mut tree = start_tree("report", transport);
    signal(tree.root.id(), Signal::SIGINT);
    let saw = tree
        .output
        .by_ref()
        .map_while(Result::ok)
        .find_map(|line| line.strip_prefix("grandchild saw: ").map(str::to_owned))
        .expect("the grandchild reports its cancellation");
    let (code, _took) = wait_root(&mut tree.root, Duration::from_secs(2));
    assert_eq!(code, Some(130));
    let root_pid = tree.pids.iter().find(|(who, _)| who == "root").unwrap().1;
    assert!(
        saw.starts_with("cancelled due to interrupt in actor root#")
            && saw.ends_with(" with reason 'Ctrl-C (SIGINT)'"),
        "{saw} (root pid {root_pid})"
    );
    wait_gone(&tree.pids, Duration::from_millis(100));
}

/// tractor: test_cancellation.py::test_cancel_while_childs_child_in_sync_sleep — a grandchild
/// stuck in blocking code is killed after its parent's grace period; the tree still goes.
fn grandchild_stuck_in_blocking_code_is_killed(transport: &str) {
    let mut tree = start_tree("blocked", transport);
    signal(tree.root.id(), Signal::SIGINT);
    // The child waits one grace period for the grandchild, then kills it; the root waits one
    // grace period for the child. Both fit in two, plus start-up slack.
    let (code, _took) = wait_root(&mut tree.root, 2 * GRACE + Duration::from_secs(2));
    assert_eq!(code, Some(130));
    wait_gone(&tree.pids, Duration::from_millis(500));
}

/// tractor: test_spawning.py / the "no orphans" rule — SIGKILL of the root (no cleanup at all)
/// leaves no descendant running after 1 s: each child dies with its parent.
fn sigkill_of_the_root_leaves_no_descendant(transport: &str) {
    let mut tree = start_tree("idle", transport);
    signal(tree.root.id(), Signal::SIGKILL);
    let _ = tree.root.wait();
    wait_gone(&tree.pids, Duration::from_secs(1));
    // Nobody was left to remove their socket directories: the next actor started does.
    trellis::Runner::current_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root("sweeper", config(), || async {
            Ok(())
        }))
        .unwrap();
    for (who, pid) in &tree.pids {
        assert!(
            common::socket_dirs_of(*pid).is_empty(),
            "{who}'s socket directory is still there"
        );
    }
}

/// SIGKILL of the child: its parent sees it die (the root fails with the death in its group
/// and exits non-zero), and the grandchild dies with it.
fn sigkill_of_a_child_fails_its_parent(transport: &str) {
    let mut tree = start_tree("idle", transport);
    let child = tree.pids.iter().find(|(who, _)| who == "child").unwrap().1;
    signal(child, Signal::SIGKILL);
    // The failure surfaces in the root, which has finished within a second.
    let (code, _took) = wait_root(&mut tree.root, Duration::from_secs(1));
    assert_eq!(code, Some(1));
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut tree.root.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(stderr.contains("actor child#"), "{stderr}");
    wait_gone(&tree.pids, Duration::from_secs(1));
}

/// SIGTERM at the root (a service manager stopping it) tears the tree down as SIGINT does:
/// the root exits 130 within 2 s, every actor is gone, and no socket directory is left.
fn sigterm_at_the_root_tears_the_tree_down(transport: &str) {
    let mut tree = start_tree("idle", transport);
    signal(tree.root.id(), Signal::SIGTERM);
    let (code, _took) = wait_root(&mut tree.root, Duration::from_secs(2));
    assert_eq!(code, Some(130));
    wait_gone(&tree.pids, Duration::from_millis(100));
    for (who, pid) in &tree.pids {
        assert!(
            common::socket_dirs_of(*pid).is_empty(),
            "{who}'s socket directory is still there"
        );
    }
}

/// A child that is stopped (SIGSTOP) cannot answer its parent's request to exit: it is
/// killed when the grace period ends (not when the request gives up on it too, two seconds
/// later), and its child dies with it. The root ends the tree from its body, so the request
/// goes over a live connection.
fn a_stopped_child_is_killed_at_the_grace_period(transport: &str) {
    let mut tree = start_tree("release", transport);
    let child = tree.pids.iter().find(|(who, _)| who == "child").unwrap().1;
    // The root's call into the child ends (and the grandchild with it) before the child
    // stops: what is measured is the child's own teardown.
    let mut input = tree.input.take().unwrap();
    std::io::Write::write_all(&mut input, b"end the call\n").unwrap();
    // Kept open to the end: the root may write more.
    let mut stderr = BufReader::new(tree.root.stderr.take().unwrap()).lines();
    let ended = stderr
        .by_ref()
        .map_while(Result::ok)
        .any(|l| l == "call ended");
    assert!(ended, "the root ended its call");
    signal(child, Signal::SIGSTOP);
    drop(input);
    let (code, took) = wait_root(&mut tree.root, GRACE + Duration::from_secs(4));
    assert_eq!(code, Some(0));
    assert!(
        took < GRACE + Duration::from_millis(1500),
        "the root took {took:?}, grace {GRACE:?}"
    );
    wait_gone(&tree.pids, Duration::from_secs(1));
}

/// Every test above, once over Unix sockets and once over TCP on the loopback interface.
mod unix {
    #[test]
    fn sigint_at_the_root_tears_the_tree_down() {
        super::sigint_at_the_root_tears_the_tree_down("unix")
    }
    #[test]
    fn a_grandchild_learns_that_the_root_got_sigint() {
        super::a_grandchild_learns_that_the_root_got_sigint("unix")
    }
    #[test]
    fn grandchild_stuck_in_blocking_code_is_killed() {
        super::grandchild_stuck_in_blocking_code_is_killed("unix")
    }
    #[test]
    fn sigkill_of_the_root_leaves_no_descendant() {
        super::sigkill_of_the_root_leaves_no_descendant("unix")
    }
    #[test]
    fn sigkill_of_a_child_fails_its_parent() {
        super::sigkill_of_a_child_fails_its_parent("unix")
    }
    #[test]
    fn sigterm_at_the_root_tears_the_tree_down() {
        super::sigterm_at_the_root_tears_the_tree_down("unix")
    }
    #[test]
    fn a_stopped_child_is_killed_at_the_grace_period() {
        super::a_stopped_child_is_killed_at_the_grace_period("unix")
    }
}

mod tcp {
    #[test]
    fn sigint_at_the_root_tears_the_tree_down() {
        super::sigint_at_the_root_tears_the_tree_down("tcp")
    }
    #[test]
    fn a_grandchild_learns_that_the_root_got_sigint() {
        super::a_grandchild_learns_that_the_root_got_sigint("tcp")
    }
    #[test]
    fn grandchild_stuck_in_blocking_code_is_killed() {
        super::grandchild_stuck_in_blocking_code_is_killed("tcp")
    }
    #[test]
    fn sigkill_of_the_root_leaves_no_descendant() {
        super::sigkill_of_the_root_leaves_no_descendant("tcp")
    }
    #[test]
    fn sigkill_of_a_child_fails_its_parent() {
        super::sigkill_of_a_child_fails_its_parent("tcp")
    }
    #[test]
    fn sigterm_at_the_root_tears_the_tree_down() {
        super::sigterm_at_the_root_tears_the_tree_down("tcp")
    }
    #[test]
    fn a_stopped_child_is_killed_at_the_grace_period() {
        super::a_stopped_child_is_killed_at_the_grace_period("tcp")
    }
}

/// The same on the zygote spawn backend.
mod unix_zygote {
    #[test]
    fn sigint_at_the_root_tears_the_tree_down() {
        super::sigint_at_the_root_tears_the_tree_down("unix+zygote")
    }
    #[test]
    fn a_grandchild_learns_that_the_root_got_sigint() {
        super::a_grandchild_learns_that_the_root_got_sigint("unix+zygote")
    }
    #[test]
    fn grandchild_stuck_in_blocking_code_is_killed() {
        super::grandchild_stuck_in_blocking_code_is_killed("unix+zygote")
    }
    #[test]
    fn sigkill_of_the_root_leaves_no_descendant() {
        super::sigkill_of_the_root_leaves_no_descendant("unix+zygote")
    }
    #[test]
    fn sigkill_of_a_child_fails_its_parent() {
        super::sigkill_of_a_child_fails_its_parent("unix+zygote")
    }
    #[test]
    fn sigterm_at_the_root_tears_the_tree_down() {
        super::sigterm_at_the_root_tears_the_tree_down("unix+zygote")
    }
    #[test]
    fn a_stopped_child_is_killed_at_the_grace_period() {
        super::a_stopped_child_is_killed_at_the_grace_period("unix+zygote")
    }
}

mod tcp_zygote {
    #[test]
    fn sigint_at_the_root_tears_the_tree_down() {
        super::sigint_at_the_root_tears_the_tree_down("tcp+zygote")
    }
    #[test]
    fn a_grandchild_learns_that_the_root_got_sigint() {
        super::a_grandchild_learns_that_the_root_got_sigint("tcp+zygote")
    }
    #[test]
    fn grandchild_stuck_in_blocking_code_is_killed() {
        super::grandchild_stuck_in_blocking_code_is_killed("tcp+zygote")
    }
    #[test]
    fn sigkill_of_the_root_leaves_no_descendant() {
        super::sigkill_of_the_root_leaves_no_descendant("tcp+zygote")
    }
    #[test]
    fn sigkill_of_a_child_fails_its_parent() {
        super::sigkill_of_a_child_fails_its_parent("tcp+zygote")
    }
    #[test]
    fn sigterm_at_the_root_tears_the_tree_down() {
        super::sigterm_at_the_root_tears_the_tree_down("tcp+zygote")
    }
    #[test]
    fn a_stopped_child_is_killed_at_the_grace_period() {
        super::a_stopped_child_is_killed_at_the_grace_period("tcp+zygote")
    }
}
