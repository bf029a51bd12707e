//! Panics in served functions: reported to the caller as failures, with the backtrace when
//! the actor captures backtraces (`RUST_BACKTRACE=1`).

use std::any::Any;
use std::backtrace::{Backtrace, BacktraceStatus};
use std::cell::RefCell;
use std::sync::Once;

use trellis_wire::{ActorId, ErrorKind, ErrorReport};

/// What a served function's panic left behind.
pub(crate) struct Panic {
    message: String,
    backtrace: Option<String>,
}

thread_local! {
    /// The backtrace of the last panic on this thread, kept by the hook until it is reported.
    static LAST_BACKTRACE: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs (once per process) a panic hook that keeps the panic's backtrace for the report,
/// then runs the hook that was there before (so the panic is still printed as usual).
pub(crate) fn install_hook() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let backtrace = Backtrace::capture();
            if backtrace.status() == BacktraceStatus::Captured {
                LAST_BACKTRACE.with(|last| *last.borrow_mut() = Some(backtrace.to_string()));
            }
            let text = info.to_string().replace('\n', " ");
            crate::logs::panicked(format!("{} {text}", thread_name()));
            previous(info);
        }));
    });
}

fn thread_name() -> String {
    let thread = std::thread::current();
    format!("thread '{}'", thread.name().unwrap_or("<unnamed>"))
}

/// The panic caught on this thread with `payload`.
pub(crate) fn report(payload: Box<dyn Any + Send>) -> Panic {
    let message = payload
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-text payload".to_owned());
    Panic {
        message,
        backtrace: LAST_BACKTRACE.with(|last| last.borrow_mut().take()),
    }
}

pub(crate) fn error_report(actor: &ActorId, panic: Panic) -> ErrorReport {
    ErrorReport {
        actor: actor.clone(),
        kind: ErrorKind::Failed,
        type_name: "panic".to_owned(),
        message: panic.message,
        chain: Vec::new(),
        backtrace: panic.backtrace,
        value: None,
        group: Vec::new(),
    }
}
