//! What the actor test files share: running a root actor, and running each test on both
//! transports.

use trellis_actor::{Config, Transport};

/// Runs `body` as the root actor of a tree configured by `config`, over `transport`.
pub(crate) fn root_with<F, Fut>(
    config: Config,
    transport: Transport,
    body: F,
) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    trellis::Runner::multi_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root(
            "root",
            config.transport(transport),
            body,
        ))
}

/// Generates, for each named `fn(Transport)`, one test over Unix sockets and one over TCP on
/// the loopback interface.
#[macro_export]
macro_rules! on_both_transports {
    ($($name:ident),* $(,)?) => {
        mod unix {
            $( #[test] fn $name() { super::$name(trellis_actor::Transport::Unix) } )*
        }
        mod tcp {
            $( #[test] fn $name() { super::$name(trellis_actor::Transport::tcp_loopback()) } )*
        }
    };
}
