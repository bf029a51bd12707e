//! Deadlines and timeouts on the autojump clock, ported from Trio's `_tests/test_timeouts.py`
//! and the timing parts of `_core/_tests/test_run.py`. Virtual time makes the durations exact.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;
use trellis::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trellis::{
    CancelScope, Cancelled, Error, TooSlow, checkpoint, fail_after, fail_at, move_on_after,
    move_on_at, open_nursery, sleep, sleep_forever, sleep_until,
};

const SEC: Duration = Duration::from_secs(1);

/// Virtual durations are exact up to tokio's 1 ms timer granularity.
fn assert_took(start: Instant, expected: Duration) {
    let took = start.elapsed();
    assert!(
        took >= expected && took <= expected + Duration::from_millis(1),
        "took {took:?}, expected {expected:?}"
    );
}

/// Trio: test_sleep
async fn sleep_takes_its_time() {
    let t0 = Instant::now();
    sleep_until(Instant::now() + SEC).await.unwrap();
    assert_took(t0, SEC);
    let t0 = Instant::now();
    sleep(SEC).await.unwrap();
    assert_took(t0, SEC);
    assert_checkpoints(sleep(Duration::ZERO)).await.unwrap();
    // The trivial move_on_at: a deadline of now cancels even sleep(0).
    let r = move_on_at(Instant::now(), async {
        assert_eq!(sleep(Duration::ZERO).await, Err(Cancelled::new()));
        sleep(Duration::ZERO).await
    })
    .await;
    assert_eq!(r, Ok(None));
}

/// Trio: test_move_on_after
async fn move_on_after_moves_on() {
    let t0 = Instant::now();
    let r = move_on_after(SEC, sleep(100 * SEC)).await;
    assert_eq!(r, Ok(None));
    assert_took(t0, SEC);
}

/// Trio: test_context_shields_from_outer (move_on_after and fail_after flavours)
async fn timeout_scope_shields_from_outer() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let r = outer
        .run(async move {
            let inner = CancelScope::with_timeout(SEC);
            inner.set_shield(true);
            let i = inner.clone();
            inner
                .run(async move {
                    o.cancel();
                    checkpoint().await.expect("the shield should hold");
                    i.set_shield(false);
                    assert_eq!(checkpoint().await, Err(Cancelled::new()));
                    Err::<(), _>(Cancelled::new())
                })
                .await
        })
        .await;
    assert_eq!(r, Ok(None));
    assert!(outer.cancelled_caught());
}

/// Trio: test_move_on_after_moves_on_even_if_shielded
async fn move_on_after_moves_on_even_if_shielded() {
    let t0 = Instant::now();
    let outer = CancelScope::new();
    let o = outer.clone();
    let r = outer
        .run(async move {
            let inner = CancelScope::with_timeout(SEC);
            inner.set_shield(true);
            o.cancel();
            inner.run(sleep_forever()).await
        })
        .await;
    assert_eq!(r, Ok(Some(None)));
    assert_took(t0, SEC);
}

/// Trio: test_fail_after_fails_even_if_shielded
async fn fail_after_fails_even_if_shielded() {
    let t0 = Instant::now();
    let outer = CancelScope::new();
    outer.cancel();
    let r = outer
        .run(async {
            let inner = CancelScope::with_timeout(SEC);
            inner.set_shield(true);
            match inner.run(sleep_forever()).await? {
                Some(never) => match never {},
                None => Err::<(), _>(Error::new(TooSlow)),
            }
        })
        .await;
    assert!(r.unwrap_err().is::<TooSlow>());
    assert_took(t0, SEC);
}

/// Trio: test_fail
async fn fail_at_and_fail_after() {
    let t0 = Instant::now();
    let r = fail_at(Instant::now() + SEC, async {
        Ok::<_, Error>(sleep(100 * SEC).await?)
    })
    .await;
    assert!(r.unwrap_err().is::<TooSlow>());
    assert_took(t0, SEC);
    fail_at(Instant::now() + 100 * SEC, async {
        Ok::<_, Error>(sleep(Duration::ZERO).await?)
    })
    .await
    .unwrap();
    let t0 = Instant::now();
    let r = fail_after(SEC, async { Ok::<_, Error>(sleep(100 * SEC).await?) }).await;
    assert!(r.unwrap_err().is::<TooSlow>());
    assert_took(t0, SEC);
    fail_after(100 * SEC, async {
        Ok::<_, Error>(sleep(Duration::ZERO).await?)
    })
    .await
    .unwrap();
}

/// Trio: test_timeout_deadline_on_entry — a relative timeout starts counting at entry; once
/// entered, the relative timeout reads as the time left and setting it moves the deadline.
async fn timeout_deadline_on_entry() {
    let scope = CancelScope::with_timeout(5 * SEC);
    assert_eq!(scope.relative_timeout(), Some(5 * SEC));
    assert_eq!(scope.deadline(), None);
    sleep(3 * SEC).await.unwrap();
    let start = Instant::now();
    let s = scope.clone();
    scope
        .run(async move {
            assert_eq!(s.deadline(), Some(start + 5 * SEC));
            assert_eq!(s.relative_timeout(), Some(5 * SEC));
            s.set_deadline(Some(start + 3 * SEC));
            assert_eq!(s.relative_timeout(), Some(3 * SEC));
            s.set_relative_timeout(4 * SEC);
            assert_eq!(s.deadline(), Some(start + 4 * SEC));
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
    // The same through move_on_after: made now, counted from its first poll.
    let outer = move_on_after(5 * SEC, async { sleep_forever().await.map(|_| ()) });
    assert_eq!(outer.scope().relative_timeout(), Some(5 * SEC));
    sleep(3 * SEC).await.unwrap();
    let t0 = Instant::now();
    assert_eq!(outer.await, Ok(None));
    assert_took(t0, 5 * SEC);
}

/// Trio: test_basic_timeout
async fn basic_timeout() {
    // A deadline that passes after the scope was left cancels nothing.
    let start = Instant::now();
    let scope = CancelScope::new();
    assert_eq!(scope.deadline(), None);
    let s = scope.clone();
    scope
        .run(async move {
            s.set_deadline(Some(start + SEC));
            assert_eq!(s.deadline(), Some(start + SEC));
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
    sleep(2 * SEC).await.unwrap();
    checkpoint().await.unwrap();
    checkpoint().await.unwrap();

    // The scope catches its own deadline's Cancelled.
    let start = Instant::now();
    let scope = CancelScope::with_deadline(start + SEC);
    assert_eq!(scope.run(sleep_forever()).await, Ok(None));
    assert!(scope.cancel_called());
    assert!(scope.cancelled_caught());
    assert_took(start, SEC);

    // Moving the deadline.
    let start = Instant::now();
    let scope = CancelScope::new();
    let s = scope.clone();
    let r = scope
        .run(async move {
            checkpoint().await?;
            s.set_deadline(Some(start + 10 * SEC));
            checkpoint().await?;
            sleep(5 * SEC).await?;
            checkpoint().await?;
            s.set_deadline(Some(start + SEC));
            assert_eq!(checkpoint().await, Err(Cancelled::new()));
            checkpoint().await
        })
        .await;
    assert_eq!(r, Ok(None));
}

/// A deadline moved later while a task is blocked: the task sleeps until the new deadline.
async fn deadline_moved_later_while_blocked() {
    let start = Instant::now();
    let scope = CancelScope::with_deadline(start + SEC);
    let s = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { s.run(sleep_forever()).await })?;
        wait_all_tasks_blocked().await?;
        scope.set_deadline(Some(start + 5 * SEC));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_took(start, 5 * SEC);
}

/// A deadline moved earlier while a task is blocked: the task wakes at the new deadline.
async fn deadline_moved_earlier_while_blocked() {
    let start = Instant::now();
    let scope = CancelScope::with_deadline(start + 100 * SEC);
    let s = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { s.run(sleep_forever()).await })?;
        sleep(SEC).await?;
        scope.set_deadline(Some(start + 2 * SEC));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_took(start, 2 * SEC);
}

/// Removing the deadline while blocked: nothing fires any more.
async fn deadline_removed_while_blocked() {
    let start = Instant::now();
    let scope = CancelScope::with_deadline(start + SEC);
    let s = scope.clone();
    let r = move_on_after(10 * SEC, async move {
        open_nursery(|n| async move {
            n.start_soon(async move { s.run(sleep_forever()).await })?;
            wait_all_tasks_blocked().await?;
            scope.set_deadline(None);
            Ok::<_, Error>(())
        })
        .await
    })
    .await;
    assert!(matches!(r, Ok(None)));
    assert_took(start, 10 * SEC);
}

/// Cleanup after cancellation runs in a shielded scope, and can itself sleep.
async fn cleanup_in_shield_after_timeout() {
    let cleaned = Arc::new(AtomicBool::new(false));
    let c = cleaned.clone();
    let start = Instant::now();
    let r = move_on_after(SEC, async move {
        let r = sleep_forever().await;
        CancelScope::shielded().run(sleep(3 * SEC)).await?;
        c.store(true, Ordering::SeqCst);
        r.map(|_| ())
    })
    .await;
    assert_eq!(r, Ok(None));
    assert!(cleaned.load(Ordering::SeqCst));
    assert_took(start, 4 * SEC);
}

/// Trio: test_nursery_start — `start` returns once `started` is called; the nursery waits for
/// the rest of the task.
async fn nursery_start_timing() {
    for secs in [1u64, 2] {
        let seconds = Duration::from_secs(secs);
        let t0 = Instant::now();
        open_nursery(|n| async move {
            let v = n
                .start(|status| async move {
                    sleep(seconds).await?;
                    status.started(secs);
                    sleep(seconds).await?;
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(v, secs);
            assert_took(t0, seconds);
            Ok::<_, Error>(())
        })
        .await
        .unwrap();
        assert_took(t0, 2 * seconds);
    }
}

/// Trio: test_nursery_start_keeps_nursery_open
async fn nursery_start_keeps_nursery_open() {
    let t0 = Instant::now();
    open_nursery(|n1| async move {
        open_nursery(|n2| async move {
            for delay in [Duration::ZERO, SEC] {
                sleep(delay).await?;
                let n2 = n2.clone();
                n1.start_soon(async move {
                    n2.start(|status| async move {
                        sleep(2 * SEC).await?;
                        status.started(());
                        sleep(3 * SEC).await?;
                        Ok::<_, Error>(())
                    })
                    .await
                })?;
            }
            Ok::<_, Error>(())
        })
        .await?;
        assert_took(t0, 6 * SEC);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// The autojump clock: an hour of sleeping costs no real time.
#[test]
fn autojump_clock_skips_idle_time() {
    let real = std::time::Instant::now();
    trellis::testing::run_test(async {
        let t0 = Instant::now();
        sleep(3600 * SEC).await.unwrap();
        assert_took(t0, 3600 * SEC);
    });
    assert!(real.elapsed() < 30 * SEC);
}

/// A deadline in a nursery cancels every task in it at the same virtual instant.
async fn deadline_cancels_all_tasks_at_once() {
    let t0 = Instant::now();
    let r = move_on_after(SEC, async move {
        open_nursery(|n| async move {
            for _ in 0..100 {
                n.start_soon(sleep_forever())?;
            }
            sleep_forever().await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await;
    assert!(matches!(r, Ok(None)));
    assert_took(t0, SEC);
}

/// Regression: a relative timeout resolved at entry arms its timer even when the scope has no
/// enclosing scope (the resolution itself must propagate the deadline).
async fn relative_timeout_fires_without_outer_scope() {
    let t0 = Instant::now();
    let scope = CancelScope::with_timeout(SEC);
    assert_eq!(scope.run(sleep_forever()).await, Ok(None));
    assert_took(t0, SEC);
}

autojump!(
    relative_timeout_fires_without_outer_scope,
    sleep_takes_its_time,
    move_on_after_moves_on,
    timeout_scope_shields_from_outer,
    move_on_after_moves_on_even_if_shielded,
    fail_after_fails_even_if_shielded,
    fail_at_and_fail_after,
    timeout_deadline_on_entry,
    basic_timeout,
    deadline_moved_later_while_blocked,
    deadline_moved_earlier_while_blocked,
    deadline_removed_while_blocked,
    cleanup_in_shield_after_timeout,
    nursery_start_timing,
    nursery_start_keeps_nursery_open,
    deadline_cancels_all_tasks_at_once,
);
