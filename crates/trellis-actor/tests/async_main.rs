//! A tree whose processes start from an async `main` (`#[tokio::main]`, here `#[tokio::test]`):
//! the root actor runs under `trellis::root` in the test's runtime, and each child serves
//! through `serve_if_child_async` on the runtime its own `main` built.

// The root's future, a nursery in an actor in a root, nests deeper than clippy's default.
#![recursion_limit = "256"]

use trellis_actor::{Config, Functions, open_nursery, run_root};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// The child's work: which kind of runtime serves it.
async fn runtime_flavor() -> Result<String, trellis::Error> {
    Ok(format!(
        "{:?}",
        tokio::runtime::Handle::current().runtime_flavor()
    ))
}

fn config() -> Config {
    Config::new(Functions::new().register(add).register(runtime_flavor)).child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "-q",
    ])
}

/// The children's entry: an async `main` of its own, on a multi-thread runtime (the blocking
/// entry, `serve_if_child`, would serve on a current-thread one of its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn serve_children() {
    trellis_actor::serve_if_child_async(config()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tree_runs_from_an_async_main() {
    let pid = trellis::root(run_root("root", config(), || async {
        open_nursery(|an| async move {
            let calc = an.start_actor("calc").await?;
            assert_eq!(calc.run(add, (1, 2)).await?, 3);
            // Served by the child's own #[tokio::test] runtime, not one trellis built.
            assert_eq!(calc.run(runtime_flavor, ()).await?, "MultiThread");
            Ok(calc.pid())
        })
        .await
    }))
    .await
    .unwrap();
    // The nursery tore the child down and reaped it.
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
}

/// The zygote backend needs the blocking entry (a fork of a process with a runtime's threads
/// would leave them behind): from an async `main`, the zygote says so and exits, and the
/// spawn fails with `SpawnFailed` instead of hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zygote_backend_refuses_an_async_main() {
    let config = config().spawn_backend(trellis_actor::SpawnBackend::Zygote);
    let err = trellis::root(run_root("root", config, || async {
        open_nursery(|an| async move {
            an.start_actor("calc").await?;
            Ok(())
        })
        .await
    }))
    .await
    .unwrap_err();
    let failed = err
        .downcast_ref::<trellis_actor::ActorError>()
        .or_else(|| {
            err.as_group()
                .and_then(|g| g.leaves().find_map(|e| e.downcast_ref()))
        })
        .unwrap_or_else(|| panic!("{err:?}"));
    assert!(
        matches!(failed, trellis_actor::ActorError::SpawnFailed { .. }),
        "{failed}"
    );
}
