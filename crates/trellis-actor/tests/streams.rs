//! One-way streams, contexts, flow control and subscriptions between real actor processes,
//! each test over Unix sockets and over TCP. Ported from tractor's
//! `test_context_stream_semantics.py`, `test_legacy_one_way_streaming.py`,
//! `test_task_broadcasting.py`, `test_inter_peer_cancellation.py` and
//! `test_advanced_faults.py`; the original is named on each test.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use trellis_actor::{
    ActorError, Config, Context, DEFAULT_CAPACITY, Flow, Functions, GROWN_CAPACITY, MsgStream,
    RemoteActorError, StreamOptions, StreamOverrun, Transport, open_nursery,
};

static CANCELS: AtomicU32 = AtomicU32::new(0);
static SENT: AtomicU64 = AtomicU64::new(0);
static HOLDING: AtomicU32 = AtomicU32::new(0);

/// Counts the cancellations `body` sees.
async fn counting_cancels<T>(
    body: impl std::future::Future<Output = Result<T, trellis::Error>>,
) -> Result<T, trellis::Error> {
    let outcome = body.await;
    if outcome.as_ref().is_err_and(|e| e.is_cancelled()) {
        CANCELS.fetch_add(1, Ordering::SeqCst);
    }
    outcome
}

async fn cancels_seen() -> Result<u32, trellis::Error> {
    Ok(CANCELS.load(Ordering::SeqCst))
}

async fn sent_so_far() -> Result<u64, trellis::Error> {
    Ok(SENT.load(Ordering::SeqCst))
}

async fn holding() -> Result<u32, trellis::Error> {
    Ok(HOLDING.load(Ordering::SeqCst))
}

async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 1..=n {
        stream.send(i).await?;
    }
    Ok(())
}

async fn count_forever(stream: MsgStream<Infallible, u64>) -> Result<(), trellis::Error> {
    counting_cancels(async {
        for i in 0.. {
            stream.send(i).await?;
        }
        Ok(())
    })
    .await
}

async fn fail_after(stream: MsgStream<Infallible, u64>, k: u64) -> Result<(), trellis::Error> {
    for i in 0..k {
        stream.send(i).await?;
    }
    Err(trellis::Error::msg(format!("failed after {k} items")))
}

async fn doubled(ctx: Context, start: u64) -> Result<u64, trellis::Error> {
    ctx.started(start).await?;
    Ok(start * 2)
}

async fn started_twice(ctx: Context) -> Result<(), trellis::Error> {
    ctx.started(1u8).await?;
    Ok(ctx.started(2u8).await?)
}

async fn stream_before_started(ctx: Context) -> Result<(), trellis::Error> {
    ctx.open_stream::<u64, u64>()?;
    Ok(())
}

async fn never_starts(_ctx: Context) -> Result<(), trellis::Error> {
    Ok(())
}

/// Answers each number with its successor; returns how many it answered.
async fn successor(ctx: Context) -> Result<u64, trellis::Error> {
    ctx.started(()).await?;
    let stream = ctx.open_stream::<u64, u64>()?;
    let mut answered = 0;
    while let Some(x) = stream.recv().await? {
        stream.send(x + 1).await?;
        answered += 1;
    }
    Ok(answered)
}

async fn sleeping_context(ctx: Context) -> Result<(), trellis::Error> {
    ctx.started(()).await?;
    HOLDING.fetch_add(1, Ordering::SeqCst);
    counting_cancels(async { Ok(trellis::sleep_forever().await?) })
        .await
        .map(|_: Infallible| ())
}

/// Opens its receiving end in overrun mode with `capacity`, then never reads.
async fn never_reads(ctx: Context, capacity: usize) -> Result<(), trellis::Error> {
    ctx.set_stream_options(StreamOptions::new().capacity(capacity).flow(Flow::Overrun));
    ctx.started(()).await?;
    trellis::sleep_forever().await?;
    Ok(())
}

async fn keep_sending(ctx: Context) -> Result<(), trellis::Error> {
    ctx.started(()).await?;
    let stream = ctx.open_stream::<(), u64>()?;
    for i in 0.. {
        stream.send(i).await?;
    }
    Ok(())
}

async fn produce(ctx: Context, n: u64) -> Result<u64, trellis::Error> {
    ctx.started(()).await?;
    let stream = ctx.open_stream::<(), u64>()?;
    for i in 0..n {
        stream.send(i).await?;
        SENT.store(i + 1, Ordering::SeqCst);
    }
    Ok(n)
}

/// Sends back every byte string it receives; returns how many.
async fn echo_bytes(ctx: Context) -> Result<u64, trellis::Error> {
    ctx.started(()).await?;
    let stream = ctx.open_stream::<Bytes, Bytes>()?;
    let mut echoed = 0;
    while let Some(item) = stream.recv().await? {
        stream.send(item).await?;
        echoed += 1;
    }
    Ok(echoed)
}

async fn fail_after_started(ctx: Context) -> Result<(), trellis::Error> {
    ctx.started(()).await?;
    Err(trellis::Error::msg("the callee failed"))
}

/// Holds a context into the actor `name` until it ends; returns who cancelled it.
async fn hold_context_into(name: String) -> Result<String, trellis::Error> {
    let portal = trellis_actor::wait_for_actor(&name).await?;
    let outcome = portal
        .open_context(sleeping_context, (), |ctx, ()| async move {
            Ok(ctx.result().await?)
        })
        .await;
    match outcome {
        Err(e) => match e.downcast_ref::<ActorError>() {
            Some(ActorError::ContextCancelled { requested_by, .. }) => {
                Ok(requested_by.name.clone())
            }
            _ => Err(e),
        },
        Ok(()) => Err(trellis::Error::msg(
            "the context ended without cancellation",
        )),
    }
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(cancels_seen)
            .register(sent_so_far)
            .register(holding)
            .register(count_to)
            .register(count_forever)
            .register(fail_after)
            .register(doubled)
            .register(started_twice)
            .register(stream_before_started)
            .register(never_starts)
            .register(successor)
            .register(sleeping_context)
            .register(never_reads)
            .register(keep_sending)
            .register(produce)
            .register(fail_after_started)
            .register(echo_bytes)
            .register(hold_context_into),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(Duration::from_secs(2))
}

/// In a child process, this test serves as the child actor.
#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

fn root<F, Fut>(transport: Transport, body: F) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    common::root_with(config(), transport, body)
}

fn remote(e: &trellis::Error) -> &RemoteActorError {
    e.downcast_ref::<RemoteActorError>()
        .unwrap_or_else(|| panic!("not a remote error: {e:?}"))
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// Polls `probe` until it is true; fails (rather than hangs) if that takes more than 20 s.
async fn until<F>(mut probe: F) -> Result<(), trellis::Error>
where
    F: AsyncFnMut() -> Result<bool, trellis::Error>,
{
    trellis::fail_after(Duration::from_secs(20), async {
        while !probe().await? {
            trellis::sleep(Duration::from_millis(2)).await?;
        }
        Ok::<_, trellis::Error>(())
    })
    .await
}

/// tractor: test_legacy_one_way_streaming.py::test_stream_from_single_subactor — every item
/// arrives, in order, then the stream ends.
fn one_way_stream_delivers_every_item(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let items = streamer
                .open_stream_from(count_to, (1000,), |stream| async move {
                    let mut items = Vec::new();
                    while let Some(i) = stream.recv().await? {
                        items.push(i);
                    }
                    Ok(items)
                })
                .await?;
            assert_eq!(items, (1..=1000).collect::<Vec<u64>>());
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_legacy_one_way_streaming.py::test_stream_from_single_subactor (breaking out
/// of the stream early) — leaving the body cancels the remote function, and the caller sees
/// no error for it.
fn leaving_a_one_way_stream_early_cancels_the_remote(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let first = streamer
                .open_stream_from(count_forever, (), |stream| async move {
                    let mut first = Vec::new();
                    for _ in 0..5 {
                        first.push(stream.recv().await?.expect("an endless stream"));
                    }
                    Ok(first)
                })
                .await?;
            assert_eq!(first, vec![0, 1, 2, 3, 4]);
            assert_eq!(streamer.run(cancels_seen, ()).await?, 1);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_legacy_one_way_streaming.py::test_a_quadruple_example (an error in the
/// streaming function) — the caller reads items sent before the failure, then the remote
/// error (not a cancellation), whether the error reached it while it read or in between. As
/// in tractor, the failure cancels the caller's body at once: items still unread are dropped.
fn remote_stream_failure_ends_the_caller_with_it(transport: Transport) {
    let mut received = Vec::new();
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            streamer
                .open_stream_from(fail_after, (3,), |stream| async move {
                    loop {
                        match stream.recv().await {
                            Ok(Some(i)) => received.push(i),
                            Ok(None) => panic!("the stream ended without its error"),
                            Err(e) => {
                                assert!([0, 1, 2].starts_with(&received), "{received:?}");
                                return Err(e.into());
                            }
                        }
                    }
                })
                .await
        })
        .await
    })
    .unwrap_err();
    let err = err.into_single().unwrap_or_else(|e| e);
    assert_eq!(remote(&err).message(), "failed after 3 items");
}

/// tractor: test_context_stream_semantics.py::test_simple_context — the started value, then
/// the function's result.
fn context_gives_started_value_then_result(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let (first, result) = portal
                .open_context(doubled, (21,), |ctx, first: u64| async move {
                    Ok((first, ctx.result().await?))
                })
                .await?;
            assert_eq!((first, result), (21, 42));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_started_misuse — `started` twice, a
/// stream before `started`, and no `started` at all are errors that reach the caller.
fn started_misuse_is_an_error(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let err = portal
                .open_context(started_twice, (), |ctx, _: u8| async move {
                    Ok(ctx.result().await?)
                })
                .await
                .unwrap_err();
            assert!(remote(&err).message().contains("`started` called twice"));

            let err = portal
                .open_context(stream_before_started, (), |_ctx, ()| async move { Ok(()) })
                .await
                .unwrap_err();
            assert!(remote(&err).message().contains("before `started`"));

            let err = portal
                .open_context(never_starts, (), |_ctx, ()| async move { Ok(()) })
                .await
                .unwrap_err();
            assert!(
                remote(&err)
                    .message()
                    .contains("returned without calling `started`"),
                "{err:?}"
            );
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_simple_rpc — a request/response loop over
/// the two-way stream; closing the caller's end ends the callee's loop and its result.
fn two_way_stream_request_response(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("rpc").await?;
            let answered = portal
                .open_context(successor, (), |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, u64>()?;
                    for x in 0..100u64 {
                        stream.send(x).await?;
                        assert_eq!(stream.recv().await?, Some(x + 1));
                    }
                    stream.close();
                    assert_eq!(stream.recv().await?, None);
                    Ok(ctx.result().await?)
                })
                .await?;
            assert_eq!(answered, 100);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Items sent without waiting (under credit the sending end took ahead, in its own buffer)
/// all arrive before the `Stop` that follows them, and a send after `close` fails at once
/// with `StreamClosed` rather than waiting unsent in that buffer.
fn a_send_after_close_fails_and_every_item_before_it_arrives(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("rpc").await?;
            let answered = portal
                .open_context(successor, (), |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, u64>()?;
                    for x in 0..500u64 {
                        stream.send(x).await?;
                    }
                    stream.close();
                    let late = stream.send(500).await;
                    assert!(
                        matches!(late, Err(ActorError::StreamClosed)),
                        "a send after close: {late:?}"
                    );
                    for x in 0..500u64 {
                        assert_eq!(stream.recv().await?, Some(x + 1));
                    }
                    assert_eq!(stream.recv().await?, None);
                    Ok(ctx.result().await?)
                })
                .await?;
            assert_eq!(answered, 500);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `recv_many` (tokio's `Receiver::recv_many`): every item once, in order, in batches no
/// larger than asked; `0` with a zero limit (taking nothing) and at the end of the stream.
fn recv_many_takes_items_in_order_up_to_its_limit(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let (items, calls) = streamer
                .open_stream_from(count_to, (1000,), |stream| async move {
                    let mut items = vec![0];
                    assert_eq!(stream.recv_many(&mut items, 0).await?, 0);
                    let mut calls = 0;
                    loop {
                        let n = stream.recv_many(&mut items, 64).await?;
                        if n == 0 {
                            break;
                        }
                        assert!(n <= 64, "{n} items for a limit of 64");
                        calls += 1;
                    }
                    assert_eq!(stream.recv_many(&mut items, 64).await?, 0);
                    Ok((items, calls))
                })
                .await?;
            assert_eq!(items, (0..=1000).collect::<Vec<u64>>());
            assert!(calls >= 1000 / 64, "{calls} batches");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// An item that does not decode ends `recv_many`'s batch before it; the next call fails with
/// it (as `recv` would), and the stream goes on after it.
fn recv_many_stops_before_an_item_that_does_not_decode(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("rpc").await?;
            portal
                .open_context(successor, (), |ctx, ()| async move {
                    let stream = ctx.open_stream::<u8, u64>()?;
                    for x in [10, 20, 299, 5] {
                        stream.send(x).await?;
                    }
                    let mut items = Vec::new();
                    let error = loop {
                        match stream.recv_many(&mut items, 10).await {
                            Ok(n) => assert!(n > 0 && items.len() <= 2, "{items:?}"),
                            Err(error) => break error,
                        }
                    };
                    assert_eq!(items, [11, 21]);
                    assert!(matches!(error, ActorError::BadItem(_)), "{error:?}");
                    assert_eq!(stream.recv_many(&mut items, 10).await?, 1);
                    assert_eq!(items, [11, 21, 6]);
                    stream.close();
                    assert_eq!(stream.recv_many(&mut items, 10).await?, 0);
                    assert_eq!(ctx.result().await?, 4);
                    Ok(())
                })
                .await?;
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `bytes::Bytes` items go out without a copy when long and come in sharing the frame they
/// arrived in (a long frame read into a buffer of its own): every size around those paths'
/// edges, and the MessagePack `bin` forms, arrives whole and in order both ways, while
/// another call's small items share the connection.
fn bytes_items_of_every_size_arrive_whole(transport: Transport) {
    const SIZES: [usize; 14] = [
        0,
        1,
        255,
        256,
        16_383,
        16_384,
        65_535,
        65_536,
        65_520,
        65_531,
        65_532,
        100_000,
        1 << 20,
        3 << 20,
    ];
    fn item(i: usize, size: usize) -> Bytes {
        (0..size).map(|k| (k * 31 + i * 7) as u8).collect()
    }
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("echo").await?;
            let counter = portal.clone();
            let (echoed, counted) = trellis::open_nursery(|n| async move {
                let mut counted = n.start_soon(async move {
                    counter
                        .open_stream_from(count_to, (5000,), |stream| async move {
                            let mut last = 0;
                            while let Some(i) = stream.recv().await? {
                                assert_eq!(i, last + 1);
                                last = i;
                            }
                            Ok(last)
                        })
                        .await
                })?;
                let echoed = portal
                    .open_context(echo_bytes, (), |ctx, ()| async move {
                        let stream = ctx.open_stream::<Bytes, Bytes>()?;
                        for round in 0..3 {
                            for (i, size) in SIZES.into_iter().enumerate() {
                                let sent = item(i + round, size);
                                stream.send(sent.clone()).await?;
                                let back = stream.recv().await?.expect("an echo");
                                assert_eq!(back.len(), size);
                                assert!(back == sent, "item {i} of {size} bytes differs");
                            }
                        }
                        stream.close();
                        assert_eq!(stream.recv().await?, None);
                        Ok(ctx.result().await?)
                    })
                    .await?;
                let counted = counted.join().await?.expect("the count's end");
                Ok::<_, trellis::Error>((echoed, counted))
            })
            .await?
            .expect("not cancelled");
            assert_eq!(echoed, 3 * SIZES.len() as u64);
            assert_eq!(counted, 5000);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_caller_cancels — a caller that cancels its
/// own context sees no `ContextCancelled` from `open_context`; `result` says who cancelled.
fn caller_cancelling_its_own_context_is_not_an_error(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let canceller = portal
                .open_context(sleeping_context, (), |ctx, ()| async move {
                    ctx.cancel();
                    match ctx.result().await {
                        Err(ActorError::ContextCancelled { requested_by, .. }) => {
                            Ok(requested_by.name)
                        }
                        Err(e) => Err(e.into()),
                        Ok(()) => panic!("a cancelled context returned"),
                    }
                })
                .await?;
            assert_eq!(canceller, "root");
            assert_eq!(portal.run(cancels_seen, ()).await?, 1);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_simple_context (callee errors) — the
/// callee's failure cancels the caller's body and is what `open_context` returns.
fn callee_failure_cancels_the_caller_body(transport: Transport) {
    let body_cancelled = std::sync::Arc::new(AtomicU32::new(0));
    let seen = body_cancelled.clone();
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            portal
                .open_context(fail_after_started, (), |_ctx, ()| async move {
                    let slept = trellis::sleep_forever().await;
                    if slept.is_err() {
                        seen.fetch_add(1, Ordering::SeqCst);
                    }
                    slept?;
                    Ok(())
                })
                .await
        })
        .await
    })
    .unwrap_err();
    let err = err.into_single().unwrap_or_else(|e| e);
    assert_eq!(remote(&err).message(), "the callee failed");
    assert_eq!(body_cancelled.load(Ordering::SeqCst), 1);
}

/// tractor: test_context_stream_semantics.py::test_parent_cancels (the caller's body
/// errors) — the callee is cancelled, and the body's own error is what the caller gets, not
/// the cancellation it caused.
fn caller_body_error_cancels_the_callee_and_is_not_masked(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let err = portal
                .open_context(sleeping_context, (), |_ctx, ()| async move {
                    Err::<(), _>(trellis::Error::msg("the caller's body failed"))
                })
                .await
                .unwrap_err();
            assert_eq!(err.to_string(), "the caller's body failed");
            assert_eq!(portal.run(cancels_seen, ()).await?, 1);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_one_end_stream_not_opened (the parent
/// overruns a callee that never reads) — in overrun mode the callee fails with
/// `StreamOverrun` once more than its capacity is unread, and the caller gets it as a remote
/// error that rebuilds as the real type.
fn overrun_mode_fails_the_receiver_past_its_capacity(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let err = trellis::fail_after(
                Duration::from_secs(10),
                portal.open_context(never_reads, (64,), |ctx, ()| async move {
                    let stream = ctx.open_stream::<(), u64>()?;
                    // The callee grants without limit: none of these waits.
                    for i in 0..65 {
                        stream.send(i).await?;
                    }
                    trellis::sleep_forever().await?;
                    Ok(())
                }),
            )
            .await
            .unwrap_err();
            let overrun = remote(&err)
                .rebuilt::<StreamOverrun>()
                .unwrap_or_else(|| panic!("not an overrun: {err:?}"));
            assert_eq!(overrun.capacity, 64);
            assert!(overrun.sender.starts_with("root#"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_context_stream_semantics.py::test_one_end_stream_not_opened (the child
/// overruns a parent that never opens its stream) — the caller's receiving end overruns: its
/// body is cancelled and `open_context` fails with `StreamOverrun`; the callee is cancelled.
fn caller_overrun_fails_open_context(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("ctx").await?;
            let options = StreamOptions::new().capacity(8).flow(Flow::Overrun);
            let err = portal
                .open_context_with(keep_sending, (), options, |_ctx, ()| async move {
                    trellis::sleep_forever().await?;
                    Ok(())
                })
                .await
                .unwrap_err();
            let overrun = err
                .downcast_ref::<StreamOverrun>()
                .unwrap_or_else(|| panic!("not an overrun: {err:?}"));
            assert_eq!(overrun.capacity, 8);
            assert!(overrun.receiver.starts_with("root#"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// Backpressure (tractor has none; its `test_maybe_allow_overruns_stream` is the nearest):
/// a producer faster than its consumer sends no more than the consumer's capacity ahead, and
/// every item arrives, in order.
fn backpressure_holds_the_producer_and_loses_nothing(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("producer").await?;
            let probe = portal.clone();
            let options = StreamOptions::new().capacity(8);
            let received = portal
                .open_context_with(produce, (500,), options, |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, ()>()?;
                    // The producer runs until its credit is used up...
                    until(async || Ok(probe.run(sent_so_far, ()).await? == 8)).await?;
                    // ...and stays held there while nothing is read.
                    trellis::sleep(Duration::from_millis(50)).await?;
                    assert_eq!(probe.run(sent_so_far, ()).await?, 8);
                    let mut received = Vec::new();
                    while let Some(i) = stream.recv().await? {
                        received.push(i);
                    }
                    assert_eq!(ctx.result().await?, 500);
                    Ok(received)
                })
                .await?;
            assert_eq!(received, (0..500).collect::<Vec<u64>>());
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// The default window grows for small items: after the first quarter of it is read, the
/// producer may run ahead by the grown window (`GROWN_CAPACITY`) rather than the first one,
/// is held there while nothing more is read, and every item arrives, in order.
fn a_default_window_grows_for_small_items(transport: Transport) {
    let (first, grown) = (DEFAULT_CAPACITY as u64, GROWN_CAPACITY as u64);
    let total = 2 * grown;
    root(transport, || async move {
        open_nursery(|an| async move {
            let portal = an.start_actor("producer").await?;
            let probe = portal.clone();
            let received = portal
                .open_context(produce, (total,), |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, ()>()?;
                    until(async || Ok(probe.run(sent_so_far, ()).await? == first)).await?;
                    // Reading a quarter of the window reports it; the grant that answers
                    // widens the window to its largest (the items are a few bytes each).
                    let mut received = Vec::new();
                    for _ in 0..first / 4 {
                        received.extend(stream.recv().await?);
                    }
                    let ahead = first / 4 + grown;
                    until(async || Ok(probe.run(sent_so_far, ()).await? == ahead)).await?;
                    trellis::sleep(Duration::from_millis(50)).await?;
                    assert_eq!(probe.run(sent_so_far, ()).await?, ahead);
                    while let Some(i) = stream.recv().await? {
                        received.push(i);
                    }
                    assert_eq!(ctx.result().await?, total);
                    Ok(received)
                })
                .await?;
            assert_eq!(received, (0..total).collect::<Vec<u64>>());
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// In `Flow::Unbounded` mode (tractor's `allow_overruns`), the producer never waits: it sends
/// everything while the consumer reads nothing, and nothing is lost.
fn unbounded_mode_never_holds_the_producer(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("producer").await?;
            let probe = portal.clone();
            let options = StreamOptions::new().capacity(8).flow(Flow::Unbounded);
            let received = portal
                .open_context_with(produce, (500,), options, |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, ()>()?;
                    until(async || Ok(probe.run(sent_so_far, ()).await? == 500)).await?;
                    let mut received = Vec::new();
                    while let Some(i) = stream.recv().await? {
                        received.push(i);
                    }
                    Ok(received)
                })
                .await?;
            assert_eq!(received, (0..500).collect::<Vec<u64>>());
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_task_broadcasting.py::test_stream_fan_out_to_local_subscriptions — every
/// subscribing task receives every item, and so does the stream's own `recv`.
fn every_subscriber_gets_every_item(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let options = StreamOptions::new().capacity(1024);
            let totals = streamer
                .open_stream_from_with(count_to, (1000,), options, |stream| async move {
                    let subscriptions: Vec<_> = (0..4).map(|_| stream.subscribe()).collect();
                    let outcome = trellis::open_nursery(|n| async move {
                        let mut handles = Vec::new();
                        // The stream's own `recv` reads as one more subscriber.
                        handles.push(n.start_soon(async move {
                            let mut items = Vec::new();
                            while let Some(i) = stream.recv().await? {
                                items.push(i);
                            }
                            Ok::<_, trellis::Error>(items)
                        })?);
                        for sub in subscriptions {
                            handles.push(n.start_soon(async move {
                                let mut items = Vec::new();
                                while let Some(i) = sub.recv().await? {
                                    items.push(i);
                                }
                                Ok::<_, trellis::Error>(items)
                            })?);
                        }
                        Ok::<_, trellis::Error>(handles)
                    })
                    .await?
                    .expect("not cancelled");
                    Ok(outcome
                        .into_iter()
                        .map(|h| h.into_value().expect("finished"))
                        .collect::<Vec<_>>())
                })
                .await?;
            assert_eq!(totals.len(), 5);
            for items in totals {
                assert_eq!(items, (1..=1000).collect::<Vec<u64>>());
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_task_broadcasting.py::test_ensure_slow_consumers_lag_out — a subscriber
/// that fell behind the kept items gets `Lagged` with exactly the count it missed, then the
/// oldest item kept.
fn lagging_subscriber_gets_the_exact_count(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let options = StreamOptions::new().capacity(16);
            streamer
                .open_stream_from_with(count_to, (100,), options, |stream| async move {
                    let fast = stream.subscribe();
                    let slow = stream.subscribe();
                    for i in 1..=100 {
                        assert_eq!(fast.recv().await?, Some(i));
                    }
                    let lagged = slow.recv().await.unwrap_err();
                    assert!(matches!(lagged, ActorError::Lagged(84)), "{lagged:?}");
                    for i in 85..=100 {
                        assert_eq!(slow.recv().await?, Some(i));
                    }
                    assert_eq!(slow.recv().await?, None);
                    assert_eq!(fast.recv().await?, None);
                    Ok(())
                })
                .await
        })
        .await
    })
    .unwrap();
}

/// Lossless subscribers (tractor has none; B4's rule over IPC): with a buffer of 4 and one
/// slow subscriber, nobody lags and every subscriber gets all 300 items.
fn lossless_subscribers_never_lag(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let options = StreamOptions::new().capacity(4).lossless_subscribers();
            let totals = streamer
                .open_stream_from_with(count_to, (300,), options, |stream| async move {
                    let subs: Vec<_> = (0..3).map(|_| stream.subscribe()).collect();
                    let handles = trellis::open_nursery(|n| async move {
                        let mut handles = Vec::new();
                        for (k, sub) in subs.into_iter().enumerate() {
                            handles.push(n.start_soon(async move {
                                let mut items = Vec::new();
                                while let Some(i) = sub.recv().await? {
                                    items.push(i);
                                    if k == 0 {
                                        for _ in 0..5 {
                                            trellis::checkpoint().await?;
                                        }
                                    }
                                }
                                Ok::<_, trellis::Error>(items)
                            })?);
                        }
                        Ok::<_, trellis::Error>(handles)
                    })
                    .await?
                    .expect("not cancelled");
                    Ok(handles
                        .into_iter()
                        .map(|h| h.into_value().expect("finished"))
                        .collect::<Vec<_>>())
                })
                .await?;
            for items in totals {
                assert_eq!(items, (1..=300).collect::<Vec<u64>>());
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_task_broadcasting.py::test_faster_task_to_recv_is_cancelled_by_slower — a
/// subscriber cancelled while it pulls from the stream loses nothing for the others.
fn cancelling_a_fast_subscriber_loses_nothing_for_a_slow_one(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("rpc").await?;
            portal
                .open_context(successor, (), |ctx, ()| async move {
                    let stream = ctx.open_stream::<u64, u64>()?;
                    let fast = stream.subscribe();
                    let slow = stream.subscribe();
                    for x in 0..20u64 {
                        // The fast one waits for the next item, pulling, and is cancelled.
                        let pulled =
                            trellis::move_on_after(Duration::from_millis(1), fast.recv()).await?;
                        assert_eq!(pulled, None, "nothing was asked for yet");
                        stream.send(x).await?;
                        assert_eq!(slow.recv().await?, Some(x + 1));
                        assert_eq!(fast.recv().await?, Some(x + 1));
                    }
                    Ok(())
                })
                .await
        })
        .await
    })
    .unwrap();
}

/// tractor: test_resource_cache.py::test_open_local_sub_to_stream — one stream from an actor,
/// opened once through the resource cache and shared by many local tasks, each with its own
/// subscription getting consecutive items; the stream (and the remote call) closes with the
/// last user.
fn shared_stream_through_the_resource_cache(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("streamer").await?;
            let opened = std::sync::Arc::new(AtomicU32::new(0));
            let count = opened.clone();
            trellis::open_nursery(|service| async move {
                let cache = trellis::resource::ResourceCache::<&str, MsgStream<u64>>::new(&service);
                // Every user holds the stream until all five have subscribed, so they share it.
                let joined = std::sync::Arc::new(AtomicU32::new(0));
                let all_in = std::sync::Arc::new(trellis::sync::Event::new());
                trellis::open_nursery(|users| async move {
                    for _ in 0..5 {
                        let (cache, portal, count) = (cache.clone(), portal.clone(), count.clone());
                        let (joined, all_in) = (joined.clone(), all_in.clone());
                        let feed = move |provide: trellis::resource::Provide<MsgStream<u64>>| async move {
                            count.fetch_add(1, Ordering::SeqCst);
                            portal
                                .open_stream_from(count_forever, (), |stream| async move {
                                    Ok(provide.provide(stream).await?)
                                })
                                .await
                        };
                        users.start_soon(async move {
                            cache
                                .open("numbers", feed, |stream, _hit| async move {
                                    let sub = stream.subscribe();
                                    if joined.fetch_add(1, Ordering::SeqCst) == 4 {
                                        all_in.set();
                                    }
                                    all_in.wait().await?;
                                    let first = sub.recv().await?.expect("endless");
                                    for i in 1..10 {
                                        assert_eq!(sub.recv().await?, Some(first + i));
                                    }
                                    Ok::<_, trellis::Error>(())
                                })
                                .await
                        })?;
                    }
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                Ok::<_, trellis::Error>(())
            })
            .await?;
            assert_eq!(opened.load(Ordering::SeqCst), 1);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_inter_peer_cancellation.py::test_peer_canceller — when an actor is
/// cancelled, every peer holding a context into it gets `ContextCancelled` naming the
/// canceller.
fn peer_cancellation_reaches_every_context_holder(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let target = an.start_actor("target").await?;
            let a = an.start_actor("holder-a").await?;
            let b = an.start_actor("holder-b").await?;
            let (a_saw, b_saw) =
                trellis::open_nursery(|n| async move {
                    let a_saw = n.start_soon(async move {
                        a.run(hold_context_into, ("target".to_owned(),)).await
                    })?;
                    let b_saw = n.start_soon(async move {
                        b.run(hold_context_into, ("target".to_owned(),)).await
                    })?;
                    until(async || Ok(target.run(holding, ()).await? == 2)).await?;
                    target.cancel_actor().await?;
                    Ok::<_, trellis::Error>((a_saw, b_saw))
                })
                .await?
                .expect("not cancelled");
            assert_eq!(a_saw.into_value().as_deref(), Some("root"));
            assert_eq!(b_saw.into_value().as_deref(), Some("root"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_advanced_faults.py::test_ipc_channel_break_during_stream — a child killed
/// mid-stream: the caller's stream fails with a typed error, the tree comes down, and no
/// process is left.
fn ipc_break_mid_stream_is_a_typed_error(transport: Transport) {
    let child_pid = std::sync::Arc::new(AtomicU32::new(0));
    let seen = child_pid.clone();
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let streamer = an.start_actor("streamer").await?;
            let pid = streamer.pid();
            seen.store(pid, Ordering::SeqCst);
            streamer
                .open_stream_from(count_forever, (), |stream| async move {
                    for _ in 0..10 {
                        stream.recv().await?;
                    }
                    nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid as i32),
                        nix::sys::signal::Signal::SIGKILL,
                    )
                    .expect("kill the child");
                    loop {
                        stream.recv().await?;
                    }
                })
                .await
        })
        .await
    })
    .unwrap_err();
    let leaves: Vec<_> = match err.as_group() {
        Some(group) => group.leaves().collect(),
        None => vec![&err],
    };
    assert!(
        leaves.iter().any(|e| matches!(
            e.downcast_ref::<ActorError>(),
            Some(ActorError::ConnectionLost { .. } | ActorError::Died { .. })
        )),
        "{err:?}"
    );
    assert!(!alive(child_pid.load(Ordering::SeqCst)));
}

/// An item that does not decode as the receiver's type is a typed error, not a panic.
fn item_of_the_wrong_type_is_a_typed_error(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("rpc").await?;
            let err = portal
                .open_context(successor, (), |ctx, ()| async move {
                    let stream = ctx.open_stream::<String, u64>()?;
                    stream.send(1).await?;
                    Ok(stream.recv().await?)
                })
                .await
                .unwrap_err();
            assert!(
                matches!(err.downcast_ref(), Some(ActorError::BadItem(text)) if text.contains("String")),
                "{err:?}"
            );
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A stream function called as a run call (or the other way round) is refused with a typed
/// remote error.
fn calling_with_the_wrong_call_kind_is_refused(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("streamer").await?;
            let name = "count_to";
            let err = portal
                .run_named::<(), _>(name, (3,))
                .await
                .unwrap_err()
                .into();
            assert_eq!(remote(&err).kind(), &trellis_actor::ErrorKind::BadArguments);
            assert!(remote(&err).message().contains("is a stream function"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// `trellis.info` counts each open stream's items both ways and the sender's waits for
/// credit: a receiver that reads nothing holds its sender to the window, and both ends say
/// so (the observability issue's live numbers; `trellis tree` draws them).
fn info_counts_a_streams_items_and_credit_waits(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("streamer").await?;
            let asker = portal.clone();
            let options = StreamOptions::new().capacity(8);
            let read = portal
                .open_stream_from_with(count_to, (100,), options, |stream| async move {
                    // Read nothing until the child has sent its window and waits for credit.
                    let sender = loop {
                        let info = asker.info().await?;
                        match info.stream_stats.first() {
                            Some(s) if s.credit_waits >= 1 => break s.clone(),
                            _ => trellis::sleep(Duration::from_millis(5)).await?,
                        }
                    };
                    assert_eq!((sender.sent, sender.received), (8, 0), "{sender:?}");
                    assert_eq!(
                        (sender.kind.as_str(), sender.role.as_str()),
                        ("stream", "callee")
                    );
                    let receiver = loop {
                        let info = trellis_actor::current().info();
                        match info.stream_stats.iter().find(|s| s.cid == sender.cid) {
                            Some(s) if s.received == 8 => break s.clone(),
                            _ => trellis::sleep(Duration::from_millis(5)).await?,
                        }
                    };
                    assert_eq!((receiver.sent, receiver.unread), (0, 8), "{receiver:?}");
                    assert_eq!(receiver.role, "caller");
                    let mut read = 0;
                    while stream.recv().await?.is_some() {
                        read += 1;
                    }
                    Ok(read)
                })
                .await?;
            assert_eq!(read, 100);
            Ok(())
        })
        .await
    })
    .unwrap();
}

on_both_transports!(
    info_counts_a_streams_items_and_credit_waits,
    one_way_stream_delivers_every_item,
    leaving_a_one_way_stream_early_cancels_the_remote,
    remote_stream_failure_ends_the_caller_with_it,
    context_gives_started_value_then_result,
    started_misuse_is_an_error,
    two_way_stream_request_response,
    a_send_after_close_fails_and_every_item_before_it_arrives,
    recv_many_takes_items_in_order_up_to_its_limit,
    recv_many_stops_before_an_item_that_does_not_decode,
    bytes_items_of_every_size_arrive_whole,
    caller_cancelling_its_own_context_is_not_an_error,
    callee_failure_cancels_the_caller_body,
    caller_body_error_cancels_the_callee_and_is_not_masked,
    overrun_mode_fails_the_receiver_past_its_capacity,
    caller_overrun_fails_open_context,
    backpressure_holds_the_producer_and_loses_nothing,
    a_default_window_grows_for_small_items,
    unbounded_mode_never_holds_the_producer,
    every_subscriber_gets_every_item,
    lagging_subscriber_gets_the_exact_count,
    lossless_subscribers_never_lag,
    cancelling_a_fast_subscriber_loses_nothing_for_a_slow_one,
    shared_stream_through_the_resource_cache,
    peer_cancellation_reaches_every_context_holder,
    ipc_break_mid_stream_is_a_typed_error,
    item_of_the_wrong_type_is_a_typed_error,
    calling_with_the_wrong_call_kind_is_refused,
);

/// Sending an item that is `Send` but not `Sync` is a future that is `Send` (a served stream
/// function runs as a task): checked when this file compiles.
#[allow(dead_code)]
fn a_send_of_an_item_that_is_not_sync_is_send(
    stream: &trellis_actor::MsgStream<std::convert::Infallible, std::cell::Cell<u64>>,
) {
    fn send<T: Send>(_: T) {}
    send(stream.send(std::cell::Cell::new(1)));
}
