//! One call's protocol state on one side: where it stands, who stopped, and both directions'
//! flow control.

use crate::{CallKind, Message, ProtocolError};

use super::{ITEM_OVERHEAD, Role, SendError, Window};

/// The credit count that means "no limit".
pub(super) const UNLIMITED: u32 = u32::MAX;

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// `Start` sent; no `StartAck` yet.
    Starting,
    /// `StartAck` sent.
    Running,
    /// Contexts: `Started` sent; the two-way stream may flow.
    Started,
}

/// The receiving direction of a call on this side: what was granted, received and consumed.
#[derive(Debug, Clone, Copy)]
pub(super) struct Receiving {
    pub(super) window: Window,
    /// Items the peer may have sent in total (`u64::MAX`: no limit).
    pub(super) granted: u64,
    pub(super) received: u64,
    pub(super) consumed: u64,
    /// Consumed since the last grant.
    pub(super) ungranted: u64,
    /// The local end closed: items are counted and dropped.
    pub(super) closed: bool,
    /// The window's size now, in items: `granted - consumed` right after a grant.
    size: u64,
    /// Items received since the last grant, and their bytes (for a growing window).
    lately: u64,
    lately_bytes: u64,
}

impl Receiving {
    pub(super) fn new(window: Window) -> Self {
        let granted = if window.by_credit() {
            u64::from(window.first_grant())
        } else {
            u64::MAX
        };
        Receiving {
            window,
            granted,
            received: 0,
            consumed: 0,
            ungranted: 0,
            closed: false,
            size: granted,
            lately: 0,
            lately_bytes: 0,
        }
    }

    /// Counts an item received within the window, of `len` payload bytes.
    pub(super) fn received(&mut self, len: usize) {
        self.received += 1;
        self.lately += 1;
        let len = u64::try_from(len).unwrap_or(u64::MAX);
        self.lately_bytes = self
            .lately_bytes
            .saturating_add(len.saturating_add(u64::from(ITEM_OVERHEAD)));
    }

    /// Whether one more item received now breaks the window.
    pub(super) fn overruns(&self) -> bool {
        match self.window {
            Window::Credit(_) | Window::Growing { .. } => self.received >= self.granted,
            Window::Unlimited(Some(limit)) => {
                !self.closed && self.received - self.consumed >= u64::from(limit)
            }
            Window::Unlimited(None) => false,
        }
    }

    /// How many unread items make the window overrun.
    pub(super) fn capacity(&self) -> u32 {
        match self.window {
            Window::Credit(capacity) | Window::Unlimited(Some(capacity)) => capacity,
            Window::Growing { .. } => u32::try_from(self.size).unwrap_or(UNLIMITED - 1),
            Window::Unlimited(None) => UNLIMITED,
        }
    }

    /// Counts `count` more consumed items; returns the credit to grant now, if any (a
    /// window grants in batches of a quarter of its size).
    pub(super) fn consume(&mut self, count: u32) -> Option<u32> {
        self.consumed = (self.consumed + u64::from(count)).min(self.received);
        if self.closed || !self.window.by_credit() {
            return None;
        }
        self.ungranted += u64::from(count);
        if self.ungranted < (self.size / 4).max(1) {
            return None;
        }
        let mut grant = std::mem::take(&mut self.ungranted);
        if let Window::Growing { start, max, bytes } = self.window {
            let target = self.target(start, max, bytes);
            if target >= self.size {
                grant += target - self.size;
                self.size = target;
            } else {
                // Shrinks by granting less: the sender's unconsumed items never exceed it.
                let withheld = grant.min(self.size - target);
                grant -= withheld;
                self.size -= withheld;
            }
        }
        let grant = u32::try_from(grant).unwrap_or(UNLIMITED - 1);
        self.granted = self.granted.saturating_add(u64::from(grant));
        (grant > 0).then_some(grant)
    }

    /// A growing window's size for the items received lately: as many as `bytes` holds,
    /// from `start` to `max` (its size now when none came).
    fn target(&mut self, start: u32, max: u32, bytes: u32) -> u64 {
        let (items, taken) = (
            std::mem::take(&mut self.lately),
            std::mem::take(&mut self.lately_bytes),
        );
        if items == 0 {
            return self.size;
        }
        let start = u64::from(start.clamp(1, UNLIMITED - 1));
        let max = u64::from(max.min(UNLIMITED - 1)).max(start);
        let each = (taken / items).max(1);
        (u64::from(bytes) / each).clamp(start, max)
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub(super) kind: CallKind,
    pub(super) role: Role,
    pub(super) phase: Phase,
    /// The caller sent `Stop`.
    pub(super) caller_stopped: bool,
    /// The callee sent `Stop`.
    pub(super) callee_stopped: bool,
    pub(super) cancel_sent: bool,
    /// Items this side may still send (`u64::MAX`: no limit).
    pub(super) send_credit: u64,
    /// This side's receiving end, once it granted credit.
    pub(super) receiving: Option<Receiving>,
    /// This side's receiving end overran: further items are dropped.
    pub(super) overran: bool,
    /// A call we made and no longer follow (we gave up on it, or the callee broke its rules):
    /// the callee's messages are dropped until its terminal one.
    pub(super) detached: bool,
    /// Items this side sent.
    pub(super) sent: u64,
    /// Times this side found no credit for its next item and had to wait.
    pub(super) credit_waits: u64,
    /// This side is waiting for credit now (so that one wait counts once).
    pub(super) waiting: bool,
}

impl Call {
    pub(super) fn new(kind: CallKind, role: Role) -> Call {
        Call {
            kind,
            role,
            phase: Phase::Starting,
            caller_stopped: false,
            callee_stopped: false,
            cancel_sent: false,
            send_credit: 0,
            receiving: None,
            overran: false,
            detached: false,
            sent: 0,
            credit_waits: 0,
            waiting: false,
        }
    }

    pub(super) fn describe(&self) -> String {
        let kind = match self.kind {
            CallKind::Run => "run",
            CallKind::Stream => "stream",
            CallKind::Context => "context",
        };
        let role = match self.role {
            Role::Caller => "we call",
            Role::Callee => "we serve",
        };
        format!("{kind} call, {role}")
    }

    pub(super) fn state(&self) -> &'static str {
        match self.phase {
            Phase::Starting => "not acknowledged",
            Phase::Running => "acknowledged",
            Phase::Started => "started",
        }
    }

    pub(super) fn out_of_order(&self, cid: u64, got: &'static str) -> ProtocolError {
        ProtocolError::OutOfOrder {
            cid,
            got,
            call: self.describe(),
            state: self.state(),
        }
    }

    /// Checks a message flowing `from` the caller or the callee and applies it to the call's
    /// order (flow control is the session's). Returns whether it ends the call. On error the
    /// call is unchanged.
    pub(super) fn apply(
        &mut self,
        cid: u64,
        msg: &Message,
        from: Role,
    ) -> Result<bool, ProtocolError> {
        let mut next = *self;
        let ok = match (msg, from) {
            (Message::StartAck { .. }, Role::Callee) => {
                next.phase = Phase::Running;
                self.phase == Phase::Starting
            }
            (Message::Started { .. }, Role::Callee) => {
                next.phase = Phase::Started;
                self.kind == CallKind::Context && self.phase == Phase::Running
            }
            (Message::Yield { .. }, from) => self.may_receive_item(from),
            (Message::Stop { .. }, Role::Callee) => {
                next.callee_stopped = true;
                self.callee_may_stream() && !self.callee_stopped
            }
            (Message::Return { .. }, Role::Callee) => match self.kind {
                CallKind::Context => self.phase == Phase::Started,
                CallKind::Run | CallKind::Stream => self.phase == Phase::Running,
            },
            // A callee may end a call with `CancelAck` unprompted: its actor is being
            // cancelled, at the request named in it.
            (Message::CancelAck { .. }, Role::Callee) => self.phase != Phase::Starting,
            // An error may come instead of the acknowledgement (an unknown function, say).
            (Message::Error { .. }, Role::Callee) => true,
            (Message::Stop { .. }, Role::Caller) => {
                next.caller_stopped = true;
                (match self.kind {
                    CallKind::Run => false,
                    CallKind::Stream => self.phase != Phase::Starting,
                    CallKind::Context => self.phase == Phase::Started,
                }) && !self.caller_stopped
            }
            (Message::Cancel { .. }, Role::Caller) => {
                next.cancel_sent = true;
                !self.cancel_sent
            }
            (Message::Credit { count, .. }, from) => {
                if *count == 0 {
                    return Err(ProtocolError::ZeroCredit { cid });
                }
                // The caller grants credit for the callee's items with its `Start`; the callee
                // grants its own once the context started.
                match (self.kind, from) {
                    (CallKind::Run, _) => false,
                    (CallKind::Stream, Role::Caller) => true,
                    (CallKind::Stream, Role::Callee) => false,
                    (CallKind::Context, Role::Caller) => true,
                    (CallKind::Context, Role::Callee) => self.phase == Phase::Started,
                }
            }
            _ => false,
        };
        if !ok {
            return Err(self.out_of_order(cid, msg.name()));
        }
        *self = next;
        Ok(is_terminal(msg))
    }

    /// Whether `from` may send this call's side an item now (credit aside).
    pub(super) fn may_receive_item(&self, from: Role) -> bool {
        match from {
            Role::Callee => self.callee_may_stream() && !self.callee_stopped,
            Role::Caller => {
                self.kind == CallKind::Context
                    && self.phase == Phase::Started
                    && !self.caller_stopped
            }
        }
    }

    fn callee_may_stream(&self) -> bool {
        match self.kind {
            CallKind::Run => false,
            CallKind::Stream => self.phase == Phase::Running,
            CallKind::Context => self.phase == Phase::Started,
        }
    }

    /// Whether this side may send a `Yield` now (credit aside).
    pub(super) fn may_send_items(&self) -> bool {
        match (self.kind, self.role) {
            (CallKind::Run, _) | (CallKind::Stream, Role::Caller) => false,
            (CallKind::Stream, Role::Callee) => {
                self.phase == Phase::Running && !self.callee_stopped
            }
            (CallKind::Context, Role::Callee) => {
                self.phase == Phase::Started && !self.callee_stopped
            }
            (CallKind::Context, Role::Caller) => {
                self.phase == Phase::Started && !self.caller_stopped
            }
        }
    }

    /// Adds a grant from the peer to our sending credit.
    /// A send found no credit: the call counts as waiting for it (one wait until credit
    /// comes), and the error says so.
    pub(super) fn wait_for_credit(&mut self, cid: u64) -> SendError {
        if !std::mem::replace(&mut self.waiting, true) {
            self.credit_waits += 1;
        }
        SendError::NoCredit { cid }
    }

    pub(super) fn add_send_credit(&mut self, count: u32) {
        self.send_credit = if count == UNLIMITED || self.send_credit == u64::MAX {
            u64::MAX
        } else {
            // Grants add up; a sum beyond what a u64 counts is as good as no limit.
            self.send_credit.saturating_add(u64::from(count))
        };
    }
}

/// Whether the message ends its call.
pub(super) fn is_terminal(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Return { .. } | Message::Error { cid: Some(_), .. } | Message::CancelAck { .. }
    )
}

/// Messages a caller may send before it sees its call's result, which then arrive after the
/// callee ended the call.
pub(super) fn is_late_ok(msg: &Message) -> bool {
    matches!(
        msg,
        Message::Cancel { .. }
            | Message::Stop { .. }
            | Message::Credit { .. }
            | Message::Yield { .. }
    )
}

/// The live calls of a connection by id, counting those the peer started.
#[derive(Debug, Default)]
pub(super) struct CallTable {
    calls: std::collections::HashMap<u64, Call, super::cid_hash::CidHash>,
    /// Calls the peer started (we are their callee) that are still live.
    callee: usize,
    /// Calls of ours we stopped following, kept until the peer ends them.
    detached: usize,
}

impl CallTable {
    pub(super) fn insert(&mut self, cid: u64, call: Call) {
        if call.role == Role::Callee {
            self.callee += 1;
        }
        if let Some(old) = self.calls.insert(cid, call) {
            self.forgot(&old);
        }
    }

    pub(super) fn remove(&mut self, cid: &u64) -> Option<Call> {
        let call = self.calls.remove(cid)?;
        self.forgot(&call);
        Some(call)
    }

    fn forgot(&mut self, call: &Call) {
        if call.role == Role::Callee {
            self.callee -= 1;
        }
        if call.detached {
            self.detached -= 1;
        }
    }

    pub(super) fn clear(&mut self) {
        self.calls.clear();
        self.callee = 0;
        self.detached = 0;
    }

    /// Stops following our call `cid`: it stays only to swallow what the peer still sends
    /// for it. `false` when it is not a live call of ours.
    pub(super) fn detach(&mut self, cid: u64) -> bool {
        match self.calls.get_mut(&cid) {
            Some(call) if call.role == Role::Caller => {
                if !std::mem::replace(&mut call.detached, true) {
                    self.detached += 1;
                }
                true
            }
            _ => false,
        }
    }

    /// Calls of ours kept only until the peer ends them.
    pub(super) fn detached(&self) -> usize {
        self.detached
    }

    pub(super) fn get(&self, cid: &u64) -> Option<&Call> {
        self.calls.get(cid)
    }

    pub(super) fn get_mut(&mut self, cid: &u64) -> Option<&mut Call> {
        self.calls.get_mut(cid)
    }

    pub(super) fn contains_key(&self, cid: &u64) -> bool {
        self.calls.contains_key(cid)
    }

    pub(super) fn len(&self) -> usize {
        self.calls.len()
    }

    pub(super) fn values(&self) -> impl Iterator<Item = &Call> {
        self.calls.values()
    }

    pub(super) fn iter(&self) -> impl Iterator<Item = (&u64, &Call)> {
        self.calls.iter()
    }

    /// Live calls the peer started.
    pub(super) fn callee(&self) -> usize {
        self.callee
    }
}
