//! A producer owned by its consumer (`channel::with_producer`), ported from Trio's
//! `as_safe_channel` tests in `_tests/test_channel.py`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Boom, KeyError};
use trellis::channel::{RecvError, with_producer};
use trellis::{CancelScope, Error, ErrorGroup, move_on_after, sleep_forever};

fn log(l: &Mutex<Vec<String>>, s: &str) {
    l.lock().unwrap().push(s.to_owned());
}

async fn drain(rx: trellis::channel::Receiver<u32>) -> Result<Vec<u32>, Error> {
    let mut got = Vec::new();
    loop {
        match rx.recv().await {
            Ok(v) => got.push(v),
            Err(RecvError::EndOfChannel) => return Ok(got),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Trio: test_as_safe_channel_exhaust — the producer's values, then the end.
async fn as_safe_channel_exhaust() {
    let got = with_producer(
        |tx| async move {
            tx.send(1).await?;
            Ok::<_, Error>(())
        },
        drain,
    )
    .await
    .unwrap();
    assert_eq!(got, [1]);
}

/// Trio: test_as_safe_channel_no_race — a producer failing after a value: the consumer got
/// the value, and the call fails with the producer's error itself, not a group.
async fn as_safe_channel_no_race() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let r = with_producer(
        |tx| async move {
            tx.send(1).await?;
            Err::<(), _>(Error::new(Boom("oae")))
        },
        |rx| async move {
            loop {
                let v = rx.recv().await?;
                s.lock().unwrap().push(v);
            }
            #[allow(unreachable_code)]
            Ok::<(), Error>(())
        },
    )
    .await;
    let e = r.unwrap_err();
    assert!(e.as_group().is_none(), "{e:?}");
    assert_eq!(e.downcast_ref::<Boom>(), Some(&Boom("oae")));
    assert_eq!(*seen.lock().unwrap(), [1]);
}

/// Trio: test_as_safe_channel_buffer_size_too_small (the part that holds for a push
/// producer) — a consumer that leaves early cancels the producer, whose cleanup runs before
/// the call returns; the producer was never more than one value ahead.
async fn consumer_leaving_cancels_the_producer() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let first = with_producer(
        |tx| async move {
            let mut i = 0;
            let result = loop {
                log(&e, &format!("made {i}"));
                if let Err(err) = tx.send(i).await {
                    break err;
                }
                i += 1;
            };
            assert!(trellis::IsCancelled::is_cancelled(&result));
            log(&e, "producer cleaned up");
            Err::<(), _>(result)
        },
        |rx| async move {
            let v = rx.recv().await?;
            move_on_after(Duration::from_millis(20), sleep_forever()).await?;
            Ok::<_, Error>(v)
        },
    )
    .await
    .unwrap();
    assert_eq!(first, 0);
    assert_eq!(
        *events.lock().unwrap(),
        ["made 0", "made 1", "producer cleaned up"]
    );
}

/// Trio: test_as_safe_channel_close_during_iteration — the consumer closing its receiver gets
/// `Closed` from it; the producer stops without an error (here: cancelled once the consumer
/// returns, where Trio's producer sees a broken channel).
async fn as_safe_channel_close_during_iteration() {
    let got = with_producer(
        |tx| async move {
            for i in 0.. {
                tx.send(i).await?;
            }
            Ok::<_, Error>(())
        },
        |rx| async move {
            let v = rx.recv().await?;
            rx.close();
            assert_eq!(rx.recv().await, Err(RecvError::Closed));
            // Let the producer find the channel broken before the consumer returns.
            trellis::testing::wait_all_tasks_blocked().await?;
            Ok::<_, Error>(v)
        },
    )
    .await
    .unwrap();
    assert_eq!(got, 0);
}

/// Trio: test_as_safe_channel_dont_unwrap_user_exceptiongroup — only the nursery's own layer
/// is unwrapped: a group the consumer returns comes back as that group.
async fn as_safe_channel_dont_unwrap_user_exceptiongroup() {
    let r = with_producer(
        |tx| async move {
            tx.send(1u32).await?;
            Ok::<_, Error>(())
        },
        |_rx| async move {
            Err::<(), _>(Error::from(ErrorGroup::new(
                "foo",
                vec![Error::new(KeyError("bar"))],
            )))
        },
    )
    .await;
    let e = r.unwrap_err();
    assert_eq!(e.as_group().expect("the user's group").message(), "foo");
}

/// Trio: test_as_safe_channel_genexit_finally — the consumer fails and the producer's cleanup
/// fails too: both come back, as a group.
async fn both_failing_come_back_as_a_group() {
    let r = with_producer(
        |tx| async move {
            let sent = tx.send(1u32).await;
            if sent.is_ok() {
                let _ = tx.send(2).await;
            }
            Err::<(), _>(Error::new(Boom("agen")))
        },
        |rx| async move {
            rx.recv().await?;
            Err::<(), _>(Error::new(KeyError("iterator")))
        },
    )
    .await;
    let e = r.unwrap_err();
    let group = e.as_group().expect("two failures");
    assert_eq!(group.leaves().count(), 2);
    assert!(group.contains::<Boom>() && group.contains::<KeyError>());
}

/// Trio: test_as_safe_channel_multi_cancel — cancelled from outside: the consumer and the
/// producer both see `Cancelled`, and the call is a cancellation that the scope catches.
async fn as_safe_channel_multi_cancel() {
    let events = Arc::new(Mutex::new(Vec::new()));
    let e = events.clone();
    let scope = CancelScope::new();
    let s = scope.clone();
    let r = scope
        .run(async move {
            let e2 = e.clone();
            with_producer(
                |tx| async move {
                    tx.send(1u32).await?;
                    let r = sleep_forever().await;
                    log(&e2, "producer cancelled");
                    r?;
                    Ok::<_, Error>(())
                },
                |rx| async move {
                    rx.recv().await?;
                    s.cancel();
                    let r = sleep_forever().await;
                    log(&e, "consumer cancelled");
                    r?;
                    Ok::<_, Error>(())
                },
            )
            .await
        })
        .await;
    assert!(matches!(r, Ok(None)), "{r:?}");
    let mut seen = events.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen, ["consumer cancelled", "producer cancelled"]);
}

both_flavors!(
    as_safe_channel_exhaust,
    as_safe_channel_no_race,
    consumer_leaving_cancels_the_producer,
    as_safe_channel_close_during_iteration,
    as_safe_channel_dont_unwrap_user_exceptiongroup,
    both_failing_come_back_as_a_group,
    as_safe_channel_multi_cancel,
);
