//! The broadcast receiver, ported from tractor's `tests/test_task_broadcasting.py`.

mod common;

use std::sync::{Arc, Mutex};

use trellis::broadcast::{BroadcastError, SubscribeClosed, broadcast_receiver};
use trellis::channel::channel;
use trellis::testing::wait_all_tasks_blocked;
use trellis::{CancelScope, Error, open_nursery};

/// tractor: test_stream_fan_out_to_local_subscriptions — every subscriber gets every value.
async fn fan_out_to_every_subscriber() {
    let (tx, rx) = channel::<u32>(4);
    let first = broadcast_receiver(rx, 16);
    let results = Arc::new(Mutex::new(Vec::new()));
    let res = results.clone();
    open_nursery(|n| async move {
        for i in 0..4 {
            let sub = first.subscribe()?;
            let res = res.clone();
            n.start_soon(async move {
                let mut got = Vec::new();
                loop {
                    match sub.recv().await {
                        Ok(v) => got.push(v),
                        Err(BroadcastError::EndOfChannel) => break,
                        Err(e) => return Err(Error::new(e)),
                    }
                }
                res.lock().unwrap().push((i, got));
                Ok(())
            })?;
        }
        drop(first);
        wait_all_tasks_blocked().await?;
        for v in 0..10 {
            tx.send(v).await?;
        }
        drop(tx);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let results = results.lock().unwrap();
    assert_eq!(results.len(), 4);
    for (_, got) in results.iter() {
        assert_eq!(*got, (0..10).collect::<Vec<_>>());
    }
}

/// tractor: test_subscribe_errors_after_close
async fn subscribe_after_close_is_an_error() {
    let (_tx, rx) = channel::<u32>(1);
    let brx = broadcast_receiver(rx, 1);
    brx.close();
    assert_eq!(brx.subscribe().unwrap_err(), SubscribeClosed);
    assert_eq!(brx.recv().await, Err(BroadcastError::Closed));
}

/// The lag count is exact (tractor fixed an off-by-one here) and the subscriber resumes from
/// the oldest value kept, as tokio's broadcast does.
async fn lagged_count_is_exact() {
    let (tx, rx) = channel::<u32>(100);
    let fast = broadcast_receiver(rx, 4);
    let slow = fast.subscribe().unwrap();
    for v in 0..10 {
        tx.try_send(v).unwrap();
    }
    for v in 0..10 {
        assert_eq!(fast.recv().await, Ok(v));
    }
    // Four kept (6..10): the slow one missed 0..6, exactly six.
    assert_eq!(slow.recv().await, Err(BroadcastError::Lagged(6)));
    for v in 6..10 {
        assert_eq!(slow.recv().await, Ok(v));
    }
}

/// tractor: test_no_raise_on_lag — the no-error mode skips silently to the oldest kept value.
async fn no_error_on_lag_mode() {
    let (tx, rx) = channel::<u32>(100);
    let fast = broadcast_receiver(rx, 4);
    let slow = fast.subscribe_without_lag_errors().unwrap();
    for v in 0..10 {
        tx.try_send(v).unwrap();
    }
    for v in 0..10 {
        assert_eq!(fast.recv().await, Ok(v));
    }
    assert_eq!(slow.recv().await, Ok(6));
}

/// tractor: test_first_recver_is_cancelled — a subscriber cancelled while it pulls the source
/// does not leave the others hanging: the next receive pulls and gets the value.
async fn first_receiver_cancelled_mid_pull() {
    let (tx, rx) = channel::<u32>(1);
    let brx = broadcast_receiver(rx, 1);
    let sub = brx.subscribe().unwrap();
    let scope = CancelScope::new();
    let sc = scope.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { sc.run(sub.recv()).await.map(|_| ()) })?;
        wait_all_tasks_blocked().await?;
        scope.cancel();
        wait_all_tasks_blocked().await?;
        tx.send(1).await?;
        assert_eq!(brx.recv().await, Ok(1));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// tractor: test_faster_task_to_recv_is_cancelled_by_slower — cancelling the fast subscriber
/// loses nothing for the slow one.
async fn cancelling_fast_subscriber_loses_nothing() {
    // Room for every value: after the fast subscriber is gone, this task both sends and reads.
    let (tx, rx) = channel::<u32>(1000);
    let slow = broadcast_receiver(rx, 1000);
    let fast = slow.subscribe().unwrap();
    let got = open_nursery(|n| async move {
        let fast_scope = CancelScope::new();
        let fs = fast_scope.clone();
        n.start_soon(async move {
            fs.run(async {
                loop {
                    fast.recv().await?;
                }
                #[allow(unreachable_code)]
                Ok::<_, BroadcastError>(())
            })
            .await
            .map(|_| ())
        })?;
        let mut got = Vec::new();
        for v in 0..1000u32 {
            tx.send(v).await?;
            if v == 20 {
                fast_scope.cancel();
            }
            if v % 3 == 0 {
                // The slow one reads now and then, and falls behind the fast puller.
                got.push(slow.recv().await?);
            }
        }
        drop(tx);
        loop {
            match slow.recv().await {
                Ok(v) => got.push(v),
                Err(BroadcastError::EndOfChannel) => break,
                Err(e) => return Err(Error::new(e)),
            }
        }
        Ok::<_, Error>(got)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got, (0..1000).collect::<Vec<_>>());
}

/// Closing one subscriber leaves the others working; the last one can still read.
async fn closing_one_subscriber() {
    let (tx, rx) = channel::<u32>(4);
    let a = broadcast_receiver(rx, 4);
    let b = a.subscribe().unwrap();
    assert_eq!(a.subscribers(), 2);
    a.close();
    assert_eq!(a.subscribers(), 1);
    tx.send(5).await.unwrap();
    assert_eq!(b.recv().await, Ok(5));
}

/// Lossless mode: the slowest subscriber sets the pace; nobody lags, and a bounded source makes
/// the sender wait for room.
async fn lossless_mode_never_lags() {
    use trellis::broadcast::lossless_broadcast_receiver;
    let (tx, rx) = channel::<u32>(1);
    let fast = lossless_broadcast_receiver(rx, 4);
    let slow = fast.subscribe().unwrap();
    let got = open_nursery(|n| async move {
        n.start_soon(async move {
            for v in 0..100 {
                tx.send(v).await?;
            }
            Ok::<_, Error>(())
        })?;
        let fast_got = n.start_soon(async move {
            let mut got = Vec::new();
            while let Ok(v) = fast.recv().await {
                got.push(v);
            }
            Ok::<_, Error>(got)
        })?;
        let mut slow_got = Vec::new();
        loop {
            match slow.recv().await {
                Ok(v) => {
                    slow_got.push(v);
                    // Slow: yield a few times per value.
                    for _ in 0..3 {
                        trellis::checkpoint().await?;
                    }
                }
                Err(BroadcastError::EndOfChannel) => break,
                Err(e) => return Err(Error::new(e)),
            }
        }
        Ok::<_, Error>((fast_got, slow_got))
    })
    .await
    .unwrap()
    .unwrap();
    let (fast_got, slow_got) = got;
    assert_eq!(slow_got, (0..100).collect::<Vec<_>>());
    assert_eq!(fast_got.into_value().unwrap(), (0..100).collect::<Vec<_>>());
}

/// tractor: test_consumer_and_parent_maybe_lag — two subscribers at different speeds: each sees
/// an increasing sequence, and what it received plus what it was told it missed is exactly
/// everything (the Lagged count has no off-by-one).
async fn lag_accounting_is_exact_at_any_speed() {
    const N: u32 = 300;
    let (tx, rx) = channel::<u32>(N as usize);
    for v in 0..N {
        tx.try_send(v).unwrap();
    }
    drop(tx);
    let first = broadcast_receiver(rx, 8);
    let results = open_nursery(|n| async move {
        let mut handles = Vec::new();
        for delay in [0usize, 3] {
            let sub = first.subscribe()?;
            handles.push(n.start_soon(async move {
                let (mut received, mut missed, mut last) = (0u64, 0u64, None::<u32>);
                loop {
                    match sub.recv().await {
                        Ok(v) => {
                            assert!(last.is_none_or(|l| v > l), "values arrive in order");
                            last = Some(v);
                            received += 1;
                            for _ in 0..delay {
                                trellis::checkpoint().await?;
                            }
                        }
                        Err(BroadcastError::Lagged(k)) => missed += k,
                        Err(BroadcastError::EndOfChannel) => break,
                        Err(e) => return Err(Error::new(e)),
                    }
                }
                Ok::<_, Error>((delay, received, missed))
            })?);
        }
        drop(first);
        Ok::<_, Error>(handles)
    })
    .await
    .unwrap()
    .unwrap();
    for handle in results {
        let (delay, received, missed) = handle.into_value().unwrap();
        assert_eq!(
            received + missed,
            u64::from(N),
            "subscriber with delay {delay}"
        );
        // On one thread the schedule is deterministic and the slow one surely falls behind; on
        // two workers it almost always does, but that is timing, not a property.
        let one_thread = tokio::runtime::Handle::current().runtime_flavor()
            == tokio::runtime::RuntimeFlavor::CurrentThread;
        if delay > 0 && one_thread {
            assert!(missed > 0, "the slow subscriber must have lagged");
        }
    }
}

/// Values a subscriber took ahead in one visit are delivered in order, and go away with it when
/// it closes: a closed subscriber gets Closed, not stale values.
async fn values_taken_ahead_keep_order_and_close() {
    let (tx, rx) = channel::<u32>(64);
    let a = broadcast_receiver(rx, 64);
    let b = a.subscribe().unwrap();
    for v in 0..40 {
        tx.try_send(v).unwrap();
    }
    for v in 0..40 {
        assert_eq!(a.recv().await, Ok(v));
    }
    for v in 0..35 {
        assert_eq!(b.recv().await, Ok(v));
    }
    b.close();
    assert_eq!(b.recv().await, Err(BroadcastError::Closed));
}

/// A handle subscribes without being a subscriber: with the first receiver closed, a
/// lossless broadcast's subscribers get everything and nobody waits for a reader that is not
/// there.
async fn handle_subscribes_without_holding_back() {
    use trellis::broadcast::lossless_broadcast_receiver;
    let (tx, rx) = channel::<u32>(1);
    let first = lossless_broadcast_receiver(rx, 2);
    let handle = first.handle();
    drop(first);
    let (a, b) = (handle.subscribe(), handle.subscribe());
    let got = open_nursery(|n| async move {
        n.start_soon(async move {
            for v in 0..50 {
                tx.send(v).await?;
            }
            Ok::<_, Error>(())
        })?;
        let a_got = n.start_soon(async move {
            let mut got = Vec::new();
            while let Ok(v) = a.recv().await {
                got.push(v);
            }
            Ok::<_, Error>(got)
        })?;
        let mut b_got = Vec::new();
        while let Ok(v) = b.recv().await {
            b_got.push(v);
        }
        Ok::<_, Error>((a_got, b_got))
    })
    .await
    .unwrap()
    .unwrap();
    let (a_got, b_got) = got;
    assert_eq!(b_got, (0..50).collect::<Vec<_>>());
    assert_eq!(a_got.into_value().unwrap(), (0..50).collect::<Vec<_>>());
    // After the end, a new subscriber ends at once.
    assert_eq!(
        handle.subscribe().recv().await,
        Err(BroadcastError::EndOfChannel)
    );
}

/// tokio's rule, whatever the read history: a subscriber never receives a value the shared
/// buffer no longer keeps, and `Lagged(n)` counts exactly the values it missed. The same
/// reads and sends against `tokio::sync::broadcast` of the same capacity must see the same.
async fn lag_is_exact_whatever_was_read_before() {
    #[derive(Debug, PartialEq)]
    enum Seen {
        Value(u32),
        Lagged(u64),
    }
    // (values sent before, subscriber A's reads after them), for a few read histories.
    let scripts: &[&[(u32, usize)]] = &[
        &[(4, 1), (13, 5)],         // read 0 after 0..4 sent, then fall far behind
        &[(1, 1), (10, 5)],         // read 0 at once, then fall 9 behind
        &[(8, 2), (9, 1), (30, 5)], // lagged already, read ahead, lag again
        &[(4, 4), (6, 2)],          // never behind
    ];
    for script in scripts {
        // tokio's broadcast with capacity 4.
        let (tx, mut rx_a) = tokio::sync::broadcast::channel::<u32>(4);
        let mut expected = Vec::new();
        let mut sent = 0;
        for &(until, reads) in *script {
            while sent < until {
                tx.send(sent).unwrap();
                sent += 1;
            }
            for _ in 0..reads {
                expected.push(match rx_a.try_recv() {
                    Ok(v) => Seen::Value(v),
                    Err(tokio::sync::broadcast::error::TryRecvError::Lagged(n)) => Seen::Lagged(n),
                    Err(e) => panic!("{e:?}"),
                });
            }
        }
        // Ours: B reads every value as it comes (pulling the source), A follows the script.
        let (src_tx, src_rx) = channel::<u32>(64);
        let a = broadcast_receiver(src_rx, 4);
        let b = a.subscribe().unwrap();
        let mut got = Vec::new();
        let mut sent = 0;
        for &(until, reads) in *script {
            while sent < until {
                src_tx.send(sent).await.unwrap();
                assert_eq!(b.recv().await, Ok(sent));
                sent += 1;
            }
            for _ in 0..reads {
                got.push(match a.recv().await {
                    Ok(v) => Seen::Value(v),
                    Err(BroadcastError::Lagged(n)) => Seen::Lagged(n),
                    Err(e) => panic!("{e:?}"),
                });
            }
        }
        assert_eq!(got, expected, "script {script:?}");
    }
}

both_flavors!(
    lag_is_exact_whatever_was_read_before,
    handle_subscribes_without_holding_back,
    values_taken_ahead_keep_order_and_close,
    lag_accounting_is_exact_at_any_speed,
    lossless_mode_never_lags,
    fan_out_to_every_subscriber,
    subscribe_after_close_is_an_error,
    lagged_count_is_exact,
    no_error_on_lag_mode,
    first_receiver_cancelled_mid_pull,
    cancelling_fast_subscriber_loses_nothing,
    closing_one_subscriber,
);
