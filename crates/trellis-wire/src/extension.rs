//! The optional fields protocol 2.1 appends to messages: why a call was cancelled (`Cancel`,
//! `CancelAck`) and the caller's trace context (`Start`). A 2.0 peer skips them, as it skips
//! any element past the ones it knows; a 2.1 peer reads a message without them as "none".
//!
//! What they carry is diagnostics, sent by a peer that may be hostile: the decoder cuts every
//! string to a fixed bound (it never allocates what a length field asks for beyond it), and a
//! field that is a well-formed value of another shape reads as absent rather than failing the
//! message — a bad trace or reason must not cost a call, let alone the connection. Only bytes
//! that are not MessagePack at all are a decode error, as anywhere else.

use bytes::BytesMut;

use crate::DecodeError;
use crate::msgpack::{Reader, write_array_len, write_str};

/// The longest cancel message kept, in bytes; a longer one is cut at a character boundary.
pub const MAX_CANCEL_MESSAGE: usize = 1024;

/// The longest cancel origin kept, in bytes.
pub const MAX_CANCEL_ORIGIN: usize = 256;

/// The longest `traceparent` or `tracestate` value taken (W3C Trace Context allows 512
/// characters of `tracestate`, and a version-00 `traceparent` has 55).
pub const MAX_TRACE_VALUE: usize = 512;

/// How many entries a trace context map may have before it is dropped whole.
const MAX_TRACE_ENTRIES: usize = 8;

/// Why a call was cancelled, as `Cancel` and `CancelAck` carry it (protocol 2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CancelReason {
    /// Where the cancellation came from: `explicit`, `deadline`, `nursery`, `interrupt` or
    /// `unknown`. Kept as sent; a receiver reads a word it does not know as `unknown`.
    pub source: String,
    /// The message given with it (`cancel_with_reason`, "task X failed: …"), if any.
    pub message: Option<String>,
    /// Where the cancellation began, for people (trellis writes `actor NAME#UID8`), when
    /// elsewhere than in the sender; `None` when the sender itself cancelled.
    pub origin: Option<String>,
}

impl CancelReason {
    /// A reason from `source`, without a message or an origin.
    pub fn new(source: impl Into<String>) -> Self {
        CancelReason {
            source: source.into(),
            message: None,
            origin: None,
        }
    }

    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        write_array_len(dst, 3);
        write_str(dst, bounded(&self.source, MAX_CANCEL_ORIGIN));
        write_opt_str(
            dst,
            self.message
                .as_deref()
                .map(|m| bounded(m, MAX_CANCEL_MESSAGE)),
        );
        write_opt_str(
            dst,
            self.origin
                .as_deref()
                .map(|o| bounded(o, MAX_CANCEL_ORIGIN)),
        );
    }

    /// `[source, message, origin]` (further elements skipped); anything else, `nil` included,
    /// reads as no reason.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Option<Box<CancelReason>>, DecodeError> {
        let mut r = Reader::new(r.raw_value()?);
        let read = |r: &mut Reader<'_>| -> Result<CancelReason, DecodeError> {
            if r.array_len()? < 3 {
                return Err(DecodeError::Truncated { at: 0 });
            }
            let source = bounded(r.str()?, MAX_CANCEL_ORIGIN).to_owned();
            let message = opt_str(r)?.map(|m| bounded(m, MAX_CANCEL_MESSAGE).to_owned());
            let origin = opt_str(r)?.map(|o| bounded(o, MAX_CANCEL_ORIGIN).to_owned());
            Ok(CancelReason {
                source,
                message,
                origin,
            })
        };
        Ok(read(&mut r).ok().map(Box::new))
    }
}

/// The caller's trace context as `Start` carries it (protocol 2.1): the W3C Trace Context
/// headers, so that the callee's work continues the caller's trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// The `traceparent` header: `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`.
    pub traceparent: String,
    /// The `tracestate` header, when there is one.
    pub tracestate: Option<String>,
}

impl TraceContext {
    pub(crate) fn encode(&self, dst: &mut BytesMut) {
        let entries = 1 + u8::from(self.tracestate.is_some());
        dst.extend_from_slice(&[0x80 | entries]);
        write_str(dst, "traceparent");
        write_str(dst, &self.traceparent);
        if let Some(state) = &self.tracestate {
            write_str(dst, "tracestate");
            write_str(dst, state);
        }
    }

    /// A map of strings with a `traceparent`; anything else (`nil`, another shape, too many
    /// entries, a value over [`MAX_TRACE_VALUE`]) reads as no trace context.
    pub(crate) fn decode(r: &mut Reader<'_>) -> Result<Option<Box<TraceContext>>, DecodeError> {
        let mut r = Reader::new(r.raw_value()?);
        let read = |r: &mut Reader<'_>| -> Result<Option<TraceContext>, DecodeError> {
            let entries = r.map_len()?;
            if entries > MAX_TRACE_ENTRIES {
                return Ok(None);
            }
            let (mut parent, mut state) = (None, None);
            for _ in 0..entries {
                let key = r.str()?;
                let value = r.str()?;
                if value.len() > MAX_TRACE_VALUE {
                    return Ok(None);
                }
                match key {
                    "traceparent" => parent = Some(value),
                    "tracestate" => state = Some(value),
                    _ => {}
                }
            }
            Ok(parent.filter(|p| !p.is_empty()).map(|parent| TraceContext {
                traceparent: parent.to_owned(),
                tracestate: state.filter(|s| !s.is_empty()).map(str::to_owned),
            }))
        };
        Ok(read(&mut r).ok().flatten().map(Box::new))
    }
}

fn write_opt_str(dst: &mut BytesMut, s: Option<&str>) {
    match s {
        Some(s) => write_str(dst, s),
        None => dst.extend_from_slice(&[0xc0]),
    }
}

fn opt_str<'a>(r: &mut Reader<'a>) -> Result<Option<&'a str>, DecodeError> {
    if r.peek_nil() {
        r.nil()?;
        Ok(None)
    } else {
        r.str().map(Some)
    }
}

/// `s` cut to at most `max` bytes, at a character boundary.
fn bounded(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip_reason(reason: Option<&CancelReason>) -> Option<Box<CancelReason>> {
        let mut buf = BytesMut::new();
        match reason {
            Some(reason) => reason.encode(&mut buf),
            None => buf.extend_from_slice(&[0xc0]),
        }
        let mut r = Reader::new(&buf);
        let decoded = CancelReason::decode(&mut r).expect("decodes");
        assert!(r.is_empty());
        decoded
    }

    #[test]
    fn a_cancel_reason_round_trips_and_long_strings_are_cut() {
        assert_eq!(round_trip_reason(None), None);
        let reason = CancelReason {
            source: "deadline".into(),
            message: Some("é".repeat(MAX_CANCEL_MESSAGE)),
            origin: Some("actor root#1a2b3c4d".into()),
        };
        let back = round_trip_reason(Some(&reason)).expect("a reason");
        assert_eq!(back.source, "deadline");
        assert_eq!(back.origin.as_deref(), Some("actor root#1a2b3c4d"));
        let message = back.message.expect("a message");
        assert_eq!(message.len(), MAX_CANCEL_MESSAGE);
        assert!(message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn a_reason_of_another_shape_reads_as_none_and_broken_bytes_are_an_error() {
        let mut buf = BytesMut::new();
        write_array_len(&mut buf, 2);
        write_str(&mut buf, "explicit");
        buf.extend_from_slice(&[0xc0, 0x07]);
        let mut r = Reader::new(&buf);
        assert_eq!(CancelReason::decode(&mut r).expect("well-formed"), None);
        // Past the whole value, not only part of it.
        assert_eq!(r.uint().expect("the next value"), 7);
        // An array announcing more than there is: not MessagePack.
        assert!(CancelReason::decode(&mut Reader::new(&[0x93, 0xa1])).is_err());
    }

    #[test]
    fn a_trace_context_round_trips_and_an_unusable_one_reads_as_none() {
        let trace = TraceContext {
            traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            tracestate: Some("congo=t61rcWkgMzE".into()),
        };
        let mut buf = BytesMut::new();
        trace.encode(&mut buf);
        let back = TraceContext::decode(&mut Reader::new(&buf)).expect("decodes");
        assert_eq!(back.as_deref(), Some(&trace));

        // A value over the bound: dropped, not refused, and the reader is past the map.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x81]);
        write_str(&mut buf, "traceparent");
        write_str(&mut buf, &"0".repeat(MAX_TRACE_VALUE + 1));
        let mut r = Reader::new(&buf);
        assert_eq!(TraceContext::decode(&mut r).expect("decodes"), None);
        assert!(r.is_empty());

        // No traceparent: none.
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0x81]);
        write_str(&mut buf, "baggage");
        write_str(&mut buf, "k=v");
        assert_eq!(TraceContext::decode(&mut Reader::new(&buf)).unwrap(), None);

        // Not a map of strings: none, and the reader is past it.
        let mut r = Reader::new(&[0x81, 0x01, 0x02, 0x07]);
        assert_eq!(TraceContext::decode(&mut r).expect("well-formed"), None);
        assert_eq!(r.uint().expect("the next value"), 7);
    }
}
