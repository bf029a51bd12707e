//! Supervisors, ported from Erlang/OTP's `lib/stdlib/test/supervisor_SUITE.erl` (the test
//! each one ports is named), on the autojump clock unless said otherwise.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::Boom;
use tokio::time::Instant;
use trellis::supervisor::{
    Backoff, ChildPanicked, ChildReturned, ChildState, Restart, StartError, Strategy, Supervision,
    Supervisor, open_supervisor,
};
use trellis::testing::wait_all_tasks_blocked;
use trellis::{CancelScope, Error, sleep, sleep_forever};

/// What the children did, in order.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, entry: impl Into<String>) {
        self.0.lock().unwrap().push(entry.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

/// A child that logs `start <name>` and `stop <name>` (its cleanup, also when cancelled) and
/// runs until cancelled.
fn forever(log: &Log, name: &'static str) -> impl FnMut() -> BoxChild + Send + 'static {
    let log = log.clone();
    move || {
        let log = log.clone();
        Box::pin(async move {
            log.push(format!("start {name}"));
            let outcome = sleep_forever().await;
            log.push(format!("stop {name}"));
            outcome.map(|_| ())
        })
    }
}

type BoxChild = std::pin::Pin<Box<dyn Future<Output = Result<(), trellis::Cancelled>> + Send>>;

/// How a child fails.
#[derive(Clone, Copy, Debug)]
enum Kind {
    Error,
    Panic,
}

fn failing(
    log: &Log,
    name: &'static str,
    after: Duration,
    failures: u32,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + 'static
{
    failing_as(Kind::Error, log, name, after, failures)
}

/// A child that logs `start <name>`, then fails (as `kind` says) after `after`, its first
/// `failures` runs; later runs run until cancelled.
fn failing_as(
    kind: Kind,
    log: &Log,
    name: &'static str,
    after: Duration,
    failures: u32,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + 'static
{
    let log = log.clone();
    let runs = Arc::new(AtomicU32::new(0));
    move || {
        let log = log.clone();
        let run = runs.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            log.push(format!("start {name}"));
            sleep(after).await?;
            if run < failures {
                log.push(format!("fail {name}"));
                match kind {
                    Kind::Error => return Err(Boom("crash").into()),
                    Kind::Panic => panic!("{name} crashed"),
                }
            }
            let outcome = sleep_forever().await;
            log.push(format!("stop {name}"));
            outcome.map(|_| ()).map_err(Into::into)
        })
    }
}

fn names(sup: &Supervisor) -> Vec<(String, u64)> {
    sup.children()
        .into_iter()
        .map(|c| (c.name, c.restarts))
        .collect()
}

/// supervisor_SUITE: permanent_normal — a permanent child that returns is restarted, and a
/// return counts towards the intensity like a failure.
async fn permanent_normal() {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let error = open_supervisor(
        Supervision::new(Strategy::OneForOne).intensity(2, Duration::from_secs(5)),
        |sup| async move {
            sup.start("p", Restart::Permanent, move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { Ok::<_, Error>(()) }
            })?;
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap_err();
    assert_eq!(
        runs.load(Ordering::Relaxed),
        3,
        "started, then restarted twice"
    );
    let group = error.as_group().expect("a group of causes");
    assert_eq!(group.errors().len(), 3);
    assert!(
        group
            .leaves()
            .all(|e| e.downcast_ref::<ChildReturned>().is_some())
    );
}

/// supervisor_SUITE: transient_normal and temporary_normal — a transient or temporary child
/// that returns is removed, and the supervisor ends once its body has and no child is left.
async fn transient_and_temporary_normal() {
    for restart in [Restart::Transient, Restart::Temporary] {
        let runs = Arc::new(AtomicU32::new(0));
        let counted = runs.clone();
        let value = open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            sup.start("t", restart, move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async { sleep(Duration::from_secs(1)).await }
            })?;
            Ok::<_, Error>("body")
        })
        .await
        .unwrap();
        assert_eq!(value, Some("body"));
        assert_eq!(runs.load(Ordering::Relaxed), 1, "{restart:?}");
    }
}

/// supervisor_SUITE: transient_abnormal and permanent_abnormal — a failed child is restarted,
/// each restart counted on it.
async fn transient_and_permanent_abnormal() {
    for restart in [Restart::Transient, Restart::Permanent] {
        let log = Log::default();
        let child = failing(&log, "c", Duration::from_secs(1), 1);
        let watcher = log.clone();
        let outcome = open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            sup.start("c", restart, child)?;
            sleep(Duration::from_secs(2)).await?;
            let status = &sup.children()[0];
            assert_eq!(status.restarts, 1);
            assert_eq!(status.state, ChildState::Running);
            assert!(status.last_cause.as_deref().unwrap().contains("crash"));
            assert_eq!(sup.restarts(), 1);
            sup.shutdown();
            Ok::<_, Error>(())
        })
        .await;
        assert_eq!(outcome.unwrap(), None, "shut down");
        assert_eq!(watcher.take(), ["start c", "fail c", "start c"]);
    }
}

/// supervisor_SUITE: temporary_abnormal — a temporary child that fails is not restarted, and
/// its failure does not fail the supervisor.
async fn temporary_abnormal() {
    let log = Log::default();
    let child = failing(&log, "tmp", Duration::from_secs(1), 5);
    let outcome = open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
        sup.start("tmp", Restart::Temporary, child)?;
        Ok::<_, Error>(())
    })
    .await;
    assert_eq!(outcome.unwrap(), Some(()));
    assert_eq!(log.take(), ["start tmp", "fail tmp"]);
}

/// A panicking child is a failure like any other: restarted, its panic message the cause.
async fn panicking_child_restarts() {
    let runs = Arc::new(AtomicU32::new(0));
    let counted = runs.clone();
    let error = open_supervisor(
        Supervision::new(Strategy::OneForOne).intensity(1, Duration::from_secs(5)),
        |sup| async move {
            sup.start("p", Restart::Transient, move || {
                counted.fetch_add(1, Ordering::Relaxed);
                async {
                    sleep(Duration::from_millis(10)).await?;
                    panic!("the child broke");
                    #[allow(unreachable_code)]
                    Ok::<_, Error>(())
                }
            })?;
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap_err();
    assert_eq!(runs.load(Ordering::Relaxed), 2);
    let leaves: Vec<_> = error.as_group().unwrap().leaves().collect();
    assert_eq!(leaves.len(), 2);
    let panicked = leaves[0].downcast_ref::<ChildPanicked>().unwrap();
    assert_eq!(panicked.child, "p");
    assert_eq!(panicked.message, "the child broke");
}

/// supervisor_SUITE: one_for_one — only the failed child restarts; its siblings run on.
async fn one_for_one() {
    one_for_one_failing(Kind::Error).await;
}

async fn one_for_one_panicking() {
    one_for_one_failing(Kind::Panic).await;
}

async fn one_for_one_failing(kind: Kind) {
    let log = Log::default();
    let a = forever(&log, "a");
    let b = failing_as(kind, &log, "b", Duration::from_secs(1), 1);
    let c = forever(&log, "c");
    let watcher = log.clone();
    open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("b", Restart::Permanent, b)?;
        sup.start("c", Restart::Permanent, c)?;
        sleep(Duration::from_secs(2)).await?;
        assert_eq!(
            names(&sup),
            [("a".into(), 0), ("b".into(), 1), ("c".into(), 0)]
        );
        sup.shutdown();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let log = watcher.take();
    assert_eq!(
        &log[3..],
        ["fail b", "start b", "stop c", "stop b", "stop a"],
        "{log:?}"
    );
}

/// supervisor_SUITE: one_for_all — every child is stopped, last started first, each after the
/// previous one ended, then all start again in their order.
async fn one_for_all() {
    one_for_all_failing(Kind::Error).await;
}

async fn one_for_all_panicking() {
    one_for_all_failing(Kind::Panic).await;
}

async fn one_for_all_failing(kind: Kind) {
    let log = Log::default();
    let a = forever(&log, "a");
    let b = failing_as(kind, &log, "b", Duration::from_secs(1), 1);
    let c = forever(&log, "c");
    let watcher = log.clone();
    open_supervisor(Supervision::new(Strategy::OneForAll), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("b", Restart::Permanent, b)?;
        sup.start("c", Restart::Permanent, c)?;
        sleep(Duration::from_secs(2)).await?;
        assert_eq!(
            names(&sup),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        assert_eq!(sup.restarts(), 3);
        sup.shutdown();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        watcher.take()[3..],
        [
            "fail b", "stop c", "stop a", "start a", "start b", "start c", "stop c", "stop b",
            "stop a"
        ]
    );
}

/// supervisor_SUITE: rest_for_one — the failed child and exactly those started after it
/// restart, in order; those before it run on.
async fn rest_for_one() {
    rest_for_one_failing(Kind::Error).await;
}

async fn rest_for_one_panicking() {
    rest_for_one_failing(Kind::Panic).await;
}

async fn rest_for_one_failing(kind: Kind) {
    let log = Log::default();
    let a = forever(&log, "a");
    let b = failing_as(kind, &log, "b", Duration::from_secs(1), 1);
    let c = forever(&log, "c");
    let d = forever(&log, "d");
    let watcher = log.clone();
    open_supervisor(Supervision::new(Strategy::RestForOne), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("b", Restart::Permanent, b)?;
        sup.start("c", Restart::Permanent, c)?;
        sup.start("d", Restart::Permanent, d)?;
        sleep(Duration::from_secs(2)).await?;
        assert_eq!(
            names(&sup),
            [
                ("a".into(), 0),
                ("b".into(), 1),
                ("c".into(), 1),
                ("d".into(), 1)
            ]
        );
        sup.shutdown();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        watcher.take()[4..],
        [
            "fail b", "stop d", "stop c", "start b", "start c", "start d", "stop d", "stop c",
            "stop b", "stop a"
        ]
    );
}

/// supervisor_SUITE: temporary_bystander — a temporary child stopped so that a sibling can
/// restart with it is not restarted: it is removed.
async fn temporary_bystander() {
    let log = Log::default();
    let a = failing(&log, "a", Duration::from_secs(1), 1);
    let t = forever(&log, "t");
    let watcher = log.clone();
    open_supervisor(Supervision::new(Strategy::OneForAll), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("t", Restart::Temporary, t)?;
        sleep(Duration::from_secs(2)).await?;
        assert_eq!(names(&sup), [("a".into(), 1)]);
        sup.shutdown();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        watcher.take(),
        ["start a", "start t", "fail a", "stop t", "start a"]
    );
}

/// supervisor_SUITE: one_for_one_escalation (the intensity, exactly) — 3 restarts within 10 s
/// are allowed: failures 4 s apart run forever, failures 1 s apart give up at the fourth,
/// with the four causes.
async fn intensity_counts_restarts_within_the_period() {
    let spaced = Arc::new(AtomicU32::new(0));
    let runs = spaced.clone();
    let supervision = Supervision::new(Strategy::OneForOne).intensity(3, Duration::from_secs(10));
    let outcome = trellis::move_on_after(
        Duration::from_secs(60),
        open_supervisor(supervision.clone(), |sup| async move {
            sup.start("spaced", Restart::Permanent, move || {
                runs.fetch_add(1, Ordering::Relaxed);
                async {
                    sleep(Duration::from_secs(4)).await?;
                    Err::<(), Error>(Boom("spaced").into())
                }
            })?;
            Ok::<_, Error>(())
        }),
    )
    .await;
    assert_eq!(outcome.unwrap(), None, "still running after a minute");
    assert_eq!(spaced.load(Ordering::Relaxed), 15);

    let started = Instant::now();
    let error = open_supervisor(supervision, |sup| async move {
        sup.start("fast", Restart::Permanent, || async {
            sleep(Duration::from_secs(1)).await?;
            Err::<(), Error>(Boom("fast").into())
        })?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(4));
    let group = error.as_group().unwrap();
    assert!(group.message().contains("gave up"), "{}", group.message());
    assert_eq!(group.errors().len(), 4);
    assert!(group.leaves().all(|e| e.to_string() == "fast"));
    // Each cause says which child and which restart.
    assert!(group.errors()[3].notes()[0].contains("`fast`"));
}

/// supervisor_SUITE: one_for_one_escalation with a tree — a supervisor that gives up is a
/// failed child of its parent, which restarts it.
async fn nested_supervisors_escalate() {
    let inner_runs = Arc::new(AtomicU32::new(0));
    let runs = inner_runs.clone();
    let error = open_supervisor(
        Supervision::new(Strategy::OneForOne)
            .name("outer")
            .intensity(1, Duration::from_secs(60)),
        |outer| async move {
            outer.start("inner", Restart::Permanent, move || {
                runs.fetch_add(1, Ordering::Relaxed);
                async {
                    open_supervisor(
                        Supervision::new(Strategy::OneForOne)
                            .name("inner")
                            .intensity(0, Duration::from_secs(1)),
                        |inner| async move {
                            inner.start("leaf", Restart::Permanent, || async {
                                sleep(Duration::from_secs(1)).await?;
                                Err::<(), Error>(Boom("leaf").into())
                            })?;
                            Ok::<_, Error>(())
                        },
                    )
                    .await
                    .map(|_| ())
                }
            })?;
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap_err();
    assert_eq!(inner_runs.load(Ordering::Relaxed), 2);
    let outer = error.as_group().unwrap();
    assert!(outer.message().contains("`outer` gave up"));
    assert_eq!(outer.errors().len(), 2);
    for cause in outer.errors() {
        let inner = cause.as_group().expect("the inner supervisor's group");
        assert!(inner.message().contains("`inner` gave up"));
        assert_eq!(inner.leaves().count(), 1);
    }
}

/// The backoff: each restart of the same child within the period waits twice as long.
async fn backoff_doubles() {
    let times = Arc::new(Mutex::new(Vec::new()));
    let seen = times.clone();
    let started = Instant::now();
    let _ = open_supervisor(
        Supervision::new(Strategy::OneForOne)
            .intensity(3, Duration::from_secs(60))
            .backoff(
                Backoff::exponential(Duration::from_secs(1), Duration::from_secs(3))
                    .with_jitter(0.0),
            ),
        |sup| async move {
            sup.start("b", Restart::Permanent, move || {
                seen.lock().unwrap().push(started.elapsed());
                async { Err::<(), _>(Boom("b")) }
            })?;
            Ok::<_, Error>(())
        },
    )
    .await
    .unwrap_err();
    let secs = |s| Duration::from_secs(s);
    assert_eq!(*times.lock().unwrap(), [secs(0), secs(1), secs(3), secs(6)]);
}

/// Jitter only shortens a wait, never past zero.
#[test]
fn backoff_jitter_stays_within_bounds() {
    let backoff = Backoff::exponential(Duration::from_millis(100), Duration::from_secs(1));
    assert_eq!(backoff.delay(0), Duration::from_millis(100));
    assert_eq!(backoff.delay(2), Duration::from_millis(200));
    assert_eq!(backoff.delay(u32::MAX), Duration::from_secs(1));
    assert_eq!(Backoff::NONE.delay(7), Duration::ZERO);
}

/// supervisor_SUITE: child_adm — `stop` removes a child for good; names are unique; a closed
/// supervisor starts nothing.
async fn stop_and_start_errors() {
    let log = Log::default();
    let a = forever(&log, "a");
    let again = forever(&log, "a");
    let watcher = log.clone();
    let mut kept = None;
    open_supervisor(Supervision::new(Strategy::OneForOne), |sup| {
        kept = Some(sup.clone());
        async move {
            let child = sup.start("a", Restart::Permanent, a)?;
            assert_eq!(child.name(), "a");
            assert_eq!(
                sup.start("a", Restart::Permanent, again).unwrap_err(),
                StartError::DuplicateName("a".into())
            );
            wait_all_tasks_blocked().await?;
            assert!(!child.is_removed());
            assert!(sup.stop("a"));
            assert!(!sup.stop("nobody"));
            child.removed().await?;
            assert_eq!(child.removed_because(), Some("stopped by its supervisor"));
            Ok::<_, Error>(())
        }
    })
    .await
    .unwrap();
    assert_eq!(watcher.take(), ["start a", "stop a"]);
    let closed = kept
        .unwrap()
        .start("late", Restart::Temporary, || async { Ok::<_, Error>(()) });
    assert_eq!(closed.unwrap_err(), StartError::Closed);
}

/// One incident counts once: a child that fails while its group is being restarted (here
/// because the failed sibling it depends on is gone) is restarted with the group, not counted
/// as a second restart — with OTP's default intensity (1 in 5 s) the supervisor carries on.
async fn knock_on_failure_during_a_group_restart_counts_once() {
    let log = Log::default();
    let a_failed = Arc::new(trellis::sync::Event::new());
    let runs = Arc::new(AtomicU32::new(0));
    let (failed, runs_a) = (a_failed.clone(), runs.clone());
    let a_log = log.clone();
    let a = move || {
        let (failed, run) = (failed.clone(), runs_a.fetch_add(1, Ordering::Relaxed));
        let log = a_log.clone();
        async move {
            log.push("start a");
            sleep(Duration::from_secs(1)).await?;
            if run == 0 {
                failed.set();
                return Err(Error::from(Boom("a")));
            }
            sleep_forever().await?;
            Ok(())
        }
    };
    let (failed, b_log) = (a_failed.clone(), log.clone());
    let b = move || {
        let (failed, log) = (failed.clone(), b_log.clone());
        async move {
            log.push("start b");
            if !failed.is_set() {
                failed.wait().await?;
                // Its input is gone: it fails too, while c is still being stopped.
                return Err(Error::from(Boom("b")));
            }
            sleep_forever().await?;
            Ok(())
        }
    };
    let c_log = log.clone();
    let c = move || {
        let log = c_log.clone();
        async move {
            log.push("start c");
            let outcome = sleep_forever().await;
            // A slow cleanup: b's failure arrives while the supervisor waits for it.
            CancelScope::shielded()
                .run(sleep(Duration::from_millis(100)))
                .await?;
            outcome.map(|_| ())
        }
    };
    let outcome = open_supervisor(Supervision::new(Strategy::OneForAll), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("b", Restart::Permanent, b)?;
        sup.start("c", Restart::Permanent, c)?;
        sleep(Duration::from_secs(3)).await?;
        assert_eq!(
            names(&sup),
            [("a".into(), 1), ("b".into(), 1), ("c".into(), 1)]
        );
        sup.shutdown();
        Ok::<_, Error>(())
    })
    .await;
    assert_eq!(outcome.unwrap(), None, "it did not give up");
    let log = log.take();
    assert_eq!(log.iter().filter(|l| *l == "start a").count(), 2, "{log:?}");
}

/// After a scope outside cancelled it, the supervisor is closed: a handle kept beyond it
/// starts nothing, and every child's handle says it was removed.
async fn cancelled_supervisor_is_closed() {
    let mut kept = None;
    let mut child = None;
    let scope = CancelScope::new();
    let canceller = scope.clone();
    let outcome = scope
        .run(open_supervisor(
            Supervision::new(Strategy::OneForOne),
            |sup| {
                kept = Some(sup.clone());
                let child = &mut child;
                async move {
                    *child = Some(sup.start("a", Restart::Permanent, || async {
                        sleep_forever().await?;
                        Ok::<_, Error>(())
                    })?);
                    canceller.cancel();
                    sleep_forever().await?;
                    Ok::<_, Error>(())
                }
            },
        ))
        .await;
    assert_eq!(outcome.unwrap(), None);
    let child = child.unwrap();
    assert_eq!(child.removed_because(), Some("its supervisor has ended"));
    let late = kept
        .unwrap()
        .start("b", Restart::Permanent, || async { Ok::<_, Error>(()) });
    assert_eq!(late.unwrap_err(), StartError::Closed);
}

/// A supervisor future dropped before its end (a `select!`, an aborted task) aborts its
/// children and removes them: their handles do not wait forever.
async fn dropped_supervisor_removes_its_children() {
    let mut child = None;
    let dropped = tokio::time::timeout(
        Duration::from_secs(1),
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| {
            let child = &mut child;
            async move {
                *child = Some(sup.start("a", Restart::Permanent, || async {
                    sleep_forever().await?;
                    Ok::<_, Error>(())
                })?);
                sleep_forever().await?;
                Ok::<_, Error>(())
            }
        }),
    )
    .await;
    assert!(dropped.is_err());
    let child = child.unwrap();
    child.removed().await.unwrap();
    assert_eq!(child.removed_because(), Some("its supervisor has ended"));
}

/// A failing body fails the supervisor: every child is stopped (last first) and the group
/// holds the body's error, as a nursery's would.
async fn body_failure_stops_children() {
    let log = Log::default();
    let a = forever(&log, "a");
    let b = forever(&log, "b");
    let error = open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
        sup.start("a", Restart::Permanent, a)?;
        sup.start("b", Restart::Permanent, b)?;
        sleep(Duration::from_secs(1)).await?;
        Err::<(), _>(Error::from(Boom("body")))
    })
    .await
    .unwrap_err();
    assert_eq!(error.into_single().unwrap().to_string(), "body");
    assert_eq!(log.take(), ["start a", "start b", "stop b", "stop a"]);
}

/// A scope outside cancelled: every child is cancelled, nothing restarts, and the supervisor
/// returns `Cancelled` for that scope to catch.
async fn outer_cancellation_restarts_nothing() {
    let log = Log::default();
    let a = forever(&log, "a");
    let b = forever(&log, "b");
    let scope = CancelScope::new();
    let canceller = scope.clone();
    let outcome = scope
        .run(open_supervisor(
            Supervision::new(Strategy::OneForAll),
            |sup| async move {
                sup.start("a", Restart::Permanent, a)?;
                sup.start("b", Restart::Permanent, b)?;
                wait_all_tasks_blocked().await?;
                canceller.cancel();
                sleep_forever().await?;
                Ok::<_, Error>(())
            },
        ))
        .await;
    assert_eq!(outcome.unwrap(), None, "the scope caught the cancellation");
    let mut log = log.take();
    log.sort();
    assert_eq!(log, ["start a", "start b", "stop a", "stop b"]);
}

autojump!(
    permanent_normal,
    transient_and_temporary_normal,
    transient_and_permanent_abnormal,
    temporary_abnormal,
    panicking_child_restarts,
    one_for_one,
    one_for_one_panicking,
    one_for_all,
    one_for_all_panicking,
    rest_for_one,
    rest_for_one_panicking,
    temporary_bystander,
    intensity_counts_restarts_within_the_period,
    nested_supervisors_escalate,
    backoff_doubles,
    stop_and_start_errors,
    body_failure_stops_children,
    knock_on_failure_during_a_group_restart_counts_once,
    cancelled_supervisor_is_closed,
    dropped_supervisor_removes_its_children,
    outer_cancellation_restarts_nothing,
);

/// 200 crash and restart cycles on two workers: a replacement never starts before the child
/// it replaces has ended (its cleanup included), and the supervisor gives up at the 201st.
#[test]
fn restart_storm_never_overlaps() {
    trellis::testing::run_test_multi_thread(async {
        let live = Arc::new(AtomicU32::new(0));
        let runs = Arc::new(AtomicU32::new(0));
        let (l, r) = (live.clone(), runs.clone());
        let error = open_supervisor(
            Supervision::new(Strategy::OneForAll).intensity(200, Duration::from_secs(3600)),
            |sup| async move {
                let sibling = l.clone();
                sup.start("sibling", Restart::Permanent, move || {
                    let live = sibling.clone();
                    async move {
                        assert_eq!(live.fetch_add(1, Ordering::SeqCst), 0, "overlap");
                        let outcome = sleep_forever().await;
                        // Cleanup that takes a while: the replacement must wait for it.
                        tokio::task::yield_now().await;
                        live.fetch_sub(1, Ordering::SeqCst);
                        outcome.map(|_| ())
                    }
                })?;
                sup.start("crasher", Restart::Permanent, move || {
                    r.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(Boom("crash")) }
                })?;
                Ok::<_, Error>(())
            },
        )
        .await
        .unwrap_err();
        assert_eq!(runs.load(Ordering::SeqCst), 201);
        assert_eq!(live.load(Ordering::SeqCst), 0);
        assert_eq!(error.as_group().unwrap().errors().len(), 201);
    });
}
