//! Children started through a command launcher (`Placement::command`) on this host: they run
//! detached from their parent (their own session, the launcher in between), learn who they
//! are from their standard input, and are then ordinary children. When the launcher's control
//! channel closes they exit; one that outstays its grace period is killed through the
//! launcher's kill command. The same machinery runs children on other hosts over ssh
//! (`ssh_hosts.rs`). Erlang's `peer` module (`peer_SUITE`: `dist`, `shutdown_halt`,
//! `control_connection`) is the model; tractor has no remote spawning to port.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use common::root_with;
use trellis_actor::{
    ActorError, CommandLauncher, Config, Functions, MsgStream, Placement, RemoteActorError,
    Transport, open_nursery,
};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

async fn fail(why: String) -> Result<(), trellis::Error> {
    Err(trellis::Error::msg(why))
}

async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 1..=n {
        stream.send(i).await?;
    }
    Ok(())
}

async fn nap() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

/// Blocks its thread for good (the child runtime has one thread: it cannot even exit when
/// asked).
async fn block_thread() -> Result<(), trellis::Error> {
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The child's process: its id, its parent's, its session's, and what its environment
/// says of the tree (nothing: a launched child learns it from its input).
async fn whoami() -> Result<(u32, u32, u32, bool), trellis::Error> {
    let pid = nix::unistd::getpid();
    let sid = nix::unistd::getsid(None).map_err(|e| trellis::Error::msg(e.to_string()))?;
    let tree_in_env = std::env::vars().any(|(k, _)| k == "TRELLIS_ACTOR_PARENT");
    Ok((
        pid.as_raw() as u32,
        nix::unistd::getppid().as_raw() as u32,
        sid.as_raw() as u32,
        tree_in_env,
    ))
}

const GRACE: Duration = Duration::from_millis(500);

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fail)
            .register(count_to)
            .register(nap)
            .register(block_thread)
            .register(whoami),
    )
    .grace_period(GRACE)
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// `setsid --wait`: the child in a session of its own, the launcher waiting for it.
fn detached() -> Placement {
    Placement::command(CommandLauncher::new("setsid").arg("--wait"))
}

/// Whether process `pid` runs (a zombie does not count).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            != Some("Z")
    })
}

/// Waits until process `pid` is gone; panics after `limit` (a broken build, not a timing
/// claim).
fn gone_within(pid: u32, limit: Duration) {
    let until = Instant::now() + limit;
    while runs(pid) {
        assert!(Instant::now() < until, "process {pid} still runs");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The children of process `pid` (all its threads'), from `/proc`.
fn children_of(pid: u32) -> Vec<u32> {
    let mut children = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for task in tasks.flatten() {
            if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
                children.extend(
                    list.split_whitespace()
                        .filter_map(|p| p.parse::<u32>().ok()),
                );
            }
        }
    }
    children
}

fn sigkill(pid: u32) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
}

/// Calls, a stream, a remote error and a cancelled call, to a child between which and us
/// stands a launcher; the child is detached (a session of its own), knows nothing of the
/// tree from its environment, and is gone when the nursery is.
fn a_launched_child_is_an_ordinary_child(transport: Transport) {
    let pid = std::sync::Mutex::new(0);
    let pid = &pid;
    root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let child = an.start_actor_on("launched", &detached()).await?;
            let (cpid, ppid, sid, tree_in_env) = child.run(whoami, ()).await?;
            *pid.lock().unwrap() = cpid;
            assert_eq!(cpid, child.pid());
            assert_ne!(ppid, std::process::id(), "the launcher stands between");
            assert_eq!(sid, cpid, "a session of its own");
            assert!(!tree_in_env, "the tree's details came through its input");
            assert_eq!(child.run(add, (2, 3)).await?, 5);
            let items = child
                .open_stream_from(count_to, (100,), |stream| async move {
                    let mut items = Vec::new();
                    while let Some(i) = stream.recv().await? {
                        items.push(i);
                    }
                    Ok(items)
                })
                .await?;
            assert_eq!(items, (1..=100).collect::<Vec<u64>>());
            let failed = child.run(fail, ("on purpose".to_owned(),)).await;
            let Err(ActorError::Remote(remote)) = failed else {
                panic!("a remote failure: {failed:?}");
            };
            let remote = remote
                .get()
                .downcast_ref::<RemoteActorError>()
                .expect("remote");
            assert!(remote.to_string().contains("on purpose"), "{remote}");
            let napped = trellis::move_on_after(Duration::from_millis(100), child.run(nap, ()));
            assert!(napped.await?.is_none(), "the call was cancelled");
            assert_eq!(child.run(add, (1, 1)).await?, 2, "and it still serves");
            Ok(())
        })
        .await
    })
    .unwrap();
    gone_within(*pid.lock().unwrap(), Duration::from_secs(10));
}

/// Erlang `peer`'s control connection: the launcher forwards its input through `cat`; when
/// `cat` dies the child's control channel closes while its parent process (the shell) lives,
/// and the child exits on its own (status 3, its parent lost), which its parent sees as a
/// death.
fn a_closed_control_channel_ends_the_child(transport: Transport) {
    let through_cat = CommandLauncher::new("sh").args(["-c", "cat | \"$@\"", "sh"]);
    let (pid, placement) = (std::sync::Mutex::new(0), Placement::from(through_cat));
    let (pid, placement) = (&pid, &placement);
    let outcome = root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let child = an.start_actor_on("controlled", placement).await?;
            let (cpid, shell, _, _) = child.run(whoami, ()).await?;
            *pid.lock().unwrap() = cpid;
            let cat = children_of(shell)
                .into_iter()
                .find(|&p| p != cpid)
                .expect("the shell runs cat beside the child");
            sigkill(cat);
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await
    });
    let error = outcome.expect_err("the child died");
    let died = match error.as_group() {
        Some(group) => group.leaves().find_map(|e| e.downcast_ref::<ActorError>()),
        None => error.downcast_ref::<ActorError>(),
    }
    .unwrap_or_else(|| panic!("a typed error: {error:?}"));
    let ActorError::Died { status, .. } = died else {
        panic!("not a death: {died}");
    };
    assert!(status.contains("exit status: 3"), "{status}");
    gone_within(*pid.lock().unwrap(), Duration::from_secs(10));
}

/// A child stuck in blocking code cannot exit when asked: after the grace period its process
/// group is killed by the launcher's kill command (which records what it was asked).
fn a_stuck_child_is_killed_through_the_launcher(transport: Transport) {
    let record = std::env::temp_dir().join(format!(
        "trellis-kill-{}-{}",
        std::process::id(),
        matches!(transport, Transport::Unix)
    ));
    let launcher = CommandLauncher::new("setsid").arg("--wait").kill_with([
        "sh",
        "-c",
        "echo \"$@\" > \"$0\"; exec \"$@\"",
        record.to_str().unwrap(),
    ]);
    let (pid, placement) = (std::sync::Mutex::new(0), Placement::from(launcher));
    let (pid, placement) = (&pid, &placement);
    root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let child = an.start_actor_on("stuck", placement).await?;
            *pid.lock().unwrap() = child.pid();
            let blocked = child.clone();
            trellis::open_nursery(|n| async move {
                n.start_soon(async move { blocked.run(block_thread, ()).await })?;
                trellis::sleep(Duration::from_millis(200)).await?;
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await?;
            Ok(())
        })
        .await
    })
    .unwrap();
    let pid = *pid.lock().unwrap();
    gone_within(pid, Duration::from_secs(10));
    let asked = std::fs::read_to_string(&record).expect("the kill command ran");
    let _ = std::fs::remove_file(&record);
    assert_eq!(asked.trim(), format!("kill -s KILL -- -{pid}"));
}

on_both_transports!(
    a_launched_child_is_an_ordinary_child,
    a_closed_control_channel_ends_the_child,
    a_stuck_child_is_killed_through_the_launcher,
);

/// A launcher that cannot run, or exits before its child connects, is a typed spawn
/// failure; so is a child for another host under the Unix transport.
#[test]
fn launchers_that_fail_are_spawn_failures() {
    root_with(config(), Transport::Unix, || async {
        open_nursery(|an| async move {
            let missing = Placement::command(CommandLauncher::new("/nonexistent/launcher"));
            let quits = Placement::command(CommandLauncher::new("false"));
            let elsewhere = Placement::ssh(trellis_actor::SshHost::new("nowhere.invalid"));
            for placement in [missing, quits, elsewhere] {
                match an.start_actor_on("never", &placement).await {
                    Err(ActorError::SpawnFailed { reason, .. }) => eprintln!("refused: {reason}"),
                    other => panic!("{placement:?}: {other:?}"),
                }
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}
