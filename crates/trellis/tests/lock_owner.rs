//! A lock that knows its owner, and a condition that hands its lock to the tasks it notifies:
//! ported from Trio's `_tests/test_sync.py`.

mod common;

use std::sync::{Arc, Mutex};

use trellis::sync::{Condition, Lock, LockError};
use trellis::testing::wait_all_tasks_blocked;
use trellis::{CancelScope, Error, open_nursery};

fn record(log: &Mutex<Vec<String>>, s: impl Into<String>) {
    log.lock().unwrap().push(s.into());
}

/// Trio: test_Lock_and_StrictFIFOLock — re-acquiring from the task that holds the lock is an
/// error at once (Trio's RuntimeError), not a wait for itself; others are unaffected.
async fn reacquire_by_holder_fails() {
    let lock = Arc::new(Lock::new());
    let l = lock.clone();
    tokio::spawn(async move {
        let guard = l.acquire().await.unwrap();
        assert!(matches!(l.try_acquire(), Err(LockError::AlreadyHeld)));
        assert!(matches!(l.acquire().await, Err(LockError::AlreadyHeld)));
        assert!(l.is_locked(), "the failed attempts did not release it");
        drop(guard);
        let again = l.acquire().await.unwrap();
        drop(again);
    })
    .await
    .unwrap();
    assert!(!lock.is_locked());
}

/// Trio: test_Lock_and_StrictFIFOLock (statistics part) — statistics name the holder and count
/// the waiters; after the holder is cancelled nothing is held.
async fn statistics_name_the_owner() {
    let lock = Arc::new(Lock::new());
    let (l1, l2) = (lock.clone(), lock.clone());
    let r = open_nursery(|n| async move {
        let holder = n.start(|status| async move {
            let _guard = l1.acquire().await?;
            status.started(tokio::task::id());
            trellis::sleep_forever().await?;
            Ok::<_, Error>(())
        });
        let holder_id = holder.await?;
        let stats = lock.statistics();
        assert!(stats.locked);
        assert_eq!(stats.owner, Some(holder_id.into()));
        assert_eq!(stats.tasks_waiting, 0);
        n.start_soon(async move {
            let _guard = l2.acquire().await?;
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(lock.statistics().tasks_waiting, 1);
        assert_eq!(lock.statistics().owner, Some(holder_id.into()));
        n.cancel();
        Ok::<_, Error>(lock)
    })
    .await
    .unwrap();
    let lock = r.unwrap_or_else(|| unreachable!()).clone();
    let stats = lock.statistics();
    assert!(!stats.locked);
    assert_eq!(stats.owner, None);
    assert_eq!(stats.tasks_waiting, 0);
}

/// Trio: test_lock_handover — releasing hands the lock, and its ownership, to the waiter.
async fn handover_moves_ownership() {
    let lock = Arc::new(Lock::new());
    let guard = lock.try_acquire().unwrap();
    let l = lock.clone();
    let waiter = tokio::spawn(async move {
        let _guard = l.acquire().await.unwrap();
        tokio::task::id()
    });
    while lock.statistics().tasks_waiting == 0 {
        tokio::task::yield_now().await;
    }
    drop(guard);
    assert_eq!(lock.statistics().owner, Some(waiter.id().into()));
    assert!(lock.is_locked());
    waiter.await.unwrap();
    assert_eq!(lock.statistics().owner, None);
}

/// Trio: test_Condition — `notify(2)` moves two waiters into the lock's line (the condition
/// counts one left, the lock two waiting); the lock then goes to the first of them, and the
/// two run in order, each with the lock.
async fn condition_notify_moves_waiters_into_the_lock() {
    let cond = Arc::new(Condition::new());
    let finished = Arc::new(Mutex::new(Vec::new()));
    let (c, f) = (cond.clone(), finished.clone());
    open_nursery(|n| async move {
        for i in 0..3 {
            let (c, f) = (c.clone(), f.clone());
            n.start_soon(async move {
                let mut guard = c.acquire().await?;
                c.wait(&mut guard).await?;
                assert!(c.is_locked());
                record(&f, i.to_string());
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        {
            let guard = c.acquire().await?;
            assert_eq!(c.notify(&guard, 2), 2);
            let stats = c.statistics();
            assert_eq!(stats.tasks_waiting, 1);
            assert_eq!(stats.lock_statistics.tasks_waiting, 2);
        }
        // Released: handed to the first notified waiter, the second still in line.
        assert!(c.is_locked());
        assert_eq!(c.statistics().lock_statistics.tasks_waiting, 1);
        wait_all_tasks_blocked().await?;
        assert_eq!(*f.lock().unwrap(), ["0", "1"]);
        let guard = c.acquire().await?;
        assert_eq!(c.notify_all(&guard), 1);
        drop(guard);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*finished.lock().unwrap(), ["0", "1", "2"]);
}

/// Trio's `Condition.notify` moves waiters onto the lock's line: after `notify(1)` and a
/// release, the notifier cannot take the lock back ahead of the task it woke.
async fn notifier_cannot_barge_ahead() {
    let cond = Arc::new(Condition::new());
    let log = Arc::new(Mutex::new(Vec::new()));
    let (c, l) = (cond.clone(), log.clone());
    open_nursery(|n| async move {
        let (c2, l2) = (c.clone(), l.clone());
        n.start_soon(async move {
            let mut guard = c2.acquire().await?;
            c2.wait(&mut guard).await?;
            record(&l2, "waiter woke");
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        let guard = c.acquire().await?;
        c.notify(&guard, 1);
        drop(guard);
        let again = c.acquire().await?;
        record(&l, "notifier again");
        drop(again);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*log.lock().unwrap(), ["waiter woke", "notifier again"]);
}

/// Trio: test_Condition (cancelled wait) — a wait cancelled before it was notified still
/// returns holding the lock.
async fn cancelled_wait_holds_the_lock_again() {
    let cond = Arc::new(Condition::new());
    let c = cond.clone();
    let scope = CancelScope::new();
    let s = scope.clone();
    let r = scope
        .run(async move {
            let mut guard = c.acquire().await?;
            s.cancel();
            let waited = c.wait(&mut guard).await;
            assert!(matches!(waited, Err(LockError::Cancelled(_))));
            assert!(c.is_locked());
            waited?;
            Ok::<_, LockError>(())
        })
        .await;
    assert!(matches!(r, Ok(None)));
    assert!(!cond.is_locked(), "the guard released it on the way out");
}

/// A waiter cancelled after it was notified, while in the lock's line, leaves the line and
/// still returns holding the lock; nobody is left waiting for a lock that never comes.
async fn cancelled_while_in_line() {
    let cond = Arc::new(Condition::new());
    let c = cond.clone();
    let scope = CancelScope::new();
    let s = scope.clone();
    open_nursery(|n| async move {
        let c2 = c.clone();
        n.start_soon(async move {
            let r = s
                .run(async {
                    let mut guard = c2.acquire().await?;
                    let waited = c2.wait(&mut guard).await;
                    assert!(c2.is_locked());
                    waited
                })
                .await;
            assert!(matches!(r, Ok(None)));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        let guard = c.acquire().await?;
        c.notify_all(&guard);
        assert_eq!(c.statistics().lock_statistics.tasks_waiting, 1);
        scope.cancel();
        wait_all_tasks_blocked().await?;
        drop(guard);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(!cond.is_locked());
}

/// Dropping a wait mid-way leaves the lock consistent: the guard holds nothing, and the
/// lock is free for others.
async fn dropped_wait_leaves_the_lock_consistent() {
    let cond = Arc::new(Condition::new());
    let c = cond.clone();
    tokio::spawn(async move {
        let mut guard = c.acquire().await.unwrap();
        {
            let wait = c.wait(&mut guard);
            let _ = tokio::time::timeout(std::time::Duration::from_millis(1), wait).await;
        }
        // The guard holds nothing now: using it with the condition is refused, and dropping
        // it must not release someone else's lock.
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.notify_all(&guard);
        }));
        assert!(refused.is_err());
        drop(guard);
    })
    .await
    .unwrap();
    assert!(!cond.is_locked());
    let g = cond.try_acquire().unwrap();
    drop(g);
}

both_flavors!(
    reacquire_by_holder_fails,
    statistics_name_the_owner,
    handover_moves_ownership,
    condition_notify_moves_waiters_into_the_lock,
    notifier_cannot_barge_ahead,
    cancelled_wait_holds_the_lock_again,
    cancelled_while_in_line,
    dropped_wait_leaves_the_lock_consistent,
);
