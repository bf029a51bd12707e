//! Nurseries, ported from Trio's `_core/_tests/test_run.py`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{Boom, KeyError};
use trellis::testing::wait_all_tasks_blocked;
use trellis::{
    CancelScope, Cancelled, Error, NotStarted, NurseryClosed, checkpoint, open_nursery,
    sleep_forever,
};

fn leaves(error: &Error) -> Vec<String> {
    error
        .as_group()
        .expect("a nursery fails with a group")
        .leaves()
        .map(|e| e.to_string())
        .collect()
}

/// Trio: test_nursery_main_block_error_basic — even one error comes as a group (strict).
async fn body_error_is_a_group() {
    let r = open_nursery(|_n| async { Err::<(), _>(Boom("whoops")) }).await;
    let error = r.unwrap_err();
    assert_eq!(leaves(&error), ["whoops"]);
    assert_eq!(
        error.into_single().unwrap().downcast::<Boom>().unwrap(),
        Boom("whoops")
    );
}

/// Trio: test_child_crash_basic
async fn child_crash_basic() {
    let r = open_nursery(|n| async move {
        n.start_soon(async { Err::<(), _>(Boom("uh oh")) })?;
        Ok::<_, Error>(())
    })
    .await;
    assert_eq!(leaves(&r.unwrap_err()), ["uh oh"]);
}

/// Trio: test_basic_interleave — two loopers alternate at checkpoints (a current-thread
/// property: on several workers they run truly in parallel).
async fn basic_interleave() {
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    open_nursery(|n| async move {
        for who in ["a", "b"] {
            let rec = rec.clone();
            n.start_soon(async move {
                for i in 0..3 {
                    rec.lock().unwrap().push((who, i));
                    checkpoint().await?;
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let record = record.lock().unwrap();
    for round in 0..3 {
        let mut pair = record[round * 2..round * 2 + 2].to_vec();
        pair.sort();
        assert_eq!(pair, [("a", round), ("b", round)]);
    }
}

/// Trio: test_task_crash_propagation — a crash cancels the sibling looper.
async fn task_crash_propagation() {
    let looper_cancelled = Arc::new(AtomicBool::new(false));
    let flag = looper_cancelled.clone();
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            loop {
                if let Err(c) = checkpoint().await {
                    flag.store(true, Ordering::SeqCst);
                    return Err::<(), _>(c);
                }
            }
        })?;
        n.start_soon(async { Err::<(), _>(Boom("argh")) })?;
        Ok::<_, Error>(())
    })
    .await;
    assert_eq!(leaves(&r.unwrap_err()), ["argh"]);
    assert!(looper_cancelled.load(Ordering::SeqCst));
}

/// Trio: test_main_and_task_both_crash
async fn main_and_task_both_crash() {
    let r = open_nursery(|n| async move {
        n.start_soon(async { Err::<(), _>(Boom("value error")) })?;
        Err::<(), _>(Error::new(KeyError("main")))
    })
    .await;
    let mut got = leaves(&r.unwrap_err());
    got.sort();
    assert_eq!(got, ["key error: main", "value error"]);
}

/// Trio: test_two_child_crashes
async fn two_child_crashes() {
    let r = open_nursery(|n| async move {
        n.start_soon(async { Err::<(), _>(Error::new(KeyError("k"))) })?;
        n.start_soon(async { Err::<(), _>(Error::new(Boom("v"))) })?;
        Ok::<_, Error>(())
    })
    .await;
    let group = r.unwrap_err().into_group().unwrap();
    assert_eq!(group.errors().len(), 2);
    assert!(group.contains::<KeyError>());
    assert!(group.contains::<Boom>());
}

/// Trio: test_child_crash_wakes_parent
async fn child_crash_wakes_parent() {
    let r = open_nursery(|n| async move {
        n.start_soon(async { Err::<(), _>(Boom("this is a crash")) })?;
        sleep_forever().await?;
        Ok::<_, Error>(())
    })
    .await;
    assert_eq!(leaves(&r.unwrap_err()), ["this is a crash"]);
}

/// Trio: test_cancel_inheritance — cancelling a nursery reaches grandchildren at once.
async fn cancel_inheritance() {
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    open_nursery(|n| async move {
        for w in ["w1", "w2"] {
            let rec = rec.clone();
            n.start_soon(async move {
                open_nursery(|inner| async move {
                    for l in ["l1", "l2"] {
                        let rec = rec.clone();
                        inner.start_soon(async move {
                            let r = sleep_forever().await;
                            rec.lock().unwrap().push(format!("{w}-{l}"));
                            r
                        })?;
                    }
                    Ok::<_, Error>(())
                })
                .await
            })?;
        }
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let mut record = record.lock().unwrap().clone();
    record.sort();
    assert_eq!(record, ["w1-l1", "w1-l2", "w2-l1", "w2-l2"]);
}

/// Trio: test_cancel_shield_abort — lowering a nursery's shield aborts a sleep in it.
async fn cancel_shield_abort() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let record = Arc::new(Mutex::new(Vec::new()));
    let r = outer
        .run(open_nursery(|n| async move {
            o.cancel();
            n.cancel_scope().set_shield(true);
            let rec = record.clone();
            n.start_soon(async move {
                rec.lock().unwrap().push("sleeping");
                let r = sleep_forever().await;
                rec.lock().unwrap().push("cancelled");
                r
            })?;
            wait_all_tasks_blocked().await?;
            assert_eq!(*record.lock().unwrap(), ["sleeping"]);
            n.cancel_scope().set_shield(false);
            CancelScope::shielded()
                .run(async {
                    wait_all_tasks_blocked().await?;
                    assert_eq!(*record.lock().unwrap(), ["sleeping", "cancelled"]);
                    Ok::<_, Cancelled>(())
                })
                .await?;
            Ok::<_, Error>(())
        }))
        .await;
    // The body and the task were cancelled by `outer`, which catches it.
    assert!(matches!(r, Ok(None)));
    assert!(outer.cancelled_caught());
}

/// Trio: test_nursery_closure — tasks may start siblings while the nursery is closing; once it
/// returned, starting is an error, not a panic.
async fn nursery_closure() {
    let mut kept = None;
    let ran = Arc::new(AtomicUsize::new(0));
    let r = ran.clone();
    open_nursery(|n| {
        kept = Some(n.clone());
        async move {
            let n2 = n.clone();
            n.start_soon(async move {
                checkpoint().await?;
                let r2 = r.clone();
                n2.start_soon(async move {
                    r2.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Error>(())
                })?;
                Ok::<_, Error>(())
            })?;
            Ok::<_, Error>(())
        }
    })
    .await
    .unwrap();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let closed = kept.unwrap().start_soon(async { Ok::<_, Error>(()) });
    assert_eq!(closed.unwrap_err(), NurseryClosed);
}

/// Trio: test_nursery_explicit_exception
async fn explicit_error_from_body() {
    let r = open_nursery(|_| async { Err::<(), _>(Error::new(KeyError("explicit"))) }).await;
    assert!(r.unwrap_err().as_group().unwrap().contains::<KeyError>());
}

/// Trio: test_nursery_start — the happy path and the value passed back.
async fn start_returns_started_value() {
    let after_start = Arc::new(AtomicBool::new(false));
    let flag = after_start.clone();
    open_nursery(|n| async move {
        let v = n
            .start(|status| async move {
                checkpoint().await?;
                status.started(7u32);
                checkpoint().await?;
                flag.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })
            .await?;
        assert_eq!(v, 7);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    // The nursery waited for the rest of the task.
    assert!(after_start.load(Ordering::SeqCst));
}

/// Trio: test_nursery_start — a crash before `started` comes out of `start`, not the nursery.
async fn start_error_before_started() {
    open_nursery(|n| async move {
        let r = n
            .start(|_status: trellis::TaskStatus<()>| async { Err::<(), _>(KeyError("oops")) })
            .await;
        assert!(r.unwrap_err().is::<KeyError>());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_nursery_start — returning without `started` is an error from `start`.
async fn start_without_started() {
    open_nursery(|n| async move {
        let r = n
            .start(|_status: trellis::TaskStatus<()>| async { Ok::<_, Error>(()) })
            .await;
        assert!(r.unwrap_err().is::<NotStarted>());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_nursery_start — if the caller of `start` is cancelled, `started` does not move the
/// task, and `start` raises `Cancelled` once it reaches a checkpoint.
async fn start_in_cancelled_caller() {
    open_nursery(|n| async move {
        let cs = CancelScope::new();
        cs.cancel();
        let n2 = n.clone();
        let r = cs
            .run(async move {
                let r = n2
                    .start(|status| async move {
                        status.started("hi");
                        checkpoint().await?;
                        Ok::<_, Error>(())
                    })
                    .await;
                assert!(r.as_ref().unwrap_err().is_cancelled());
                r
            })
            .await;
        assert!(matches!(r, Ok(None)));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_nursery_start — ... but with no checkpoint, the task completes and `start`
/// succeeds.
async fn start_in_cancelled_caller_without_checkpoint() {
    open_nursery(|n| async move {
        let cs = CancelScope::new();
        cs.cancel();
        let n2 = n.clone();
        let r = cs
            .run(async move {
                n2.start(|status| async move {
                    status.started(5);
                    Ok::<_, Error>(())
                })
                .await
            })
            .await;
        assert_eq!(r.unwrap(), Some(5));
        assert!(!cs.cancelled_caught());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_nursery_start — ... and a crash after `started` still comes out of `start`.
async fn start_in_cancelled_caller_error_after_started() {
    open_nursery(|n| async move {
        let cs = CancelScope::new();
        cs.cancel();
        let n2 = n.clone();
        let r = cs
            .run(async move {
                n2.start(|status| async move {
                    status.started(());
                    Err::<(), _>(KeyError("whoopsiedaisy"))
                })
                .await
            })
            .await;
        assert!(r.unwrap_err().is::<KeyError>());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_nursery_start — starting in a closed nursery fails at once.
async fn start_in_closed_nursery() {
    let mut kept = None;
    open_nursery(|n| {
        kept = Some(n);
        async { Ok::<_, Error>(()) }
    })
    .await
    .unwrap();
    let kept = kept.unwrap();
    let r = kept.start(|status| async move {
        status.started(());
        Ok::<_, Error>(())
    });
    assert!(r.await.unwrap_err().is::<NurseryClosed>());
}

/// Trio: test_nursery_start_with_cancelled_nursery — moving a task with sleeping children into a
/// cancelled nursery cancels them.
async fn start_into_cancelled_nursery() {
    for cancel_before in [true, false] {
        open_nursery(|outer| async move {
            let target: trellis::Nursery = outer
                .start(|status| async move {
                    open_nursery(|target| async move {
                        status.started(target.clone());
                        sleep_forever().await?;
                        Ok::<_, Error>(())
                    })
                    .await
                })
                .await?;
            let t2 = target.clone();
            target
                .start(move |status| async move {
                    open_nursery(|inner| async move {
                        inner.start_soon(sleep_forever())?;
                        inner.start_soon(sleep_forever())?;
                        wait_all_tasks_blocked().await?;
                        if cancel_before {
                            t2.cancel();
                        }
                        status.started(());
                        Ok::<_, Error>(())
                    })
                    .await
                })
                .await?;
            if !cancel_before {
                target.cancel();
            }
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
    }
}

/// A child panic cancels its siblings, waits for them, then resumes in the parent.
async fn child_panic_cancels_siblings_then_resumes() {
    let sibling_cleaned_up = Arc::new(AtomicBool::new(false));
    let flag = sibling_cleaned_up.clone();
    let outcome = tokio::spawn(async move {
        open_nursery(|n| async move {
            n.start_soon(async move {
                let r = sleep_forever().await;
                // Async cleanup after cancellation, in a shield.
                CancelScope::shielded().run(checkpoint()).await?;
                flag.store(true, Ordering::SeqCst);
                r
            })?;
            wait_all_tasks_blocked().await?;
            n.start_soon(async {
                panic!("child panicked");
                #[allow(unreachable_code)]
                Ok::<_, Error>(())
            })?;
            sleep_forever().await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await;
    let panic = outcome.unwrap_err().into_panic();
    assert_eq!(*panic.downcast::<&str>().unwrap(), "child panicked");
    assert!(sibling_cleaned_up.load(Ordering::SeqCst));
}

/// Dropping a nursery future mid-flight aborts every task: none outlives it.
async fn dropped_nursery_aborts_tasks() {
    struct Alive(Arc<AtomicUsize>);
    impl Drop for Alive {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }
    let alive = Arc::new(AtomicUsize::new(0));
    let a = alive.clone();
    let nursery = open_nursery(move |n| async move {
        for _ in 0..10 {
            a.fetch_add(1, Ordering::SeqCst);
            let guard = Alive(a.clone());
            n.start_soon(async move {
                let _guard = guard;
                // Ignores cancellation on purpose: only abort can stop it.
                std::future::pending::<()>().await;
                Ok::<_, Error>(())
            })?;
        }
        sleep_forever().await?;
        Ok::<_, Error>(())
    });
    // `select!` drops the losing nursery future once every task is blocked.
    tokio::select! {
        biased;
        _ = wait_all_tasks_blocked() => {}
        _ = nursery => unreachable!(),
    }
    // Give the runtime a turn to drop the aborted tasks.
    for _ in 0..10 {
        tokio::task::yield_now().await;
        if alive.load(Ordering::SeqCst) == 0 {
            break;
        }
    }
    wait_all_tasks_blocked().await.unwrap();
    assert_eq!(
        alive.load(Ordering::SeqCst),
        0,
        "a task outlived its dropped nursery"
    );
}

/// Return values of children are collected (python-trio/trio#2633).
async fn child_values_are_collected() {
    let handles = open_nursery(|n| async move {
        let hs = (0..10u64)
            .map(|i| {
                n.start_soon(async move {
                    checkpoint().await?;
                    Ok::<_, Error>(i * i)
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok::<_, Error>(hs)
    })
    .await
    .unwrap()
    .unwrap();
    let values: Vec<u64> = handles
        .into_iter()
        .map(|h| h.into_value().unwrap())
        .collect();
    assert_eq!(values, (0..10).map(|i| i * i).collect::<Vec<_>>());
}

/// Nested nurseries give nested groups, shaped like the task tree.
async fn nested_nursery_errors_nest() {
    let r = open_nursery(|n| async move {
        n.start_soon(async {
            open_nursery(|inner| async move {
                inner.start_soon(async { Err::<(), _>(Boom("deep 1")) })?;
                inner.start_soon(async { Err::<(), _>(Boom("deep 2")) })?;
                Ok::<_, Error>(())
            })
            .await
        })?;
        Ok::<_, Error>(())
    })
    .await;
    let error = r.unwrap_err();
    let group = error.as_group().unwrap();
    assert_eq!(group.errors().len(), 1);
    let inner = group.errors()[0].as_group().expect("nested group");
    let mut got: Vec<_> = inner.errors().iter().map(|e| e.to_string()).collect();
    got.sort();
    assert_eq!(got, ["deep 1", "deep 2"]);
}

/// A nursery cancelled from outside propagates `Cancelled`, not a group, and the outer scope
/// catches it.
async fn outer_cancel_propagates_through_nursery() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let r = outer
        .run(async move {
            open_nursery(|n| async move {
                n.start_soon(sleep_forever())?;
                wait_all_tasks_blocked().await?;
                o.cancel();
                sleep_forever().await?;
                Ok::<_, Error>(())
            })
            .await
        })
        .await;
    assert!(matches!(r, Ok(None)));
    assert!(outer.cancelled_caught());
}

/// Cancelling the nursery itself while the body waits: caught, body value absent.
async fn nursery_cancel_catches_body() {
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            wait_all_tasks_blocked().await?;
            Ok::<_, Error>(())
        })?;
        n.cancel();
        sleep_forever().await?;
        Ok::<_, Error>(42)
    })
    .await;
    assert!(matches!(r, Ok(None)));
}

/// Trio: test_nursery_start_keeps_nursery_open (crash variant) — a pending `start` keeps the
/// target nursery open even though its task never enters it.
async fn pending_start_keeps_nursery_open() {
    let start_failed = Arc::new(AtomicBool::new(false));
    let flag = start_failed.clone();
    open_nursery(|n1| async move {
        open_nursery(|n2| async move {
            n1.start_soon(async move {
                let r = n2
                    .start(|_status: trellis::TaskStatus<()>| async {
                        checkpoint().await?;
                        Err::<(), _>(Error::new(KeyError("crash")))
                    })
                    .await;
                assert!(r.unwrap_err().is::<KeyError>());
                flag.store(true, Ordering::SeqCst);
                Ok::<_, Error>(())
            })?;
            // Make sure `start` was called before this body ends.
            wait_all_tasks_blocked().await?;
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(start_failed.load(Ordering::SeqCst));
}

/// What a task captured is dropped before its nursery returns, in the task's own context
/// (its cancel scope is still the current one there); a panic in that drop is the task's
/// panic. Repeated: on the multi-thread runtime the task ends on another worker.
async fn task_captures_dropped_before_nursery_returns() {
    struct Captured(Arc<AtomicUsize>);
    impl Drop for Captured {
        fn drop(&mut self) {
            // A slow destructor widens any window between a task's end and its drop.
            std::thread::sleep(std::time::Duration::from_micros(50));
            if trellis::current_effective_deadline().is_some() {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    /// A future that is done at once and keeps what it holds until it is dropped.
    struct Holding(#[allow(dead_code)] Captured);
    impl std::future::Future for Holding {
        type Output = Result<(), Error>;
        fn poll(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            std::task::Poll::Ready(Ok(()))
        }
    }
    let dropped = Arc::new(AtomicUsize::new(0));
    for round in 1..=50 {
        let captured = Captured(dropped.clone());
        // The deadline is what the task's context shows; outside it there is none.
        trellis::fail_after(
            std::time::Duration::from_secs(3600),
            open_nursery(|n| async move {
                n.start_soon(Holding(captured))?;
                Ok::<_, Error>(())
            }),
        )
        .await
        .unwrap();
        assert_eq!(dropped.load(Ordering::SeqCst), round);
    }
}

both_flavors!(
    task_captures_dropped_before_nursery_returns,
    body_error_is_a_group,
    child_crash_basic,
    task_crash_propagation,
    main_and_task_both_crash,
    two_child_crashes,
    child_crash_wakes_parent,
    cancel_inheritance,
    cancel_shield_abort,
    nursery_closure,
    explicit_error_from_body,
    start_returns_started_value,
    start_error_before_started,
    start_without_started,
    start_in_cancelled_caller,
    start_in_cancelled_caller_without_checkpoint,
    start_in_cancelled_caller_error_after_started,
    start_in_closed_nursery,
    start_into_cancelled_nursery,
    child_panic_cancels_siblings_then_resumes,
    dropped_nursery_aborts_tasks,
    child_values_are_collected,
    nested_nursery_errors_nest,
    outer_cancel_propagates_through_nursery,
    nursery_cancel_catches_body,
    pending_start_keeps_nursery_open,
);

mod current_thread_only {
    #[test]
    fn basic_interleave() {
        trellis::testing::run_test(super::basic_interleave());
    }
}
