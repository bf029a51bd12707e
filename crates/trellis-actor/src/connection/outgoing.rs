//! The outgoing buffer of a connection: what the acting task writes at once, what the writer
//! task sends, and the high-water mark that makes stream senders wait for it; and the calls'
//! own send buffers (items added without the connection's lock), handed to the session
//! before anything else whenever the lock is taken.

use std::sync::Arc;
use std::task::{Context as TaskContext, Waker};

use bytes::Buf;

use trellis_wire::{SendError, Session};

use super::chan::Chan;
use super::conn::{Conn, Flush, State};

/// A stream item is not added to an outgoing buffer holding this much: its sender waits
/// until the writer has sent it down to [`OUT_LOW_WATER`], so that large items do not pile
/// up in memory faster than the socket takes them (credit alone counts items, not bytes).
pub(crate) const OUT_HIGH_WATER: usize = 1 << 20;

/// Where waiting stream senders resume.
pub(crate) const OUT_LOW_WATER: usize = 256 << 10;

/// A sender with credit in hand adds items to its call's own buffer while it holds less than
/// this; past it, its next item waits for the connection's lock (and its high-water mark).
pub(crate) const SENDING_BATCH: usize = 64 << 10;

impl State {
    /// Hands every call's encoded items to the session, in order, after what it holds; a call
    /// that may no longer send items (it ended, its receiver stopped) loses them, and the
    /// credit it holds.
    pub(super) fn hand_over_sending(&mut self) {
        let State {
            session, sending, ..
        } = self;
        for (cid, chan) in sending.drain(..) {
            let mut sending = chan.sending();
            sending.queued = false;
            let items = std::mem::take(&mut sending.items);
            if items > 0
                && session
                    .send_encoded_items(cid, &sending.frames, items)
                    .is_err()
            {
                sending.credit = 0;
            }
            sending.frames.clear();
        }
    }

    /// Gives the session back the credit call `cid`'s sender holds: its next item asks the
    /// session again (which may refuse it now: the receiver stopped).
    pub(super) fn reclaim_credit(&mut self, cid: u64) {
        let Some(chan) = self.calls.get(&cid).and_then(|l| l.chan.as_ref()) else {
            return;
        };
        chan.sending().return_credit(&mut self.session, cid);
    }
}

impl Conn {
    /// Lists call `cid` among those whose encoded items the session is to take, and wakes
    /// the writer to send them.
    pub(crate) fn queue_sending(&self, cid: u64, chan: &Arc<Chan>) {
        let mut state = self.lock();
        state.sending.push((cid, chan.clone()));
        self.wake_writer_locked(&mut state);
    }

    /// Adds a stream item with `f` unless the outgoing buffer is over [`OUT_HIGH_WATER`]:
    /// then `cx` is woken once the writer has drained it, and `None` says so.
    pub(crate) fn act_item(
        &self,
        cx: &TaskContext<'_>,
        f: impl FnOnce(&mut Session) -> Result<(), SendError>,
    ) -> Option<Result<(), SendError>> {
        let mut state = self.lock();
        // A connection that ended takes nothing more (its session may not know yet).
        if state.end.is_some() {
            return Some(Err(SendError::Closed));
        }
        if state.session.outgoing().len() >= OUT_HIGH_WATER && state.writer.is_some() {
            if !state.drained.iter().any(|w| w.will_wake(cx.waker())) {
                state.drained.push(cx.waker().clone());
            }
            self.wake_writer_locked(&mut state);
            return None;
        }
        let result = f(&mut state.session);
        self.flush_locked(&mut state, Flush::Writer);
        Some(result)
    }

    pub(super) fn flush_locked(&self, state: &mut State, flush: Flush) {
        if state.session.outgoing().is_empty() {
            return;
        }
        match flush {
            Flush::Now => self.try_flush_locked(state),
            Flush::Writer => self.wake_writer_locked(state),
        }
    }

    /// Wakes the writer task, unless it was woken already and has not run since.
    pub(super) fn wake_writer_locked(&self, state: &mut State) {
        if !std::mem::replace(&mut state.writer_woken, true) {
            self.inner.wake_writer.notify_one();
        }
    }

    /// Sends what is buffered.
    pub(crate) fn flush(&self) {
        let mut state = self.lock();
        self.try_flush_locked(&mut state);
    }

    /// Writes as much of the outgoing buffer as the socket takes now, without waiting; leaves
    /// the rest (and any error) to the writer task.
    pub(super) fn try_flush_locked(&self, state: &mut State) {
        let State {
            writer,
            session,
            write_error,
            ..
        } = state;
        let Some(writer) = writer else {
            return;
        };
        let out = session.outgoing();
        while !out.is_empty() {
            match writer.try_write_buf(out) {
                Ok(0) => {
                    *write_error = Some(std::io::ErrorKind::WriteZero.into());
                    break;
                }
                Ok(n) => out.advance(n),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    *write_error = Some(e);
                    break;
                }
            }
        }
        if out.is_empty() {
            out.clear();
        }
        if out.len() <= OUT_LOW_WATER || write_error.is_some() {
            state.drained.drain(..).for_each(Waker::wake);
        }
        if !out.is_empty() || writer.has_buffered() {
            self.wake_writer_locked(state);
        }
    }
}
