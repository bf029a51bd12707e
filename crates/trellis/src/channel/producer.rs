//! A producer owned by its consumer (Trio's `as_safe_channel`).

use std::future::Future;

use super::{Receiver, Sender, channel};
use crate::error::{Error, IsCancelled};
use crate::nursery::open_nursery;

/// Runs `producer` in a task owned by `consumer`'s block, feeding it through a rendezvous
/// channel, and returns the consumer's value (Trio's `as_safe_channel`: a safe async
/// generator).
///
/// * The producer runs in a nursery that the consumer's block opens; nothing outlives the
///   call.
/// * When the producer returns, its sender is dropped and the consumer's `recv` ends with
///   `EndOfChannel`.
/// * When the consumer returns first (it needs no more values), the producer is cancelled —
///   its pending `send` fails with `Cancelled`, its cleanup runs — and waited for.
/// * When the producer fails, the consumer is cancelled at its next checkpoint and the call
///   returns the producer's error.
/// * A consumer that closes its receiver gets `Closed` from it; the producer waits in `send`
///   until the consumer returns, and is then cancelled like any other.
/// * A single failure comes back as itself, not wrapped in the nursery's group (as Trio
///   unwraps it; a group the consumer returned stays that group); two (producer and
///   consumer) come back as an [`ErrorGroup`](crate::ErrorGroup).
///
/// The channel has no buffer, so the producer is at most one value ahead of the consumer:
/// the one it is trying to send.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// use trellis::channel::{RecvError, with_producer};
///
/// let firsts = with_producer(
///     |tx| async move {
///         for i in 0u64.. {
///             tx.send(i * i).await?; // cancelled once the consumer has enough
///         }
///         Ok::<_, trellis::Error>(())
///     },
///     |rx| async move {
///         let mut got = Vec::new();
///         while got.len() < 4 {
///             match rx.recv().await {
///                 Ok(v) => got.push(v),
///                 Err(RecvError::EndOfChannel) => break,
///                 Err(e) => return Err(e.into()),
///             }
///         }
///         Ok::<_, trellis::Error>(got)
///     },
/// )
/// .await?;
/// assert_eq!(firsts, [0, 1, 4, 9]);
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// The producer's or the consumer's failure (a group when both failed), or `Cancelled` when
/// the calling code is cancelled.
#[doc(alias = "as_safe_channel")]
pub async fn with_producer<T, P, PF, PE, C, CF, R, CE>(producer: P, consumer: C) -> Result<R, Error>
where
    T: Send + 'static,
    P: FnOnce(Sender<T>) -> PF,
    PF: Future<Output = Result<(), PE>> + Send + 'static,
    PE: Into<Error> + IsCancelled + 'static,
    C: FnOnce(Receiver<T>) -> CF,
    CF: Future<Output = Result<R, CE>>,
    CE: Into<Error> + IsCancelled,
{
    let (tx, rx) = channel(0);
    let produce = producer(tx);
    // Held until the producer has finished, so that it learns the consumer is done as a
    // cancellation, not as a broken channel, whatever the consumer did with its handle.
    let keep_open = rx.clone();
    let outcome = open_nursery(|n| async move {
        n.start_soon(produce)?;
        let value = consumer(rx).await.map_err(|e| {
            let cancelled = e.is_cancelled();
            let e: Error = e.into();
            if cancelled {
                Error::from(e.into_cancelled())
            } else {
                e
            }
        })?;
        n.cancel_with_reason("the consumer of with_producer is done");
        Ok::<_, Error>(value)
    })
    .await;
    drop(keep_open);
    match outcome {
        Ok(Some(value)) => Ok(value),
        Ok(None) => unreachable!("the body returns before the nursery is cancelled"),
        Err(error) => Err(unwrap_one_layer(error)),
    }
}

/// The nursery's group with one member gives that member (a group of the user's own stays a
/// group: one layer only, as Trio unwraps).
fn unwrap_one_layer(error: Error) -> Error {
    match error.into_group() {
        Ok(group) if group.errors().len() == 1 => group.into_errors().pop().expect("one member"),
        Ok(group) => group.into(),
        Err(other) => other,
    }
}
