//! Log forwarding: `tracing` events of child actors (and grandchildren) reach the root's
//! subscriber tagged with the actor they happened in; a child's panic message reaches it too.
//! (tractor forwards its children's log records to the root's console in the same spirit:
//! `test_multi_program`/`tractor.log` tests read the root's output for child records.)

use std::sync::{Arc, Mutex, OnceLock};

mod common;

use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Metadata, Subscriber};
use trellis_actor::{Config, Functions, Transport, open_nursery};

async fn chatty(word: String) -> Result<(), trellis::Error> {
    tracing::info!(answer = 42, "hello from {word}");
    tracing::warn!("careful, {word}");
    tracing::debug!("too fine to forward");
    Ok(())
}

/// Starts `name` below this actor and has it log.
async fn chatty_below(name: String) -> Result<(), trellis::Error> {
    open_nursery(|an| async move {
        let portal = an.start_actor(&name).await?;
        portal.run(chatty, (name.clone(),)).await?;
        an.cancel();
        Ok(())
    })
    .await
}

/// Logs `n` events without yielding: more than the forwarding queue holds.
async fn flood(n: u64) -> Result<(), trellis::Error> {
    for i in 0..n {
        tracing::info!(i, "flood");
    }
    Ok(())
}

/// Logs one record larger than a frame may be, then `n` records of 200 KiB each, without
/// yielding.
async fn huge(n: u64) -> Result<(), trellis::Error> {
    tracing::info!("huge {}", "x".repeat(20 << 20));
    let big = "y".repeat(200 << 10);
    for i in 0..n {
        tracing::info!(i, "big {big}");
    }
    Ok(())
}

async fn panicky() -> Result<(), trellis::Error> {
    panic!("the gears are stuck");
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(chatty)
            .register(chatty_below)
            .register(panicky)
            .register(flood)
            .register(huge),
    )
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// Children that set up a global subscriber of their own before `serve_if_child`.
#[test]
fn serve_children_with_own_subscriber() {
    if std::env::args().any(|a| a == "serve_children_with_own_subscriber") {
        let _ = tracing::subscriber::set_global_default(tracing::subscriber::NoSubscriber::new());
    }
    trellis_actor::serve_if_child(own_subscriber_config());
}

/// The configuration whose children are served by `serve_children_with_own_subscriber`.
fn own_subscriber_config() -> Config {
    config().child_args([
        "serve_children_with_own_subscriber",
        "--exact",
        "--nocapture",
        "-q",
    ])
}

/// One event the root's subscriber saw: its target and its fields, as text.
#[derive(Debug, Clone)]
struct Seen {
    target: String,
    level: tracing::Level,
    fields: Vec<(String, String)>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The root's subscriber: keeps every event.
struct Capture(Arc<Mutex<Vec<Seen>>>);

struct Fields(Vec<(String, String)>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.push((field.name().to_owned(), format!("{value:?}")));
    }
}

impl Subscriber for Capture {
    fn enabled(&self, _: &Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }
    fn record(&self, _: &Id, _: &Record<'_>) {}
    fn record_follows_from(&self, _: &Id, _: &Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut fields = Fields(Vec::new());
        event.record(&mut fields);
        self.0.lock().unwrap().push(Seen {
            target: event.metadata().target().to_owned(),
            level: *event.metadata().level(),
            fields: fields.0,
        });
    }
    fn enter(&self, _: &Id) {}
    fn exit(&self, _: &Id) {}
}

fn captured() -> Arc<Mutex<Vec<Seen>>> {
    static SEEN: OnceLock<Arc<Mutex<Vec<Seen>>>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(Mutex::new(Vec::new()));
        tracing::subscriber::set_global_default(Capture(seen.clone())).expect("one subscriber");
        seen
    })
    .clone()
}

/// Remote events seen at the root from actors named `name`.
fn from_actor(name: &str) -> Vec<Seen> {
    captured()
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.target == "trellis::remote")
        .filter(|s| {
            s.field("actor")
                .is_some_and(|a| a.starts_with(&format!("{name}#")))
        })
        .cloned()
        .collect()
}

fn root<F, Fut>(body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    root_with(config(), body);
}

fn root_with<F, Fut>(config: Config, body: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    captured();
    common::root_with(config, Transport::Unix, body).unwrap_or_else(|e| panic!("{e:?}"));
}

/// A child whose program installed its own subscriber first keeps it (its events are not
/// forwarded), and the root is told why it hears nothing from that child.
#[test]
fn a_child_with_its_own_subscriber_says_so() {
    root_with(own_subscriber_config(), || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("loner").await?;
            portal.run(chatty, ("the loner".to_owned(),)).await?;
            an.cancel();
            Ok(())
        })
        .await
    });
    let seen = from_actor("loner");
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].level, tracing::Level::WARN);
    assert_eq!(seen[0].field("origin"), Some("trellis::logs"));
    assert!(
        seen[0]
            .field("message")
            .is_some_and(|m| m.contains("its own global tracing subscriber")),
        "{seen:?}"
    );
}

#[test]
fn child_events_reach_the_root_tagged_with_the_actor() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("talker").await?;
            portal.run(chatty, ("the talker".to_owned(),)).await?;
            an.cancel();
            Ok(())
        })
        .await
    });
    // The nursery waited for the child to exit, and the child shipped what it logged before.
    let seen = from_actor("talker");
    let texts: Vec<(&tracing::Level, &str)> = seen
        .iter()
        .map(|s| (&s.level, s.field("message").unwrap_or("")))
        .collect();
    assert_eq!(
        texts,
        [
            (&tracing::Level::INFO, "hello from the talker answer=42"),
            (&tracing::Level::WARN, "careful, the talker"),
        ],
        "{seen:?}"
    );
    assert!(seen.iter().all(|s| s.field("origin") == Some("logs::chatty")
        || s.field("origin") == Some("logs")), "{seen:?}");
}

#[test]
fn grandchild_events_keep_their_origin_through_the_parent() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("middle").await?;
            portal.run(chatty_below, ("grandchild".to_owned(),)).await?;
            an.cancel();
            Ok(())
        })
        .await
    });
    let seen = from_actor("grandchild");
    assert!(
        seen.iter()
            .any(|s| s.field("message") == Some("hello from grandchild answer=42")),
        "{seen:?}"
    );
    // Relayed by `middle`, but not re-tagged as its own.
    assert!(from_actor("middle").is_empty());
}

#[test]
fn a_child_panic_message_reaches_the_root() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("panicker").await?;
            let failed = portal.run(panicky, ()).await;
            assert!(failed.is_err());
            an.cancel();
            Ok(())
        })
        .await
    });
    let seen = from_actor("panicker");
    let panic = seen
        .iter()
        .find(|s| s.field("origin") == Some("trellis::panic"))
        .unwrap_or_else(|| panic!("no panic record: {seen:?}"));
    assert_eq!(panic.level, tracing::Level::ERROR);
    assert!(
        panic
            .field("message")
            .unwrap()
            .contains("the gears are stuck"),
        "{panic:?}"
    );
}

#[test]
fn a_flood_is_bounded_and_what_was_dropped_is_counted() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("flooder").await?;
            // The child runs on one thread and the loop never yields: its queue (4,096 records)
            // fills before the shipping task runs once.
            portal.run(flood, (20_000,)).await?;
            an.cancel();
            Ok(())
        })
        .await
    });
    let seen = from_actor("flooder");
    let floods = seen
        .iter()
        .filter(|s| s.field("message").is_some_and(|m| m.starts_with("flood")))
        .count();
    assert_eq!(floods, 4096);
    let dropped = seen
        .iter()
        .find(|s| s.level == tracing::Level::WARN)
        .and_then(|s| s.field("message"))
        .unwrap_or_else(|| panic!("no drop report"));
    assert!(
        dropped.starts_with("15904 log records dropped"),
        "{dropped}"
    );
}

/// A record larger than a frame, and more big records than the queue's bytes hold: the
/// large one arrives cut (saying so), the excess is reported as dropped, and forwarding goes
/// on (it used to end for good at a batch larger than a frame).
#[test]
fn huge_records_are_cut_and_forwarding_goes_on() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("giant").await?;
            portal.run(huge, (100,)).await?;
            portal.run(chatty, ("the giant".to_owned(),)).await?;
            an.cancel();
            Ok(())
        })
        .await
    });
    let seen = from_actor("giant");
    let message = |s: &Seen| s.field("message").unwrap_or_default().to_owned();
    let cut = seen
        .iter()
        .map(message)
        .find(|m| m.starts_with("huge"))
        .expect("the huge record arrives");
    assert!(
        cut.ends_with("more bytes cut)"),
        "{}",
        &cut[cut.len() - 40..]
    );
    assert!(cut.len() < (64 << 10) + 64, "{} bytes", cut.len());
    let big = seen
        .iter()
        .filter(|s| message(s).starts_with("big"))
        .count();
    assert!(big > 0 && big < 100, "{big} big records arrived");
    assert!(
        seen.iter()
            .any(|s| s.level == tracing::Level::WARN && message(s).contains("dropped")),
        "no drop report"
    );
    assert!(
        seen.iter()
            .any(|s| message(s).starts_with("hello from the giant")),
        "forwarding went on"
    );
}
