//! Trace context across processes (feature `opentelemetry`, protocol 2.1): a span opened in
//! the root around a call that goes root → A → B arrives, from the three processes' in-memory
//! exporters, as one trace of three spans in parent order.

mod common;

use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use serde::{Deserialize, Serialize};
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use trellis_actor::{Config, Functions, Transport, open_nursery};

/// An exporter that keeps what it is given, in memory.
#[derive(Debug, Clone, Default)]
struct Memory(Arc<Mutex<Vec<SpanData>>>);

impl SpanExporter for Memory {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.lock().unwrap().extend(batch);
        Ok(())
    }
}

/// One exported span, as an actor reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Exported {
    name: String,
    trace: String,
    span: String,
    parent: String,
    remote_parent: bool,
}

static EXPORTED: OnceLock<Memory> = OnceLock::new();

/// A subscriber that sends `tracing` spans to OpenTelemetry, and from there to `EXPORTED`.
fn subscriber() -> impl tracing::Subscriber + Send + Sync {
    let memory = EXPORTED.get_or_init(Memory::default).clone();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(memory)
        .build();
    // As an application would: the runtime's own debug and trace spans stay out of traces.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("trellis-test"))
        .with_filter(LevelFilter::INFO);
    tracing_subscriber::registry().with(layer)
}

fn exported() -> Vec<Exported> {
    let Some(memory) = EXPORTED.get() else {
        return Vec::new();
    };
    memory
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|s| Exported {
            name: s.name.to_string(),
            trace: s.span_context.trace_id().to_string(),
            span: s.span_context.span_id().to_string(),
            parent: s.parent_span_id.to_string(),
            remote_parent: s.parent_span_is_remote,
        })
        .collect()
}

async fn leaf() -> Result<String, trellis::Error> {
    Ok("leaf".into())
}

/// In A: calls `leaf` in B.
async fn relay(name: String) -> Result<String, trellis::Error> {
    let peer = trellis_actor::wait_for_actor(&name).await?;
    Ok(peer.run(leaf, ()).await?)
}

/// The spans this process exported so far.
async fn spans() -> Result<Vec<Exported>, trellis::Error> {
    Ok(exported())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(leaf)
            .register(relay)
            .register(spans),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    // The children install their own subscriber (below): trellis leaves their logging alone.
    .child_log_level(None)
    .grace_period(Duration::from_secs(2))
}

#[test]
fn serve_children() {
    if std::env::var_os("TRELLIS_ACTOR_UID").is_some() {
        tracing::subscriber::set_global_default(subscriber()).expect("the first subscriber");
    }
    trellis_actor::serve_if_child(config());
}

fn one_trace_through_three_actors(transport: Transport) {
    // The root's subscriber is this thread's: its runtime runs here alone.
    let _guard = tracing::subscriber::set_default(subscriber());
    trellis::Runner::current_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root(
            "root",
            config().transport(transport),
            || async {
                open_nursery(|an| async move {
                    let a = an.start_actor("a").await?;
                    let b = an.start_actor("b").await?;
                    let request = tracing::info_span!("request");
                    let answer = a.run(relay, ("b".to_owned(),)).instrument(request).await?;
                    assert_eq!(answer, "leaf");
                    let root = exported();
                    let in_a = a.run(spans, ()).await?;
                    let in_b = b.run(spans, ()).await?;
                    let relay = only(&in_a, "relay");
                    let leaf = only(&in_b, "leaf");
                    let request = root
                        .iter()
                        .find(|s| s.name == "request" && s.span == relay.parent)
                        .unwrap_or_else(|| panic!("A's parent among {root:?}"));
                    assert_eq!(
                        request.parent, "0000000000000000",
                        "the trace starts in the root"
                    );
                    assert_eq!(relay.trace, request.trace, "one trace");
                    assert_eq!(leaf.trace, request.trace, "one trace");
                    assert_eq!(relay.parent, request.span, "A's span is the root's child");
                    assert_eq!(leaf.parent, relay.span, "B's span is A's child");
                    assert!(relay.remote_parent && leaf.remote_parent);
                    // Calls made outside any span carry no trace: `spans` ran untraced, so
                    // each of its spans is the root of a trace of its own.
                    let later = b.run(spans, ()).await?;
                    let untraced: Vec<_> = later.iter().filter(|s| s.name == "spans").collect();
                    assert!(!untraced.is_empty());
                    assert!(
                        untraced.iter().all(|s| s.parent == "0000000000000000"),
                        "{untraced:?} {root:?}"
                    );
                    Ok(())
                })
                .await
            },
        ))
        .unwrap();
}

/// The one span named `name` among `spans`.
fn only<'a>(spans: &'a [Exported], name: &str) -> &'a Exported {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span named {name} in {spans:?}");
    found[0]
}

on_both_transports!(one_trace_through_three_actors);
