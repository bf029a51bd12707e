//! Supervisor events in `tracing`. A file of its own: `tracing` caches per call site whether
//! anyone listens, and a test binary whose other tests hit the same call sites on other
//! threads, with no subscriber, can leave this test's scoped subscriber out.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trellis::supervisor::{Restart, Strategy, Supervision, open_supervisor};
use trellis::{Error, sleep};

/// A child that fails after `after`, its first `failures` runs; later runs wait forever.
fn failing(
    after: Duration,
    failures: u32,
) -> impl FnMut() -> std::pin::Pin<Box<dyn Future<Output = Result<(), Error>> + Send>> + Send + 'static
{
    let runs = Arc::new(AtomicU32::new(0));
    move || {
        let run = runs.fetch_add(1, Ordering::Relaxed);
        Box::pin(async move {
            sleep(after).await?;
            if run < failures {
                return Err(Error::msg("crash"));
            }
            trellis::sleep_forever().await?;
            Ok(())
        })
    }
}

/// Every restart is a `tracing` event naming the supervisor, the child and the cause.
#[test]
fn restarts_are_tracing_events() {
    use tracing_subscriber::layer::{Context, SubscriberExt};

    #[derive(Clone, Default)]
    struct Events(Arc<Mutex<Vec<String>>>);
    struct Fields(String);
    impl tracing::field::Visit for Fields {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0 += &format!("{}={value:?} ", field.name());
        }
    }
    impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Events {
        fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
            let mut fields = Fields(format!("{} ", event.metadata().level()));
            event.record(&mut fields);
            self.0.lock().unwrap().push(fields.0);
        }
    }

    let events = Events::default();
    let subscriber = tracing_subscriber::registry().with(events.clone());
    tracing::subscriber::with_default(subscriber, || {
        trellis::testing::run_test(async {
            let child = failing(Duration::from_secs(1), 3);
            open_supervisor(
                Supervision::new(Strategy::OneForOne)
                    .name("pool")
                    .intensity(2, Duration::from_secs(60)),
                |sup| async move {
                    sup.start("worker", Restart::Permanent, child)?;
                    Ok::<_, Error>(())
                },
            )
            .await
            .unwrap_err();
        });
    });
    let events = events.0.lock().unwrap().clone();
    let restarts: Vec<_> = events.iter().filter(|e| e.contains("restarting")).collect();
    assert_eq!(restarts.len(), 2, "{events:#?}");
    for event in restarts {
        assert!(event.starts_with("WARN "), "{event}");
        assert!(event.contains("supervisor=pool child=worker"), "{event}");
        assert!(event.contains("cause=crash"), "{event}");
    }
    assert!(
        events
            .iter()
            .any(|e| e.starts_with("ERROR ") && e.contains("gives up")),
        "{events:#?}"
    );
}
