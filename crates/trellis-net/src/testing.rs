//! Conformance checks for streams, in the spirit of Trio's `check_one_way_stream`,
//! `check_two_way_stream` and `check_half_closeable_stream`: give them a way to make a
//! connected pair, and they assert the behaviour every trellis stream owes its users. They
//! panic (as tests do) on the first rule broken.

use std::future::Future;
use std::time::Duration;

use bytes::BytesMut;
use trellis::CancelScope;

use crate::stream::{HalfCloseableStream, ReceiveStream, SendStream, StreamError};

/// Receives until `n` bytes have come, or the end of the stream.
async fn receive_exactly<R: ReceiveStream>(r: &mut R, n: usize) -> Result<Vec<u8>, StreamError> {
    let mut got = BytesMut::new();
    while got.len() < n {
        let chunk = r.receive_some(n - got.len()).await?;
        assert!(
            chunk.len() <= n - got.len(),
            "receive_some returned more than asked"
        );
        if chunk.is_empty() {
            break;
        }
        got.extend_from_slice(&chunk);
    }
    Ok(got.to_vec())
}

/// Sends `data` on `s` while receiving it on `r` (so that streams with little or no buffer,
/// like lockstep pairs, work); returns what arrived.
async fn transfer<S: SendStream, R: ReceiveStream>(
    s: &mut S,
    r: &mut R,
    data: &[u8],
) -> Result<Vec<u8>, StreamError> {
    let (sent, received) = tokio::join!(s.send_all(data), receive_exactly(r, data.len()));
    sent?;
    received
}

/// Data that shows where a byte came from.
fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Checks a one-way stream made by `make` (a sender and its connected receiver).
///
/// Rules checked: bytes arrive in order and whole, also in large amounts sent and received
/// concurrently; `receive_some(max)` returns at most `max` bytes; a receive cancelled while
/// waiting loses nothing; operations in a cancelled scope fail with `Cancelled` and do nothing;
/// after the sender closes, the receiver sees the end of the stream (again and again), and the
/// closed sender refuses to send; closing twice is fine.
///
/// # Errors
///
/// An I/O failure of the stream itself.
pub async fn check_one_way_stream<S, R, F, Fut>(make: F) -> Result<(), trellis::Error>
where
    S: SendStream + 'static,
    R: ReceiveStream + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(S, R), trellis::Error>>,
{
    // In order and whole, a little and a lot.
    let (mut s, mut r) = make().await?;
    assert_eq!(transfer(&mut s, &mut r, b"x").await?, b"x");
    let big = pattern(1 << 17, 7);
    let expected = big.clone();
    let received = trellis::open_nursery(|n| async move {
        n.start_soon(async move {
            s.send_all(&big).await?;
            s.close().await?;
            Ok::<_, trellis::Error>(())
        })?;
        let mut got = Vec::new();
        loop {
            let chunk = r.receive_some(65_536).await?;
            assert!(chunk.len() <= 65_536);
            if chunk.is_empty() {
                break;
            }
            got.extend_from_slice(&chunk);
        }
        // The end of the stream is sticky.
        assert!(r.receive_some(10).await?.is_empty());
        Ok::<_, trellis::Error>(got)
    })
    .await?
    .expect("not cancelled");
    assert!(received == expected, "a large transfer arrived changed");

    // receive_some's limit, and a receive cancelled while waiting loses nothing.
    let (mut s, mut r) = make().await?;
    let waited = trellis::move_on_after(Duration::from_millis(20), async {
        r.receive_some(10).await
    })
    .await?;
    assert!(waited.is_none(), "a receive with nothing sent returned");
    let (sent, received) = tokio::join!(s.send_all(b"abcdef"), async {
        let first = r.receive_some(2).await?;
        assert!(!first.is_empty() && first.len() <= 2);
        let rest = receive_exactly(&mut r, 6 - first.len()).await?;
        Ok::<_, StreamError>([&first[..], &rest[..]].concat())
    });
    sent?;
    assert_eq!(received?, b"abcdef");

    // In a cancelled scope: Cancelled, and nothing sent or taken.
    let scope = CancelScope::new();
    scope.cancel();
    let outcome = scope
        .run(async {
            s.send_all(b"lost").await?;
            Ok::<_, StreamError>(())
        })
        .await?;
    assert!(outcome.is_none(), "send_all ignored cancellation");
    let scope = CancelScope::new();
    scope.cancel();
    let outcome = scope.run(async { r.receive_some(10).await }).await?;
    assert!(outcome.is_none(), "receive_some ignored cancellation");
    assert_eq!(transfer(&mut s, &mut r, b"kept").await?, b"kept");

    // Close rules.
    s.close().await?;
    s.close().await?;
    assert!(matches!(s.send_all(b"x").await, Err(StreamError::Closed)));
    assert!(receive_exactly(&mut r, 1).await?.is_empty());
    Ok(())
}

/// Checks a two-way stream made by `make`: [`check_one_way_stream`] in both directions, and
/// an exchange that goes back and forth.
///
/// # Errors
///
/// An I/O failure of the stream itself.
pub async fn check_two_way_stream<S, F, Fut>(make: F) -> Result<(), trellis::Error>
where
    S: SendStream + ReceiveStream + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(S, S), trellis::Error>>,
{
    check_one_way_stream(&make).await?;
    check_one_way_stream(|| async {
        let (a, b) = make().await?;
        Ok((b, a))
    })
    .await?;
    // Back and forth.
    let (mut a, mut b) = make().await?;
    for i in 0..50u8 {
        let message = pattern(100 + usize::from(i), i);
        let echoed = transfer(&mut a, &mut b, &message).await?;
        assert_eq!(transfer(&mut b, &mut a, &echoed).await?, message);
    }
    // Closing one end ends the other's receiving; the closed end refuses to receive.
    a.close().await?;
    assert!(b.receive_some(10).await?.is_empty());
    assert!(matches!(a.receive_some(10).await, Err(StreamError::Closed)));
    Ok(())
}

/// Checks a half-closeable stream made by `make`: [`check_two_way_stream`], and `send_eof`:
/// the peer receives the end of the stream but can still send back; sending after `send_eof`
/// fails with `Closed`; `send_eof` twice is fine.
///
/// # Errors
///
/// An I/O failure of the stream itself.
pub async fn check_half_closeable_stream<S, F, Fut>(make: F) -> Result<(), trellis::Error>
where
    S: HalfCloseableStream + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<(S, S), trellis::Error>>,
{
    check_two_way_stream(&make).await?;
    let (mut a, mut b) = make().await?;
    assert_eq!(
        transfer(&mut a, &mut b, b"last words").await?,
        b"last words"
    );
    a.send_eof().await?;
    a.send_eof().await?;
    assert!(matches!(
        a.send_all(b"more").await,
        Err(StreamError::Closed)
    ));
    assert!(b.receive_some(10).await?.is_empty());
    assert_eq!(transfer(&mut b, &mut a, b"reply").await?, b"reply");
    b.send_eof().await?;
    assert!(a.receive_some(10).await?.is_empty());
    Ok(())
}

/// Sends back whatever it receives until the peer ends the stream: a handler for test
/// servers (`serve_tcp(echo, 0, status)`).
///
/// # Errors
///
/// The stream's failure, or `Cancelled`.
pub async fn echo<S: SendStream + ReceiveStream>(mut stream: S) -> Result<(), trellis::Error> {
    loop {
        let data = stream.receive_some(64 * 1024).await?;
        if data.is_empty() {
            return Ok(());
        }
        stream.send_all(&data).await?;
    }
}
