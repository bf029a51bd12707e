//! Cancel reasons across processes: the core's [`trellis::CancelReason`] to and from the
//! reason `Cancel` and `CancelAck` carry (protocol 2.1).
//!
//! A reason keeps where it began: the root's deadline passing cancels its call into A, A's
//! served scope is cancelled "due to deadline in actor root#…", and A's own call into B,
//! cancelled by that, says the same to B — not "cancelled by A".

use std::sync::Arc;

use trellis::{CancelReason, CancelSource, Cancelled};
use trellis_wire::{
    ActorId, CancelReason as WireReason, MAX_CANCEL_MESSAGE, MAX_CANCEL_ORIGIN, Payload,
};

/// How the runtime names an actor as a cancellation's origin.
pub(crate) fn origin_of(actor: &ActorId) -> String {
    format!("actor {actor}")
}

/// The reason to send for a cancellation `reason` that `local` is passing on: its origin is
/// where it began, `local` when it began here.
pub(crate) fn to_wire(reason: Option<&CancelReason>, local: &ActorId) -> Box<WireReason> {
    let (source, message, origin) = match reason {
        Some(r) => (r.source(), r.message(), r.origin()),
        None => (CancelSource::Unknown, None, None),
    };
    Box::new(WireReason {
        source: source.as_str().to_owned(),
        message: message.map(str::to_owned),
        origin: Some(origin.map_or_else(|| origin_of(local), str::to_owned)),
    })
}

/// [`to_wire`] for what a `Cancelled` carries.
pub(crate) fn cancelled_to_wire(cancelled: &Cancelled, local: &ActorId) -> Box<WireReason> {
    to_wire(cancelled.cancel_reason().map(Arc::as_ref), local)
}

/// A reason made here and sent from here: `source` with `message`, begun in `local`.
pub(crate) fn here(source: CancelSource, message: &str, local: &ActorId) -> Box<WireReason> {
    Box::new(WireReason {
        source: source.as_str().to_owned(),
        message: Some(message.to_owned()),
        origin: Some(origin_of(local)),
    })
}

/// Why a call is cancelled because `error` ended what waited for it (`what`: "the caller's
/// body", say): the cancellation passed on, or the failure.
pub(crate) fn for_error(error: &trellis::Error, what: &str, local: &ActorId) -> Box<WireReason> {
    match error.as_cancelled() {
        Some(cancelled) => cancelled_to_wire(cancelled, local),
        None => {
            let text = error.to_string();
            let first = text.lines().next().unwrap_or_default();
            here(
                CancelSource::Nursery,
                &format!("{what} failed: {first}"),
                local,
            )
        }
    }
}

/// The arguments of `trellis.cancel_actor` saying why: `[reason]`.
pub(crate) fn to_args(reason: &WireReason) -> Payload {
    Payload::encode(&((&reason.source, &reason.message, &reason.origin),))
        .unwrap_or_else(|_| Payload::unit())
}

/// Why `sender` asks this actor to cancel, from `trellis.cancel_actor`'s arguments: `[reason]`,
/// or nothing (nil, `[]`, anything else: an explicit cancellation begun in `sender`). Strings
/// are cut as the wire's reasons are.
pub(crate) fn from_args(args: &Payload, sender: &ActorId) -> Box<WireReason> {
    type Arg = (String, Option<String>, Option<String>);
    match args.decode::<(Arg,)>() {
        Ok(((source, message, origin),)) => Box::new(WireReason {
            source: cut(source, MAX_CANCEL_ORIGIN),
            message: message.map(|m| cut(m, MAX_CANCEL_MESSAGE)),
            origin: Some(origin.map_or_else(|| origin_of(sender), |o| cut(o, MAX_CANCEL_ORIGIN))),
        }),
        Err(_) => Box::new(WireReason {
            source: CancelSource::Explicit.as_str().to_owned(),
            message: None,
            origin: Some(origin_of(sender)),
        }),
    }
}

fn cut(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut end = max;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

/// The core reason for a cancellation `sender` asked for, giving `wire` (or nothing, from a
/// 2.0 peer: then it reads as an explicit cancellation begun in `sender`).
pub(crate) fn from_wire(wire: Option<&WireReason>, sender: &ActorId) -> CancelReason {
    let Some(wire) = wire else {
        return CancelReason::elsewhere(CancelSource::Explicit, origin_of(sender));
    };
    let origin = wire.origin.clone().unwrap_or_else(|| origin_of(sender));
    let reason = CancelReason::elsewhere(CancelSource::from_word(&wire.source), origin);
    match &wire.message {
        Some(message) => reason.with_message(message.clone()),
        None => reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_keeps_its_origin_across_hops() {
        let root = ActorId::new("root", "1a2b3c4d5e6f");
        let a = ActorId::new("a", "99887766");
        let deadline = CancelReason::new(CancelSource::Deadline);
        // The root sends its own deadline: the origin is the root.
        let sent = to_wire(Some(&deadline), &root);
        assert_eq!(sent.source, "deadline");
        assert_eq!(sent.origin.as_deref(), Some("actor root#1a2b3c4d"));
        // A reads it, and passes it on unchanged.
        let in_a = from_wire(Some(&sent), &root);
        assert_eq!(in_a.source(), CancelSource::Deadline);
        assert_eq!(in_a.task(), None);
        let passed_on = to_wire(Some(&in_a), &a);
        assert_eq!(passed_on, sent);
        assert_eq!(
            from_wire(Some(&passed_on), &a).to_string(),
            "cancelled due to deadline in actor root#1a2b3c4d"
        );
    }

    #[test]
    fn no_reason_reads_as_explicit_from_the_sender() {
        let b = ActorId::new("b", "0123456789");
        let reason = from_wire(None, &b);
        assert_eq!(reason.source(), CancelSource::Explicit);
        assert_eq!(reason.origin(), Some("actor b#01234567"));
        let odd = WireReason::new("tidal");
        assert_eq!(
            from_wire(Some(&odd), &b).to_string(),
            "cancelled due to unknown in actor b#01234567"
        );
    }
}
