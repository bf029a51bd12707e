//! Signals as a stream of values (Trio's `open_signal_receiver`).

use std::task::Poll;

use nix::sys::signal::Signal;
use tokio::signal::unix::{SignalKind, signal};
use trellis::Cancelled;

/// Receives the signals it was opened for, in arrival order (several deliveries of one signal
/// between two receives may arrive as one, as with any signal handling).
///
/// Unlike Trio's, the handlers stay installed after the receiver is dropped (tokio's handlers
/// are process-wide and permanent): the default action of these signals (terminating the
/// process, for most) does not come back.
#[derive(Debug)]
pub struct SignalReceiver {
    streams: Vec<(Signal, tokio::signal::unix::Signal)>,
    /// Where the next receive starts looking, so that no signal starves the others.
    next: usize,
}

/// Starts receiving `signals`.
///
/// # Errors
///
/// When a handler cannot be installed (for example for SIGKILL or SIGSTOP).
pub fn open_signal_receiver(signals: &[Signal]) -> std::io::Result<SignalReceiver> {
    let streams = signals
        .iter()
        .map(|s| Ok((*s, signal(SignalKind::from_raw(*s as i32))?)))
        .collect::<std::io::Result<_>>()?;
    Ok(SignalReceiver { streams, next: 0 })
}

impl SignalReceiver {
    /// The next signal; a checkpoint.
    ///
    /// # Errors
    ///
    /// `Cancelled`.
    pub async fn recv(&mut self) -> Result<Signal, Cancelled> {
        trellis::checkpoint_if_cancelled()?;
        trellis::cancellable(std::future::poll_fn(|cx| {
            let n = self.streams.len();
            for k in 0..n {
                let i = (self.next + k) % n;
                if let Poll::Ready(Some(())) = self.streams[i].1.poll_recv(cx) {
                    self.next = (i + 1) % n;
                    return Poll::Ready(self.streams[i].0);
                }
            }
            Poll::Pending
        }))
        .await
    }
}
