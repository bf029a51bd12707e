//! The entry point that makes a process a root or a child actor.

use std::future::Future;
use std::process::ExitCode;

use super::config::{Config, env};
use super::run::run_root;

/// The entry point: call it first in `main`. In the root process it runs `root` as the root
/// actor (on a multi-thread runtime, with Ctrl-C cancelling the tree); in a child process
/// started by an actor nursery it serves calls until its parent cancels it, and never returns.
///
/// ```no_run
/// use trellis_actor::{Config, Functions};
///
/// async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
///     Ok(a + b)
/// }
///
/// fn main() -> std::process::ExitCode {
///     trellis_actor::main(Config::new(Functions::new().register(add)), || async {
///         trellis_actor::open_nursery(|an| async move {
///             let calc = an.start_actor("calc").await?;
///             assert_eq!(calc.run(add, (1, 2)).await?, 3);
///             Ok(())
///         })
///         .await
///     })
/// }
/// ```
pub fn main<F, Fut>(config: Config, root: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), trellis::Error>>,
{
    main_with(trellis::Runner::multi_thread(), config, root)
}

/// [`main`] with the root's runtime chosen by `runner` (its flavour, whether Ctrl-C cancels
/// the root, instruments). Child processes always serve on a current-thread runtime.
pub fn main_with<F, Fut>(runner: trellis::Runner, config: Config, root: F) -> ExitCode
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<(), trellis::Error>>,
{
    if is_child() {
        super::child::serve(config);
    }
    runner.main(run_root("root", config, root))
}

/// Whether this process was started as a child actor: by its parent (the environment says
/// who it is) or through a launcher (its standard input will).
pub(crate) fn is_child() -> bool {
    std::env::var_os(env::UID).is_some() && std::env::var_os(env::PARENT).is_some()
        || std::env::var_os(super::launch::LAUNCH_ENV).is_some()
}

/// Serves as a child actor if this process was started as one, and then exits; otherwise
/// returns at once. [`main`] does this first; call it yourself at the top of a `main` that
/// does not use [`main`] (a benchmark runner, say), or from the one `#[test]` of a test binary
/// that its root's [`Config::child_args`] runs (`["that_test", "--exact", "--nocapture"]`).
pub fn serve_if_child(config: Config) {
    if is_child() {
        super::child::serve(config);
    }
}

/// [`serve_if_child`] for a `main` that is already async (`#[tokio::main]`, either flavour):
/// in a child process it serves on the runtime that polls it, in a trellis root of its own,
/// and exits the process; otherwise it returns at once. Call it first in such a `main`; the
/// root actor of the same program runs with [`run_root`] inside [`trellis::root`].
///
/// ```no_run
/// use trellis_actor::{Config, Functions};
///
/// async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
///     Ok(a + b)
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), trellis::Error> {
///     let config = || Config::new(Functions::new().register(add));
///     trellis_actor::serve_if_child_async(config()).await;
///     trellis::root(trellis_actor::run_root("root", config(), || async {
///         trellis_actor::open_nursery(|an| async move {
///             let calc = an.start_actor("calc").await?;
///             assert_eq!(calc.run(add, (1, 2)).await?, 3);
///             Ok(())
///         })
///         .await
///     }))
///     .await
/// }
/// ```
pub async fn serve_if_child_async(config: Config) {
    if is_child() {
        super::child::serve_async(config).await;
    }
}
