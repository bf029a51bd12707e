//! Readable backtraces: the frames of the runtime (std, tokio, trellis) folded away, so that
//! the application's own frames stand out, as color-eyre prints them.
//!
//! An error's `{:?}` (and an actor's remote backtrace in an error tree) prints its backtrace
//! folded: each run of runtime frames becomes one line saying how many were hidden. With
//! `RUST_BACKTRACE=full` every frame is printed.
//!
//! ```
//! let text = "   0: std::panicking::begin_panic\n\
//!            \x20            at /rustc/library/std/src/panicking.rs:1:1\n\
//!            \x20  1: myapp::handler\n\
//!            \x20            at ./src/main.rs:42:5\n\
//!            \x20  2: tokio::runtime::task::harness::poll_future\n";
//! let folded = trellis::backtrace::fold_frames(text);
//! assert!(folded.contains("1: myapp::handler"));
//! assert!(folded.contains("at ./src/main.rs:42:5"));
//! assert!(!folded.contains("tokio::runtime"));
//! assert!(folded.contains("1 frame hidden"));
//! ```

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::OnceLock;

/// The crates (and symbols) whose frames are the runtime's, not the application's.
const RUNTIME: &[&str] = &[
    "std::",
    "core::",
    "alloc::",
    "tokio::",
    "tokio_util::",
    "futures",
    "trellis::",
    "trellis_actor::",
    "trellis_net::",
    "trellis_wire::",
    "trellis_dtls::",
    "__rust",
    "__libc",
    // The test harness.
    "test::",
];

/// Symbols of the C start-up and thread entry, matched whole.
const START_UP: &[&str] = &["main", "_start", "start_thread", "clone3", "clone"];

/// Whether backtraces are printed in full (`RUST_BACKTRACE=full`), read once.
pub fn full() -> bool {
    static FULL: OnceLock<bool> = OnceLock::new();
    *FULL.get_or_init(|| std::env::var("RUST_BACKTRACE").is_ok_and(|v| v == "full"))
}

/// `text` (a backtrace as std prints it) folded, unless `RUST_BACKTRACE=full`.
pub fn fold(text: &str) -> Cow<'_, str> {
    if full() {
        Cow::Borrowed(text)
    } else {
        Cow::Owned(fold_frames(text))
    }
}

/// `text` with each run of runtime frames (std, core, tokio, trellis, the C start-up)
/// replaced by one line, whatever `RUST_BACKTRACE` says. Lines that are not frames are kept.
pub fn fold_frames(text: &str) -> String {
    let mut out = String::new();
    let mut hidden = 0usize;
    let mut in_hidden_frame = false;
    let flush = |out: &mut String, hidden: &mut usize| {
        if *hidden > 0 {
            let s = if *hidden == 1 { "" } else { "s" };
            let _ = writeln!(
                out,
                "      ⋮ {hidden} frame{s} hidden (runtime and std; RUST_BACKTRACE=full shows them)"
            );
            *hidden = 0;
        }
    };
    for line in text.lines() {
        match frame_symbol(line) {
            Some(symbol) if is_runtime(symbol) => {
                hidden += 1;
                in_hidden_frame = true;
            }
            Some(_) => {
                flush(&mut out, &mut hidden);
                in_hidden_frame = false;
                out.push_str(line);
                out.push('\n');
            }
            // A frame's `at file:line` goes with its frame.
            None if in_hidden_frame && line.trim_start().starts_with("at ") => {}
            None => {
                flush(&mut out, &mut hidden);
                in_hidden_frame = false;
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    flush(&mut out, &mut hidden);
    if !text.ends_with('\n') && out.ends_with('\n') {
        out.pop();
    }
    out
}

/// The symbol of a frame line (`  12: some::path`), if it is one.
fn frame_symbol(line: &str) -> Option<&str> {
    let trimmed = line.trim_start();
    let (number, symbol) = trimmed.split_once(": ")?;
    (!number.is_empty() && number.bytes().all(|b| b.is_ascii_digit())).then_some(symbol.trim())
}

/// Whether a frame's symbol is the runtime's: its path starts in a runtime crate, or it is a
/// trait method of a runtime crate on a generic type (`<F as tokio::…>::poll`).
fn is_runtime(symbol: &str) -> bool {
    let starts = |s: &str| RUNTIME.iter().any(|p| s.starts_with(p));
    if START_UP.contains(&symbol) {
        return true;
    }
    match symbol.strip_prefix('<') {
        None => starts(symbol),
        Some(rest) => {
            if starts(rest) {
                return true;
            }
            match rest.split_once(" as ") {
                Some((own, trait_path)) => {
                    // `&dyn core::ops::Fn<…>`, `&mut F`: the type behind the reference.
                    let own = own
                        .trim_start_matches('&')
                        .trim_start_matches("mut ")
                        .trim_start_matches("dyn ");
                    starts(own) || (!own.contains("::") && starts(trait_path))
                }
                None => false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "   0: trellis::error::Repr::other
             at ./crates/trellis/src/error.rs:390:13
   1: <trellis::error::Error as core::convert::From<E>>::from
             at ./crates/trellis/src/error.rs:642:19
   2: service::square::{{closure}}
             at ./examples/service/src/main.rs:57:20
   3: <F as trellis_actor::functions::signatures::ServeFn<(A,B)>>::call::{{closure}}
             at ./crates/trellis-actor/src/functions/signatures.rs:65:43
   4: <core::pin::Pin<P> as core::future::future::Future>::poll
   5: <service::Lines as futures_core::stream::Stream>::poll_next
             at ./examples/service/src/main.rs:200:9
   6: tokio::runtime::task::harness::poll_future
   7: __rust_try
   8: <&dyn core::ops::function::Fn<()> as core::ops::function::FnOnce<()>>::call_once
   9: start_thread
             at ./nptl/pthread_create.c:442:8
";

    #[test]
    fn runtime_runs_fold_and_application_frames_stay() {
        let folded = fold_frames(SAMPLE);
        let lines: Vec<&str> = folded.lines().collect();
        assert_eq!(
            lines,
            [
                "      ⋮ 2 frames hidden (runtime and std; RUST_BACKTRACE=full shows them)",
                "   2: service::square::{{closure}}",
                "             at ./examples/service/src/main.rs:57:20",
                "      ⋮ 2 frames hidden (runtime and std; RUST_BACKTRACE=full shows them)",
                "   5: <service::Lines as futures_core::stream::Stream>::poll_next",
                "             at ./examples/service/src/main.rs:200:9",
                "      ⋮ 4 frames hidden (runtime and std; RUST_BACKTRACE=full shows them)",
            ]
        );
    }

    #[test]
    fn text_that_is_not_a_backtrace_is_kept() {
        assert_eq!(fold_frames("disabled backtrace"), "disabled backtrace");
        assert_eq!(fold_frames(""), "");
    }
}
