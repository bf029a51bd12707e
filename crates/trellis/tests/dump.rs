//! A dump of a run's tasks (tractor dumps its actors' task trees on SIGUSR1; Trio exposes the
//! task tree through `trio.lowlevel`): nurseries, scopes and tasks with their names and what
//! each waits on. The waits are made deterministic with `wait_all_tasks_blocked` on the
//! autojump clock (Trio's test_wait_all_tasks_blocked idiom).

use std::sync::Arc;
use std::time::Duration;

use trellis::dump::{Dump, TaskDump};
use trellis::sync::Lock;
use trellis::testing::{run_test, wait_all_tasks_blocked};

async fn sleeper() -> Result<(), trellis::Error> {
    trellis::sleep(Duration::from_secs(3600)).await?;
    Ok(())
}

fn task<'a>(dump: &'a Dump, name: &str) -> &'a TaskDump {
    let found: Vec<_> = dump
        .tasks()
        .into_iter()
        .filter(|t| t.name == name)
        .collect();
    assert_eq!(found.len(), 1, "one task {name} in\n{dump}");
    found[0]
}

#[test]
fn a_dump_names_each_task_and_what_it_waits_on() {
    run_test(async {
        trellis::open_nursery(|n| async move {
            let lock = Arc::new(Lock::new());
            let held = lock.clone();
            let guard = held.acquire().await.unwrap();
            let (tx, rx) = trellis::channel::<u32>(0);
            let (full_tx, full_rx) = trellis::channel::<u32>(0);
            // Keeps the other ends open until the end.
            n.start_soon_named("keeper", async move {
                let _ends = (tx, full_rx);
                trellis::sleep_forever().await?;
                Ok::<_, trellis::Error>(())
            })?;
            let locker = lock.clone();
            n.start_soon_named("locker", async move {
                let _guard = locker.acquire().await?;
                Ok::<_, trellis::Error>(())
            })?;
            n.start_soon_named("receiver", async move {
                rx.recv().await?;
                Ok::<_, trellis::Error>(())
            })?;
            n.start_soon_named("sender", async move {
                full_tx.send(7).await?;
                Ok::<_, trellis::Error>(())
            })?;
            n.start_soon(sleeper())?;
            n.start_soon_named("scoped", async {
                trellis::move_on_after(Duration::from_secs(60), async {
                    trellis::open_nursery(|inner| async move {
                        inner.start_soon_named("inner sleeper", sleeper())?;
                        Ok::<_, trellis::Error>(())
                    })
                    .await
                })
                .await?;
                Ok::<_, trellis::Error>(())
            })?;
            n.start_soon_named("custom", async {
                trellis::dump::waiting_on(|| "the billing service".into(), sleeper()).await
            })?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            let waits = |name| task(&dump, name).waiting_on.clone();
            assert_eq!(waits("locker").as_deref(), Some("lock"), "{dump}");
            assert_eq!(waits("receiver").as_deref(), Some("channel receive"));
            assert_eq!(
                waits("sender").as_deref(),
                Some("channel send (the buffer is full)")
            );
            // An unnamed task is named after the function its future comes from.
            assert_eq!(waits("dump::sleeper").as_deref(), Some("sleep"), "{dump}");
            assert_eq!(waits("custom").as_deref(), Some("the billing service"));
            // The scope a task opened sits under it, with its deadline; the nursery inside it
            // holds its own task.
            let scoped = task(&dump, "scoped");
            assert_eq!(scoped.children.len(), 1, "{dump}");
            let scope = &scoped.children[0];
            assert!(!scope.nursery);
            let left = scope.deadline_in.expect("a deadline");
            assert!(left > Duration::from_secs(59) && left <= Duration::from_secs(60));
            assert_eq!(scope.children.len(), 1, "{dump}");
            assert!(scope.children[0].nursery);
            assert_eq!(scope.children[0].tasks[0].name, "inner sleeper");
            assert_eq!(waits("inner sleeper").as_deref(), Some("sleep"));
            let text = dump.to_string();
            assert!(text.contains("task locker — waiting on lock"), "{text}");
            assert!(text.contains("scope, deadline in 60.0s"), "{text}");
            // A task that finished leaves the dump; one that stopped waiting says nothing more.
            drop(guard);
            wait_all_tasks_blocked().await?;
            let after = trellis::dump::dump();
            assert!(after.tasks().iter().all(|t| t.name != "locker"), "{after}");
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await
        // The tasks end as the cancellation finds them (a receiver may see its channel's end
        // first); a failed assertion above is a panic, which this does not hide.
        .ok();
    });
}

#[test]
fn a_cancelled_scope_shows_as_cancelled_and_outside_a_run_the_dump_is_empty() {
    let outside = trellis::dump::dump();
    assert!(outside.tasks().is_empty());
    run_test(async {
        trellis::open_nursery(|n| async move {
            n.start_soon_named("shielded", async {
                trellis::CancelScope::shielded().run(sleeper()).await?;
                Ok::<_, trellis::Error>(())
            })?;
            wait_all_tasks_blocked().await?;
            n.cancel();
            // The nursery is the run's outermost scope here (no root scope around the test).
            let dump = trellis::dump::dump();
            assert!(dump.root.nursery && dump.root.cancel_called, "{dump}");
            let shielded = task(&dump, "shielded");
            let scope = &shielded.children[0];
            assert!(scope.shielded && !scope.cancelled, "{dump}");
            let text = dump.to_string();
            assert!(text.starts_with("nursery, cancelled\n"), "{text}");
            assert!(text.contains("scope, shielded"), "{text}");
            Ok::<_, trellis::Error>(())
        })
        .await
        .ok();
    });
}

/// A run's main future is its first task, `main`, with what it waits on and the nurseries it
/// opened under it.
#[test]
fn the_main_future_is_the_task_main() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let keep = seen.clone();
    trellis::Runner::current_thread()
        .run(async move {
            trellis::open_nursery(|n| async move {
                let nursery = n.clone();
                n.start_soon_named("dumper", async move {
                    // The main future is asleep in the nursery's body by now.
                    trellis::sleep(Duration::from_millis(20)).await?;
                    *keep.lock().unwrap() = Some(trellis::dump::dump());
                    nursery.cancel();
                    Ok::<_, trellis::Error>(())
                })?;
                trellis::sleep(Duration::from_secs(3600)).await?;
                Ok::<_, trellis::Error>(())
            })
            .await
        })
        .unwrap();
    let dump = seen.lock().unwrap().take().expect("a dump");
    let main = task(&dump, "main");
    assert_eq!(main.waiting_on.as_deref(), Some("sleep"), "{dump}");
    assert!(main.children[0].nursery, "{dump}");
    assert_eq!(main.children[0].tasks[0].name, "dumper", "{dump}");
    assert!(
        dump.to_string().contains("task main — waiting on sleep"),
        "{dump}"
    );
}

/// Two tasks each holding a lock and waiting for the other's: the dump names the cycle.
#[test]
fn two_tasks_waiting_for_each_others_lock_are_a_deadlock() {
    run_test(async {
        trellis::open_nursery(|n| async move {
            let (first, second) = (Arc::new(Lock::new()), Arc::new(Lock::new()));
            let both = trellis::sync::Event::new();
            let both = Arc::new(both);
            for (name, mine, theirs) in [
                ("left", first.clone(), second.clone()),
                ("right", second.clone(), first.clone()),
            ] {
                let both = both.clone();
                n.start_soon_named(name, async move {
                    let _mine = mine.acquire().await?;
                    // Both hold theirs before either asks for the other's.
                    trellis::sleep(Duration::from_millis(1)).await?;
                    let _theirs = theirs.acquire().await?;
                    both.set();
                    Ok::<_, trellis::Error>(())
                })?;
            }
            // Past their sleep (the autojump clock moves when all are blocked), into the locks.
            trellis::sleep(Duration::from_millis(2)).await?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            let cycles = dump.deadlocks();
            assert_eq!(cycles.len(), 1, "{dump}");
            let mut names: Vec<&str> = cycles[0].iter().map(|t| t.name.as_str()).collect();
            names.sort_unstable();
            assert_eq!(names, ["left", "right"], "{dump}");
            let left = task(&dump, "left");
            let right = task(&dump, "right");
            assert_eq!(
                left.waiting_on.as_deref(),
                Some(format!("lock held by task {}", right.id.as_deref().unwrap()).as_str())
            );
            assert!(!both.is_set());
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    });
}

/// Tasks that each wait on another (a channel nobody sends on, an event nobody sets) with no
/// timer pending: the run is all blocked though no cycle shows. A sleep, or a deadline over a
/// wait, is a timer that will wake something: then it is not.
#[test]
fn every_task_waiting_on_another_with_no_timer_is_all_blocked() {
    run_test(async {
        trellis::open_nursery(|n| async move {
            let (tx, rx) = trellis::channel::<u32>(0);
            let event = Arc::new(trellis::sync::Event::new());
            n.start_soon_named("receiver", async move {
                // Ends by cancellation or by the channel's end, whichever it sees first.
                let _ = rx.recv().await;
                Ok::<_, trellis::Error>(())
            })?;
            let waiter = event.clone();
            n.start_soon_named("waiter", async move {
                waiter.wait().await?;
                Ok::<_, trellis::Error>(())
            })?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            assert!(dump.all_blocked(), "{dump}");
            assert!(dump.deadlocks().is_empty(), "{dump}");

            // A sleeper will wake by itself: its wait says how soon.
            let sleeping = trellis::CancelScope::new();
            let handle = sleeping.clone();
            n.start_soon_named("napper", async move {
                sleeping.run(sleeper()).await.ok();
                Ok::<_, trellis::Error>(())
            })?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            assert!(!dump.all_blocked(), "{dump}");
            let napper = task(&dump, "napper");
            assert_eq!(napper.wakes_in, Some(Duration::from_secs(3600)), "{dump}");
            assert!(
                dump.to_string()
                    .contains("task napper — waiting on sleep (3600.0s left)"),
                "{dump}"
            );
            handle.cancel();
            wait_all_tasks_blocked().await?;
            assert!(trellis::dump::dump().all_blocked());

            // A sleep under a wait that says something else is still a timer.
            let polling = trellis::CancelScope::new();
            let stop = polling.clone();
            n.start_soon_named("poller", async move {
                let slept = trellis::dump::waiting_on(|| "the upstream service".into(), sleeper());
                polling.run(slept).await.ok();
                Ok::<_, trellis::Error>(())
            })?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            assert!(!dump.all_blocked(), "{dump}");
            assert!(
                dump.to_string()
                    .contains("task poller — waiting on the upstream service (3600.0s left)"),
                "{dump}"
            );
            stop.cancel();
            wait_all_tasks_blocked().await?;
            let before = task(&trellis::dump::dump(), "waiter").waits;
            assert!(before > 0);

            // So will a deadline over a wait.
            let deadline = event.clone();
            n.start_soon_named("patient", async move {
                trellis::move_on_after(Duration::from_secs(60), deadline.wait()).await?;
                Ok::<_, trellis::Error>(())
            })?;
            wait_all_tasks_blocked().await?;
            let dump = trellis::dump::dump();
            assert!(!dump.all_blocked(), "{dump}");
            n.cancel();
            drop(tx);
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    });
}
