//! One rule for "is this a cancellation", for nurseries and scopes alike, and cancellations
//! inside error groups: ported from Trio's `_core/_tests/test_run.py` and PEP 654.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::{Boom, KeyError};
use trellis::testing::wait_all_tasks_blocked;
use trellis::{
    CancelScope, Cancelled, Error, ErrorGroup, IsCancelled, checkpoint, open_nursery, sleep_forever,
};

/// A user's error enum whose cancellation does not wrap `trellis::Cancelled` in its source
/// chain: only its `IsCancelled` says it is one.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("fetch cancelled")]
    Cancelled,
    #[error("not found")]
    NotFound,
}

impl From<Cancelled> for FetchError {
    fn from(_: Cancelled) -> Self {
        FetchError::Cancelled
    }
}

impl IsCancelled for FetchError {
    fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled)
    }
}

/// Trio: test_task_crash_propagation's rule, for a user error type — a task whose error says
/// it is a cancellation is not a failure: the nursery catches it as its scope does, and does
/// not cancel the siblings.
async fn user_cancellation_in_a_task_is_not_a_failure() {
    let sibling_cancelled = Arc::new(AtomicBool::new(false));
    let flag = sibling_cancelled.clone();
    let inner = CancelScope::new();
    let i = inner.clone();
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            // Cancelled by its own scope, reported in the user's own error type.
            i.cancel();
            let r: Result<(), FetchError> = i
                .run(async { Err::<(), _>(FetchError::from(checkpoint().await.unwrap_err())) })
                .await
                .map(|_| ());
            r?;
            Err::<(), FetchError>(FetchError::Cancelled) // and once more, unscoped
        })?;
        n.start_soon(async move {
            wait_all_tasks_blocked().await?;
            flag.store(checkpoint().await.is_err(), Ordering::SeqCst);
            Ok::<_, Error>(())
        })?;
        Ok::<_, Error>(())
    })
    .await;
    // The loose `FetchError::Cancelled` reached the nursery: a cancellation that no scope of
    // the nursery's caused goes on outward, as `Cancelled`, not as a failure.
    let e = r.unwrap_err();
    assert!(e.is_cancelled(), "{e:?}");
    assert!(e.as_group().is_none());
    assert!(
        !sibling_cancelled.load(Ordering::SeqCst),
        "siblings are not cancelled"
    );
    assert!(inner.cancelled_caught());
}

/// The nursery's own cancellation, seen through a user error type, is caught by the nursery.
async fn user_cancellation_caught_by_its_nursery() {
    let r = open_nursery(|n| async move {
        n.start_soon(async {
            sleep_forever().await.map_err(FetchError::from)?;
            Ok::<_, FetchError>(())
        })?;
        n.start_soon(async { Err::<(), _>(FetchError::NotFound) })?;
        Ok::<_, Error>(())
    })
    .await;
    let group = r.unwrap_err().into_group().unwrap();
    let leaves: Vec<String> = group.leaves().map(|e| e.to_string()).collect();
    assert_eq!(
        leaves,
        ["not found"],
        "the cancelled sibling is not in the group"
    );
}

/// Trio: test_cancel_inheritance — a group made only of cancellations is a cancellation: the
/// scope that was cancelled catches it.
async fn group_of_only_cancellations_is_caught() {
    let scope = CancelScope::new();
    scope.cancel();
    let r = scope
        .run(async {
            Err::<(), _>(Error::from(ErrorGroup::new(
                "cancelled tasks",
                vec![
                    Error::from(Cancelled::new()),
                    Error::from(ErrorGroup::new("inner", vec![Cancelled::new().into()])),
                ],
            )))
        })
        .await;
    assert!(matches!(r, Ok(None)));
    assert!(scope.cancelled_caught());
}

/// Trio: test_cancel_scope_exceptiongroup_filtering — the outer scope is cancelled while a
/// nursery inside it runs; one task fails on its way out. The nursery cannot catch the
/// outer cancellation, so its group holds the failure *and* the cancellation; the outer scope
/// catches the cancellation (it reports `cancelled_caught`) and passes on only the failure.
async fn cancel_scope_exceptiongroup_filtering() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let r = outer
        .run(async move {
            open_nursery(|n| async move {
                for _ in 0..2 {
                    n.start_soon(async { Ok::<_, Error>(sleep_forever().await.map(|_| ())?) })?;
                }
                n.start_soon(async {
                    // A task whose cleanup fails once it is cancelled.
                    let _ = sleep_forever().await;
                    Err::<(), _>(KeyError("crasher"))
                })?;
                wait_all_tasks_blocked().await?;
                o.cancel();
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
        })
        .await;
    let e = r.unwrap_err();
    let group = e.as_group().expect("the failure stays a group");
    assert_eq!(group.leaves().count(), 1);
    assert!(group.leaves().all(|e| e.is::<KeyError>()));
    assert!(outer.cancelled_caught());
}

/// Without a scope to catch it, the cancellation travels beside the failure.
async fn cancellation_travels_beside_failures() {
    let outer = CancelScope::new();
    let o = outer.clone();
    let r = open_nursery(|n| async move {
        n.start_soon(async move {
            o.run(async {
                open_nursery(|m| async move {
                    m.start_soon(async {
                        let _ = sleep_forever().await;
                        Err::<(), _>(Boom("cleanup failed"))
                    })?;
                    Ok::<_, Error>(())
                })
                .await
                .map(|_| ())
            })
            .await
            .map(|_| ())
        })?;
        wait_all_tasks_blocked().await?;
        n.cancel();
        Ok::<_, Error>(())
    })
    .await;
    // The task's scope (`outer`) was not cancelled: it let the group (failure + the outer
    // nursery's cancellation) through; the outer nursery split it: its own cancellation caught,
    // the failure reported.
    let e = r.unwrap_err();
    let leaves: Vec<bool> = e
        .as_group()
        .unwrap()
        .leaves()
        .map(Error::is_cancelled)
        .collect();
    assert_eq!(leaves, [false]);
    assert!(!outer.cancelled_caught());
}

/// Trio's rule at a nursery's own scope: a task that ran a nursery of its own, cancelled from
/// here, returns a group holding its failure and the cancellation; the nursery that caused the
/// cancellation catches it out of that nested group, so no `Cancelled` leaks past it.
async fn nursery_catches_cancellations_nested_in_failures() {
    let r = open_nursery(|n| async move {
        n.start_soon(async {
            open_nursery(|inner| async move {
                inner.start_soon(async {
                    let _ = sleep_forever().await;
                    Err::<(), _>(Boom("cleanup failed"))
                })?;
                inner.start_soon(async { Ok::<_, Error>(sleep_forever().await.map(|_| ())?) })?;
                Ok::<_, Error>(())
            })
            .await
            .map(|_| ())
        })?;
        wait_all_tasks_blocked().await?;
        n.start_soon(async { Err::<(), _>(KeyError("first failure")) })?;
        Ok::<_, Error>(())
    })
    .await;
    let e = r.unwrap_err();
    let group = e.as_group().unwrap();
    assert!(group.leaves().all(|l| !l.is_cancelled()), "{e:?}");
    assert_eq!(group.leaves().count(), 2);
}

/// Trio: test_cancel_scope_no_cancellederror — a cancelled scope whose code fails with a
/// group holding no cancellation lets it through and does not report a catch.
async fn cancel_scope_no_cancellederror() {
    let scope = CancelScope::new();
    scope.cancel();
    let r = scope
        .run(async {
            Err::<(), _>(Error::from(ErrorGroup::new(
                "test",
                vec![Error::new(Boom("a")), Error::new(Boom("b"))],
            )))
        })
        .await;
    let e = r.unwrap_err();
    assert_eq!(e.as_group().unwrap().message(), "test");
    assert!(!scope.cancelled_caught());
}

/// PEP 654: `split` and `subgroup` ask about the group itself first; a group that matches goes
/// whole.
async fn split_checks_the_group_itself_first() {
    let group = || ErrorGroup::new("eg", vec![Error::new(Boom("a")), Error::new(KeyError("b"))]);
    let (matched, rest) = group().split::<ErrorGroup>();
    let matched = matched.unwrap();
    assert_eq!(matched.message(), "eg");
    assert_eq!(matched.errors().len(), 2);
    assert!(rest.is_none());
    assert_eq!(group().subgroup::<ErrorGroup>().unwrap().errors().len(), 2);
    let (m, r) = group().split_by(&mut |e| e.as_group().is_some_and(|g| g.message() == "eg"));
    assert_eq!(m.unwrap().errors().len(), 2);
    assert!(r.is_none());
    // Every leaf matching (but not the group): a new group with the same shape.
    let (m, r) = group().split_by(&mut |e| e.as_group().is_none());
    assert_eq!(m.unwrap().errors().len(), 2);
    assert!(r.is_none());
}

both_flavors!(
    user_cancellation_in_a_task_is_not_a_failure,
    user_cancellation_caught_by_its_nursery,
    group_of_only_cancellations_is_caught,
    cancel_scope_exceptiongroup_filtering,
    cancellation_travels_beside_failures,
    cancel_scope_no_cancellederror,
    nursery_catches_cancellations_nested_in_failures,
    split_checks_the_group_itself_first,
);
