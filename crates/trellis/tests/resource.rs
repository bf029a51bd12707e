//! The shared resource cache, ported from tractor's `tests/test_resource_cache.py`
//! (`maybe_open_context`); each test names the original. Timing-free: sleeps run on the
//! autojump clock and only order the tasks.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::Boom;
use trellis::resource::{Provide, ResourceCache, ResourceFailed};
use trellis::{Error, open_nursery};

/// Counts how often the resource was opened and closed.
#[derive(Default)]
struct Counts {
    opened: AtomicU32,
    closed: AtomicU32,
}

type ResourceFuture = std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>>;

/// A resource that provides `value`, and takes `close_for` to close (failing with `fail` if
/// given).
fn resource(
    counts: Arc<Counts>,
    value: u32,
    close_for: Duration,
    fail: Option<&'static str>,
) -> impl FnOnce(Provide<u32>) -> ResourceFuture {
    move |provide: Provide<u32>| {
        Box::pin(async move {
            counts.opened.fetch_add(1, Ordering::SeqCst);
            provide.provide(value).await?;
            trellis::sleep(close_for).await?;
            counts.closed.fetch_add(1, Ordering::SeqCst);
            match fail {
                Some(text) => Err(Error::new(Boom(text))),
                None => Ok(()),
            }
        })
    }
}

/// tractor: test_resource_only_entered_once — ten tasks ask for one key at once: one opens it
/// (no cache hit), the other nine share it (hits), it is opened and closed once; a second key
/// is a resource of its own (test_per_ctx_key_resource_lifecycle).
async fn resource_only_entered_once() {
    let counts = Arc::new(Counts::default());
    let other = Arc::new(Counts::default());
    let hits = Arc::new(AtomicU32::new(0));
    let (c, o, h) = (counts.clone(), other.clone(), hits.clone());
    open_nursery(|service| async move {
        let cache = ResourceCache::<&str, u32>::new(&service);
        open_nursery(|users| async move {
            for i in 0..10 {
                let (cache, c, h) = (cache.clone(), c.clone(), h.clone());
                users.start_soon(async move {
                    cache
                        .open(
                            "key",
                            resource(c, 7, Duration::ZERO, None),
                            |value, hit| async move {
                                assert_eq!(*value, 7);
                                h.fetch_add(u32::from(hit), Ordering::SeqCst);
                                trellis::sleep(Duration::from_millis(10 + i)).await?;
                                Ok::<_, Error>(())
                            },
                        )
                        .await
                })?;
            }
            let cache = cache.clone();
            users.start_soon(async move {
                cache
                    .open(
                        "other",
                        resource(o, 8, Duration::ZERO, None),
                        |value, hit| async move {
                            assert_eq!((*value, hit), (8, false));
                            Ok::<_, Error>(())
                        },
                    )
                    .await
            })?;
            Ok::<_, Error>(())
        })
        .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(hits.load(Ordering::SeqCst), 9);
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
    assert_eq!(counts.closed.load(Ordering::SeqCst), 1);
    assert_eq!(other.opened.load(Ordering::SeqCst), 1);
}

/// tractor: test_last_moc_user_waits_for_resource_exit — the last user's `open` returns only
/// once the resource has closed; earlier users do not wait for it.
async fn last_user_waits_for_resource_exit() {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        open_nursery(|users| async move {
            let (early, c1) = (cache.clone(), c.clone());
            users.start_soon(async move {
                early
                    .open(
                        1,
                        resource(c1.clone(), 1, Duration::from_secs(5), None),
                        |_, _| async move { Ok::<_, Error>(()) },
                    )
                    .await?;
                // Another user still holds it: nothing closed yet.
                assert_eq!(c1.closed.load(Ordering::SeqCst), 0);
                Ok::<_, Error>(())
            })?;
            let (late, c2) = (cache.clone(), c.clone());
            users.start_soon(async move {
                late.open(
                    1,
                    resource(c2.clone(), 1, Duration::from_secs(5), None),
                    |_, hit| async move {
                        assert!(hit);
                        trellis::sleep(Duration::from_secs(1)).await?;
                        Ok::<_, Error>(())
                    },
                )
                .await?;
                assert_eq!(c2.closed.load(Ordering::SeqCst), 1);
                Ok::<_, Error>(())
            })?;
            Ok::<_, Error>(())
        })
        .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(counts.opened.load(Ordering::SeqCst), 1);
}

/// tractor: test_moc_delivers_resource_exit_error — an error closing the resource reaches the
/// last user.
async fn resource_exit_error_reaches_the_last_user() {
    let counts = Arc::new(Counts::default());
    let err = open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        cache
            .open(
                1,
                resource(counts, 1, Duration::ZERO, Some("close failed")),
                |_, _| async move { Ok::<_, Error>(()) },
            )
            .await
    })
    .await
    .unwrap_err()
    .into_single()
    .unwrap_or_else(|e| e);
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom("close failed")));
}

/// A body's own error is not masked by an error closing the resource.
async fn body_error_is_not_masked_by_exit_error() {
    let counts = Arc::new(Counts::default());
    let err = open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        cache
            .open(
                1,
                resource(counts, 1, Duration::ZERO, Some("close failed")),
                |_, _| async move { Err::<(), _>(Error::new(Boom("body failed"))) },
            )
            .await
    })
    .await
    .unwrap_err()
    .into_single()
    .unwrap_or_else(|e| e);
    assert_eq!(err.downcast_ref::<Boom>(), Some(&Boom("body failed")));
}

/// tractor: test_moc_final_user_cancellation_waits_for_exit — the last user, cancelled, still
/// waits for the resource to close before its cancellation goes on.
async fn final_user_cancellation_waits_for_exit() {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        let outcome = trellis::move_on_after(Duration::from_secs(1), async {
            cache
                .open(
                    1,
                    resource(c.clone(), 1, Duration::from_secs(10), None),
                    |_, _| async move {
                        trellis::sleep_forever().await?;
                        Ok::<_, Error>(())
                    },
                )
                .await
        })
        .await?;
        assert_eq!(outcome, None, "cancelled");
        assert_eq!(
            c.closed.load(Ordering::SeqCst),
            1,
            "closed before we got here"
        );
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// tractor: test_moc_reentry_during_teardown — a user that comes while the resource closes
/// waits for the close, then opens a fresh one (no cache hit).
async fn reentry_during_teardown_opens_afresh() {
    let counts = Arc::new(Counts::default());
    let c = counts.clone();
    open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        open_nursery(|users| async move {
            let (first, c1) = (cache.clone(), c.clone());
            users.start_soon(async move {
                first
                    .open(
                        1,
                        resource(c1, 1, Duration::from_secs(5), None),
                        |_, _| async move { Ok::<_, Error>(()) },
                    )
                    .await
            })?;
            let (second, c2) = (cache.clone(), c.clone());
            users.start_soon(async move {
                // Comes while the first resource closes (it takes 5 s).
                trellis::sleep(Duration::from_secs(1)).await?;
                second
                    .open(
                        1,
                        resource(c2.clone(), 2, Duration::ZERO, None),
                        |value, hit| async move {
                            assert_eq!((*value, hit), (2, false));
                            Ok::<_, Error>(())
                        },
                    )
                    .await?;
                Ok::<_, Error>(())
            })?;
            Ok::<_, Error>(())
        })
        .await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(counts.opened.load(Ordering::SeqCst), 2);
    assert_eq!(counts.closed.load(Ordering::SeqCst), 2);
}

/// A resource that fails before providing: the user that opened it gets its error, the users
/// that waited with it get `ResourceFailed`, and the key can be opened again.
async fn failing_open_reaches_its_users() {
    open_nursery(|service| async move {
        let cache = ResourceCache::<u8, u32>::new(&service);
        let failing = |_: Provide<u32>| async move {
            trellis::sleep(Duration::from_secs(1)).await?;
            Err::<(), _>(Error::new(Boom("cannot open")))
        };
        let outcomes = open_nursery(|users| async move {
            let (a, b) = (cache.clone(), cache.clone());
            let first = users.start_soon(async move {
                Ok::<_, Error>(a.open(1, failing, |_, _| async { Ok(()) }).await)
            })?;
            let waiting = users.start_soon(async move {
                trellis::sleep(Duration::from_millis(10)).await?;
                Ok::<_, Error>(b.open(1, failing, |_, _| async { Ok(()) }).await)
            })?;
            Ok::<_, Error>((first, waiting, cache))
        })
        .await?
        .expect("not cancelled");
        let (first, waiting, cache) = outcomes;
        let first = first.into_value().unwrap().unwrap_err();
        assert_eq!(first.downcast_ref::<Boom>(), Some(&Boom("cannot open")));
        let waiting = waiting.into_value().unwrap().unwrap_err();
        assert!(waiting.is::<ResourceFailed>(), "{waiting:?}");
        let again = cache
            .open(
                1,
                |provide: Provide<u32>| async move { Ok(provide.provide(3).await?) },
                |value, hit| async move { Ok::<_, Error>((*value, hit)) },
            )
            .await?;
        assert_eq!(again, (3, false));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

autojump!(
    resource_only_entered_once,
    last_user_waits_for_resource_exit,
    resource_exit_error_reaches_the_last_user,
    body_error_is_not_masked_by_exit_error,
    final_user_cancellation_waits_for_exit,
    reentry_during_teardown_opens_afresh,
    failing_open_reaches_its_users,
);
