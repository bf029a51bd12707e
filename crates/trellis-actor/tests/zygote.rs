//! The zygote spawn backend (tractor's forkserver): children forked from a helper process of
//! the program instead of exec'd, with the same supervision — they serve calls, lead their
//! own process group, are reported dead with the signal that killed them, die with the
//! zygote, and a zygote that died is replaced at the next spawn. The lifecycle tests
//! (`lifecycle.rs`) run every signal scenario on this backend too.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis_actor::{ActorError, Config, Functions, SpawnBackend, Transport, open_nursery};

async fn pid() -> Result<u32, trellis::Error> {
    Ok(std::process::id())
}

fn config() -> Config {
    Config::new(Functions::new().register(pid))
        .child_args(["serve_children", "--exact", "--nocapture", "-q"])
        .spawn_backend(SpawnBackend::Zygote)
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// The parent pid of `pid`, from `/proc` (`None` once it is gone).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(") ")?;
    rest.split(' ').nth(1)?.parse().ok()
}

/// Whether `pid` runs (a zombie does not).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !matches!(
            stat.rsplit_once(") ").and_then(|(_, r)| r.chars().next()),
            Some('Z' | 'X')
        )
    })
}

fn wait_gone(pid: u32) {
    let t0 = Instant::now();
    while runs(pid) {
        assert!(t0.elapsed() < Duration::from_secs(10), "{pid} still runs");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Two children forked by one zygote: each serves calls, is the zygote's child (and the
/// zygote ours), and leads a process group of its own.
fn forked_children_serve_and_lead_their_own_group(transport: Transport) {
    let found = Arc::new(Mutex::new(None));
    let seen = found.clone();
    common::root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            assert_eq!(a.run(pid, ()).await?, a.pid());
            assert_eq!(b.run(pid, ()).await?, b.pid());
            let zygote = parent_of(a.pid()).unwrap();
            assert_eq!(parent_of(b.pid()), Some(zygote));
            assert_eq!(parent_of(zygote), Some(std::process::id()));
            for child in [a.pid(), b.pid()] {
                let group = nix::unistd::getpgid(Some(Pid::from_raw(child as i32))).unwrap();
                assert_eq!(group.as_raw() as u32, child);
            }
            *seen.lock().unwrap() = Some((zygote, [a.pid(), b.pid()]));
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
    let (zygote, children) = found.lock().unwrap().take().unwrap();
    // The root's zygote ended with the root's actor, and was reaped (not even a zombie).
    assert!(!std::path::Path::new(&format!("/proc/{zygote}")).exists());
    children.into_iter().for_each(wait_gone);
}

/// tractor: test_cancellation.py, SIGKILL of a child: on this backend too the parent learns
/// the signal (from the zygote, which reaped it).
fn a_killed_forked_child_is_reported_with_its_signal(transport: Transport) {
    let err = common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let victim = an.start_actor("victim").await?;
            kill(Pid::from_raw(victim.pid() as i32), Signal::SIGKILL).unwrap();
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await
    })
    .unwrap_err();
    let died = err
        .as_group()
        .expect("a group")
        .leaves()
        .find_map(|e| e.downcast_ref::<ActorError>())
        .expect("an actor error");
    assert!(matches!(died, ActorError::Died { .. }), "{died}");
    assert!(died.to_string().contains("SIGKILL"), "{died}");
}

/// A zygote killed outright takes its children along (they die with it); the next spawn
/// starts a new zygote.
fn a_killed_zygote_takes_its_children_and_is_replaced(transport: Transport) {
    common::root_with(config(), transport, || async {
        let seen = Arc::new(Mutex::new(None));
        let found = seen.clone();
        let outcome = open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let zygote = parent_of(a.pid()).unwrap();
            *found.lock().unwrap() = Some((zygote, a.pid()));
            kill(Pid::from_raw(zygote as i32), Signal::SIGKILL).unwrap();
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await;
        let err = outcome.unwrap_err();
        assert!(err.to_string().contains("died unexpectedly"), "{err:?}");
        let (first_zygote, orphan) = seen.lock().unwrap().take().unwrap();
        wait_gone(orphan);
        open_nursery(|an| async move {
            let b = an.start_actor("b").await?;
            assert_eq!(b.run(pid, ()).await?, b.pid());
            let zygote = parent_of(b.pid()).unwrap();
            assert_ne!(zygote, first_zygote);
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Many spawns at once, each a request on the zygote's socket while it forks: every one is
/// answered, in order, and every child serves.
fn a_burst_of_spawns_is_served(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let spawner = an.clone();
            let portals = trellis::open_nursery(|n| async move {
                let mut started = Vec::new();
                for i in 0..24 {
                    let an = spawner.clone();
                    started.push(n.start_soon(async move {
                        Ok::<_, trellis::Error>(an.start_actor(&format!("w{i}")).await?)
                    })?);
                }
                Ok::<_, trellis::Error>(started)
            })
            .await?
            .unwrap();
            for portal in portals {
                let portal = portal.into_value().unwrap();
                assert_eq!(portal.run(pid, ()).await?, portal.pid());
            }
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A zygote that stops answering (SIGSTOP) cannot report its children's ends: the parent sees
/// them end through their pidfds, gives the zygote up after a while, and its teardown ends
/// instead of hanging.
fn a_stopped_zygote_does_not_hang_the_teardown(transport: Transport) {
    let zygote = Arc::new(Mutex::new(None));
    let seen = zygote.clone();
    common::root_with(config(), transport, || async move {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let pid = parent_of(a.pid()).unwrap();
            *seen.lock().unwrap() = Some(pid);
            kill(Pid::from_raw(pid as i32), Signal::SIGSTOP).unwrap();
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
    let pid = zygote.lock().unwrap().take().unwrap();
    wait_gone(pid);
}

on_both_transports!(
    a_burst_of_spawns_is_served,
    a_stopped_zygote_does_not_hang_the_teardown,
    forked_children_serve_and_lead_their_own_group,
    a_killed_forked_child_is_reported_with_its_signal,
    a_killed_zygote_takes_its_children_and_is_replaced,
);

/// A zygote started by hand, as a parent starts one: the test's end of its socket.
fn zygote_by_hand() -> (std::process::Child, UnixStream) {
    let (ours, theirs) = UnixStream::pair().unwrap();
    let child = Command::new(std::env::current_exe().unwrap())
        .args(["serve_children", "--exact", "--nocapture", "-q"])
        .env("TRELLIS_ACTOR_LAUNCH", "zygote")
        .env("TRELLIS_ACTOR_PARENT_PID", std::process::id().to_string())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    (child, ours)
}

/// Bad requests get a `failed` answer and the zygote goes on; one that never ends (more than
/// the zygote will hold) ends the zygote; so does the end of its socket. Nothing panics.
#[test]
fn a_zygote_refuses_bad_requests() {
    let (mut zygote, mut socket) = zygote_by_hand();
    let mut answers = BufReader::new(socket.try_clone().unwrap());
    let mut line = String::new();
    for bad in [
        "not a block\nend\n",
        "trellis-launch 1\nvar lower_case 00\nend\n",
        "trellis-launch 1\nsecret zz\nend\n",
        "trellis-launch 1\nend\n",
    ] {
        socket.write_all(bad.as_bytes()).unwrap();
        line.clear();
        answers.read_line(&mut line).unwrap();
        assert!(line.starts_with("failed "), "{bad:?}: {line:?}");
    }
    // A block with no end, over the bound: the zygote gives up.
    let endless = vec![b'a'; 2 << 20];
    let _ = socket.write_all(&endless);
    let status = common::exit_code_within(&mut zygote, Duration::from_secs(10));
    assert_eq!(status, Some(Some(2)));

    // Its socket closed: it exits at once, with nothing to take along.
    let (mut zygote, socket) = zygote_by_hand();
    drop(socket);
    let status = common::exit_code_within(&mut zygote, Duration::from_secs(10));
    assert_eq!(status, Some(Some(0)));
}
