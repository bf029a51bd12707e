//! Error groups: PEP 654 semantics (nesting, split, subgroup) and a readable tree.

mod common;

use common::{Boom, KeyError};
use trellis::{Cancelled, Error, ErrorGroup};

fn sample() -> ErrorGroup {
    ErrorGroup::new(
        "outer",
        vec![
            Error::new(Boom("a")),
            Error::from(ErrorGroup::new(
                "inner",
                vec![Error::new(KeyError("b")), Error::new(Boom("c"))],
            )),
            Error::new(KeyError("d")),
        ],
    )
}

fn leaf_texts(group: &ErrorGroup) -> Vec<String> {
    group.leaves().map(|e| e.to_string()).collect()
}

#[test]
fn leaves_are_depth_first_in_order() {
    assert_eq!(
        leaf_texts(&sample()),
        ["a", "key error: b", "c", "key error: d"]
    );
}

/// PEP 654: split by type keeps the nesting and messages on both sides.
#[test]
fn split_by_type_keeps_shape() {
    let (keys, rest) = sample().split::<KeyError>();
    let keys = keys.unwrap();
    let rest = rest.unwrap();
    assert_eq!(keys.message(), "outer");
    assert_eq!(keys.errors().len(), 2);
    assert_eq!(keys.errors()[0].as_group().unwrap().message(), "inner");
    assert_eq!(leaf_texts(&keys), ["key error: b", "key error: d"]);
    assert_eq!(leaf_texts(&rest), ["a", "c"]);
    assert_eq!(rest.errors()[1].as_group().unwrap().message(), "inner");
}

/// PEP 654: a side with nothing in it is `None`, never an empty group.
#[test]
fn split_with_no_match_gives_none() {
    let (matched, rest) = sample().split::<std::fmt::Error>();
    assert!(matched.is_none());
    assert_eq!(leaf_texts(&rest.unwrap()).len(), 4);
    assert!(sample().subgroup::<std::io::Error>().is_none());
}

/// PEP 654: the predicate sees nested groups; a matching group goes whole.
#[test]
fn predicate_matching_a_group_takes_it_whole() {
    let (matched, rest) =
        sample().split_by(&mut |e| e.as_group().is_some_and(|g| g.message() == "inner"));
    let matched = matched.unwrap();
    assert_eq!(matched.errors().len(), 1);
    assert_eq!(leaf_texts(&matched), ["key error: b", "c"]);
    assert_eq!(leaf_texts(&rest.unwrap()), ["a", "key error: d"]);
}

#[test]
fn subgroup_by_predicate() {
    let sub = sample().subgroup_by(&mut |e| e.to_string() == "c").unwrap();
    assert_eq!(leaf_texts(&sub), ["c"]);
    // Empty intermediate groups disappear, non-empty ones stay.
    assert_eq!(sub.errors()[0].as_group().unwrap().message(), "inner");
}

#[test]
fn into_single_unwraps_exactly_one_leaf() {
    let one = ErrorGroup::new(
        "outer",
        vec![Error::from(ErrorGroup::new(
            "inner",
            vec![Error::new(Boom("only"))],
        ))],
    );
    let leaf = one.into_single().unwrap();
    assert_eq!(leaf.downcast::<Boom>().unwrap(), Boom("only"));
    let many = sample();
    assert!(many.into_single().is_err());
    // On an `Error` that is not a group, `into_single` is the identity.
    assert_eq!(
        Error::new(Boom("x")).into_single().unwrap().to_string(),
        "x"
    );
}

#[test]
#[should_panic(expected = "at least one error")]
fn empty_group_is_refused() {
    let _ = ErrorGroup::new("empty", Vec::new());
}

#[test]
fn display_draws_the_tree() {
    let text = sample().to_string();
    let expected = "\
outer (3 errors)
├─ [1] a
├─ [2] inner (2 errors)
│  ├─ [2.1] key error: b
│  └─ [2.2] c
└─ [3] key error: d";
    assert_eq!(text, expected);
    // Debug draws the same tree, so `unwrap()` on a failed nursery is readable.
    assert_eq!(format!("{:?}", Error::from(sample())), expected);
}

/// PEP 654/678 (Python's test_exceptions, notes on group members): a note added to an error
/// prints after its message, in `{:?}` and under its leaf in a group's tree; notes survive a
/// failed downcast; a noted cancellation is still a cancellation.
#[test]
fn notes_print_after_the_message_and_in_the_tree() {
    let mut first = Error::from(Boom("disk full"));
    first.add_note("while writing /tmp/x");
    first.add_note("attempt 3 of 3");
    assert_eq!(first.notes(), ["while writing /tmp/x", "attempt 3 of 3"]);
    if first.backtrace().is_none() {
        assert_eq!(
            format!("{first:?}"),
            "disk full\nwhile writing /tmp/x\nattempt 3 of 3"
        );
    }
    let first = first.downcast::<KeyError>().unwrap_err();
    assert_eq!(first.notes().len(), 2);
    let group = ErrorGroup::new("g", vec![first, Error::msg("x")]);
    assert_eq!(
        group.to_string(),
        "g (2 errors)\n├─ [1] disk full\n│      while writing /tmp/x\n│      attempt 3 of 3\n└─ [2] x"
    );

    let mut cancelled = Error::cancelled();
    cancelled.add_note("the user pressed stop");
    assert!(cancelled.is_cancelled());
    assert_eq!(cancelled.notes(), ["the user pressed stop"]);
    assert!(cancelled.is::<trellis::Cancelled>());
}

#[test]
fn multi_line_leaves_stay_aligned() {
    let group = ErrorGroup::new(
        "g",
        vec![Error::msg("first line\nsecond line"), Error::msg("x")],
    );
    assert_eq!(
        group.to_string(),
        "g (2 errors)\n├─ [1] first line\n│      second line\n└─ [2] x"
    );
}

#[test]
fn leaf_source_chains_are_shown() {
    #[derive(Debug, thiserror::Error)]
    #[error("request failed")]
    struct Outer(#[source] std::io::Error);
    let group = ErrorGroup::new(
        "g",
        vec![Error::new(Outer(std::io::Error::other("connection reset")))],
    );
    assert_eq!(
        group.to_string(),
        "g (1 error)\n└─ [1] request failed: connection reset"
    );
}

fn assert_std_error<E: std::error::Error + Send + Sync + 'static>() {}

#[test]
fn group_is_a_std_error_and_works_with_anyhow() {
    assert_std_error::<ErrorGroup>();
    fn fails() -> anyhow::Result<()> {
        Err(sample())?;
        Ok(())
    }
    let err = fails().unwrap_err();
    assert_eq!(
        err.downcast_ref::<ErrorGroup>().unwrap().leaves().count(),
        4
    );
    // With the `anyhow` feature, `?` turns trellis::Error into anyhow::Error, keeping the group.
    fn nursery_like() -> Result<(), Error> {
        Err(sample().into())
    }
    fn caller() -> anyhow::Result<()> {
        nursery_like()?;
        Ok(())
    }
    let err = caller().unwrap_err();
    assert_eq!(
        err.downcast_ref::<ErrorGroup>().unwrap().leaves().count(),
        4
    );
    // Without the feature, any error library takes the boxed form.
    let err = anyhow::Error::from_boxed(Error::from(sample()).into_std());
    assert!(err.to_string().starts_with("outer (3 errors)"));
    // And `?` works from any std error into trellis::Error.
    fn parse() -> Result<i32, Error> {
        Ok("nope".parse::<i32>()?)
    }
    assert!(parse().unwrap_err().is::<std::num::ParseIntError>());
}

#[test]
fn error_knows_cancellation() {
    assert!(Error::from(Cancelled::new()).is_cancelled());
    assert!(Error::cancelled().downcast::<Cancelled>().is_ok());
    assert!(!Error::new(Boom("x")).is_cancelled());
    // Through a source chain, as a user error wrapping Cancelled would have it.
    #[derive(Debug, thiserror::Error)]
    #[error("wrapped")]
    struct Wrapped(#[source] Cancelled);
    assert!(Error::new(Wrapped(Cancelled::new())).is_cancelled());
    let io = std::io::Error::other(Cancelled::new());
    assert!(trellis::IsCancelled::is_cancelled(&io));
    assert!(Error::from_boxed(Box::new(Cancelled::new())).is_cancelled());
}

#[test]
fn error_debug_shows_causes() {
    #[derive(Debug, thiserror::Error)]
    #[error("outer")]
    struct Outer(#[source] Boom);
    let err = Error::new(Outer(Boom("root cause")));
    let text = format!("{err:?}");
    match err.backtrace() {
        // Backtraces enabled where the tests run: they follow the causes, folded to the
        // application's frames (unless RUST_BACKTRACE=full).
        Some(backtrace) => {
            let folded = trellis::backtrace::fold(&backtrace.to_string()).into_owned();
            assert_eq!(
                text,
                format!("outer\n\nCaused by:\n    0: root cause\n\nStack backtrace:\n{folded}")
            );
            assert!(folded.contains("error_debug_shows_causes"), "{folded}");
        }
        None => assert_eq!(text, "outer\n\nCaused by:\n    0: root cause"),
    }
}

#[inline(never)]
fn make_error_here() -> Error {
    Error::msg("made here")
}

/// A typed error that is a cancellation, as `IoError::Cancelled` is.
#[derive(Debug)]
struct Stopped(Cancelled);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped: {}", self.0)
    }
}

impl std::error::Error for Stopped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// An error keeps the backtrace of where it became an `Error` when backtraces are enabled
/// (`RUST_BACKTRACE=1`), and none when they are not; `Cancelled`, errors wrapping it and groups
/// never carry one.
/// Backtrace settings are read once per process, so each case runs in a process of its own.
#[test]
fn errors_capture_a_backtrace_only_when_enabled() {
    match std::env::var("TRELLIS_TEST_BACKTRACE").as_deref() {
        Ok("on") => {
            let err = make_error_here();
            let backtrace = err.backtrace().expect("captured").to_string();
            assert!(backtrace.contains("make_error_here"), "{backtrace}");
            assert!(format!("{err:?}").contains("Stack backtrace:"));
            assert!(Error::cancelled().backtrace().is_none());
            let group = Error::from(trellis::ErrorGroup::new("two", vec![err, Error::msg("b")]));
            assert!(group.backtrace().is_none());
            // A cancellation that a typed error wraps (as its source) is not a fault either.
            let wrapped = Error::from(Stopped(Cancelled::new()));
            assert!(wrapped.is_cancelled());
            assert!(wrapped.backtrace().is_none());
        }
        Ok("off") => {
            let err = make_error_here();
            assert!(err.backtrace().is_none());
            assert!(!format!("{err:?}").contains("Stack backtrace:"));
        }
        _ => {
            for (mode, setting) in [("on", "1"), ("off", "0")] {
                let status = std::process::Command::new(std::env::current_exe().unwrap())
                    .args([
                        "errors_capture_a_backtrace_only_when_enabled",
                        "--exact",
                        "-q",
                    ])
                    .env("TRELLIS_TEST_BACKTRACE", mode)
                    .env("RUST_BACKTRACE", setting)
                    .env("RUST_LIB_BACKTRACE", setting)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .unwrap();
                assert!(status.success(), "backtraces {mode}: {status}");
            }
        }
    }
}

#[test]
fn errors_know_their_type_name() {
    let err = Error::from(Boom("x"));
    assert!(err.type_name().ends_with("::Boom"), "{}", err.type_name());
    // Kept through a failed downcast.
    let err = err.downcast::<KeyError>().unwrap_err();
    assert!(err.type_name().ends_with("::Boom"));
    assert_eq!(Error::cancelled().type_name(), "trellis::error::Cancelled");
}

#[test]
fn sizes_stay_small() {
    // `Result<(), Error>` is what every checkpointed task returns: at most two words, with a
    // cancellation's reason held inline (no allocation for the error every cancelled task
    // returns). `Cancelled` itself is one word.
    let word = std::mem::size_of::<usize>();
    assert_eq!(std::mem::size_of::<trellis::Cancelled>(), word);
    assert!(std::mem::size_of::<Error>() <= 2 * word);
    assert_eq!(std::mem::size_of::<Result<(), Error>>(), 2 * word);
    assert!(std::mem::size_of::<Result<(), trellis::Cancelled>>() <= 2 * word);
}
