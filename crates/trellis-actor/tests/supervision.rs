//! Supervised actors: real child processes killed by real signals, or exiting on their own,
//! and restarted by their supervisor. Behaviours from Erlang/OTP's
//! `lib/stdlib/test/supervisor_SUITE.erl` (named on each test), on processes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis::supervisor::{Backoff, Restart, Strategy, Supervision};
use trellis_actor::{
    ActorError, Config, Functions, Route, SupervisedPortal, Transport, find_actor, open_supervisor,
};

const GRACE: Duration = Duration::from_millis(1000);
const ROLE: &str = "TRELLIS_TEST_SUPERVISION_ROLE";
/// Set on the storm's root, inherited by every actor of its tree: how the test finds them.
const MARKER: &str = "TRELLIS_TEST_STORM_MARKER";

async fn pid() -> Result<u32, trellis::Error> {
    Ok(std::process::id())
}

/// Ends the process at once, without a goodbye: a crash.
async fn exit_now(code: i32) -> Result<(), trellis::Error> {
    std::process::exit(code)
}

/// Asks its own actor to end: it says goodbye and exits 0, on its own.
async fn end_self() -> Result<(), trellis::Error> {
    trellis_actor::current().cancel();
    Ok(())
}

/// Answers after `ms` milliseconds.
async fn hold(ms: u64) -> Result<u32, trellis::Error> {
    trellis::sleep(Duration::from_millis(ms)).await?;
    Ok(std::process::id())
}

async fn sleep_forever() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(pid)
            .register(exit_now)
            .register(end_self)
            .register(sleep_forever)
            .register(hold),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(GRACE)
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

fn root<F, Fut>(transport: Transport, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    common::root_with(config(), transport, body).unwrap();
}

fn signal(pid: u32, sig: Signal) {
    kill(Pid::from_raw(pid as i32), sig).unwrap();
}

/// Whether the process exists at all: a zombie (dead, not reaped) still does.
fn exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// The pid of the supervised child's current incarnation (waiting while it is down).
async fn pid_of(worker: &SupervisedPortal) -> Result<u32, trellis::Error> {
    Ok(worker.run(pid, ()).await?)
}

/// The registered actors named `name`.
async fn registered_as(name: &str) -> Result<usize, trellis::Error> {
    let all = trellis_actor::current().registered().await?;
    Ok(all.iter().filter(|r| r.id.name == name).count())
}

/// supervisor_SUITE: permanent_abnormal, on a process — a SIGKILLed child is reaped and gone
/// from the registry before its replacement starts under the same name; `find_actor` finds
/// the replacement; the cause is the kill.
fn sigkill_restarts_the_child_under_its_name(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let worker = sup.start_actor("worker", Restart::Permanent).await?;
            let first = pid_of(&worker).await?;
            signal(first, Signal::SIGKILL);
            // A call sent before the parent saw the death fails with it; later ones wait for
            // the replacement.
            let second = loop {
                match pid_of(&worker).await {
                    Ok(pid) => break pid,
                    Err(e) => assert!(
                        matches!(e.downcast_ref(), Some(ActorError::Died { .. })),
                        "{e}"
                    ),
                }
            };
            assert_ne!(first, second);
            assert!(!exists(first), "the killed child was reaped");
            assert_eq!(worker.incarnations(), 2);
            let found = find_actor("worker").await?.expect("registered");
            assert_eq!(found.pid(), second);
            assert_eq!(registered_as("worker").await?, 1);
            let status = &sup.children()[0];
            assert_eq!(status.restarts, 1);
            let cause = status.last_cause.as_deref().unwrap();
            assert!(cause.contains("signal: 9"), "{cause}");
            // `trellis.info` tells it, over the wire (what `trellis tree` draws).
            let root = find_actor("root").await?.expect("the root registers");
            let info = root.info().await?;
            let shown = &info.supervised[0];
            assert_eq!((shown.name.as_str(), shown.restarts), ("worker", 1));
            assert_eq!(shown.supervisor, "supervisor");
            assert_eq!(shown.state, "running");
            assert!(shown.last_cause.as_deref().unwrap().contains("signal: 9"));
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// A call in flight when the child dies fails with `Died`, carrying the exit status.
fn in_flight_call_fails_with_died(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let worker = sup.start_actor("worker", Restart::Permanent).await?;
            let victim = pid_of(&worker).await?;
            let caller = worker.clone();
            let error = trellis::open_nursery(|n| async move {
                let call = n.start_soon(async move {
                    let error = caller.run(sleep_forever, ()).await.unwrap_err();
                    Ok::<_, trellis::Error>(error.to_string())
                })?;
                // Once the child serves the call.
                let portal = worker.portal().await?;
                while portal.info().await?.serving < 1 {
                    trellis::sleep(Duration::from_millis(5)).await?;
                }
                signal(victim, Signal::SIGKILL);
                Ok::<_, trellis::Error>(call)
            })
            .await?
            .unwrap()
            .into_value()
            .unwrap();
            assert!(error.contains("died unexpectedly"), "{error}");
            assert!(error.contains("signal: 9"), "{error}");
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// supervisor_SUITE: transient_normal and transient_abnormal, on processes — an actor that
/// ends itself (a goodbye, exit 0) ended normally and a transient one is not restarted; one
/// that exits without a goodbye crashed, and is.
fn transient_actor_exits(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let crasher = sup.start_actor("crasher", Restart::Transient).await?;
            let first = pid_of(&crasher).await?;
            assert!(crasher.run(exit_now, (3,)).await.is_err());
            let second = pid_of(&crasher).await?;
            assert_ne!(first, second);
            let cause = sup.children()[0].last_cause.clone().unwrap();
            assert!(cause.contains("exit status: 3"), "{cause}");

            let quitter = sup.start_actor("quitter", Restart::Transient).await?;
            // Its reply may lose the race with its goodbye.
            let _ = quitter.run(end_self, ()).await;
            // Calls made while it says goodbye fail; then its portal says it is over.
            let error = loop {
                let error = quitter.run(pid, ()).await.unwrap_err();
                if let ActorError::Unsupervised { reason, .. } = error {
                    break reason;
                }
            };
            assert!(error.contains("transient"), "{error}");
            // The supervisor removes it once its task has reported.
            while sup.children().len() > 1 {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
            assert_eq!(sup.children()[0].name, "crasher");
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// supervisor_SUITE: temporary_abnormal — a temporary actor that dies is not restarted; its
/// portal says so.
fn temporary_actor_is_not_restarted(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let worker = sup.start_actor("temp", Restart::Temporary).await?;
            signal(pid_of(&worker).await?, Signal::SIGKILL);
            let error = loop {
                match worker.run(pid, ()).await {
                    Err(error @ ActorError::Unsupervised { .. }) => break error,
                    _ => trellis::sleep(Duration::from_millis(10)).await?,
                }
            };
            assert!(error.to_string().contains("temporary"), "{error}");
            assert!(sup.children().is_empty());
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// A child that is down fails `try_portal` with `Down` and its cause; `portal` waits for the
/// replacement (here held back by the backoff).
fn down_child_fails_try_portal(transport: Transport) {
    root(transport, || async {
        let supervision = Supervision::new(Strategy::OneForOne).backoff(
            Backoff::exponential(Duration::from_millis(500), Duration::from_secs(1))
                .with_jitter(0.0),
        );
        open_supervisor(supervision, |sup| async move {
            let worker = sup.start_actor("worker", Restart::Permanent).await?;
            let first = pid_of(&worker).await?;
            signal(first, Signal::SIGKILL);
            let down = loop {
                match worker.try_portal() {
                    Err(error) => break error,
                    Ok(_) => trellis::sleep(Duration::from_millis(5)).await?,
                }
            };
            match &down {
                ActorError::Down { name, cause } => {
                    assert_eq!(name, "worker");
                    assert!(cause.contains("signal: 9"), "{cause}");
                }
                _ => panic!("not `Down`: {down}"),
            }
            assert_ne!(pid_of(&worker).await?, first);
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// supervisor_SUITE: one_for_one, one_for_all and rest_for_one, on processes — which siblings
/// get new processes, when the middle child is SIGKILLed and when it exits on its own.
fn strategies_restart_the_right_siblings(transport: Transport) {
    let cases = [
        (Strategy::OneForOne, [false, true, false]),
        (Strategy::OneForAll, [true, true, true]),
        (Strategy::RestForOne, [false, true, true]),
    ];
    for ((strategy, restarted), killed) in cases.into_iter().flat_map(|c| [(c, true), (c, false)]) {
        root(transport.clone(), || async move {
            open_supervisor(Supervision::new(strategy), |sup| async move {
                let mut workers = Vec::new();
                let mut pids = Vec::new();
                for name in ["a", "b", "c"] {
                    let worker = sup.start_actor(name, Restart::Permanent).await?;
                    pids.push(pid_of(&worker).await?);
                    workers.push(worker);
                }
                if killed {
                    signal(pids[1], Signal::SIGKILL);
                } else {
                    assert!(workers[1].run(exit_now, (3,)).await.is_err());
                }
                while workers[1].incarnations() < 2 || workers[1].try_portal().is_err() {
                    trellis::sleep(Duration::from_millis(10)).await?;
                }
                for (i, worker) in workers.iter().enumerate() {
                    let now = pid_of(worker).await?;
                    assert_eq!(now != pids[i], restarted[i], "{strategy:?}: child {i}");
                    if restarted[i] {
                        assert!(!exists(pids[i]), "{strategy:?}: child {i} reaped");
                    }
                }
                sup.shutdown();
                Ok(())
            })
            .await?;
            Ok(())
        });
    }
}

/// supervisor_SUITE: one_for_one_escalation, on processes — the second kill within the
/// period exceeds an intensity of 1: the supervisor stops everything and fails with both
/// deaths, and no process is left.
fn intensity_exceeded_gives_every_cause(transport: Transport) {
    root(transport, || async {
        let mut pids = Vec::new();
        let seen = &mut pids;
        let error = open_supervisor(
            Supervision::new(Strategy::OneForOne).intensity(1, Duration::from_secs(60)),
            |sup| async move {
                let bystander = sup.start_actor("bystander", Restart::Permanent).await?;
                seen.push(pid_of(&bystander).await?);
                let worker = sup.start_actor("worker", Restart::Permanent).await?;
                for _ in 0..2 {
                    let pid = pid_of(&worker).await?;
                    seen.push(pid);
                    signal(pid, Signal::SIGKILL);
                    while worker.try_portal().is_ok_and(|p| p.pid() == pid) {
                        trellis::sleep(Duration::from_millis(10)).await?;
                    }
                }
                trellis::sleep_forever().await?;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        let group = error.as_group().expect("a group");
        assert!(group.message().contains("gave up"), "{}", group.message());
        let causes: Vec<_> = group.leaves().collect();
        assert_eq!(causes.len(), 2);
        for cause in causes {
            assert!(
                matches!(cause.downcast_ref(), Some(ActorError::Died { .. })),
                "{cause}"
            );
        }
        for pid in pids {
            assert!(!exists(pid), "pid {pid} left");
        }
        assert_eq!(registered_as("worker").await?, 0);
        assert_eq!(registered_as("bystander").await?, 0);
        Ok(())
    });
}

/// 200 crash and restart cycles leave one process, one registry entry and no socket
/// directory of a dead incarnation behind.
fn no_leftovers_after_200_cycles(transport: Transport) {
    root(transport, || async {
        let mut pids = Vec::new();
        let seen = &mut pids;
        open_supervisor(
            Supervision::new(Strategy::OneForOne).intensity(1000, Duration::from_secs(3600)),
            |sup| async move {
                let worker = sup.start_actor("worker", Restart::Permanent).await?;
                for _ in 0..200 {
                    let pid = pid_of(&worker).await?;
                    seen.push(pid);
                    let _ = worker.run(exit_now, (1,)).await;
                }
                let last = pid_of(&worker).await?;
                assert_eq!(registered_as("worker").await?, 1);
                assert_eq!(sup.children()[0].restarts, 200);
                assert_eq!(worker.incarnations(), 201);
                for &pid in seen.iter() {
                    assert!(!exists(pid), "pid {pid} left");
                    assert!(common::socket_dirs_of(pid).is_empty(), "pid {pid}'s socket");
                }
                assert!(exists(last));
                sup.shutdown();
                Ok(())
            },
        )
        .await?;
        Ok(())
    });
}

/// A pool routes calls: round-robin visits every worker, a key always reaches the same
/// worker (also after that worker is killed and restarted), least-busy avoids a worker that
/// holds a call; resizing starts and stops workers, which leave no process or registry entry.
fn pool_routes_and_resizes(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let pool = sup.start_pool("worker", 3, Restart::Permanent).await?;
            let mut seen = std::collections::HashSet::new();
            for _ in 0..6 {
                seen.insert(pool.run(Route::RoundRobin, pid, ()).await?);
            }
            assert_eq!(seen.len(), 3, "round-robin reaches all three");

            let route = Route::key("customer-42");
            let keyed = pool.run(route, pid, ()).await?;
            for _ in 0..10 {
                assert_eq!(pool.run(route, pid, ()).await?, keyed);
            }
            let role = pool
                .workers()
                .into_iter()
                .find(|w| w.try_portal().is_ok_and(|p| p.pid() == keyed))
                .expect("a worker has that pid");
            signal(keyed, Signal::SIGKILL);
            while role.try_portal().is_ok_and(|p| p.pid() == keyed) {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
            let again = pool.run(route, pid, ()).await?;
            assert_ne!(again, keyed, "a new process");
            assert_eq!(role.try_portal()?.pid(), again, "the same worker");

            // Least-busy avoids the worker holding a long call.
            let first = pool.workers()[0].try_portal()?.pid();
            let p = pool.clone();
            trellis::open_nursery(|n| async move {
                let held =
                    n.start_soon(async move { p.run(Route::LeastBusy, hold, (300,)).await })?;
                trellis::sleep(Duration::from_millis(50)).await?;
                for _ in 0..4 {
                    assert_ne!(pool.run(Route::LeastBusy, hold, (0,)).await?, first);
                }
                pool.resize(5).await?;
                assert_eq!(pool.len(), 5);
                assert_eq!(registered_as("worker-4").await?, 1);
                let gone: Vec<u32> = pool.workers()[1..]
                    .iter()
                    .map(|w| w.try_portal().map(|p| p.pid()))
                    .collect::<Result<_, _>>()?;
                pool.resize(1).await?;
                assert_eq!(pool.len(), 1);
                for pid in gone {
                    assert!(!exists(pid), "pid {pid} left");
                }
                for i in 1..5 {
                    assert_eq!(registered_as(&format!("worker-{i}")).await?, 0);
                }
                // The worker that held the call was kept, and its call finished.
                let _ = held;
                Ok::<_, trellis::Error>(())
            })
            .await?;
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// A child that cannot start (its process exits before it connects): a temporary one is not
/// restarted and `start_actor` says so, without waiting forever; a permanent one is retried
/// until the intensity is exceeded, and the supervisor fails with every spawn failure.
fn a_child_that_cannot_start(transport: Transport) {
    // Its children run this test binary with a filter that matches no test: they exit at once.
    let broken = config().child_args(["no_such_test", "--exact", "-q"]);
    common::root_with(broken, transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let error = sup.start_actor("t", Restart::Temporary).await.unwrap_err();
            match &error {
                ActorError::Unsupervised { reason, .. } => {
                    assert!(reason.contains("temporary"), "{reason}");
                }
                _ => panic!("not `Unsupervised`: {error:?}"),
            }
            Ok(())
        })
        .await?;
        let error = open_supervisor(
            Supervision::new(Strategy::OneForOne).intensity(2, Duration::from_secs(60)),
            |sup| async move {
                let _ = sup.start_actor("p", Restart::Permanent).await;
                trellis::sleep_forever().await?;
                Ok(())
            },
        )
        .await
        .unwrap_err();
        let group = error.as_group().expect("a group");
        assert_eq!(group.errors().len(), 3, "{error}");
        assert!(
            group
                .leaves()
                .all(|e| matches!(e.downcast_ref(), Some(ActorError::SpawnFailed { .. }))),
            "{error}"
        );
        Ok(())
    })
    .unwrap();
}

/// A name used again: a transient child that ended itself is gone, a new child takes its
/// name, and stopping that one ends its own portal (not the old one's).
fn a_name_used_again(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let first = sup.start_actor("job", Restart::Transient).await?;
            let _ = first.run(end_self, ()).await;
            while !first.is_over() {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
            let second = sup.start_actor("job", Restart::Permanent).await?;
            assert!(!second.is_over());
            assert!(sup.stop("job"));
            let error = second.portal().await.unwrap_err();
            assert!(matches!(error, ActorError::Unsupervised { .. }), "{error}");
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// A pool of transient workers: one that ends itself leaves the routing (calls go to the
/// others) and a resize replaces it.
fn pool_forgets_workers_that_ended(transport: Transport) {
    root(transport, || async {
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let pool = sup.start_pool("w", 3, Restart::Transient).await?;
            let quitter = pool.workers()[1].clone();
            let _ = quitter.run(end_self, ()).await;
            while !quitter.is_over() {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
            for _ in 0..6 {
                pool.run(Route::RoundRobin, pid, ()).await?;
            }
            assert_eq!(pool.len(), 2);
            pool.resize(3).await?;
            assert_eq!(pool.len(), 3);
            let mut names: Vec<String> = pool.workers().iter().map(|w| w.name().into()).collect();
            names.sort();
            assert_eq!(names, ["w-0", "w-1", "w-2"]);
            sup.shutdown();
            Ok(())
        })
        .await?;
        Ok(())
    });
}

/// The storm's root: a supervisor whose child is made to crash as soon as it serves, over and
/// over, until SIGINT.
#[test]
fn role_storm_root() {
    if std::env::var(ROLE).is_err() {
        return;
    }
    let outcome =
        trellis::Runner::multi_thread().run(trellis_actor::run_root("root", config(), || async {
            open_supervisor(
                Supervision::new(Strategy::OneForOne).intensity(100_000, Duration::from_secs(1)),
                |sup| async move {
                    let worker = sup.start_actor("crasher", Restart::Permanent).await?;
                    let _calm = sup.start_actor("calm", Restart::Permanent).await?;
                    println!("ready");
                    loop {
                        let _ = worker.run(exit_now, (1,)).await;
                        trellis::checkpoint().await?;
                    }
                    #[allow(unreachable_code)]
                    Ok::<(), trellis::Error>(())
                },
            )
            .await?;
            Ok(())
        }));
    common::exit_as(outcome);
}

/// The actors (this test binary, re-executed) that carry `marker` in their environment.
fn processes_marked(marker: &str) -> Vec<u32> {
    let needle = format!("{MARKER}={marker}");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .collect()
}

/// SIGINT during a restart storm tears everything down within 2 s: the root exits 130 and
/// no actor of its tree is left.
#[test]
fn sigint_during_a_restart_storm() {
    let marker = format!("{}-{}", std::process::id(), line!());
    let mut root = Command::new(std::env::current_exe().unwrap())
        .args(["role_storm_root", "--exact", "--nocapture", "-q"])
        .env(ROLE, "storm")
        .env(MARKER, &marker)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(root.stdout.take().unwrap());
    let ready = stdout.lines().map_while(Result::ok).any(|l| l == "ready");
    assert!(ready, "the storm started");
    // Let it storm for a while.
    std::thread::sleep(Duration::from_millis(500));
    let sent = Instant::now();
    signal(root.id(), Signal::SIGINT);
    let code = common::exit_code_within(&mut root, Duration::from_secs(10));
    let took = sent.elapsed();
    assert_eq!(code, Some(Some(130)));
    assert!(took < Duration::from_secs(2), "the root took {took:?}");
    let left: Vec<_> = processes_marked(&marker)
        .into_iter()
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z"))
        })
        .collect();
    assert!(left.is_empty(), "actors left: {left:?}");
}

on_both_transports!(
    sigkill_restarts_the_child_under_its_name,
    in_flight_call_fails_with_died,
    transient_actor_exits,
    temporary_actor_is_not_restarted,
    down_child_fails_try_portal,
    strategies_restart_the_right_siblings,
    intensity_exceeded_gives_every_cause,
    pool_routes_and_resizes,
    a_child_that_cannot_start,
    a_name_used_again,
    pool_forgets_workers_that_ended,
);

mod cycles {
    #[test]
    fn no_leftovers_after_200_cycles() {
        super::no_leftovers_after_200_cycles(trellis_actor::Transport::Unix)
    }
}
