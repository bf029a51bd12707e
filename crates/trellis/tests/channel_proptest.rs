//! Random interleavings of send / receive / close / clone / cancel on a channel, driven by hand
//! with a no-op waker: no value is ever lost or delivered twice.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;
use trellis::channel::{Receiver, RecvError, SendError, Sender, channel};
use trellis::{CancelScope, Cancelled};

#[derive(Debug, Clone)]
enum Op {
    Send(usize),
    Recv(usize),
    Poll(usize),
    Cancel(usize),
    DropRecv(usize),
    CloneSender(usize),
    CloseSender(usize),
    CloneReceiver(usize),
    CloseReceiver(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let i = 0usize..8;
    prop_oneof![
        3 => i.clone().prop_map(Op::Send),
        3 => i.clone().prop_map(Op::Recv),
        6 => i.clone().prop_map(Op::Poll),
        2 => i.clone().prop_map(Op::Cancel),
        1 => i.clone().prop_map(Op::DropRecv),
        1 => i.clone().prop_map(Op::CloneSender),
        1 => i.clone().prop_map(Op::CloseSender),
        1 => i.clone().prop_map(Op::CloneReceiver),
        1 => i.prop_map(Op::CloseReceiver),
    ]
}

enum Done {
    Sent(u64, Result<(), SendError<u64>>),
    Received(Result<u64, RecvError>),
}

struct Pending {
    scope: CancelScope,
    is_recv: bool,
    future: Pin<Box<dyn Future<Output = Option<Done>>>>,
}

#[derive(Default)]
struct Ledger {
    /// value -> times delivered into the channel (sent Ok)
    delivered: BTreeMap<u64, u32>,
    /// value -> times received
    received: BTreeMap<u64, u32>,
}

impl Ledger {
    fn record(&mut self, done: Done) {
        match done {
            Done::Sent(v, Ok(())) => *self.delivered.entry(v).or_default() += 1,
            // Every failure hands the value back: it was not delivered.
            Done::Sent(v, Err(e)) => assert_eq!(e.into_inner(), v),
            Done::Received(Ok(v)) => *self.received.entry(v).or_default() += 1,
            Done::Received(Err(_)) => {}
        }
    }
}

fn poll_once(p: &mut Pending) -> Poll<Option<Done>> {
    p.future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
}

fn run(capacity: usize, ops: Vec<Op>) {
    let (tx, rx) = channel::<u64>(capacity);
    // A receiver that is never closed until the end, so that buffered values can be drained
    // and counted instead of being discarded.
    let drain = rx.clone();
    let mut senders: Vec<Arc<Sender<u64>>> = vec![Arc::new(tx)];
    let mut receivers: Vec<Arc<Receiver<u64>>> = vec![Arc::new(rx)];
    let mut pending: Vec<Pending> = Vec::new();
    let mut ledger = Ledger::default();
    let mut next_value = 0u64;

    for op in ops {
        match op {
            Op::Send(h) => {
                let sender = senders[h % senders.len()].clone();
                let value = next_value;
                next_value += 1;
                let scope = CancelScope::new();
                let run_scope = scope.clone();
                let future = Box::pin(async move {
                    let outcome = run_scope
                        .run(async { Ok::<_, Cancelled>(sender.send(value).await) })
                        .await;
                    outcome.ok().flatten().map(|r| Done::Sent(value, r))
                });
                pending.push(Pending {
                    scope,
                    is_recv: false,
                    future,
                });
            }
            Op::Recv(h) => {
                let receiver = receivers[h % receivers.len()].clone();
                let scope = CancelScope::new();
                let run_scope = scope.clone();
                let future = Box::pin(async move {
                    let outcome = run_scope
                        .run(async { Ok::<_, Cancelled>(receiver.recv().await) })
                        .await;
                    outcome.ok().flatten().map(Done::Received)
                });
                pending.push(Pending {
                    scope,
                    is_recv: true,
                    future,
                });
            }
            Op::Poll(i) | Op::Cancel(i) if !pending.is_empty() => {
                let at = i % pending.len();
                if let Op::Cancel(_) = op {
                    pending[at].scope.cancel();
                }
                if let Poll::Ready(done) = poll_once(&mut pending[at]) {
                    pending.swap_remove(at);
                    ledger.record(done.expect("outcomes are returned inside the scope"));
                }
            }
            Op::DropRecv(i) => {
                if let Some(at) = (0..pending.len())
                    .map(|k| (k + i) % pending.len())
                    .find(|&k| pending[k].is_recv)
                {
                    // A receive dropped mid-wait puts any value handed to it back.
                    pending.swap_remove(at);
                }
            }
            Op::CloneSender(h) => {
                let clone = senders[h % senders.len()].as_ref().clone();
                senders.push(Arc::new(clone));
            }
            Op::CloseSender(h) => senders[h % senders.len()].close(),
            Op::CloneReceiver(h) => {
                let clone = receivers[h % receivers.len()].as_ref().clone();
                receivers.push(Arc::new(clone));
            }
            Op::CloseReceiver(h) => receivers[h % receivers.len()].close(),
            Op::Poll(_) | Op::Cancel(_) => {}
        }
    }

    // Wind down: cancel whatever still waits (a send whose value was taken completes Ok).
    for mut p in pending.drain(..) {
        p.scope.cancel();
        match poll_once(&mut p) {
            Poll::Ready(done) => {
                ledger.record(done.expect("outcomes are returned inside the scope"))
            }
            Poll::Pending => panic!("a cancelled operation must finish at once"),
        }
    }
    senders.iter().for_each(|s| s.close());
    while let Ok(v) = drain.try_recv() {
        *ledger.received.entry(v).or_default() += 1;
    }
    // Nothing duplicated, nothing lost: each delivered value received exactly once, and
    // nothing received that was not delivered.
    assert_eq!(ledger.delivered, ledger.received);
    assert!(ledger.received.values().all(|&n| n == 1));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn no_value_lost_or_duplicated(capacity in 0usize..4, ops in proptest::collection::vec(op(), 1..80)) {
        run(capacity, ops);
    }

    /// The other kinds of buffer: the growable one beyond the largest ring, and unbounded.
    #[test]
    fn no_value_lost_or_duplicated_in_large_buffers(
        capacity in prop_oneof![Just(1025usize), Just(usize::MAX)],
        ops in proptest::collection::vec(op(), 1..80),
    ) {
        run(capacity, ops);
    }
}
