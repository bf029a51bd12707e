//! Drives a connection: a reader feeds the engine what arrives and hands the events to the
//! calls' local ends; a writer sends what the callers could not write at once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;
use trellis::Cancelled;
use trellis_wire::{Batch, Event, HEADER_LEN, Payload};

use super::chan::{CallEnd, Chan};
use super::conn::{Conn, End, Flush, Local, Service};
use super::frames::{self, FramePool, LargeFrame};
use crate::error::StreamOverrun;
use crate::limits::{FREE_FRAME_BYTES, ReadBudget};
use crate::transport::{Reader, Writer};

/// What a connection's reader holds its peer to (from [`Limits`](crate::Limits)).
#[derive(Debug, Clone)]
pub(crate) struct ReadLimits {
    /// How long a frame may take once its first byte arrived.
    pub(crate) frame_timeout: Duration,
    /// How long the connection may stay open with no call live (`None`: for ever).
    pub(crate) idle_timeout: Option<Duration>,
    /// Calls the peer may have live at once.
    pub(crate) max_peer_calls: usize,
    /// What incomplete frames beyond their free share take, shared by the actor's
    /// connections.
    pub(crate) budget: Arc<ReadBudget>,
    /// Buffers for large frames (`frames.rs`), shared by the actor's connections.
    pub(crate) frame_pool: Arc<FramePool>,
}

/// Why a read stopped waiting.
#[derive(Debug, Clone, Copy)]
enum Deadline {
    Frame,
    Idle,
}

/// What an event asks of the local ends, worked out under the connection's lock and done
/// after it.
enum Step {
    /// Items for a call's receiving end, in one batch.
    Items(Arc<Chan>, VecDeque<Payload>),
    Started(Arc<Chan>, Payload),
    Wake(Arc<Chan>, bool),
    /// A call we made, or serve, is over.
    End(Local, CallEnd),
    Overrun(Arc<Chan>, StreamOverrun),
    /// The peer starts a call.
    Serve(super::conn::Incoming),
    /// The connection is over.
    Close(End),
}

impl Conn {
    /// Runs the connection until it ends: writes what is sent, reads and routes what arrives,
    /// serves the peer's calls with `service`. `buf` holds bytes read past the handshake.
    pub(crate) async fn run(
        self,
        reader: Reader,
        writer: Writer,
        buf: BytesMut,
        service: Arc<dyn Service>,
        limits: ReadLimits,
    ) -> Result<(), trellis::Error> {
        let _ = self.inner.service.set(service);
        {
            let mut state = self.lock();
            state.writer = Some(Arc::new(writer));
            state.session.limit_peer_calls(limits.max_peer_calls);
        }
        let conn = self.clone();
        let outcome = trellis::open_nursery(|n| async move {
            let w = conn.clone();
            n.start_soon_named("trellis: writer", async move {
                w.write_loop().await;
                Ok::<_, trellis::Error>(())
            })?;
            let end = conn.read_loop(reader, buf, &limits).await;
            // Also stops the writer.
            conn.finish(end);
            Ok::<_, trellis::Error>(())
        })
        .await;
        self.finish(End::Lost("the actor is shutting down".into()));
        outcome.map(drop)
    }

    /// Marks the connection ended: pending calls fail, served calls are cancelled.
    pub(super) fn finish(&self, end: End) {
        let calls = {
            let mut state = self.lock();
            if state.end.is_some() {
                return;
            }
            tracing::debug!(peer = %self.inner.peer.actor, ?end, "connection ended");
            state.end = Some(end);
            // Senders waiting for room learn of the end from their next attempt.
            state.drained.drain(..).for_each(std::task::Waker::wake);
            std::mem::take(&mut state.calls)
        };
        for local in calls.into_values() {
            self.end_local(local, CallEnd::Lost);
        }
        self.inner.wake_writer.notify_one();
        let hook = self
            .inner
            .on_end
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(hook) = hook {
            hook();
        }
        self.inner.ended.set();
    }

    /// Tells a call's local end that the call is over.
    fn end_local(&self, local: Local, end: CallEnd) {
        if let Some(served) = &local.served {
            let why = match &end {
                CallEnd::Lost => format!("the connection to actor {} ended", self.inner.peer.actor),
                _ => "the call is over".to_owned(),
            };
            served.scope.cancel_with_reason(why);
        }
        if let Some(chan) = local.chan {
            chan.end(end.clone(), &self.inner.local);
        }
        if let Some(waiter) = local.waiter {
            let _ = waiter.send(end);
        }
    }

    /// Sends what the callers could not write at once: waits for room in the socket, or for
    /// more to send; ends when the connection does (dropping the sending half shuts it down).
    async fn write_loop(&self) {
        loop {
            let (writer, pending, done, failed) = {
                let mut state = self.lock();
                state.writer_woken = false;
                self.try_flush_locked(&mut state);
                let failed = state.write_error.take();
                let pending = !state.session.outgoing().is_empty()
                    || state.writer.as_ref().is_some_and(|w| w.has_buffered());
                let done = !pending && (state.session.is_closed() || state.end.is_some());
                (state.writer.clone(), pending, done, failed)
            };
            if let Some(e) = failed {
                self.finish(End::Lost(format!("write failed: {e}")));
                break;
            }
            let Some(writer) = writer.filter(|_| !done) else {
                break;
            };
            let waited = if pending {
                // An error here shows again in the next write, which reports it.
                trellis::cancellable(writer.writable()).await.map(drop)
            } else {
                trellis::cancellable(self.inner.wake_writer.notified()).await
            };
            if let Err(cancelled) = waited {
                // The actor is shutting down: the calls made here learn why before the
                // socket closes (whichever of reader and writer hears of it first).
                self.cancel_calls_made(&cancelled);
                break;
            }
        }
        let mut state = self.lock();
        state.writer = None;
        state.drained.drain(..).for_each(std::task::Waker::wake);
    }

    async fn read_loop(&self, reader: Reader, buf: BytesMut, limits: &ReadLimits) -> End {
        let mut taken = 0;
        let end = self.read_frames(reader, buf, limits, &mut taken).await;
        limits.budget.give(taken);
        end
    }

    /// Reads and handles frames until the connection ends. `taken` is what the incomplete
    /// frame holds of the shared budget.
    async fn read_frames(
        &self,
        mut reader: Reader,
        mut buf: BytesMut,
        limits: &ReadLimits,
        taken: &mut usize,
    ) -> End {
        let mut steps = Vec::new();
        // Since when the incomplete frame at the head of `buf` (or `large`) has been arriving.
        let mut frame_since: Option<Instant> = None;
        // Whether the connection was idle when the last idle period began.
        let mut was_idle = false;
        // A large frame on its way in, read into a buffer of its own (see `frames.rs`).
        let pool = &limits.frame_pool;
        let mut large: Option<LargeFrame> = None;
        loop {
            // Events may wait from the handshake's last read.
            let before = buf.len();
            let whole = large.take_if(|f| f.is_whole()).map(LargeFrame::finish);
            if let Some(end) = self.pump(&mut buf, whole, &mut steps) {
                return end;
            }
            if buf.is_empty() && large.is_none() {
                frame_since = None;
            } else if frame_since.is_none() || buf.len() < before {
                frame_since = Some(Instant::now());
            }
            // The incomplete frame's share of the budget, once its length is known.
            let wire_len = match (&large, frames::announced(&buf)) {
                (Some(frame), _) => frame.wire_len(),
                (None, Some(len)) => len + HEADER_LEN,
                (None, None) => 0,
            };
            let want = wire_len.saturating_sub(FREE_FRAME_BYTES);
            if want > *taken {
                if !limits.budget.take(want - *taken) {
                    let text = "the actor's memory for incoming frames is spent";
                    tracing::warn!(peer = %self.inner.peer.actor, "closed a connection: {text}");
                    self.fail_connection(text);
                    return End::Lost(text.into());
                }
                *taken = want;
            } else if want < *taken {
                limits.budget.give(*taken - want);
                *taken = want;
            }
            if large.is_none()
                && let Some(len) = frames::large_frame_at(&buf)
            {
                large = Some(LargeFrame::start(pool, len, &buf[HEADER_LEN..]));
                buf.clear();
            }
            if large.is_none() && buf.capacity() - buf.len() < 1024 {
                buf.reserve(64 * 1024);
            }
            // A frame under way must complete in time; a connection allowed to idle is
            // looked at every idle period (calls may end meanwhile) and let go after a whole
            // period with nothing live and nothing read.
            let deadline = match frame_since {
                Some(since) => Some((since + limits.frame_timeout, Deadline::Frame)),
                None => limits.idle_timeout.map(|idle| {
                    was_idle = self.is_idle();
                    (Instant::now() + idle, Deadline::Idle)
                }),
            };
            let read = trellis::cancellable(read_some(&mut reader, &mut buf, large.as_mut()));
            let read = match deadline {
                None => read.await,
                Some((at, why)) => match trellis::move_on_at(at, read).await {
                    Ok(Some(read)) => Ok(read),
                    Ok(None) => match why {
                        Deadline::Idle if !(was_idle && self.is_idle()) => continue,
                        _ => return self.expired(why, limits),
                    },
                    Err(cancelled) => Err(cancelled),
                },
            };
            match read {
                Ok(Ok(0)) => {
                    return End::Lost(format!(
                        "actor {} closed the connection without a goodbye",
                        self.inner.peer.actor
                    ));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return End::Lost(format!("read failed: {e}")),
                Err(cancelled) => {
                    self.cancel_calls_made(&cancelled);
                    return End::Lost("the actor is shutting down".into());
                }
            }
        }
    }

    /// The actor is shutting down (its connections are cancelled with it): before the
    /// connection goes, each call made on it is cancelled for the same reason, so that the
    /// callee learns why (a root's Ctrl-C, say) rather than only that the connection ended.
    fn cancel_calls_made(&self, cancelled: &Cancelled) {
        let local = self.inner.local.clone();
        let reason = crate::cancel_reason::cancelled_to_wire(cancelled, &local);
        let mut state = self.lock();
        let made: Vec<u64> = (state.calls.iter())
            .filter(|(_, l)| l.served.is_none())
            .map(|(cid, _)| *cid)
            .collect();
        for cid in made {
            state
                .session
                .cancel(cid, local.clone(), Some(reason.clone()));
        }
        self.flush_locked(&mut state, Flush::Now);
    }

    /// Whether no call is live on the connection, either way.
    fn is_idle(&self) -> bool {
        let state = self.lock();
        state.calls.is_empty() && state.session.live_calls() == 0
    }

    /// Ends the connection whose deadline `why` passed.
    fn expired(&self, why: Deadline, limits: &ReadLimits) -> End {
        let peer = &self.inner.peer.actor;
        match why {
            Deadline::Frame => {
                let text = format!(
                    "a frame took longer than {:?} to arrive",
                    limits.frame_timeout
                );
                tracing::warn!(%peer, "closed a connection: {text}");
                self.fail_connection(&text);
                End::Lost(text)
            }
            Deadline::Idle => {
                tracing::debug!(%peer, "closed an idle connection");
                self.close();
                End::Goodbye
            }
        }
    }

    /// Reports a connection-level failure of ours to the peer, best effort.
    fn fail_connection(&self, text: &str) {
        let mut state = self.lock();
        state.session.fail(text);
        self.flush_locked(&mut state, Flush::Now);
    }

    /// Feeds what was read to the engine and carries out its events; `Some` when the
    /// connection is over.
    fn pump(&self, buf: &mut BytesMut, whole: Option<Bytes>, steps: &mut Vec<Step>) -> Option<End> {
        {
            let mut state = self.lock();
            // A large frame read whole came before anything in `buf`.
            let handled = match whole {
                Some(frame) => (state.session.handle_frame(frame))
                    .and_then(|()| state.session.handle_bytes(buf)),
                None => state.session.handle_bytes(buf),
            };
            while let Some(batch) = state.session.poll_batch() {
                match batch {
                    Batch::Items { cid, values } => {
                        let chan = (state.calls.get(&cid)).and_then(|l| l.chan.clone());
                        steps.extend(chan.map(|chan| Step::Items(chan, values)));
                    }
                    Batch::Event(event) => {
                        if let Event::Stopped { cid } | Event::Overrun { cid, .. } = &event {
                            state.reclaim_credit(*cid);
                        }
                        self.route(&mut state.calls, event, steps)
                    }
                }
            }
            if let Err(e) = handled {
                steps.push(Step::Close(End::Lost(e.to_string())));
            }
            // Credit and acknowledgements the engine wrote go out now.
            self.flush_locked(&mut state, Flush::Now);
        }
        let mut end = None;
        for step in steps.drain(..) {
            match step {
                Step::Items(chan, items) => chan.push(items),
                Step::Started(chan, value) => chan.started(value),
                Step::Wake(chan, stopped) => chan.wake(stopped),
                Step::End(local, call_end) => self.end_local(local, call_end),
                Step::Overrun(chan, overrun) => chan.overrun(overrun),
                Step::Serve(call) => self.serve(call),
                Step::Close(close) => end = end.or(Some(close)),
            }
        }
        end
    }

    /// Works out what `event` asks of the local ends.
    fn route(
        &self,
        calls: &mut std::collections::HashMap<u64, Local, trellis_wire::CidHash>,
        event: Event,
        steps: &mut Vec<Step>,
    ) {
        let chan = |calls: &std::collections::HashMap<u64, Local, trellis_wire::CidHash>,
                    cid: u64| { calls.get(&cid).and_then(|l| l.chan.clone()) };
        // Items never come here: `poll_batch` gives them as `Batch::Items`, taken above.
        match event {
            Event::Started { cid, value } => {
                steps.extend(chan(calls, cid).map(|c| Step::Started(c, value)))
            }
            Event::Credit { cid } => steps.extend(chan(calls, cid).map(|c| Step::Wake(c, false))),
            Event::Stopped { cid } => steps.extend(chan(calls, cid).map(|c| Step::Wake(c, true))),
            Event::Call {
                cid,
                function,
                kind,
                args,
                trace,
            } => steps.push(Step::Serve(super::conn::Incoming {
                cid,
                function,
                kind,
                args,
                trace,
            })),
            Event::CancelRequested {
                cid,
                requested_by,
                reason,
            } => {
                if let Some(served) = calls.get_mut(&cid).and_then(|l| l.served.as_mut()) {
                    let peer = &self.inner.peer.actor;
                    served
                        .scope
                        .cancel_because(crate::cancel_reason::from_wire(reason.as_deref(), peer));
                    served.cancelled_by = Some(requested_by);
                    served.reason = reason;
                }
            }
            Event::Ended { cid, outcome } => {
                if let Some(local) = calls.remove(&cid) {
                    steps.push(Step::End(local, CallEnd::Ended(outcome)));
                }
            }
            Event::Broken { cid, error } => {
                tracing::debug!(cid, %error, "the peer broke a call");
                if let Some(local) = calls.remove(&cid) {
                    steps.push(Step::End(local, CallEnd::Broken(error)));
                }
            }
            Event::Overrun { cid, capacity } => {
                let overrun = StreamOverrun {
                    receiver: self.inner.local.to_string(),
                    sender: self.inner.peer.actor.to_string(),
                    capacity: capacity as usize,
                };
                tracing::debug!(cid, %overrun, "stream overrun");
                let Some(local) = calls.get_mut(&cid) else {
                    return;
                };
                // A call we serve fails with it; a call we made fails in the caller (its body
                // is cancelled), whose exit cancels the remote side.
                if let Some(served) = local.served.as_mut() {
                    served.overrun = Some(overrun.clone());
                    served.scope.cancel_with_reason(overrun.to_string());
                }
                steps.extend(local.chan.clone().map(|c| Step::Overrun(c, overrun)));
            }
            Event::Goodbye => steps.push(Step::Close(End::Goodbye)),
            Event::PeerError(report) => steps.push(Step::Close(End::Lost(format!(
                "actor {} reported: {}",
                self.inner.peer.actor, report.message
            )))),
            _ => {}
        }
    }
}

/// Reads what comes next: into the large frame under way, up to its end, else into `buf`.
async fn read_some(
    reader: &mut Reader,
    buf: &mut BytesMut,
    large: Option<&mut LargeFrame>,
) -> std::io::Result<usize> {
    match large {
        Some(frame) => reader.read_buf(&mut frame.rest()).await,
        None => reader.read_buf(buf).await,
    }
}
