//! Trace context across actors (feature `opentelemetry`): a call made inside a `tracing` span
//! that `tracing-opentelemetry` links to an OpenTelemetry context sends that context with its
//! `Start` (W3C `traceparent`/`tracestate`, protocol 2.1); the callee runs the function in a
//! span whose remote parent it is, so one request through several actors is one trace.
//!
//! Without the feature both ends compile to nothing. With it and no span (or no subscriber)
//! the caller's cost is one look at the current span; the callee's a disabled span.

#[cfg(feature = "opentelemetry")]
use std::future::Future;

#[cfg(feature = "opentelemetry")]
use trellis_wire::ActorId;
use trellis_wire::TraceContext;

/// The current span's trace context, to send with a `Start`; `None` outside a trace.
#[cfg(feature = "opentelemetry")]
pub(crate) fn current() -> Option<Box<TraceContext>> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let span = tracing::Span::current();
    if span.is_none() {
        return None;
    }
    let context = span.context();
    let otel = context.span();
    let sc = otel.span_context();
    if !sc.is_valid() {
        return None;
    }
    let state = sc.trace_state().header();
    Some(Box::new(TraceContext {
        traceparent: format!(
            "00-{}-{}-{:02x}",
            sc.trace_id(),
            sc.span_id(),
            sc.trace_flags().to_u8()
        ),
        tracestate: (!state.is_empty()).then_some(state),
    }))
}

/// The current span's trace context: none without the feature `opentelemetry`.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
pub(crate) fn current() -> Option<Box<TraceContext>> {
    None
}

/// Runs a served call of `function` for `peer` in a span named after the function, the
/// remote child of the caller's span when `trace` says which.
#[cfg(feature = "opentelemetry")]
pub(crate) fn instrument<F: Future>(
    call: F,
    function: &str,
    peer: &ActorId,
    trace: Option<Box<TraceContext>>,
) -> impl Future<Output = F::Output> + use<F> {
    use tracing::Instrument;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    let span = tracing::info_span!(
        target: "trellis::call",
        "trellis.call",
        otel.name = function,
        otel.kind = "server",
        function,
        peer = %peer,
    );
    if !span.is_disabled()
        && let Some(parent) = trace.as_deref().and_then(remote_parent)
    {
        // Fails only when no OpenTelemetry layer is installed: then nothing is traced.
        let _ = span.set_parent(parent);
    }
    call.instrument(span)
}

/// The OpenTelemetry context of a remote parent span, from W3C Trace Context headers; `None`
/// when the `traceparent` does not parse (version `ff`, wrong lengths, not hex, an all-zero
/// id), as the W3C recommendation says a receiver should treat it.
#[cfg(feature = "opentelemetry")]
pub(crate) fn remote_parent(trace: &TraceContext) -> Option<opentelemetry::Context> {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };

    let mut parts = trace.traceparent.split('-');
    let (version, trace_id, span_id, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    if !hex(version, 2) || version == "ff" || (version == "00" && parts.next().is_some()) {
        return None;
    }
    if !hex(trace_id, 32) || !hex(span_id, 16) || !hex(flags, 2) {
        return None;
    }
    let trace_id = TraceId::from_hex(trace_id).ok()?;
    let span_id = SpanId::from_hex(span_id).ok()?;
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    let state = trace
        .tracestate
        .as_deref()
        .and_then(|s| s.parse::<TraceState>().ok())
        .unwrap_or_default();
    let parent = SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags & TraceFlags::SAMPLED.to_u8()),
        true,
        state,
    );
    Some(opentelemetry::Context::new().with_remote_span_context(parent))
}

#[cfg(all(test, feature = "opentelemetry"))]
mod tests {
    use opentelemetry::trace::TraceContextExt;

    use super::*;

    fn parent(traceparent: &str) -> Option<opentelemetry::Context> {
        remote_parent(&TraceContext {
            traceparent: traceparent.to_owned(),
            tracestate: Some("congo=t61rcWkgMzE".to_owned()),
        })
    }

    #[test]
    fn a_w3c_traceparent_is_the_remote_parent() {
        let cx = parent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").unwrap();
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_remote() && sc.is_sampled());
        assert_eq!(
            sc.trace_id().to_string(),
            "0af7651916cd43dd8448eb211c80319c"
        );
        assert_eq!(sc.span_id().to_string(), "b7ad6b7169203331");
        assert_eq!(sc.trace_state().header(), "congo=t61rcWkgMzE");
    }

    #[test]
    fn a_traceparent_that_does_not_parse_is_no_parent() {
        for bad in [
            "",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031zz-b7ad6b7169203331-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parent(bad).is_none(), "{bad:?}");
        }
        // A later version may append fields.
        assert!(parent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-xx").is_some());
    }
}
