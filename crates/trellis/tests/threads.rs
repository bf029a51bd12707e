//! Threads, ported in spirit from Trio's `_tests/test_threads.py`. The threads synchronise
//! with the test through std channels, never through sleeps.

mod common;

use std::sync::Arc;
use std::sync::mpsc;

use trellis::sync::CapacityLimiter;
use trellis::testing::wait_all_tasks_blocked;
use trellis::threads::{ThreadOptions, from_thread, run_sync, run_sync_with};
use trellis::{CancelScope, Error, checkpoint, open_nursery};

/// Trio: test_run_in_worker_thread
async fn returns_the_value() {
    let v = run_sync(|| std::thread::current().id()).await.unwrap();
    assert_ne!(v, std::thread::current().id());
}

/// Trio: test_run_in_worker_thread (exception part) — a panic on the thread comes back.
async fn panics_come_back() {
    let outcome = tokio::spawn(async { run_sync(|| panic!("on the thread")).await }).await;
    let payload = outcome.unwrap_err().into_panic();
    assert_eq!(*payload.downcast::<&str>().unwrap(), "on the thread");
}

/// Trio: test_run_in_worker_thread_cancellation (abandon_on_cancel=False) — cancellation waits
/// for the thread, the result comes back, and Cancelled arrives at the next checkpoint.
async fn cancel_waits_for_thread() {
    let (release, wait) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let scope = CancelScope::new();
    let sc = scope.clone();
    let outcome = Arc::new(std::sync::Mutex::new(None));
    let out = outcome.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            sc.run(async {
                let v = run_sync(move || {
                    started_tx.send(()).unwrap();
                    wait.recv().unwrap();
                    7
                })
                .await?;
                *out.lock().unwrap() = Some(v);
                checkpoint().await?; // Cancelled now
                unreachable!("cancelled at the checkpoint");
                #[allow(unreachable_code)]
                Ok::<_, Error>(())
            })
            .await
        })?;
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        scope.cancel();
        wait_all_tasks_blocked().await?;
        release.send(()).unwrap();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*outcome.lock().unwrap(), Some(7));
}

/// Trio: test_run_in_worker_thread_cancellation (abandon_on_cancel=True) — the call returns
/// Cancelled at once; the thread finishes alone and keeps its limiter token until then.
async fn abandon_on_cancel() {
    let limiter = Arc::new(CapacityLimiter::new(1));
    let (release, wait) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<()>();
    let (done_tx, done_rx) = mpsc::channel::<()>();
    let scope = CancelScope::new();
    let sc = scope.clone();
    let lim = limiter.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            let options = ThreadOptions::default().limiter(lim).abandon_on_cancel();
            let r = sc
                .run(run_sync_with(options, move || {
                    started_tx.send(()).unwrap();
                    wait.recv().unwrap();
                    done_tx.send(()).unwrap();
                }))
                .await;
            assert!(matches!(r, Ok(None)));
            Ok::<_, Error>(())
        })?;
        tokio::task::spawn_blocking(move || started_rx.recv().unwrap())
            .await
            .unwrap();
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    // The caller moved on while the thread still runs and holds the only token.
    assert_eq!(limiter.borrowed_tokens(), 1);
    release.send(()).unwrap();
    tokio::task::spawn_blocking(move || done_rx.recv().unwrap())
        .await
        .unwrap();
    // The token comes back once the thread really ends.
    while limiter.borrowed_tokens() != 0 {
        tokio::task::yield_now().await;
    }
}

/// Trio: test_run_in_worker_thread_limiter — no more threads than tokens.
async fn limiter_bounds_threads() {
    let limiter = Arc::new(CapacityLimiter::new(1));
    let (release, wait) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel::<u32>();
    let lim = limiter.clone();
    open_nursery(|n| async move {
        let wait = Arc::new(std::sync::Mutex::new(wait));
        for i in 0..2 {
            let (lim, wait, started_tx) = (lim.clone(), wait.clone(), started_tx.clone());
            n.start_soon(async move {
                run_sync_with(ThreadOptions::default().limiter(lim), move || {
                    let _ = started_tx.send(i);
                    wait.lock().unwrap().recv().unwrap();
                })
                .await
            })?;
        }
        let first = tokio::task::spawn_blocking(move || {
            let first = started_rx.recv().unwrap();
            (first, started_rx)
        });
        let (_, started_rx) = first.await.unwrap();
        wait_all_tasks_blocked().await?;
        assert_eq!(lim.statistics().tasks_waiting, 1);
        assert!(
            started_rx.try_recv().is_err(),
            "the second thread must not start yet"
        );
        release.send(()).unwrap();
        release.send(()).unwrap();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(limiter.borrowed_tokens(), 0);
}

/// A cancelled caller that waits for a token never starts its thread.
async fn cancelled_while_waiting_for_a_token() {
    let limiter = Arc::new(CapacityLimiter::new(0));
    let scope = CancelScope::new();
    scope.cancel();
    let r = scope
        .run(run_sync_with(
            ThreadOptions::default().limiter(limiter.clone()),
            || panic!("must not run"),
        ))
        .await;
    assert!(matches!(r, Ok(None)));
    assert_eq!(limiter.statistics().tasks_waiting, 0);
}

/// Trio: test_run_fn_as_system_task / from_thread.run — async code runs back on the runtime,
/// and check_cancelled sees the caller's cancellation.
async fn from_thread_runs_on_the_runtime() {
    let (tx, rx) = trellis::channel::channel::<u32>(4);
    let v = run_sync(move || {
        from_thread::run(async move { tx.send(5).await.is_ok() }).unwrap();
        from_thread::check_cancelled().is_ok()
    })
    .await
    .unwrap();
    assert!(v);
    assert_eq!(rx.recv().await, Ok(5));

    let scope = CancelScope::new();
    scope.cancel();
    let sc = scope.clone();
    let seen = sc
        .run(async {
            // The thread starts only if the token is granted before cancellation is checked:
            // use a shield so that the call itself is not cancelled.
            CancelScope::shielded()
                .run(run_sync(|| from_thread::check_cancelled().is_err()))
                .await
        })
        .await
        .unwrap();
    // The shield hides the cancellation from the thread's caller scope too.
    assert_eq!(seen, Some(Some(false)));
}

/// Trio: test_trio_from_thread_run_sync — a synchronous function runs on the runtime (it
/// can use the runtime and the trellis clock) and its value comes back to the thread.
async fn from_thread_run_sync_runs_on_the_runtime() {
    let worker = std::thread::current().id();
    let (on_runtime, thread) = run_sync(move || {
        let here = std::thread::current().id();
        let back = from_thread::run_sync(move || {
            let _ = trellis::current_time();
            (
                tokio::runtime::Handle::try_current().is_ok(),
                std::thread::current().id(),
            )
        })
        .unwrap();
        (back, here)
    })
    .await
    .unwrap();
    assert!(on_runtime.0, "ran inside the runtime");
    assert_ne!(on_runtime.1, thread, "not on the worker thread");
    let _ = worker;
}

/// Calling back from a thread trellis did not start is an error.
#[test]
fn from_thread_elsewhere_is_an_error() {
    assert_eq!(
        from_thread::run(async {}),
        Err(from_thread::NotATrellisThread)
    );
    assert_eq!(
        from_thread::run_sync(|| 1),
        Err(from_thread::NotATrellisThread)
    );
    assert_eq!(from_thread::check_cancelled(), Ok(()));
}

both_flavors!(
    returns_the_value,
    panics_come_back,
    cancel_waits_for_thread,
    abandon_on_cancel,
    limiter_bounds_threads,
    cancelled_while_waiting_for_a_token,
    from_thread_runs_on_the_runtime,
    from_thread_run_sync_runs_on_the_runtime,
);
