//! loom models of the channel and the broadcast receiver: every interleaving of a few threads,
//! checked for lost or duplicated values and for hangs (a lost wake-up deadlocks the model).
//!
//! Run with `RUSTFLAGS="--cfg trellis_loom" cargo test -p trellis --release --test loom`.
#![cfg(trellis_loom)]

use loom::future::block_on;
use loom::thread;
use trellis::broadcast::broadcast_receiver;
use trellis::channel::{RecvError, SendError, TrySendError, channel};

/// A rendezvous hand-off between two threads: delivered exactly once, sender released.
#[test]
fn rendezvous_hand_off() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(0);
        let sender = thread::spawn(move || block_on(tx.send(7)));
        assert_eq!(block_on(rx.recv()), Ok(7));
        assert_eq!(sender.join().unwrap(), Ok(()));
    });
}

/// Two senders, one slot: both values arrive, once each, and the end follows.
///
/// Three threads: explored up to three preemptions (about 10 s; unbounded it runs for hours).
/// `LOOM_MAX_PREEMPTIONS` overrides the bound.
#[test]
fn two_senders_one_slot() {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(3);
    }
    builder.check(|| {
        let (tx, rx) = channel::<u32>(1);
        let tx2 = tx.clone();
        let a = thread::spawn(move || block_on(tx.send(1)));
        let b = thread::spawn(move || block_on(tx2.send(2)));
        let mut got = vec![block_on(rx.recv()).unwrap(), block_on(rx.recv()).unwrap()];
        got.sort();
        assert_eq!(got, [1, 2]);
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
        assert_eq!(block_on(rx.recv()), Err(RecvError::EndOfChannel));
    });
}

/// Closing the receiver while a sender waits: the sender gets its value back (Broken), never
/// hangs.
#[test]
fn close_receiver_while_sending() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(0);
        let sender = thread::spawn(move || block_on(tx.send(3)));
        rx.close();
        match sender.join().unwrap() {
            Err(SendError::Broken(3)) => {}
            other => panic!("unexpected {other:?}"),
        }
    });
}

/// try_send racing a receiver close: either the value is refused as Broken or it was buffered
/// before the close (and discarded with the buffer); never both, never a panic.
#[test]
fn try_send_races_close() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(1);
        let closer = thread::spawn(move || rx.close());
        let outcome = tx.try_send(1);
        closer.join().unwrap();
        assert!(matches!(outcome, Ok(()) | Err(TrySendError::Broken(1))));
        assert_eq!(tx.try_send(2), Err(TrySendError::Broken(2)));
    });
}

/// A send without the lock against a receiver that finds the buffer empty and registers: the
/// pusher sees the waiter or the waiter sees the value, in every interleaving.
#[test]
fn lockless_send_meets_a_registering_receiver() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(1);
        // The sender stays open until the value is received: only the hand-over can wake
        // the receiver, not the end of the channel.
        let sender = thread::spawn(move || {
            assert_eq!(block_on(tx.send(1)), Ok(()));
            tx
        });
        assert_eq!(block_on(rx.recv()), Ok(1));
        drop(sender.join().unwrap());
        assert_eq!(block_on(rx.recv()), Err(RecvError::EndOfChannel));
    });
}

/// A receive without the lock against a sender that finds the buffer full and registers: the
/// sender's value moves into the room the receive made, in order.
#[test]
fn lockless_receive_refills_from_a_waiting_sender() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(1);
        tx.try_send(1).unwrap();
        let sender = thread::spawn(move || {
            assert_eq!(block_on(tx.send(2)), Ok(()));
            tx
        });
        assert_eq!(block_on(rx.recv()), Ok(1));
        // Only the receive of 1 can release the sender: it must have moved 2 into the buffer.
        let tx = sender.join().unwrap();
        assert_eq!(block_on(rx.recv()), Ok(2));
        drop(tx);
        assert_eq!(block_on(rx.recv()), Err(RecvError::EndOfChannel));
    });
}

/// The last receiver closes as a send without the lock pushes: the value is handed back as
/// Broken or dropped with the buffer, never left behind in it.
#[test]
fn receiver_close_races_a_lockless_send() {
    loom::model(|| {
        let (tx, rx) = channel::<std::sync::Arc<()>>(1);
        let token = std::sync::Arc::new(());
        let closer = thread::spawn(move || rx.close());
        let outcome = block_on(tx.send(token.clone()));
        assert!(matches!(outcome, Ok(()) | Err(SendError::Broken(_))));
        drop(outcome);
        closer.join().unwrap();
        assert_eq!(
            std::sync::Arc::strong_count(&token),
            1,
            "a value was left behind"
        );
        assert_eq!(tx.statistics().current_buffer_used, 0);
    });
}

/// Two subscribers on two threads each receive the one value, whoever pulls it.
#[test]
fn broadcast_two_subscribers() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(1);
        let first = broadcast_receiver(rx, 2);
        let second = first.subscribe().unwrap();
        tx.try_send(5).unwrap();
        drop(tx);
        let other = thread::spawn(move || block_on(second.recv()));
        assert_eq!(block_on(first.recv()), Ok(5));
        assert_eq!(other.join().unwrap(), Ok(5));
    });
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: std::future::Future + Unpin>(future: &mut F) -> std::task::Poll<F::Output> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    std::pin::Pin::new(future).poll(&mut cx)
}

/// A waiting receive dropped as a sender hands it a value loses nothing: the value goes back to
/// the front of the channel and the next receiver gets it, exactly once.
#[test]
fn dropped_receive_puts_a_handed_value_back() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(0);
        let rx2 = rx.clone();
        let mut waiting = Box::pin(rx.recv());
        assert!(poll_once(&mut waiting).is_pending());
        let sender = thread::spawn(move || block_on(tx.send(9)));
        drop(waiting);
        assert_eq!(block_on(rx2.recv()), Ok(9));
        assert_eq!(sender.join().unwrap(), Ok(()));
        assert_eq!(block_on(rx2.recv()), Err(RecvError::EndOfChannel));
    });
}

/// A waiting send dropped while a receiver takes values: the receiver gets the value at most
/// once, and a later value still goes through (no stale waiter is left behind).
#[test]
fn dropped_send_leaves_no_stale_waiter() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(0);
        let tx2 = tx.clone();
        let mut waiting = Box::pin(tx.send(4));
        assert!(poll_once(&mut waiting).is_pending());
        let receiver = thread::spawn(move || {
            let first = block_on(rx.recv()).unwrap();
            let second = if first == 4 {
                block_on(rx.recv()).unwrap()
            } else {
                first
            };
            (first, second)
        });
        drop(waiting);
        drop(tx);
        assert_eq!(block_on(tx2.send(5)), Ok(()));
        let (first, second) = receiver.join().unwrap();
        assert!(
            (first, second) == (4, 5) || (first, second) == (5, 5),
            "got {first}, {second}"
        );
    });
}

/// Lossless mode with a buffer of one: the source is pulled only as the slowest subscriber
/// allows, and both subscribers, on two threads, get every value in order.
#[test]
fn lossless_broadcast_waits_for_the_slowest() {
    loom::model(|| {
        let (tx, rx) = channel::<u32>(2);
        tx.try_send(1).unwrap();
        tx.try_send(2).unwrap();
        drop(tx);
        let first = trellis::broadcast::lossless_broadcast_receiver(rx, 1);
        let second = first.subscribe().unwrap();
        let other = thread::spawn(move || {
            let a = block_on(second.recv()).unwrap();
            let b = block_on(second.recv()).unwrap();
            (a, b)
        });
        let a = block_on(first.recv()).unwrap();
        let b = block_on(first.recv()).unwrap();
        assert_eq!((a, b), (1, 2));
        assert_eq!(other.join().unwrap(), (1, 2));
    });
}
