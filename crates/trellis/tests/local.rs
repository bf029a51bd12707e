//! `with_local` / `local`: values inherited by the code and the tasks below, as Trio tasks
//! inherit `contextvars` (Trio: `test_run.py::test_context_inherited_by_nursery_tasks`-style).

mod common;

use trellis::{CancelScope, Error, TaskStatus, local, open_nursery, with_local};

#[derive(Clone, Debug, PartialEq)]
struct Tag(&'static str);

/// Seen by the future, by nursery tasks nested two deep, by `start` tasks, and inside scopes.
async fn inherited_by_tasks_and_scopes() {
    with_local(Tag("outer"), async {
        assert_eq!(local::<Tag>(), Some(Tag("outer")));
        open_nursery(|n| async move {
            n.start_soon(async {
                open_nursery(|inner| async move {
                    inner.start_soon(async {
                        assert_eq!(local::<Tag>(), Some(Tag("outer")));
                        Ok::<_, Error>(())
                    })?;
                    Ok::<_, Error>(())
                })
                .await?;
                Ok::<_, Error>(())
            })?;
            let seen = n
                .start(|status: TaskStatus<Option<Tag>>| async move {
                    status.started(local::<Tag>());
                    Ok::<_, Error>(())
                })
                .await?;
            assert_eq!(seen, Some(Tag("outer")));
            CancelScope::new()
                .run(async {
                    assert_eq!(local::<Tag>(), Some(Tag("outer")));
                    Ok::<_, Error>(())
                })
                .await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .unwrap();
    assert_eq!(local::<Tag>(), None);
}

/// An inner value of the same type hides the outer one, only while it runs; other types are
/// independent.
async fn inner_hides_outer() {
    with_local(Tag("outer"), async {
        with_local(7u32, async {
            with_local(Tag("inner"), async {
                assert_eq!(local::<Tag>(), Some(Tag("inner")));
                assert_eq!(local::<u32>(), Some(7));
            })
            .await;
            assert_eq!(local::<Tag>(), Some(Tag("outer")));
        })
        .await;
        assert_eq!(local::<u32>(), None);
    })
    .await;
}

/// The value's node passes cancellation through: a scope around it cancels the code inside.
async fn cancellation_passes_through() {
    let scope = CancelScope::new();
    scope.cancel();
    let outcome = scope
        .run(with_local(Tag("x"), async {
            trellis::checkpoint().await?;
            Ok::<_, Error>(())
        }))
        .await
        .unwrap();
    assert_eq!(outcome, None);
}

both_flavors!(
    inherited_by_tasks_and_scopes,
    inner_hides_outer,
    cancellation_passes_through
);
