//! Memory channels, ported from Trio's `_tests/test_channel.py`, plus the cancellation rules.

mod common;

use std::pin::Pin;
use std::sync::{Arc, Mutex};

use futures_core::Stream;
use trellis::channel::{RecvError, SendError, TryRecvError, TrySendError, channel};
use trellis::testing::{assert_checkpoints, wait_all_tasks_blocked};
use trellis::{CancelScope, Cancelled, Error, open_nursery};

async fn next<T>(rx: &mut trellis::channel::Receiver<T>) -> Option<T> {
    std::future::poll_fn(|cx| Pin::new(&mut *rx).poll_next(cx)).await
}

async fn collect<T>(mut rx: trellis::channel::Receiver<T>) -> Vec<T> {
    let mut got = Vec::new();
    while let Some(v) = next(&mut rx).await {
        got.push(v);
    }
    got
}

/// Trio: test_channel
async fn basics() {
    let (s, r) = channel::<&'static str>(2);
    s.try_send("1").unwrap();
    assert_checkpoints(s.send("2")).await.unwrap();
    assert_eq!(s.try_send("x"), Err(TrySendError::Full("x")));
    assert_eq!(assert_checkpoints(r.recv()).await, Ok("1"));
    assert_eq!(r.try_recv(), Ok("2"));
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
    s.try_send("last").unwrap();
    s.close();
    assert_eq!(s.send("too late").await, Err(SendError::Closed("too late")));
    assert_eq!(
        s.try_send("too late"),
        Err(TrySendError::Closed("too late"))
    );
    // A clone of a closed handle is closed.
    assert!(s.clone().is_closed());
    s.close();
    assert_eq!(r.try_recv(), Ok("last"));
    assert_eq!(r.recv().await, Err(RecvError::EndOfChannel));
    r.close();
    assert_eq!(r.recv().await, Err(RecvError::Closed));
    assert_eq!(r.try_recv(), Err(TryRecvError::Closed));
    r.close();
}

/// Trio: test_553 — a receive cancelled by a timeout leaves the channel usable. (On the
/// autojump clock only: the timeout is ten seconds.)
async fn cancelled_recv_leaves_channel_usable() {
    let (s, r) = channel::<&'static str>(1);
    let scope = CancelScope::with_timeout(std::time::Duration::from_secs(10));
    assert_eq!(scope.run(r.recv()).await, Ok(None));
    assert!(scope.cancelled_caught());
    s.send("Test for PR #553").await.unwrap();
    assert_eq!(r.recv().await, Ok("Test for PR #553"));
}

/// Trio: test_channel_multiple_producers
async fn multiple_producers() {
    let (s, r) = channel::<u32>(0);
    let got = open_nursery(|n| async move {
        for i in 0..10u32 {
            let s = s.clone();
            n.start_soon(async move {
                for j in 3 * i..3 * (i + 1) {
                    s.send(j).await?;
                }
                Ok::<_, Error>(())
            })?;
        }
        drop(s);
        Ok::<_, Error>(collect(r).await)
    })
    .await
    .unwrap()
    .unwrap();
    let mut got = got;
    got.sort();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
}

/// Trio: test_channel_multiple_consumers
async fn multiple_consumers() {
    let received = Arc::new(Mutex::new(Vec::new()));
    let (s, r) = channel::<u32>(1);
    let rec = received.clone();
    open_nursery(|n| async move {
        for i in 0..5 {
            let (r, rec) = (r.clone(), rec.clone());
            n.start_soon(async move {
                for v in collect(r).await {
                    rec.lock().unwrap().push((i, v));
                }
                Ok::<_, Error>(())
            })?;
        }
        drop(r);
        wait_all_tasks_blocked().await?;
        for i in 0..10 {
            s.send(i).await?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let received = received.lock().unwrap();
    let mut values: Vec<u32> = received.iter().map(|(_, v)| *v).collect();
    values.sort();
    assert_eq!(values, (0..10).collect::<Vec<_>>());
}

/// Trio: test_close_basics / test_close_sync — closing the sender wakes its blocked send with
/// Closed, persistently, and receivers then see the end.
async fn close_sender_wakes_blocked_send() {
    let (s, r) = channel::<()>(0);
    let s = Arc::new(s);
    let s2 = s.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(s2.send(()).await, Err(SendError::Closed(())));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        s.close();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(r.try_recv(), Err(TryRecvError::EndOfChannel));
    assert_eq!(r.recv().await, Err(RecvError::EndOfChannel));
}

/// Trio: test_close_basics / test_close_sync — closing the receiver breaks a blocked send,
/// persistently.
async fn close_receiver_breaks_blocked_send() {
    let (s, r) = channel::<()>(0);
    let s = Arc::new(s);
    let s2 = s.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(s2.send(()).await, Err(SendError::Broken(())));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        r.close();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(s.try_send(()), Err(TrySendError::Broken(())));
    assert_eq!(s.send(()).await, Err(SendError::Broken(())));
}

/// Trio: test_close_basics — closing a receiver wakes its blocked receive with Closed.
async fn close_receiver_wakes_blocked_recv() {
    let (_s, r) = channel::<u32>(0);
    let r = Arc::new(r);
    let r2 = r.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(r2.recv().await, Err(RecvError::Closed));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        r.close();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_receive_channel_clone_and_close
async fn receiver_clone_and_close() {
    let (s, r) = channel::<()>(10);
    let r2 = r.clone();
    let r3 = r.clone();
    s.try_send(()).unwrap();
    r.close();
    drop(r2);
    assert!(r.clone().is_closed());
    // r3 is still open.
    s.try_send(()).unwrap();
    r3.close();
    assert_eq!(s.try_send(()), Err(TrySendError::Broken(())));
}

/// Trio: test_close_multiple_send_handles — closing one handle wakes only its own senders.
async fn close_one_of_several_senders() {
    let (s1, r) = channel::<&'static str>(0);
    let s1 = Arc::new(s1);
    let s2 = s1.as_ref().clone();
    let closer = s1.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(s1.send("nope").await, Err(SendError::Closed("nope")));
            Ok::<_, Error>(())
        })?;
        n.start_soon(async move { Ok::<_, Error>(s2.send("ok").await?) })?;
        wait_all_tasks_blocked().await?;
        closer.close();
        assert_eq!(r.recv().await, Ok("ok"));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_close_multiple_receive_handles
async fn close_one_of_several_receivers() {
    let (s, r1) = channel::<&'static str>(0);
    let r1 = Arc::new(r1);
    let r2 = r1.as_ref().clone();
    let closer = r1.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(r1.recv().await, Err(RecvError::Closed));
            Ok::<_, Error>(())
        })?;
        n.start_soon(async move {
            assert_eq!(r2.recv().await, Ok("ok"));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        closer.close();
        s.send("ok").await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_inf_capacity
async fn unbounded_capacity() {
    let (s, r) = channel::<u32>(usize::MAX);
    for i in 0..10 {
        s.try_send(i).unwrap();
    }
    drop(s);
    assert_eq!(collect(r).await, (0..10).collect::<Vec<_>>());
}

/// Trio: test_statistics
async fn statistics() {
    let (s, r) = channel::<()>(2);
    assert_eq!(s.statistics(), r.statistics());
    let st = s.statistics();
    assert_eq!(
        (
            st.current_buffer_used,
            st.max_buffer_size,
            st.open_send_channels,
            st.open_receive_channels
        ),
        (0, 2, 1, 1)
    );
    assert_eq!(
        (
            st.tasks_waiting_send,
            st.tasks_waiting_receive,
            st.peak_buffer_used
        ),
        (0, 0, 0)
    );
    s.try_send(()).unwrap();
    assert_eq!(s.statistics().current_buffer_used, 1);
    assert_eq!(s.statistics().peak_buffer_used, 1);
    let s2 = s.clone();
    assert_eq!(s.statistics().open_send_channels, 2);
    s.close();
    assert_eq!(s2.statistics().open_send_channels, 1);
    let r2 = r.clone();
    assert_eq!(s2.statistics().open_receive_channels, 2);
    r2.close();
    assert_eq!(s2.statistics().open_receive_channels, 1);
    let s2 = Arc::new(s2);
    let stats = s2.clone();
    let _keep_open = s2.clone();
    open_nursery(|n| async move {
        s2.try_send(()).unwrap();
        assert_eq!(stats.statistics().current_buffer_used, 2);
        assert_eq!(stats.statistics().peak_buffer_used, 2);
        for _ in 0..2 {
            let s2 = s2.clone();
            n.start_soon(async move { s2.send(()).await })?;
        }
        wait_all_tasks_blocked().await?;
        assert_eq!(stats.statistics().tasks_waiting_send, 2);
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(s.statistics().tasks_waiting_send, 0);
    while r.try_recv().is_ok() {}
    assert_eq!(s.statistics().current_buffer_used, 0);
    assert_eq!(s.statistics().peak_buffer_used, 2);
    let r = Arc::new(r);
    let r2 = r.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { r2.recv().await })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(r.statistics().tasks_waiting_receive, 1);
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(s.statistics().tasks_waiting_receive, 0);
}

/// Trio: test_channel_fairness — a waiting receiver owns the next value; a waiting sender owns
/// the next free place.
async fn fairness() {
    let (s, r) = channel::<u32>(1);
    s.try_send(1).unwrap();
    assert_eq!(r.try_recv(), Ok(1));
    s.try_send(2).unwrap();
    assert_eq!(r.try_recv(), Ok(2));
    let r = Arc::new(r);
    let r2 = r.clone();
    let got = open_nursery(|n| async move {
        let h = n.start_soon(async move { Ok::<_, Error>(r2.recv().await?) })?;
        wait_all_tasks_blocked().await?;
        s.try_send(2).unwrap();
        assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
        Ok::<_, Error>(h)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(got.into_value(), Some(2));

    let (s, r) = channel::<u32>(1);
    s.try_send(1).unwrap();
    assert_eq!(s.try_send(0), Err(TrySendError::Full(0)));
    let s = Arc::new(s);
    let s2 = s.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { Ok::<_, Error>(s2.send(2).await?) })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(r.try_recv(), Ok(1));
        assert_eq!(s.try_send(3), Err(TrySendError::Full(3)));
        assert_eq!(r.recv().await, Ok(2));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_unbuffered — capacity 0 is a rendezvous.
async fn unbuffered_rendezvous() {
    let (s, r) = channel::<u32>(0);
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
    assert_eq!(s.try_send(1), Err(TrySendError::Full(1)));
    let s = Arc::new(s);
    let _keep_open = s.clone();
    open_nursery(|n| async move {
        n.start_soon(async move { Ok::<_, Error>(assert_checkpoints(s.send(1)).await?) })?;
        assert_eq!(assert_checkpoints(r.recv()).await, Ok(1));
        assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// A cancelled send hands its value back and never delivers it.
async fn cancelled_send_returns_value() {
    let (s, r) = channel::<String>(0);
    let scope = CancelScope::new();
    let sc = scope.clone();
    let s = Arc::new(s);
    let s2 = s.clone();
    let h = open_nursery(|n| async move {
        let h = n.start_soon(async move {
            // Look at the outcome inside the scope: propagating it with `?` would let the
            // scope catch the cancellation and drop the value with it.
            let outcome = sc.run(async { Ok::<_, Cancelled>(s2.send("kept".to_owned()).await) });
            match outcome.await {
                Ok(Some(Err(SendError::Cancelled(v)))) => Ok::<_, Error>(v),
                other => panic!("expected the value back, got {other:?}"),
            }
        })?;
        wait_all_tasks_blocked().await?;
        scope.cancel();
        Ok::<_, Error>(h)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(h.into_value().as_deref(), Some("kept"));
    // Nothing was delivered.
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
}

/// A send whose value a receiver already took is not cancelled: the value is delivered once.
async fn send_taken_before_cancel_succeeds() {
    let (s, r) = channel::<u32>(0);
    let scope = CancelScope::new();
    let sc = scope.clone();
    let outcome = Arc::new(Mutex::new(None));
    let out = outcome.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            let r = sc.run(s.send(7)).await;
            *out.lock().unwrap() = Some(r.map(|o| o.is_some()));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        // Take the value and cancel the sender before it runs again.
        assert_eq!(r.try_recv(), Ok(7));
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*outcome.lock().unwrap(), Some(Ok(true)));
}

/// A receive handed a value just as it is cancelled returns the value: nothing is lost.
async fn recv_handed_value_before_cancel_keeps_it() {
    let (s, r) = channel::<u32>(0);
    let scope = CancelScope::new();
    let sc = scope.clone();
    let outcome = Arc::new(Mutex::new(None));
    let out = outcome.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            let got = sc
                .run(async { r.recv().await.map_err(|_| Cancelled::new()) })
                .await;
            *out.lock().unwrap() = Some(got);
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        s.try_send(5).unwrap();
        scope.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*outcome.lock().unwrap(), Some(Ok(Some(5))));
}

/// A receive future dropped after a value was handed to it puts the value back first in line.
async fn dropped_recv_puts_value_back() {
    let (s, r) = channel::<u32>(1);
    {
        let mut recv = std::pin::pin!(r.recv());
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(recv.as_mut().poll(&mut cx).is_pending());
        s.try_send(1).unwrap(); // handed straight to the waiting receive
        s.try_send(2).unwrap(); // buffered behind it
    }
    // The put-back value waits ahead of the buffer, one over the capacity.
    let stats = r.statistics();
    assert_eq!((stats.current_buffer_used, stats.peak_buffer_used), (2, 2));
    assert_eq!(r.try_recv(), Ok(1));
    assert_eq!(r.try_recv(), Ok(2));
}

/// The buffer holds exactly its capacity, whatever its size (small rings, the largest ring, and
/// the counted queue beyond it), and gives values back in order.
async fn capacity_is_exact() {
    for capacity in [1usize, 2, 127, 1024, 1025, 3000] {
        let (s, r) = channel::<usize>(capacity);
        for i in 0..capacity {
            assert_eq!(s.try_send(i), Ok(()), "capacity {capacity}");
        }
        assert_eq!(s.try_send(capacity), Err(TrySendError::Full(capacity)));
        let stats = s.statistics();
        assert_eq!(stats.current_buffer_used, capacity);
        assert_eq!(stats.peak_buffer_used, capacity);
        assert_eq!(r.try_recv(), Ok(0));
        assert_eq!(s.try_send(capacity), Ok(()));
        assert_eq!(
            s.try_send(capacity + 1),
            Err(TrySendError::Full(capacity + 1))
        );
        drop(s);
        let rest: Vec<usize> = std::iter::from_fn(|| r.try_recv().ok()).collect();
        assert_eq!(
            rest,
            (1..=capacity).collect::<Vec<_>>(),
            "capacity {capacity}"
        );
        assert_eq!(r.try_recv(), Err(TryRecvError::EndOfChannel));
    }
}

/// Four senders and four receivers on worker threads, for every kind of buffer (rendezvous,
/// small, the counted queue, unbounded): every value arrives exactly once, and each sender's
/// values arrive in the order sent.
async fn many_tasks_lose_nothing() {
    const PER_SENDER: u64 = 5_000;
    for capacity in [0usize, 1, 8, 2000, usize::MAX] {
        let (s, r) = channel::<(u64, u64)>(capacity);
        let got = open_nursery(|n| async move {
            for sender in 0..4u64 {
                let s = s.clone();
                n.start_soon(async move {
                    for i in 0..PER_SENDER {
                        s.send((sender, i)).await?;
                    }
                    Ok::<_, Error>(())
                })?;
            }
            drop(s);
            let mut handles = Vec::new();
            for _ in 0..4 {
                let r = r.clone();
                handles.push(n.start_soon(async move {
                    let mut got = Vec::new();
                    loop {
                        match r.recv().await {
                            Ok(v) => got.push(v),
                            Err(RecvError::EndOfChannel) => return Ok(got),
                            Err(e) => return Err(Error::from(e)),
                        }
                    }
                })?);
            }
            Ok::<_, Error>(handles)
        })
        .await
        .unwrap()
        .unwrap();
        let mut all = Vec::new();
        for handle in got {
            let got = handle.into_value().unwrap();
            for sender in 0..4 {
                let mine: Vec<u64> = got.iter().filter(|v| v.0 == sender).map(|v| v.1).collect();
                assert!(
                    mine.is_sorted(),
                    "capacity {capacity}: sender {sender} out of order"
                );
            }
            all.extend(got);
        }
        all.sort();
        let expected: Vec<(u64, u64)> = (0..4)
            .flat_map(|sender| (0..PER_SENDER).map(move |i| (sender, i)))
            .collect();
        assert_eq!(all, expected, "capacity {capacity}");
    }
}

/// Closing wakes every waiter at once, however many (more than are woken without allocating):
/// ten receivers see the end of the channel, ten senders get their values back.
async fn closing_wakes_many_waiters() {
    let (s, r) = channel::<u32>(0);
    let ends = open_nursery(|n| {
        let r = r.clone();
        async move {
            let mut handles = Vec::new();
            for _ in 0..10 {
                let r = r.clone();
                handles.push(n.start_soon(async move { Ok::<_, Error>(r.recv().await) })?);
            }
            wait_all_tasks_blocked().await?;
            assert_eq!(s.statistics().tasks_waiting_receive, 10);
            drop(s);
            Ok::<_, Error>(handles)
        }
    })
    .await
    .unwrap()
    .unwrap();
    for handle in ends {
        assert_eq!(handle.into_value().unwrap(), Err(RecvError::EndOfChannel));
    }

    let (s, r) = channel::<u32>(0);
    let backs = open_nursery(|n| {
        let s = s.clone();
        async move {
            let mut handles = Vec::new();
            for i in 0..10 {
                let s = s.clone();
                handles.push(n.start_soon(async move { Ok::<_, Error>(s.send(i).await) })?);
            }
            wait_all_tasks_blocked().await?;
            assert_eq!(r.statistics().tasks_waiting_send, 10);
            r.close();
            Ok::<_, Error>(handles)
        }
    })
    .await
    .unwrap()
    .unwrap();
    for (i, handle) in backs.into_iter().enumerate() {
        assert_eq!(
            handle.into_value().unwrap(),
            Err(SendError::Broken(i as u32))
        );
    }
}

/// The last receiver closes while senders on other threads keep sending: every value is
/// either handed back as `Broken` or dropped with the buffer; none is left behind in it.
async fn close_while_sending_leaves_nothing_behind() {
    let token = Arc::new(());
    let (s, r) = channel::<Arc<()>>(64);
    let kept = s.clone();
    open_nursery(|n| {
        let token = token.clone();
        async move {
            for _ in 0..2 {
                let s = s.clone();
                let token = token.clone();
                n.start_soon(async move {
                    loop {
                        match s.send(token.clone()).await {
                            Ok(()) => {}
                            Err(SendError::Broken(_)) => return Ok(()),
                            Err(e) => return Err(Error::from(e)),
                        }
                    }
                })?;
            }
            for _ in 0..100 {
                r.recv().await?;
            }
            r.close();
            Ok::<_, Error>(())
        }
    })
    .await
    .unwrap();
    // `kept` still holds the channel open: a value left in the buffer would still exist.
    assert_eq!(kept.statistics().current_buffer_used, 0);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "a value was left in the buffer"
    );
}

/// Cancelling a pending operation in a cancelled scope: a cancel point even when it could
/// complete.
async fn operations_fail_in_cancelled_scope() {
    let (s, r) = channel::<u32>(4);
    s.try_send(1).unwrap();
    let scope = CancelScope::new();
    scope.cancel();
    let r2 = scope
        .run(async {
            assert_eq!(s.send(2).await, Err(SendError::Cancelled(2)));
            assert_eq!(r.recv().await, Err(RecvError::Cancelled));
            Err::<(), _>(Cancelled::new())
        })
        .await;
    assert_eq!(r2, Ok(None));
    assert_eq!(r.try_recv(), Ok(1));
    assert_eq!(r.try_recv(), Err(TryRecvError::Empty));
}

/// Receivers are streams of the channel's values.
async fn receiver_is_a_stream() {
    let (s, mut r) = channel::<u32>(4);
    s.try_send(1).unwrap();
    s.try_send(2).unwrap();
    drop(s);
    assert_eq!(next(&mut r).await, Some(1));
    assert_eq!(next(&mut r).await, Some(2));
    assert_eq!(next(&mut r).await, None);
}

/// Dropping every sender ends the channel for a waiting receiver.
async fn dropping_senders_ends_waiting_receiver() {
    let (s, r) = channel::<u32>(4);
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(r.recv().await, Err(RecvError::EndOfChannel));
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        drop(s);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

autojump!(cancelled_recv_leaves_channel_usable);

/// Senders are Sinks: a started value is delivered by flush, which waits for room; close
/// ends the channel.
async fn sender_is_a_sink() {
    use futures_sink::Sink;
    use std::future::poll_fn;
    let (mut s, r) = channel::<u32>(1);
    poll_fn(|cx| Pin::new(&mut s).poll_ready(cx)).await.unwrap();
    Pin::new(&mut s).start_send(1).unwrap();
    poll_fn(|cx| Pin::new(&mut s).poll_flush(cx)).await.unwrap();
    Pin::new(&mut s).start_send(2).unwrap();
    open_nursery(|n| async move {
        n.start_soon(async move {
            assert_eq!(r.recv().await, Ok(1));
            assert_eq!(r.recv().await, Ok(2));
            assert_eq!(r.recv().await, Err(RecvError::EndOfChannel));
            Ok::<_, Error>(())
        })?;
        // The buffer is full until the task receives: flushing waits for it.
        poll_fn(|cx| Pin::new(&mut s).poll_flush(cx)).await?;
        poll_fn(|cx| Pin::new(&mut s).poll_close(cx)).await?;
        assert!(s.is_closed());
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

both_flavors!(
    sender_is_a_sink,
    basics,
    multiple_producers,
    multiple_consumers,
    close_sender_wakes_blocked_send,
    close_receiver_breaks_blocked_send,
    close_receiver_wakes_blocked_recv,
    receiver_clone_and_close,
    close_one_of_several_senders,
    close_one_of_several_receivers,
    unbounded_capacity,
    statistics,
    fairness,
    unbuffered_rendezvous,
    cancelled_send_returns_value,
    send_taken_before_cancel_succeeds,
    recv_handed_value_before_cancel_keeps_it,
    dropped_recv_puts_value_back,
    operations_fail_in_cancelled_scope,
    receiver_is_a_stream,
    dropping_senders_ends_waiting_receiver,
    capacity_is_exact,
    many_tasks_lose_nothing,
    close_while_sending_leaves_nothing_behind,
    closing_wakes_many_waiters,
);
