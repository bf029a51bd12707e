//! Cancel reasons (Trio 0.31), ported from Trio's `_core/_tests/test_cancelled.py`: a
//! `Cancelled` says where it came from and prints it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::Boom;
use tokio::time::Instant;
use trellis::testing::wait_all_tasks_blocked;
use trellis::threads::{from_thread, run_sync};
use trellis::{
    CancelScope, CancelSource, Cancelled, Error, checkpoint, open_nursery, sleep_forever,
};

/// Trio: test_Cancelled_str — the text says the source, the reason and the task.
async fn cancelled_str() {
    assert_eq!(Cancelled::new().to_string(), "cancelled");
    assert_eq!(Cancelled::new().source(), CancelSource::Unknown);
    let scope = CancelScope::new();
    let s = scope.clone();
    // The autojump runtime runs the test outside any task; the multi-thread one in a task.
    let from = tokio::task::try_id().map_or(String::new(), |me| format!(" from task {me}"));
    scope
        .run(async move {
            s.cancel_with_reason("pigs flying");
            let c = checkpoint().await.unwrap_err();
            assert_eq!(
                c.to_string(),
                format!("cancelled due to explicit with reason 'pigs flying'{from}")
            );
            assert!(format!("{c:?}").contains("pigs flying"));
            Err::<(), _>(c)
        })
        .await
        .unwrap();
}

/// Trio: test_cancel_reason — explicit with a reason, and a deadline (set at creation or later).
async fn cancel_reason() {
    let scope = CancelScope::new();
    let s = scope.clone();
    let me = tokio::task::try_id();
    scope
        .run(async move {
            s.cancel_with_reason("hello");
            let c = checkpoint().await.unwrap_err();
            assert_eq!(c.source(), CancelSource::Explicit);
            assert_eq!(c.reason(), Some("hello"));
            assert_eq!(c.source_task(), me);
            Err::<(), _>(c)
        })
        .await
        .unwrap();

    let past = Instant::now() - Duration::from_secs(1);
    let r = CancelScope::with_deadline(past)
        .run(async {
            let c = checkpoint().await.unwrap_err();
            assert_eq!(c.to_string(), "cancelled due to deadline");
            assert_eq!(c.source_task(), None);
            Err::<(), _>(c)
        })
        .await;
    assert_eq!(r, Ok(None));

    let scope = CancelScope::new();
    let s = scope.clone();
    scope
        .run(async move {
            s.set_deadline(Some(past));
            let c = checkpoint().await.unwrap_err();
            assert_eq!(c.source(), CancelSource::Deadline);
            Err::<(), _>(c)
        })
        .await
        .unwrap();
}

/// Trio: test_cancel_reason_not_overwritten — an explicit cancel stays the reason after the
/// deadline passes too.
async fn cancel_reason_not_overwritten() {
    let scope = CancelScope::new();
    let s = scope.clone();
    scope
        .run(async move {
            s.cancel();
            assert_eq!(
                checkpoint().await.unwrap_err().source(),
                CancelSource::Explicit
            );
            s.set_deadline(Some(Instant::now() - Duration::from_secs(1)));
            assert_eq!(
                checkpoint().await.unwrap_err().source(),
                CancelSource::Explicit
            );
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
}

/// Trio: test_cancel_reason_not_overwritten_2 — a deadline stays the reason after an explicit
/// cancel.
async fn cancel_reason_not_overwritten_2() {
    let scope = CancelScope::new();
    let s = scope.clone();
    scope
        .run(async move {
            s.set_deadline(Some(Instant::now() - Duration::from_secs(1)));
            assert_eq!(
                checkpoint().await.unwrap_err().to_string(),
                "cancelled due to deadline"
            );
            s.cancel_with_reason("too late");
            assert_eq!(
                checkpoint().await.unwrap_err().to_string(),
                "cancelled due to deadline"
            );
            Ok::<_, Cancelled>(())
        })
        .await
        .unwrap();
}

/// Trio: test_cancel_reason_nursery — a failing task cancels its siblings "due to nursery",
/// naming the failure and the failing task.
async fn cancel_reason_nursery() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            let c = sleep_forever().await.unwrap_err();
            *s.lock().unwrap() = Some(c.clone());
            Err::<(), _>(c)
        })?;
        wait_all_tasks_blocked().await?;
        let failing = n.start_soon(async { Err::<(), _>(Boom("the value is wrong")) })?;
        let _ = failing;
        Ok::<_, Error>(())
    })
    .await;
    assert!(r.unwrap_err().as_group().is_some());
    let c = seen
        .lock()
        .unwrap()
        .take()
        .expect("the sibling was cancelled");
    assert_eq!(c.source(), CancelSource::Nursery);
    assert_eq!(c.reason(), Some("task failed: the value is wrong"));
    assert!(c.source_task().is_some());
    assert!(c.to_string().starts_with(
        "cancelled due to nursery with reason 'task failed: the value is wrong' from task "
    ));
}

/// Trio: test_nested_child_source — the nursery's body failing is the reason too.
async fn nested_child_source() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let me = tokio::task::try_id();
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            let c = sleep_forever().await.unwrap_err();
            *s.lock().unwrap() = Some(c.clone());
            Err::<(), _>(c)
        })?;
        wait_all_tasks_blocked().await?;
        Err::<(), _>(Error::msg("body broke"))
    })
    .await;
    assert!(r.is_err());
    let c = seen
        .lock()
        .unwrap()
        .take()
        .expect("the child was cancelled");
    assert_eq!(c.reason(), Some("nursery body failed: body broke"));
    assert_eq!(
        c.source_task(),
        me,
        "the body runs in the task that opened the nursery"
    );
}

/// Trio: test_cancel_reason_nursery (panicking variant) — a panicking sibling is named too.
async fn cancel_reason_panicking_sibling() {
    let seen = Arc::new(std::sync::Mutex::new(None));
    let s = seen.clone();
    let r = tokio::spawn(open_nursery(|n| async move {
        n.start_soon(async move {
            let c = sleep_forever().await.unwrap_err();
            *s.lock().unwrap() = Some(c.clone());
            Err::<(), _>(c)
        })?;
        wait_all_tasks_blocked().await?;
        n.start_soon(async {
            panic!("on purpose");
            #[allow(unreachable_code)]
            Ok::<_, Error>(())
        })?;
        Ok::<_, Error>(())
    }))
    .await;
    assert!(r.unwrap_err().is_panic());
    let c = seen
        .lock()
        .unwrap()
        .take()
        .expect("the sibling was cancelled");
    assert_eq!(c.reason(), Some("task panicked"));
}

/// Trio: test_from_thread_check_cancelled_no_abandon — a worker thread learns the reason.
async fn check_cancelled_from_thread_has_the_reason() {
    let scope = CancelScope::new();
    let s = scope.clone();
    let r = scope
        .run(async move {
            let seen = run_sync(move || {
                s.cancel_with_reason("stop the thread");
                from_thread::check_cancelled()
            })
            .await?;
            let c = seen.unwrap_err();
            assert_eq!(c.reason(), Some("stop the thread"));
            assert_eq!(
                trellis::threads::check_cancelled(),
                Ok(()),
                "not a worker thread"
            );
            Err::<(), Error>(c.into())
        })
        .await;
    assert!(matches!(r, Ok(None)));
}

/// A cancellation keeps its reason through `trellis::Error` and its comparisons ignore it.
async fn reason_survives_conversion() {
    let scope = CancelScope::new();
    let s = scope.clone();
    scope
        .run(async move {
            s.cancel_with_reason("bye");
            let e: Error = checkpoint().await.unwrap_err().into();
            assert!(e.is_cancelled());
            assert_eq!(e.to_string(), format!("{}", e.as_cancelled().unwrap()));
            assert_eq!(e.as_cancelled().unwrap().reason(), Some("bye"));
            let back = e.downcast::<Cancelled>().unwrap();
            assert_eq!(back.reason(), Some("bye"));
            assert_eq!(back, Cancelled::new(), "equal whatever the reason");
            Err::<(), Error>(back.into())
        })
        .await
        .unwrap();
}

both_flavors!(
    cancelled_str,
    cancel_reason,
    cancel_reason_not_overwritten,
    cancel_reason_not_overwritten_2,
    cancel_reason_nursery,
    nested_child_source,
    cancel_reason_panicking_sibling,
    check_cancelled_from_thread_has_the_reason,
    reason_survives_conversion,
);
