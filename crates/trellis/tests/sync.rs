//! Event, ParkingLot, Semaphore and Lock, ported from Trio's `_tests/test_sync.py` and
//! `_core/_tests/test_parking_lot.py`.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use trellis::sync::{Event, Lock, LockError, ParkingLot, ReleasedTooMany, Semaphore, WouldBlock};
use trellis::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trellis::{CancelScope, Cancelled, Error, checkpoint, open_nursery};

type Record = Arc<Mutex<Vec<String>>>;

fn push(record: &Record, s: impl Into<String>) {
    record.lock().unwrap().push(s.into());
}

fn taken(record: &Record) -> Vec<String> {
    record.lock().unwrap().clone()
}

/// Trio: test_Event
async fn event() {
    let e = Event::new();
    assert!(!e.is_set());
    assert_eq!(e.statistics().tasks_waiting, 0);
    e.set();
    assert!(e.is_set());
    assert_checkpoints(e.wait()).await.unwrap();

    let e = Arc::new(Event::new());
    let record: Record = Default::default();
    let (ev, rec) = (e.clone(), record.clone());
    open_nursery(|n| async move {
        for _ in 0..2 {
            let (ev, rec) = (ev.clone(), rec.clone());
            n.start_soon(async move {
                push(&rec, "sleeping");
                ev.wait().await?;
                push(&rec, "woken");
                Ok::<_, Error>(())
            })?;
        }
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&rec), ["sleeping", "sleeping"]);
        assert_eq!(ev.statistics().tasks_waiting, 2);
        ev.set();
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&rec), ["sleeping", "sleeping", "woken", "woken"]);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_parking_lot_basic — unpark one by one is strict FIFO; unpark(count).
async fn parking_lot_basic() {
    let lot = Arc::new(ParkingLot::new());
    assert!(lot.is_empty());
    let record: Record = Default::default();
    let (l, rec) = (lot.clone(), record.clone());
    open_nursery(|n| async move {
        for i in 0..3 {
            let (l, rec) = (l.clone(), rec.clone());
            n.start_soon(async move {
                push(&rec, format!("sleep {i}"));
                l.park().await?;
                push(&rec, format!("wake {i}"));
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        assert_eq!(l.len(), 3);
        for _ in 0..3 {
            assert_eq!(l.unpark(1), 1);
            wait_all_tasks_blocked().await?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        taken(&record),
        [
            "sleep 0", "sleep 1", "sleep 2", "wake 0", "wake 1", "wake 2"
        ]
    );
    // Unparking an empty lot is a no-op.
    assert_eq!(lot.unpark(100), 0);
    assert_eq!(lot.unpark_all(), 0);

    let record: Record = Default::default();
    let (l, rec) = (lot.clone(), record.clone());
    open_nursery(|n| async move {
        for i in 0..3 {
            let (l, rec) = (l.clone(), rec.clone());
            n.start_soon(async move {
                l.park().await?;
                push(&rec, format!("wake {i}"));
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        assert_eq!(l.unpark(2), 2);
        wait_all_tasks_blocked().await?;
        let mut woke = taken(&rec);
        woke.sort();
        assert_eq!(woke, ["wake 0", "wake 1"]);
        assert_eq!(l.statistics().tasks_waiting, 1);
        l.unpark_all();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_parking_lot_cancel — a cancelled parker leaves the lot; the others still wake.
async fn parking_lot_cancel() {
    let lot = Arc::new(ParkingLot::new());
    let record: Record = Default::default();
    let (l, rec) = (lot.clone(), record.clone());
    open_nursery(|n| async move {
        let mut scopes = Vec::new();
        for i in 1..=3 {
            let (l, rec) = (l.clone(), rec.clone());
            let scope = CancelScope::new();
            scopes.push(scope.clone());
            n.start_soon(async move {
                push(&rec, format!("sleep {i}"));
                let r = scope.run(l.park()).await;
                push(
                    &rec,
                    if r == Ok(None) {
                        format!("cancelled {i}")
                    } else {
                        format!("wake {i}")
                    },
                );
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        scopes[1].cancel();
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&rec).len(), 4);
        assert_eq!(l.len(), 2);
        l.unpark_all();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let record = taken(&record);
    assert_eq!(
        record[..4],
        ["sleep 1", "sleep 2", "sleep 3", "cancelled 2"]
    );
    let mut rest = record[4..].to_vec();
    rest.sort();
    assert_eq!(rest, ["wake 1", "wake 3"]);
}

/// Trio: test_Semaphore
async fn semaphore() {
    let s = Arc::new(Semaphore::new(1));
    assert_eq!((s.value(), s.max_value()), (1, None));
    s.release().unwrap();
    assert_eq!(s.value(), 2);
    assert_eq!(s.statistics().tasks_waiting, 0);
    s.try_acquire().unwrap().forget();
    assert_eq!(s.value(), 1);
    assert_checkpoints(s.acquire()).await.unwrap().forget();
    assert_eq!(s.value(), 0);
    assert_eq!(s.try_acquire().unwrap_err(), WouldBlock);
    s.release().unwrap();
    {
        let _permit = s.acquire().await.unwrap();
        assert_eq!(s.value(), 0);
    }
    assert_eq!(s.value(), 1);
    s.try_acquire().unwrap().forget();

    let record: Record = Default::default();
    let (s2, rec) = (s.clone(), record.clone());
    open_nursery(|n| async move {
        let (s3, rec2) = (s2.clone(), rec.clone());
        n.start_soon(async move {
            push(&rec2, "started");
            s3.acquire().await?.forget();
            push(&rec2, "finished");
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&rec), ["started"]);
        assert_eq!(s2.value(), 0);
        s2.release().unwrap();
        // Fairness: the permit went to the waiter, not back into the pool.
        assert_eq!(s2.value(), 0);
        assert_eq!(s2.try_acquire().unwrap_err(), WouldBlock);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(taken(&record), ["started", "finished"]);
}

/// Trio: test_Semaphore_bounded
#[test]
fn semaphore_bounded() {
    let bs = Semaphore::bounded(1, 1);
    assert_eq!(bs.max_value(), Some(1));
    assert_eq!(bs.release(), Err(ReleasedTooMany));
    assert_eq!(bs.value(), 1);
    bs.try_acquire().unwrap().forget();
    assert_eq!(bs.value(), 0);
    bs.release().unwrap();
    assert_eq!(bs.value(), 1);
    assert!(std::panic::catch_unwind(|| Semaphore::bounded(2, 1)).is_err());
}

/// Trio: test_generic_lock_exclusion
async fn lock_exclusion() {
    let lock = Arc::new(Lock::new());
    let inside = Arc::new(AtomicBool::new(false));
    let acquires = Arc::new(AtomicUsize::new(0));
    let (l, ins, acq) = (lock.clone(), inside.clone(), acquires.clone());
    open_nursery(|n| async move {
        for _ in 0..5 {
            let (l, ins, acq) = (l.clone(), ins.clone(), acq.clone());
            n.start_soon(async move {
                for _ in 0..10 {
                    let _guard = l.acquire().await?;
                    acq.fetch_add(1, Ordering::SeqCst);
                    assert!(!ins.swap(true, Ordering::SeqCst));
                    checkpoint().await?;
                    checkpoint().await?;
                    assert!(ins.swap(false, Ordering::SeqCst));
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(acquires.load(Ordering::SeqCst), 50);
    assert!(!lock.is_locked());
}

/// Trio: test_generic_lock_fifo_fairness — after the first round, the order repeats. A
/// single-thread property (as in Trio): on two workers a task can be preempted between
/// releasing and re-queueing, so it runs on the current-thread flavour only.
async fn lock_fifo_fairness() {
    let lock = Arc::new(Lock::new());
    let initial: Record = Default::default();
    let record: Record = Default::default();
    let (l, ini, rec) = (lock.clone(), initial.clone(), record.clone());
    open_nursery(|n| async move {
        for name in 1..=3 {
            let (l, ini, rec) = (l.clone(), ini.clone(), rec.clone());
            n.start_soon(async move {
                push(&ini, name.to_string());
                for _ in 0..5 {
                    let _guard = l.acquire().await?;
                    push(&rec, name.to_string());
                }
                Ok::<_, Error>(())
            })?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let (initial, record) = (taken(&initial), taken(&record));
    for round in 0..5 {
        assert_eq!(record[3 * round..3 * (round + 1)], initial[..]);
    }
}

/// Trio: test_generic_lock_acquire_nowait_blocks_acquire
async fn lock_try_acquire_blocks_acquire() {
    let lock = Arc::new(Lock::new());
    let record: Record = Default::default();
    let (l, rec) = (lock.clone(), record.clone());
    open_nursery(|n| async move {
        let guard = l.try_acquire().unwrap();
        let (l2, rec2) = (l.clone(), rec.clone());
        n.start_soon(async move {
            push(&rec2, "started");
            drop(l2.acquire().await?);
            push(&rec2, "finished");
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&rec), ["started"]);
        // Someone waits: no barging in, even for a try.
        drop(guard);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(taken(&record), ["started", "finished"]);
}

/// A waiter granted the lock and then dropped passes it on: nobody waits forever. The two
/// waiters are polled by hand in a task that does not hold the lock.
async fn abandoned_lock_grant_is_passed_on() {
    let lock = Arc::new(Lock::new());
    let guard = lock.try_acquire().unwrap();
    let (queued_tx, queued_rx) = tokio::sync::oneshot::channel();
    let (released_tx, released_rx) = tokio::sync::oneshot::channel::<()>();
    let l = lock.clone();
    let waiters = tokio::spawn(async move {
        let poll_once = |f: std::pin::Pin<&mut _>| {
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            std::future::Future::poll(f, &mut cx)
        };
        let mut first = Box::pin(l.acquire());
        let mut second = Box::pin(l.acquire());
        assert!(poll_once(first.as_mut()).is_pending());
        assert!(poll_once(second.as_mut()).is_pending());
        queued_tx.send(()).unwrap();
        released_rx.await.unwrap();
        drop(first); // handed the lock, goes away without using it
        assert!(matches!(
            poll_once(second.as_mut()),
            std::task::Poll::Ready(Ok(_))
        ));
    });
    queued_rx.await.unwrap();
    drop(guard); // hands the lock to `first`
    released_tx.send(()).unwrap();
    waiters.await.unwrap();
}

/// A cancelled acquire leaves the line; acquiring in a cancelled scope fails at once.
async fn cancelled_acquire() {
    let lock = Arc::new(Lock::new());
    let guard = lock.try_acquire().unwrap();
    let scope = CancelScope::new();
    scope.cancel();
    assert!(matches!(
        scope.run(async { lock.acquire().await.map(|_| ()) }).await,
        Ok(None)
    ));
    assert_eq!(lock.statistics().tasks_waiting, 0);
    drop(guard);
    let sem = Semaphore::new(0);
    let scope = CancelScope::new();
    scope.cancel();
    let r = scope
        .run(async { sem.acquire().await.map(|p| p.forget()) })
        .await;
    assert_eq!(r, Ok(None));
    assert_eq!(sem.statistics().tasks_waiting, 0);
    let _ = Cancelled::new();
}

/// Trio: test_CapacityLimiter (in a task, so that the task can borrow)
async fn capacity_limiter() {
    tokio::spawn(capacity_limiter_in_task()).await.unwrap();
}

async fn capacity_limiter_in_task() {
    use trellis::sync::{Borrower, CapacityError, CapacityLimiter};
    assert_eq!(CapacityLimiter::new(0).total_tokens(), 0);
    let c = Arc::new(CapacityLimiter::new(2));
    assert_eq!(
        (c.total_tokens(), c.borrowed_tokens(), c.available_tokens()),
        (2, 0, 2)
    );
    let me = Borrower::current_task().unwrap();
    assert_eq!(c.release_on_behalf_of(me), Err(CapacityError::NotBorrowing));
    let mine = c.try_acquire_on_behalf_of(me).unwrap();
    assert_eq!((c.borrowed_tokens(), c.available_tokens()), (1, 1));
    let stats = c.statistics();
    assert_eq!(
        (
            stats.borrowed_tokens,
            stats.total_tokens,
            stats.tasks_waiting
        ),
        (1, 2, 0)
    );
    assert_eq!(stats.borrowers, [me]);
    // Can't re-acquire while holding.
    assert_eq!(
        c.try_acquire_on_behalf_of(me).unwrap_err(),
        CapacityError::AlreadyBorrowing
    );
    assert_eq!(
        c.acquire().await.unwrap_err(),
        CapacityError::AlreadyBorrowing
    );
    assert_eq!(c.borrowed_tokens(), 1);
    // On behalf of someone else, though:
    assert_checkpoints(c.acquire_on_behalf_of(7u64))
        .await
        .unwrap()
        .forget();
    assert_eq!(c.borrowed_tokens(), 2);
    assert_eq!(
        c.try_acquire_on_behalf_of(8u64).unwrap_err(),
        CapacityError::WouldBlock
    );
    drop(mine);
    assert_eq!(c.statistics().borrowers, [Borrower::Id(7)]);
    c.release_on_behalf_of(7u64).unwrap();
    assert_eq!(c.borrowed_tokens(), 0);
    {
        let _token = assert_checkpoints(c.acquire()).await.unwrap();
        assert_eq!(c.borrowed_tokens(), 1);
    }
    let c2 = c.clone();
    open_nursery(|n| async move {
        c2.acquire_on_behalf_of(1u64).await?.forget();
        c2.acquire_on_behalf_of(2u64).await?.forget();
        let c3 = c2.clone();
        n.start_soon(async move {
            {
                c3.acquire_on_behalf_of(3u64).await?.forget();
                Ok::<_, Error>(())
            }
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(
            (c2.borrowed_tokens(), c2.statistics().tasks_waiting),
            (2, 1)
        );
        c2.release_on_behalf_of(2u64)?;
        // Fairness: the token went to the waiter.
        assert_eq!(c2.borrowed_tokens(), 2);
        assert_eq!(
            c2.try_acquire_on_behalf_of(9u64).unwrap_err(),
            CapacityError::WouldBlock
        );
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    c.release_on_behalf_of(3u64).unwrap();
    c.release_on_behalf_of(1u64).unwrap();
}

/// Trio: test_CapacityLimiter_change_total_tokens
async fn capacity_limiter_change_total() {
    use trellis::sync::{Borrower, CapacityLimiter};
    let c = Arc::new(CapacityLimiter::new(2));
    let c2 = c.clone();
    open_nursery(|n| async move {
        for i in 0..5u64 {
            let c3 = c2.clone();
            n.start_soon(async move {
                {
                    c3.acquire_on_behalf_of(i).await?.forget();
                    Ok::<_, Error>(())
                }
            })?;
            wait_all_tasks_blocked().await?;
        }
        let ids = |c: &CapacityLimiter| c.statistics().borrowers;
        assert_eq!(ids(&c2), [Borrower::Id(0), Borrower::Id(1)]);
        assert_eq!(c2.statistics().tasks_waiting, 3);
        c2.set_total_tokens(4);
        assert_eq!(ids(&c2), [0u64, 1, 2, 3].map(Borrower::Id));
        assert_eq!(c2.statistics().tasks_waiting, 1);
        c2.set_total_tokens(1);
        assert_eq!((c2.borrowed_tokens(), c2.total_tokens()), (4, 1));
        for i in 0..3u64 {
            c2.release_on_behalf_of(i)?;
        }
        assert_eq!(ids(&c2), [Borrower::Id(3)]);
        assert_eq!(c2.statistics().tasks_waiting, 1);
        c2.release_on_behalf_of(3u64)?;
        assert_eq!(ids(&c2), [Borrower::Id(4)]);
        assert_eq!(c2.statistics().tasks_waiting, 0);
        c2.release_on_behalf_of(4u64)?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_CapacityLimiter_memleak_548 — a cancelled waiter leaves nothing behind, and can
/// try again.
async fn capacity_limiter_cancelled_waiter_leaves() {
    use trellis::sync::CapacityLimiter;
    let limiter = Arc::new(CapacityLimiter::new(1));
    let _held = limiter.acquire_on_behalf_of(1u64).await.unwrap();
    let l = limiter.clone();
    open_nursery(|n| async move {
        let l2 = l.clone();
        n.start_soon(async move {
            {
                l2.acquire_on_behalf_of(2u64).await?.forget();
                Ok::<_, Error>(())
            }
        })?;
        wait_all_tasks_blocked().await?;
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(limiter.statistics().tasks_waiting, 0);
    // The cancelled borrower is not remembered as waiting.
    assert_eq!(
        limiter.try_acquire_on_behalf_of(2u64).unwrap_err(),
        trellis::sync::CapacityError::WouldBlock
    );
}

/// Trio: test_CapacityLimiter_zero_limit_tokens
async fn capacity_limiter_zero_total() {
    use trellis::sync::{Borrower, CapacityError, CapacityLimiter};
    let c = Arc::new(CapacityLimiter::new(5));
    let c2 = c.clone();
    open_nursery(|n| async move {
        c2.set_total_tokens(0);
        for i in 0..5u64 {
            let c3 = c2.clone();
            n.start_soon(async move {
                {
                    c3.acquire_on_behalf_of(i).await?.forget();
                    Ok::<_, Error>(())
                }
            })?;
            wait_all_tasks_blocked().await?;
        }
        assert!(c2.statistics().borrowers.is_empty());
        assert_eq!(c2.statistics().tasks_waiting, 5);
        c2.set_total_tokens(5);
        assert_eq!(
            c2.statistics().borrowers,
            [0u64, 1, 2, 3, 4].map(Borrower::Id)
        );
        for i in 0..5u64 {
            c2.release_on_behalf_of(i)?;
        }
        c2.set_total_tokens(0);
        assert_eq!(
            c2.try_acquire_on_behalf_of(6u64).unwrap_err(),
            CapacityError::WouldBlock
        );
        let c3 = c2.clone();
        n.start_soon(async move {
            {
                c3.acquire_on_behalf_of(6u64).await?.forget();
                Ok::<_, Error>(())
            }
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(c2.statistics().tasks_waiting, 1);
        assert!(c2.statistics().borrowers.is_empty());
        c2.set_total_tokens(1);
        assert_eq!(c2.statistics().tasks_waiting, 0);
        assert_eq!(c2.statistics().borrowers, [Borrower::Id(6)]);
        c2.release_on_behalf_of(6u64)?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_Condition — notify one, notify all, notify(n), and the lock is held again after
/// each wait.
async fn condition() {
    use trellis::sync::Condition;
    let c = Arc::new(Condition::new());
    assert!(!c.is_locked());
    let g = assert_checkpoints(c.acquire()).await.unwrap();
    assert!(c.is_locked());
    drop(g);
    let g = c.try_acquire().unwrap();
    assert!(c.try_acquire().is_err());
    drop(g);

    let finished: Record = Default::default();
    let (c2, fin) = (c.clone(), finished.clone());
    open_nursery(|n| async move {
        for i in 0..3 {
            let (c3, fin) = (c2.clone(), fin.clone());
            n.start_soon(async move {
                let mut guard = c3.acquire().await?;
                c3.wait(&mut guard).await?;
                assert!(c3.is_locked());
                drop(guard);
                push(&fin, i.to_string());
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        {
            let guard = c2.acquire().await?;
            assert_eq!(c2.notify(&guard, 1), 1);
            assert!(c2.is_locked());
        }
        wait_all_tasks_blocked().await?;
        assert_eq!(taken(&fin), ["0"]);
        {
            let guard = c2.acquire().await?;
            assert_eq!(c2.notify_all(&guard), 2);
        }
        wait_all_tasks_blocked().await?;
        let mut done = taken(&fin);
        done.sort();
        assert_eq!(done, ["0", "1", "2"]);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();

    let c2 = c.clone();
    open_nursery(|n| async move {
        for _ in 0..3 {
            let c3 = c2.clone();
            n.start_soon(async move {
                let mut guard = c3.acquire().await?;
                c3.wait(&mut guard).await?;
                Ok::<_, Error>(())
            })?;
            wait_all_tasks_blocked().await?;
        }
        {
            let guard = c2.acquire().await?;
            c2.notify(&guard, 2);
            assert_eq!(c2.statistics().tasks_waiting, 1);
            // Trio moves the notified waiters onto the lock's queue at once (repark); here
            // they line up for the lock as soon as they run.
            wait_all_tasks_blocked().await?;
            let stats = c2.statistics();
            assert_eq!(stats.tasks_waiting, 1);
            assert_eq!(stats.lock_statistics.tasks_waiting, 2);
        }
        let guard = c2.acquire().await?;
        c2.notify_all(&guard);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// A cancelled wait still holds the lock again when it returns.
async fn condition_cancelled_wait_relocks() {
    use trellis::sync::Condition;
    let c = Condition::new();
    let scope = CancelScope::new();
    scope.cancel();
    let mut guard = c.acquire().await.unwrap();
    let r = scope.run(c.wait(&mut guard)).await;
    assert_eq!(r, Ok(None));
    assert!(c.is_locked());
    drop(guard);
    assert!(!c.is_locked());
}

/// Runs `body` in a task of its own that is expected to panic; returns the task's id.
async fn panicking_task<F>(body: impl FnOnce(Arc<Event>) -> F + Send + 'static) -> tokio::task::Id
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let started = Arc::new(Event::new());
    let task = tokio::spawn(body(started.clone()));
    let id = task.id();
    let joined = task.await;
    assert!(joined.unwrap_err().is_panic());
    id
}

/// Trio: test_lock_acquire_unowned_lock — the owner ends (here: panics) holding the lock, and
/// a later acquisition fails naming it. The guard is held across an await, so it is dropped
/// with the task's state after the panic, not during the unwinding.
async fn lock_broken_when_owner_panics() {
    let lock = Arc::new(Lock::new());
    let l = lock.clone();
    let owner = panicking_task(|_| async move {
        let _guard = l.acquire().await.unwrap();
        checkpoint().await.unwrap();
        panic!("owner fails while holding the lock");
    })
    .await;
    assert!(lock.is_broken());
    let err = lock.acquire().await.map(|_| ()).unwrap_err();
    let LockError::Broken(broken) = &err else {
        panic!("expected a broken lock, got {err:?}");
    };
    assert_eq!(broken.owner().map(|t| t.tokio_id()), Some(owner));
    assert_eq!(
        err.to_string(),
        format!("the owner of this lock (task {owner}) panicked while holding it")
    );
    assert_eq!(
        lock.try_acquire().map(|_| ()).unwrap_err(),
        LockError::Broken(broken.clone())
    );
}

/// A nursery task holding the lock in one branch of a join while another branch panics:
/// the guard lives in a combinator's state, which is dropped after the panic was caught.
async fn lock_broken_when_nursery_task_panics_in_join() {
    let lock = Arc::new(Lock::new());
    let l = lock.clone();
    let outcome = tokio::spawn(open_nursery(|n| async move {
        n.start_soon(async move {
            let hold = async {
                let _guard = l.acquire().await?;
                trellis::sleep_forever().await?;
                Ok::<_, Error>(())
            };
            let fail = async {
                checkpoint().await.unwrap();
                checkpoint().await.unwrap();
                panic!("sibling branch fails");
            };
            let (held, ()) = tokio::join!(hold, fail);
            held
        })?;
        Ok::<_, Error>(())
    }))
    .await;
    assert!(outcome.unwrap_err().is_panic());
    assert!(lock.is_broken());
}

/// Trio: test_lock_multiple_acquire — tasks already waiting when the owner panics all fail
/// with the broken-lock error. Here the guard is on the stack as the panic unwinds.
async fn lock_waiters_fail_when_owner_panics() {
    let lock = Arc::new(Lock::new());
    let go = Arc::new(Event::new());
    let (l, g) = (lock.clone(), go.clone());
    let owner = tokio::spawn(async move {
        let guard = l.acquire().await.unwrap();
        g.wait().await.unwrap();
        let _guard = guard;
        panic!("owner fails while holding the lock");
    });
    while !lock.is_locked() {
        checkpoint().await.unwrap();
    }
    let results = Arc::new(Mutex::new(Vec::new()));
    let (l, r) = (lock.clone(), results.clone());
    open_nursery(|n| async move {
        for _ in 0..2 {
            let (l, r) = (l.clone(), r.clone());
            n.start_soon(async move {
                let got = l.acquire().await.map(|_| ());
                r.lock().unwrap().push(got);
                Ok::<_, Error>(())
            })?;
        }
        wait_all_tasks_blocked().await?;
        assert_eq!(l.statistics().tasks_waiting, 2);
        go.set();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(owner.await.unwrap_err().is_panic());
    let results = results.lock().unwrap();
    assert_eq!(results.len(), 2);
    assert!(
        results
            .iter()
            .all(|r| matches!(r, Err(LockError::Broken(_)))),
        "{results:?}"
    );
}

/// The lock does not break when its owner is cancelled or aborted: the guard is dropped the
/// ordinary way and the next waiter gets the lock.
async fn lock_released_not_broken_by_cancel_or_abort() {
    let lock = Arc::new(Lock::new());
    let scope = CancelScope::new();
    let (l, s) = (lock.clone(), scope.clone());
    open_nursery(|n| async move {
        let l2 = l.clone();
        n.start_soon(async move {
            s.run(async {
                let _guard = l2.acquire().await?;
                trellis::sleep_forever().await?;
                Ok::<_, Error>(())
            })
            .await?;
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        assert!(l.is_locked());
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert!(!lock.is_locked() && !lock.is_broken());

    let l = lock.clone();
    let holder = tokio::spawn(async move {
        let _guard = l.acquire().await.unwrap();
        std::future::pending::<()>().await;
    });
    while !lock.is_locked() {
        checkpoint().await.unwrap();
    }
    holder.abort();
    assert!(holder.await.unwrap_err().is_cancelled());
    assert!(!lock.is_broken());
    drop(lock.acquire().await.unwrap());
}

/// A condition waiter whose lock breaks while it waits learns it when it is woken.
async fn condition_wait_sees_broken_lock() {
    use trellis::sync::Condition;
    let cond = Arc::new(Condition::new());
    let c = cond.clone();
    let waiter = tokio::spawn(async move {
        let mut guard = c.acquire().await.unwrap();
        let waited = c.wait(&mut guard).await;
        std::mem::forget(guard);
        waited
    });
    while cond.statistics().tasks_waiting == 0 {
        checkpoint().await.unwrap();
    }
    let c = cond.clone();
    panicking_task(|_| async move {
        let guard = c.acquire().await.unwrap();
        c.notify_all(&guard);
        checkpoint().await.unwrap();
        panic!("notifier fails while holding the lock");
    })
    .await;
    assert!(matches!(waiter.await.unwrap(), Err(LockError::Broken(_))));
}

both_flavors!(
    lock_broken_when_owner_panics,
    lock_broken_when_nursery_task_panics_in_join,
    lock_waiters_fail_when_owner_panics,
    lock_released_not_broken_by_cancel_or_abort,
    condition_wait_sees_broken_lock,
    condition,
    condition_cancelled_wait_relocks,
    capacity_limiter,
    capacity_limiter_change_total,
    capacity_limiter_cancelled_waiter_leaves,
    capacity_limiter_zero_total,
    event,
    parking_lot_basic,
    parking_lot_cancel,
    semaphore,
    lock_exclusion,
    lock_try_acquire_blocks_acquire,
    abandoned_lock_grant_is_passed_on,
    cancelled_acquire,
);

mod current_thread_only {
    #[test]
    fn lock_fifo_fairness() {
        trellis::testing::run_test(super::lock_fifo_fairness());
    }
}
