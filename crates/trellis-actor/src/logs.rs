//! Log forwarding: `tracing` events of child actors reach the root, tagged with the actor
//! they happened in.
//!
//! A child process installs a [`Forwarder`] as its global subscriber. It formats each enabled
//! event into a [`Record`] and queues it (bounded: when full, records are dropped and
//! counted); a task of the child ships the queue to its parent in batches (the runtime function
//! `trellis.log`). A parent that is itself a child queues what it receives as it is, so records
//! keep their origin on the way up; the root emits them as its own `tracing` events, with
//! target `trellis::remote` and the fields `actor` (name#id) and `origin` (the event's own
//! target), for whatever subscriber the root installed. A panic's message is a record too.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record as SpanRecord};
use tracing::{Event, Level, Metadata, Subscriber};
use trellis_wire::{ActorId, Payload};

/// How many records wait for shipping at most; beyond, records are dropped and counted.
const QUEUE_CAPACITY: usize = 4096;

/// How many bytes of records wait for shipping at most; beyond, records are dropped and
/// counted.
const QUEUE_BYTES: usize = 4 << 20;

/// The longest text a record keeps; a longer one is cut, and says so.
const RECORD_TEXT_MAX: usize = 64 << 10;

/// How many bytes of records one `trellis.log` call carries at most (a batch must fit a
/// frame, whatever was logged).
const BATCH_BYTES: usize = 1 << 20;

/// One event, formatted where it happened.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Record {
    /// 1 = error … 5 = trace.
    level: u8,
    /// The event's target (its module path, usually).
    target: String,
    /// The message and the other fields, `message k=v k=v`.
    text: String,
    /// The actor where it happened.
    actor: ActorId,
}

impl Record {
    /// About what the record takes, queued or encoded.
    fn size(&self) -> usize {
        64 + self.target.len() + self.text.len() + self.actor.name.len() + self.actor.uid.len()
    }

    /// Cuts a text longer than [`RECORD_TEXT_MAX`].
    fn bounded(mut self) -> Record {
        if self.text.len() > RECORD_TEXT_MAX {
            let mut end = RECORD_TEXT_MAX;
            while !self.text.is_char_boundary(end) {
                end -= 1;
            }
            let cut = self.text.len() - end;
            self.text.truncate(end);
            let _ = write!(self.text, "… ({cut} more bytes cut)");
        }
        self
    }
}

fn level_number(level: Level) -> u8 {
    match level {
        Level::ERROR => 1,
        Level::WARN => 2,
        Level::INFO => 3,
        Level::DEBUG => 4,
        Level::TRACE => 5,
    }
}

/// Parses a level name (`error`, `warn`, `info`, `debug`, `trace`, any case).
fn parse_level(name: &str) -> Option<Level> {
    name.trim().parse().ok()
}

/// What this process forwards, when it is a child actor: its own records and those its
/// children pass up.
struct Queue {
    /// This actor: what its own records and its drop reports are tagged with.
    actor: ActorId,
    records: Mutex<Queued>,
    ready: Notify,
    dropped: AtomicU64,
}

/// The records waiting, and the bytes they take.
#[derive(Default)]
struct Queued {
    records: VecDeque<Record>,
    bytes: usize,
}

static QUEUE: OnceLock<Arc<Queue>> = OnceLock::new();

impl Queue {
    /// A record of this actor.
    fn own(&self, level: Level, target: String, text: String) -> Record {
        Record {
            level: level_number(level),
            target,
            text,
            actor: self.actor.clone(),
        }
    }

    fn push(&self, record: Record) {
        let record = record.bounded();
        let size = record.size();
        let mut queued = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if queued.records.len() >= QUEUE_CAPACITY || queued.bytes + size > QUEUE_BYTES {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        queued.bytes += size;
        queued.records.push_back(record);
        drop(queued);
        self.ready.notify_one();
    }

    /// The next batch: the oldest records, up to [`BATCH_BYTES`] (at least one), and a
    /// record of how many were dropped since the last batch.
    fn take(&self) -> Vec<Record> {
        let mut queued = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(next) = queued.records.front() {
            let size = next.size();
            if !batch.is_empty() && bytes + size > BATCH_BYTES {
                break;
            }
            bytes += size;
            queued.bytes -= size;
            batch.extend(queued.records.pop_front());
        }
        let more = !queued.records.is_empty();
        drop(queued);
        if more {
            // The shipper comes back for the rest.
            self.ready.notify_one();
        }
        let dropped = self.dropped.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            batch.push(self.own(
                Level::WARN,
                "trellis::logs".to_owned(),
                format!(
                    "{dropped} log records dropped: the queue to the parent was full, or the \
                     parent refused them"
                ),
            ));
        }
        batch
    }
}

/// The global subscriber of a child actor: queues enabled events for the parent.
struct Forwarder {
    max_level: Level,
    queue: Arc<Queue>,
    next_span: AtomicU64,
}

impl Subscriber for Forwarder {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        // Spans are not forwarded: disabled, they cost nothing (a served call's span, say).
        // The runtime's own debug and trace events would describe the forwarding itself, and
        // feed it without end.
        metadata.is_event()
            && *metadata.level() <= self.max_level
            && (*metadata.level() <= Level::INFO || !metadata.target().starts_with("trellis"))
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(self.max_level.into())
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        // Spans are not forwarded; each gets an id all the same.
        Id::from_u64(self.next_span.fetch_add(1, Ordering::Relaxed).max(1))
    }

    fn record(&self, _: &Id, _: &SpanRecord<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut text = Text::default();
        event.record(&mut text);
        let metadata = event.metadata();
        let record = self.queue.own(
            *metadata.level(),
            metadata.target().to_owned(),
            text.finish(),
        );
        self.queue.push(record);
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// An event's fields as one line: the message, then `name=value` for the others.
#[derive(Default)]
struct Text {
    message: String,
    fields: String,
}

impl Text {
    fn finish(self) -> String {
        match (self.message.is_empty(), self.fields.is_empty()) {
            (_, true) => self.message,
            (true, false) => self.fields,
            (false, false) => format!("{} {}", self.message, self.fields),
        }
    }
}

impl Visit for Text {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            if !self.fields.is_empty() {
                self.fields.push(' ');
            }
            let _ = write!(self.fields, "{}={value:?}", field.name());
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            self.record_debug(field, &value);
        }
    }
}

/// Makes this child process forward its events at `configured` level and above, or at the
/// level `TRELLIS_LOG` names (`off`: none) — unless a global subscriber is installed already:
/// then the program chose its own logging, and the root is told so once (a subscriber set up
/// before `serve_if_child` is an easy mistake that otherwise shows only as silence). Panic
/// messages are forwarded either way.
pub(crate) fn forward_from_child(actor: ActorId, configured: Option<Level>) {
    let max_level = match std::env::var("TRELLIS_LOG") {
        Ok(name) if name.eq_ignore_ascii_case("off") => None,
        Ok(name) => parse_level(&name).or(configured),
        Err(_) => configured,
    };
    let Some(max_level) = max_level else {
        return;
    };
    let queue = Arc::new(Queue {
        actor,
        records: Mutex::new(Queued::default()),
        ready: Notify::new(),
        dropped: AtomicU64::new(0),
    });
    let forwarder = Forwarder {
        max_level,
        queue: queue.clone(),
        next_span: AtomicU64::new(1),
    };
    if tracing::subscriber::set_global_default(forwarder).is_err() {
        queue.push(
            queue.own(
                Level::WARN,
                "trellis::logs".to_owned(),
                "this actor installed its own global tracing subscriber before trellis-actor \
             could: its events go there and are not forwarded (install it inside the root's \
             body or after serve_if_child)"
                    .to_owned(),
            ),
        );
    }
    let _ = QUEUE.set(queue);
}

/// Forwards a panic's message from a child (the root prints its own panics as usual).
pub(crate) fn panicked(message: String) {
    if let Some(queue) = QUEUE.get() {
        queue.push(queue.own(Level::ERROR, "trellis::panic".to_owned(), message));
    }
}

/// Ships queued records to the parent with `send` (a call of `trellis.log`) until cancelled;
/// then ships what is left, briefly.
pub(crate) async fn ship<F, Fut>(mut send: F) -> Result<(), trellis::Error>
where
    F: FnMut(Payload) -> Fut,
    Fut: std::future::Future<Output = Result<Shipped, trellis::Error>>,
{
    let Some(queue) = QUEUE.get() else {
        return Ok(());
    };
    loop {
        let batch = queue.take();
        if !batch.is_empty() {
            let count = batch.len() as u64;
            let args = Payload::encode(&(batch,)).map_err(trellis::Error::new)?;
            match send(args).await {
                Ok(Shipped::Taken) => continue,
                // The parent answered with an error: these are lost, and said to be.
                Ok(Shipped::Refused) => {
                    count_dropped(queue, count);
                    continue;
                }
                Err(e) if e.is_cancelled() => break,
                // The parent is going away: nothing to ship to.
                Err(_) => return Ok(()),
            }
        }
        if trellis::cancellable(queue.ready.notified()).await.is_err() {
            break;
        }
    }
    // Cancelled: what was logged while the actor wound down still goes, if the parent
    // listens, for a second at most.
    let _ = trellis::CancelScope::shielded()
        .run(trellis::move_on_after(Duration::from_secs(1), async {
            loop {
                let batch = queue.take();
                if batch.is_empty() {
                    return Ok::<_, trellis::Error>(());
                }
                let args = Payload::encode(&(batch,)).map_err(trellis::Error::new)?;
                send(args).await?;
            }
        }))
        .await;
    Err(trellis::Cancelled::new().into())
}

/// What became of a batch the parent answered.
pub(crate) enum Shipped {
    /// The parent took it.
    Taken,
    /// The parent refused it (with an error): its records are counted as dropped.
    Refused,
}

/// Counts `count` records as dropped.
fn count_dropped(queue: &Queue, count: u64) {
    queue.dropped.fetch_add(count, Ordering::Relaxed);
}

/// The first actor that `trellis.log` arguments `args` speak for and `may` refuses, if any
/// (`Err` when the arguments do not decode: the call is then refused as bad arguments).
pub(crate) fn forged(
    args: &trellis_wire::Payload,
    may: impl Fn(&ActorId) -> bool,
) -> Result<Option<ActorId>, trellis_wire::PayloadError> {
    let (records,) = args.decode::<(Vec<Record>,)>()?;
    Ok(records.into_iter().map(|r| r.actor).find(|a| !may(a)))
}

/// Served as `trellis.log`: records from a child, passed up or emitted here.
pub(crate) async fn receive(records: Vec<Record>) -> Result<(), trellis::Error> {
    for record in records {
        match QUEUE.get() {
            Some(queue) => queue.push(record),
            None => emit(&record),
        }
    }
    Ok(())
}

/// Emits a record as an event of this (root) process.
fn emit(record: &Record) {
    let actor = &record.actor;
    let (origin, text) = (&record.target, &record.text);
    match record.level {
        1 => tracing::error!(target: "trellis::remote", %actor, %origin, "{text}"),
        2 => tracing::warn!(target: "trellis::remote", %actor, %origin, "{text}"),
        3 => tracing::info!(target: "trellis::remote", %actor, %origin, "{text}"),
        4 => tracing::debug!(target: "trellis::remote", %actor, %origin, "{text}"),
        _ => tracing::trace!(target: "trellis::remote", %actor, %origin, "{text}"),
    }
}
