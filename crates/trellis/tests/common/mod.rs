//! Shared helpers for the integration tests.
#![allow(dead_code, unreachable_pub)]

/// Generates one `#[test]` per runtime flavour for each named `async fn() -> ()` of the
/// enclosing module: `current_thread::<name>` on the autojump clock and `multi_thread::<name>`
/// on two workers.
#[macro_export]
macro_rules! both_flavors {
    ($($name:ident),* $(,)?) => {
        mod current_thread {
            $( #[test] fn $name() { trellis::testing::run_test(super::$name()) } )*
        }
        mod multi_thread {
            $( #[test] fn $name() { trellis::testing::run_test_multi_thread(super::$name()) } )*
        }
    };
}

/// Generates one `#[test]` on the autojump clock for each named `async fn() -> ()`.
#[macro_export]
macro_rules! autojump {
    ($($name:ident),* $(,)?) => {
        mod autojump_clock {
            $( #[test] fn $name() { trellis::testing::run_test(super::$name()) } )*
        }
    };
}

/// A simple test error type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Boom(pub &'static str);

/// Another one, for type-based splitting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key error: {0}")]
pub struct KeyError(pub &'static str);

// Task errors say whether they are a cancellation (the one rule nurseries and scopes share).
impl trellis::IsCancelled for Boom {
    fn is_cancelled(&self) -> bool {
        false
    }
}

impl trellis::IsCancelled for KeyError {
    fn is_cancelled(&self) -> bool {
        false
    }
}
