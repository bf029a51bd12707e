//! A tree-wide task dump (tractor prints every actor's task tree on SIGUSR1): each actor's
//! tasks with what they wait on — a lock, a call into another actor, a stream's credit —
//! drawn as one tree across processes; and SIGUSR1 at a root prints it.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use trellis::sync::Lock;
use trellis_actor::{ActorDump, Config, Functions, Portal, Transport, open_nursery};

async fn sleep_forever() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

/// Streams numbers for as long as there is credit.
async fn count_forever(
    stream: trellis_actor::MsgStream<std::convert::Infallible, u64>,
) -> Result<(), trellis::Error> {
    for i in 0.. {
        stream.send(i).await?;
    }
    Ok(())
}

/// In A: one task stuck on a lock this body holds, one on a call into B, one holding a stream
/// from B that it never reads (so B's sender runs out of credit).
async fn stage() -> Result<(), trellis::Error> {
    let lock = Arc::new(Lock::new());
    let held = lock.clone();
    let _held = held.acquire().await?;
    trellis::open_nursery(|n| async move {
        let b = trellis_actor::wait_for_actor("b").await?;
        n.start_soon_named("locked", async move {
            let _guard = lock.acquire().await?;
            Ok::<_, trellis::Error>(())
        })?;
        let callee = b.clone();
        n.start_soon_named("caller", async move {
            Ok::<_, trellis::Error>(callee.run(sleep_forever, ()).await?)
        })?;
        n.start_soon_named("idle reader", async move {
            b.open_stream_from(count_forever, (), |_stream| async {
                trellis::sleep_forever().await?;
                Ok(())
            })
            .await
        })?;
        trellis::sleep_forever().await?;
        Ok::<_, trellis::Error>(())
    })
    .await?;
    Ok(())
}

/// The lock of the deadlock below, one per process.
static LOCK: std::sync::LazyLock<Lock> = std::sync::LazyLock::new(Lock::new);

/// In A: takes the lock, then calls B's `call_back`, which calls A's `take_lock`, which waits
/// for the lock this holds: a deadlock across two processes.
async fn hold_and_call() -> Result<(), trellis::Error> {
    let _held = LOCK.acquire().await?;
    let b = trellis_actor::wait_for_actor("b").await?;
    Ok(b.run(call_back, ()).await?)
}

/// In B: calls A's `take_lock`.
async fn call_back() -> Result<(), trellis::Error> {
    let a = trellis_actor::wait_for_actor("a").await?;
    Ok(a.run(take_lock, ()).await?)
}

async fn take_lock() -> Result<(), trellis::Error> {
    let _held = LOCK.acquire().await?;
    Ok(())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(sleep_forever)
            .register(count_forever)
            .register(stage)
            .register(hold_and_call)
            .register(call_back)
            .register(take_lock),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(Duration::from_secs(2))
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// `name`'s wait in `dump`, once it has one.
fn waits<'a>(dump: &'a ActorDump, name: &str) -> Option<&'a str> {
    (dump.tasks().into_iter())
        .find(|t| t.name == name)
        .and_then(|t| t.waiting_on.as_deref())
}

/// Dumps `actor` until `ready` says so (the tasks reach their waits on their own time).
async fn dump_when(
    actor: &Portal,
    ready: impl Fn(&ActorDump) -> bool,
) -> Result<ActorDump, trellis::Error> {
    let t0 = Instant::now();
    loop {
        let dump = actor.dump().await?;
        if ready(&dump) {
            return Ok(dump);
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "never ready:\n{dump:#?}"
        );
        trellis::sleep(Duration::from_millis(20)).await?;
    }
}

fn each_wait_is_named(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            let staged = a.clone();
            trellis::open_nursery(|n| async move {
                n.start_soon_named("staging", async move {
                    Ok::<_, trellis::Error>(staged.run(stage, ()).await?)
                })?;
                let b_id = b.actor_id().to_string();
                let in_a = dump_when(&a, |d| {
                    waits(d, "locked").is_some()
                        && waits(d, "caller").is_some()
                        && waits(d, "idle reader").is_some()
                })
                .await?;
                // The lock is held by the task serving `stage`, whose body took it.
                let holder = (in_a.tasks().into_iter())
                    .find(|t| t.name.starts_with("serving `stage`"))
                    .and_then(|t| t.id.clone())
                    .expect("the serving task, with its id");
                assert_eq!(
                    waits(&in_a, "locked"),
                    Some(format!("lock held by task {holder}").as_str()),
                    "{in_a:#?}"
                );
                assert_eq!(
                    waits(&in_a, "caller"),
                    Some(format!("call `sleep_forever` in actor {b_id}").as_str())
                );
                let a_id = a.actor_id().to_string();
                let sender = format!("serving `count_forever` for actor {a_id}");
                let in_b = dump_when(&b, |d| waits(d, &sender).is_some()).await?;
                let credit = waits(&in_b, &sender).unwrap();
                assert!(
                    credit.starts_with(&format!("credit from actor {a_id} (stream ")),
                    "{credit}"
                );
                let sleeping = format!("serving `sleep_forever` for actor {a_id}");
                assert_eq!(waits(&in_b, &sleeping), Some("sleep_forever"));
                // The root's own task waits on its call into A.
                let root = trellis_actor::current().dump();
                assert_eq!(
                    waits(&root, "staging"),
                    Some(format!("call `stage` in actor {a_id}").as_str())
                );
                // Drawn as one tree: A and B under the root, each with its tasks.
                let drawn = trellis_actor::draw_dumps(&[root.clone(), in_a.clone(), in_b.clone()]);
                let at = |needle: &str| {
                    drawn
                        .find(needle)
                        .unwrap_or_else(|| panic!("{needle:?} in\n{drawn}"))
                };
                assert!(drawn.starts_with(&format!("actor {}", root.id)), "{drawn}");
                assert!(at(&format!("    actor {a_id}")) < at("task locked — waiting on lock"));
                assert!(at(&format!("    actor {b_id}")) < at(&format!("task {sender}")));
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await?;
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A two-actor call cycle closed by a lock is reported as a deadlock, naming each task in
/// order: A's call into B, B's call back into A, A's wait for the lock its first task holds.
fn a_call_cycle_is_a_deadlock(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            let caller = a.clone();
            trellis::open_nursery(|n| async move {
                n.start_soon_named("request", async move {
                    Ok::<_, trellis::Error>(caller.run(hold_and_call, ()).await?)
                })?;
                // One round of the three actors' dumps.
                let round = || async {
                    Ok::<_, trellis::Error>(vec![
                        trellis_actor::current().dump(),
                        a.dump().await?,
                        b.dump().await?,
                    ])
                };
                let t0 = Instant::now();
                let (cycle, drawn) = loop {
                    let dumps = round().await?;
                    if let Some(cycle) = trellis_actor::deadlocks(&dumps).into_iter().next() {
                        break (cycle, trellis_actor::draw_dumps(&dumps));
                    }
                    assert!(t0.elapsed() < Duration::from_secs(20), "no deadlock seen");
                    trellis::sleep(Duration::from_millis(20)).await?;
                };
                let (a_id, b_id) = (a.actor_id().clone(), b.actor_id().clone());
                let root = trellis_actor::current().id().clone();
                let steps: Vec<(&str, &str)> = cycle
                    .iter()
                    .map(|(actor, task)| (actor.name.as_str(), task.name.as_str()))
                    .collect();
                assert_eq!(
                    steps,
                    [
                        (
                            "a",
                            format!("serving `hold_and_call` for actor {root}").as_str()
                        ),
                        (
                            "b",
                            format!("serving `call_back` for actor {a_id}").as_str()
                        ),
                        (
                            "a",
                            format!("serving `take_lock` for actor {b_id}").as_str()
                        ),
                    ],
                    "{drawn}"
                );
                assert!(
                    (cycle[2].1.waiting_on.as_deref().unwrap_or_default())
                        .starts_with("lock held by task "),
                    "{drawn}"
                );
                assert!(drawn.contains("deadlock: actor a#"), "{drawn}");
                // Every task of the tree waits on another, and no timer is pending: two rounds
                // of dumps agree that the tree is stalled.
                let every = |dumps: &Vec<ActorDump>| Some(dumps.clone());
                let (second, stalled) = trellis_actor::stall_checked(round, every).await?;
                let drawn = trellis_actor::draw_dumps(&second);
                assert!(stalled, "{drawn}");
                // A task that sleeps will wake by itself: the tree is not stalled any more.
                n.start_soon_named("napper", async {
                    trellis::sleep(Duration::from_secs(3600)).await?;
                    Ok::<_, trellis::Error>(())
                })?;
                let t0 = Instant::now();
                let drawn = loop {
                    let drawn = trellis_actor::draw_dumps(&[trellis_actor::current().dump()]);
                    if drawn.contains("task napper — waiting on sleep (") {
                        break drawn;
                    }
                    assert!(t0.elapsed() < Duration::from_secs(20), "{drawn}");
                    trellis::sleep(Duration::from_millis(5)).await?;
                };
                let (last, stalled) = trellis_actor::stall_checked(round, every).await?;
                assert!(!stalled, "{drawn}\n{}", trellis_actor::draw_dumps(&last));
                // The request is not in the cycle: it waits on it.
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await?;
            an.cancel();
            Ok(())
        })
        .await
    })
    .unwrap();
}

on_both_transports!(each_wait_is_named, a_call_cycle_is_a_deadlock);

/// The root role for the SIGUSR1 test: a root with one child, waiting to be signalled.
#[test]
fn role_root() {
    if std::env::var_os("TRELLIS_TEST_DUMP_ROOT").is_none() {
        return;
    }
    let outcome =
        trellis::Runner::multi_thread()
            .handle_ctrl_c(false)
            .run(trellis_actor::run_root("root", config(), || async {
                open_nursery(|an| async move {
                    let child = an.start_actor("child").await?;
                    // The root's body is no task of a nursery: what it waits on shows in tasks.
                    trellis::open_nursery(|n| async move {
                        n.start_soon_named("main", async move {
                            Ok::<_, trellis::Error>(child.run(sleep_forever, ()).await?)
                        })?;
                        println!("ready");
                        Ok::<_, trellis::Error>(())
                    })
                    .await?;
                    Ok(())
                })
                .await
            }));
    std::process::exit(i32::from(outcome.is_err()));
}

/// SIGUSR1 at a root prints every actor's tasks on its standard error, and the tree goes on.
#[test]
fn sigusr1_at_the_root_prints_the_tree_dump() {
    let mut root = Command::new(std::env::current_exe().unwrap())
        .args([
            "role_root",
            "--exact",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env("TRELLIS_TEST_DUMP_ROOT", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = BufReader::new(root.stdout.take().unwrap());
    for line in stdout.lines() {
        if line.unwrap() == "ready" {
            break;
        }
    }
    let pid = nix::unistd::Pid::from_raw(root.id() as i32);
    let mut stderr = BufReader::new(root.stderr.take().unwrap()).lines();
    // The root's task reaches its call on its own time: ask again until it shows.
    let mut dump = String::new();
    for _ in 0..100 {
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGUSR1).unwrap();
        let mut lines = Vec::new();
        for line in stderr.by_ref() {
            let line = line.unwrap();
            if line.starts_with("--- end of task dump") {
                break;
            }
            lines.push(line);
        }
        dump = lines.join("\n");
        if dump.contains("waiting on call `sleep_forever`") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // Still running: the signal printed, it did not end anything.
    assert!(root.try_wait().unwrap().is_none(), "{dump}");
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    root.wait().unwrap();
    assert!(dump.contains("--- task dump (SIGUSR1) ---"), "{dump}");
    assert!(dump.contains("\nactor root#"), "{dump}");
    assert!(dump.contains("\n    actor child#"), "{dump}");
    assert!(
        dump.contains("waiting on call `sleep_forever` in actor child#"),
        "{dump}"
    );
    assert!(
        dump.contains("task serving `sleep_forever` for actor root#"),
        "{dump}"
    );
}
