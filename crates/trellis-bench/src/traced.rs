//! B6 with tracing (feature `opentelemetry`): the cost of a subscriber and an exporter on the
//! call path. Each call runs in a `request` span; traced, the root and the child send their
//! spans through `tracing-opentelemetry` to OpenTelemetry's batch processor and an exporter
//! that counts and drops them, and every call carries its trace context to the callee. The
//! anchor is the same calls untraced, in the same run (both roots on a current-thread
//! runtime, since the root's subscriber is its thread's).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::Instrument;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use trellis_actor::open_nursery;

use crate::Comparison;
use crate::actors::{config, echo};

/// Set in a child whose spans are to be exported.
const TRACE_ENV: &str = "TRELLIS_BENCH_TRACE";

/// An exporter that counts spans and drops them.
#[derive(Debug, Clone, Default)]
struct Counting(Arc<AtomicU64>);

impl SpanExporter for Counting {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        self.0.fetch_add(batch.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

fn subscriber() -> (impl tracing::Subscriber + Send + Sync, SdkTracerProvider) {
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(Counting::default())
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("trellis-bench"))
        .with_filter(LevelFilter::INFO);
    (tracing_subscriber::registry().with(layer), provider)
}

/// In a child of the traced case: export this process's spans too.
pub(crate) fn serve_role() {
    if std::env::var_os(TRACE_ENV).is_some() {
        let (subscriber, provider) = subscriber();
        let _ = tracing::subscriber::set_global_default(subscriber);
        // Lives as long as the process.
        std::mem::forget(provider);
    }
}

fn latencies(traced: bool, calls: usize) -> Result<Vec<f64>, String> {
    let config = match traced {
        true => config().child_env(TRACE_ENV, "1").child_log_level(None),
        false => config(),
    };
    let run = move || {
        trellis::Runner::current_thread()
            .handle_ctrl_c(false)
            .run(trellis_actor::run_root("bench", config, || async move {
                open_nursery(|an| async move {
                    let portal = an.start_actor("rpc").await?;
                    let mut lat = Vec::with_capacity(calls);
                    for i in 0..(200 + calls) as u64 {
                        let t0 = Instant::now();
                        let request = tracing::info_span!("request");
                        let got = portal.run(echo, (i,)).instrument(request).await?;
                        if i >= 200 {
                            lat.push(t0.elapsed().as_secs_f64());
                        }
                        assert_eq!(got, i);
                    }
                    Ok(lat)
                })
                .await
            }))
            .map_err(|e| format!("{e:?}"))
    };
    if !traced {
        return run();
    }
    let (subscriber, provider) = subscriber();
    let lat = tracing::subscriber::with_default(subscriber, run);
    let _ = provider.shutdown();
    lat
}

/// B6 traced against untraced: p50 and p99 of a run call.
pub(crate) fn b6(runs: usize) -> Result<Vec<Comparison>, String> {
    let calls = 10_000 * (runs / 5).max(1);
    let plain = latencies(false, calls)?;
    let traced = latencies(true, calls)?;
    let pct = crate::percentile;
    Ok([("p50 traced", 0.5), ("p99 traced", 0.99)]
        .into_iter()
        .map(|(case, p)| Comparison {
            id: "B6",
            case: case.into(),
            trellis: pct(&traced, p),
            anchor: "the same calls untraced (current-thread roots)".into(),
            anchor_value: pct(&plain, p),
        })
        .collect())
}
