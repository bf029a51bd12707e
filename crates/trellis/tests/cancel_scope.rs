//! Cancel scopes, checkpoints and shields, ported from Trio's `_core/_tests/test_run.py`.

mod common;

use std::time::Duration;

use tokio::time::Instant;
use trellis::{
    CancelScope, Cancelled, Error, checkpoint, checkpoint_if_cancelled, open_nursery, sleep_forever,
};

const HOUR: Duration = Duration::from_secs(3600);

/// Trio: test_cancel_points
async fn cancel_points() {
    for case in 0..3 {
        let scope = CancelScope::new();
        let inner = scope.clone();
        let r = scope
            .run(async move {
                match case {
                    0 => checkpoint_if_cancelled()?,
                    1 => checkpoint().await?,
                    _ => {}
                }
                inner.cancel();
                let outcome = match case {
                    0 => checkpoint_if_cancelled(),
                    1 => checkpoint().await,
                    _ => sleep_forever().await.map(|_| ()),
                };
                assert_eq!(outcome, Err(Cancelled::new()));
                outcome
            })
            .await;
        assert_eq!(r, Ok(None));
        assert!(scope.cancelled_caught());
    }
}

/// Trio: test_cancel_edge_cases (idempotent cancel; level-triggering)
async fn cancel_edge_cases() {
    let scope = CancelScope::new();
    let inner = scope.clone();
    let r = scope
        .run(async move {
            inner.cancel();
            inner.cancel();
            // Level-triggered: every checkpoint fails, not just the first.
            assert_eq!(sleep_forever().await.map(|_| ()), Err(Cancelled::new()));
            assert_eq!(sleep_forever().await.map(|_| ()), Err(Cancelled::new()));
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(scope.cancel_called());
    assert!(scope.cancelled_caught());
}

/// Trio: test_cancel_shielding
async fn cancel_shielding() {
    let outer = CancelScope::new();
    let inner = CancelScope::new();
    let (o, i) = (outer.clone(), inner.clone());
    let r = outer
        .run(async move {
            let i2 = i.clone();
            let r = i
                .run(async move {
                    checkpoint().await?;
                    o.cancel();
                    assert_eq!(checkpoint().await, Err(Cancelled::new()));
                    assert!(!i2.shield());
                    i2.set_shield(true);
                    assert!(i2.shield());
                    // The shield protects us from `outer`...
                    checkpoint().await?;
                    // ...but not from a scope inside it.
                    let innermost = CancelScope::new();
                    innermost.cancel();
                    assert_eq!(innermost.run(checkpoint()).await, Ok(None));
                    checkpoint().await?;
                    // The shield can be lowered and raised again.
                    i2.set_shield(false);
                    assert_eq!(checkpoint().await, Err(Cancelled::new()));
                    i2.set_shield(true);
                    checkpoint().await?;
                    // A shield does not protect from its own scope.
                    i2.cancel();
                    checkpoint().await
                })
                .await;
            assert_eq!(r, Ok(None));
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(inner.cancelled_caught());
    assert!(outer.cancelled_caught());
}

/// Trio: test_cancel_scope_nesting — when two nested scopes are cancelled, the outer one wins.
async fn nested_scopes_outer_wins() {
    let (s1, s2, s3) = (CancelScope::new(), CancelScope::new(), CancelScope::new());
    let (c2, c3) = (s2.clone(), s3.clone());
    let r = s1
        .run(s2.run(async move {
            c3.clone()
                .run(async move {
                    c3.cancel();
                    c2.cancel();
                    sleep_forever().await.map(|_| ())
                })
                .await
        }))
        .await;
    assert_eq!(r, Ok(Some(None)));
    assert!(s3.cancel_called());
    assert!(!s3.cancelled_caught());
    assert!(s2.cancel_called());
    assert!(s2.cancelled_caught());
    assert!(!s1.cancel_called());
    assert!(!s1.cancelled_caught());
}

/// Trio: test_cancel_scope_nesting — shielding part.
async fn nested_scopes_shield_then_own_cancel() {
    let (s1, s2) = (CancelScope::new(), CancelScope::new());
    let (c1, c2) = (s1.clone(), s2.clone());
    let r = s1
        .run(s2.run(async move {
            c1.cancel();
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            c2.set_shield(true);
            checkpoint().await?;
            c2.cancel();
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            checkpoint().await
        }))
        .await;
    // s2 is shielded, so it catches its own cancellation; s1 sees none.
    assert_eq!(r, Ok(Some(None)));
    assert!(s2.cancelled_caught());
    assert!(!s1.cancelled_caught());
}

/// Trio: test_cancel_scope_nesting — a pending cancellation of a scope that was left is not
/// delivered outside it.
async fn cancel_not_delivered_after_scope_left() {
    let scope = CancelScope::new();
    let s = scope.clone();
    let r = scope
        .run(async move {
            s.cancel();
            Ok::<_, Cancelled>(())
        })
        .await;
    assert_eq!(r, Ok(Some(())));
    checkpoint().await.unwrap();
    assert!(!scope.cancelled_caught());
}

/// Trio: test_unshield_while_cancel_propagating
async fn unshield_while_cancel_propagating() {
    let (outer, inner) = (CancelScope::new(), CancelScope::new());
    let (o, i) = (outer.clone(), inner.clone());
    let r = outer
        .run(async move {
            i.clone()
                .run(async move {
                    o.cancel();
                    let r = checkpoint().await;
                    i.set_shield(true); // "finally": raise the shield while Cancelled travels
                    r
                })
                .await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(outer.cancelled_caught());
    assert!(!inner.cancelled_caught());
}

/// Trio: test_cancel_unbound — cancel before entry.
async fn cancel_before_entry() {
    let scope = CancelScope::new();
    scope.cancel();
    let s = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { s.run(sleep_forever()).await })?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(scope.cancelled_caught());
}

/// Trio: test_cancel_unbound — cancel after entry, from another task.
async fn cancel_after_entry_from_other_task() {
    let scope = CancelScope::new();
    let s = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { s.run(sleep_forever()).await })?;
        trellis::testing::wait_all_tasks_blocked().await?;
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_cancel_unbound — shield set before entry.
async fn shield_before_entry() {
    let scope = CancelScope::new();
    scope.set_shield(true);
    let outer = CancelScope::new();
    let (o, s) = (outer.clone(), scope.clone());
    let r = outer
        .run(scope.run(async move {
            o.cancel();
            checkpoint().await?;
            s.set_shield(false);
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            checkpoint().await
        }))
        .await;
    assert_eq!(r, Ok(None));
    assert!(outer.cancelled_caught());
}

/// Trio: test_cancel_unbound — a scope cannot be reused.
async fn scope_cannot_be_reused() {
    let scope = CancelScope::new();
    scope.run(checkpoint()).await.unwrap();
    scope.cancel();
    checkpoint().await.unwrap();
    assert!(scope.cancel_called());
    assert!(!scope.cancelled_caught());
    let again = std::panic::AssertUnwindSafe(scope.run(checkpoint()));
    let panicked = futures_catch_unwind(again).await;
    assert!(panicked.unwrap_err().contains("entered only once"));
}

async fn futures_catch_unwind<F: std::future::Future>(
    f: std::panic::AssertUnwindSafe<F>,
) -> Result<F::Output, String> {
    let mut f = std::pin::pin!(f.0);
    std::future::poll_fn(|cx| {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f.as_mut().poll(cx))) {
            Ok(std::task::Poll::Ready(v)) => std::task::Poll::Ready(Ok(v)),
            Ok(std::task::Poll::Pending) => std::task::Poll::Pending,
            Err(p) => std::task::Poll::Ready(Err(p
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| p.downcast_ref::<String>().cloned())
                .unwrap_or_default())),
        }
    })
    .await
}

/// Trio: test_cancel_unbound — an unentered scope reports `cancel_called` once its deadline has
/// passed, and never becomes un-cancelled.
async fn unentered_scope_deadline_cancel_called() {
    let now = Instant::now();
    let scope = CancelScope::with_deadline(now + HOUR);
    assert!(!scope.cancel_called());
    scope.set_deadline(Some(now - Duration::from_secs(1)));
    assert!(scope.cancel_called());
    // Entering it cancels for good: moving the deadline back does not un-cancel.
    let s = scope.clone();
    let r = scope
        .run(async move {
            let r = checkpoint().await;
            s.set_deadline(Some(now + HOUR));
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            r
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(scope.cancel_called());
}

/// Trio: test_precancelled_task — a task spawned into a cancelled nursery starts, and gets
/// `Cancelled` at its first checkpoint.
async fn precancelled_task_starts() {
    let started = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = started.clone();
    let r = open_nursery(|n| async move {
        n.cancel();
        n.start_soon(async move {
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            sleep_forever().await
        })?;
        Ok::<_, Error>(())
    })
    .await;
    assert!(matches!(r, Ok(Some(()))));
    assert!(started.load(std::sync::atomic::Ordering::SeqCst));
}

/// Trio: test_current_effective_deadline (with deadlines an hour apart, no clock needed)
async fn current_effective_deadline() {
    assert_eq!(trellis::current_effective_deadline(), None);
    let now = Instant::now();
    let (d5, d10, d3) = (now + 5 * HOUR, now + 10 * HOUR, now + 3 * HOUR);
    let scope1 = CancelScope::with_deadline(d5);
    let s1 = scope1.clone();
    scope1
        .run(async move {
            let scope2 = CancelScope::with_deadline(d10);
            let s2 = scope2.clone();
            scope2
                .run(async move {
                    assert_eq!(trellis::current_effective_deadline(), Some(d5));
                    s2.set_deadline(Some(d3));
                    assert_eq!(trellis::current_effective_deadline(), Some(d3));
                    s2.set_deadline(Some(d10));
                    assert_eq!(trellis::current_effective_deadline(), Some(d5));
                    s2.set_shield(true);
                    assert_eq!(trellis::current_effective_deadline(), Some(d10));
                    s2.set_shield(false);
                    assert_eq!(trellis::current_effective_deadline(), Some(d5));
                    s1.cancel();
                    assert!(trellis::current_effective_deadline().unwrap() <= Instant::now());
                    s2.set_shield(true);
                    assert_eq!(trellis::current_effective_deadline(), Some(d10));
                    Ok::<_, Cancelled>(())
                })
                .await?;
            assert!(trellis::current_effective_deadline().unwrap() <= Instant::now());
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
    assert_eq!(trellis::current_effective_deadline(), None);
}

/// Trio: test_yield_briefly_checks_for_timeout — a plain checkpoint notices a passed deadline.
async fn checkpoint_notices_passed_deadline() {
    let scope = CancelScope::with_deadline(Instant::now() + HOUR);
    let s = scope.clone();
    let r = scope
        .run(async move {
            checkpoint().await?;
            s.set_deadline(Some(Instant::now() - Duration::from_millis(1)));
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(scope.cancel_called());
}

/// Trio: test_very_deep_cancel_scope_nesting — cancellation travels down 5,000 nested scopes
/// without recursing (polling them does recurse, hence the big stack).
#[test]
fn very_deep_scope_nesting() {
    std::thread::Builder::new()
        .stack_size(1 << 30)
        .spawn(|| trellis::testing::run_test(very_deep_scope_nesting_body()))
        .unwrap()
        .join()
        .unwrap();
}

async fn very_deep_scope_nesting_body() {
    fn nest(
        depth: usize,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Cancelled>> + Send>> {
        Box::pin(async move {
            if depth == 0 {
                return sleep_forever().await.map(|_| ());
            }
            CancelScope::new().run(nest(depth - 1)).await.map(|_| ())
        })
    }
    let outer = CancelScope::new();
    outer.cancel();
    assert_eq!(outer.run(nest(5000)).await, Ok(None));
}

/// A cancelled scope makes even an operation that could complete fail (DESIGN: "a checkpoint
/// in a cancelled scope fails even if the operation could complete").
async fn cancellable_checks_before_polling() {
    let scope = CancelScope::new();
    scope.cancel();
    let r = scope.run(trellis::cancellable(std::future::ready(7))).await;
    assert_eq!(r, Ok(None));
}

/// Foreign futures are dropped on cancel: their `Drop` is their cleanup.
async fn cancellable_drops_foreign_future() {
    struct SetOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let dropped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let guard = SetOnDrop(dropped.clone());
    let scope = CancelScope::new();
    let s = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            s.run(trellis::cancellable(async move {
                let _guard = guard;
                std::future::pending::<()>().await
            }))
            .await
        })?;
        trellis::testing::wait_all_tasks_blocked().await?;
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(dropped.load(std::sync::atomic::Ordering::SeqCst));
}

/// A handle cancels a scope from a plain OS thread.
async fn cancel_from_another_thread() {
    let scope = CancelScope::new();
    let handle = scope.clone();
    let thread = std::thread::spawn(move || handle.cancel());
    let r = scope.run(sleep_forever()).await;
    assert_eq!(r.map(|o| o.is_none()), Ok(true));
    thread.join().unwrap();
}

/// Cancelled inside a user error enum is caught through `IsCancelled`.
async fn user_error_enum_is_caught() {
    #[derive(Debug, PartialEq)]
    enum AppError {
        Cancelled,
    }
    impl From<Cancelled> for AppError {
        fn from(_: Cancelled) -> Self {
            AppError::Cancelled
        }
    }
    impl trellis::IsCancelled for AppError {
        fn is_cancelled(&self) -> bool {
            matches!(self, AppError::Cancelled)
        }
    }
    let scope = CancelScope::new();
    scope.cancel();
    let r: Result<Option<()>, AppError> = scope.run(async { Ok(checkpoint().await?) }).await;
    assert_eq!(r, Ok(None));
}

/// Code outside any scope is never cancelled: trellis works in plain tokio tasks.
async fn no_scope_no_cancellation() {
    tokio::spawn(async {
        checkpoint().await.unwrap();
        checkpoint_if_cancelled().unwrap();
        assert_eq!(trellis::current_effective_deadline(), None);
    })
    .await
    .unwrap();
}

/// The checkpoint cache: a node seen clear is remembered per thread until any node's state
/// changes. A cancel made on another thread after the check was cached must still be seen by
/// the very next check once that cancel has returned (no Trio original: this guards our cache).
async fn cached_clear_check_sees_a_cancel_from_another_thread() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    let scope = CancelScope::new();
    let handle = scope.clone();
    let done = Arc::new(AtomicBool::new(false));
    let cancelled_and_returned = done.clone();
    let r = scope
        .run(async move {
            // Fill the cache: this node is clear.
            for _ in 0..10 {
                checkpoint_if_cancelled()?;
            }
            let canceller = std::thread::spawn(move || {
                handle.cancel();
                cancelled_and_returned.store(true, Ordering::SeqCst);
            });
            let mut spins = 0u64;
            loop {
                let returned = done.load(Ordering::SeqCst);
                if checkpoint_if_cancelled().is_err() {
                    break;
                }
                assert!(
                    !returned,
                    "a check after cancel() returned saw no cancellation"
                );
                spins += 1;
                if spins % 1024 == 0 {
                    std::thread::yield_now();
                }
            }
            canceller.join().unwrap();
            Err::<(), _>(Cancelled::new())
        })
        .await;
    assert_eq!(r, Ok(None));
}

/// A scope made inside a cancelled scope is cancelled from its first check, even right after
/// this thread cached another scope (maybe at the same address) as clear.
async fn new_scope_in_cancelled_scope_is_not_taken_from_the_cache() {
    for _ in 0..100 {
        let clear = CancelScope::new();
        clear
            .run(async { checkpoint_if_cancelled() })
            .await
            .unwrap();
        drop(clear);
        let outer = CancelScope::new();
        outer.cancel();
        let seen = outer
            .run(async {
                let inner = CancelScope::new();
                inner.run(async { checkpoint_if_cancelled() }).await
            })
            .await;
        // The inner scope did not catch it (it was not its own cancel), the outer did.
        assert_eq!(seen, Ok(None));
    }
}

both_flavors!(
    cached_clear_check_sees_a_cancel_from_another_thread,
    new_scope_in_cancelled_scope_is_not_taken_from_the_cache,
    cancel_points,
    cancel_edge_cases,
    cancel_shielding,
    nested_scopes_outer_wins,
    nested_scopes_shield_then_own_cancel,
    cancel_not_delivered_after_scope_left,
    unshield_while_cancel_propagating,
    cancel_before_entry,
    cancel_after_entry_from_other_task,
    shield_before_entry,
    scope_cannot_be_reused,
    unentered_scope_deadline_cancel_called,
    precancelled_task_starts,
    current_effective_deadline,
    checkpoint_notices_passed_deadline,
    cancellable_checks_before_polling,
    cancellable_drops_foreign_future,
    cancel_from_another_thread,
    user_error_enum_is_caught,
    no_scope_no_cancellation,
);
