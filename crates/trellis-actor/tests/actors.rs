//! Actor trees with real child processes, ported from tractor's test suite (the original
//! test is named on each).

use std::time::Duration;

use trellis_actor::{ActorError, Config, ErrorKind, Functions, RemoteActorError, open_nursery};

#[derive(Debug, thiserror::Error)]
#[error("boom: {0}")]
struct Boom(String);

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

async fn fail(message: String) -> Result<(), trellis::Error> {
    Err(Boom(message).into())
}

async fn sleep_forever() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

async fn pid() -> Result<u32, trellis::Error> {
    Ok(std::process::id())
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fail)
            .register(sleep_forever)
            .register(pid),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(Duration::from_secs(2))
}

/// In a child process, this test serves as the child actor.
#[test]
fn serve_children() {
    trellis_actor::serve_child_in_test(config());
}

fn root<F, Fut>(body: F) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    trellis::Runner::multi_thread()
        .handle_ctrl_c(false)
        .run(trellis_actor::run_root("root", config(), body))
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// tractor: test_spawning.py::test_spawn_and_check_registry (the call part)
#[test]
fn remote_call_returns_value() {
    let child_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = child_pid.clone();
    root(|| async {
        open_nursery(|an| async move {
            let calc = an.start_actor("calc").await?;
            assert_eq!(calc.actor_id().name, "calc");
            assert_eq!(calc.run(add, (1, 2)).await?, 3);
            let remote_pid = calc.run(pid, ()).await?;
            assert_eq!(remote_pid, calc.pid());
            assert_ne!(remote_pid, std::process::id());
            seen.store(remote_pid, std::sync::atomic::Ordering::SeqCst);
            Ok(())
        })
        .await
    })
    .unwrap();
    // The nursery reaped it.
    let child_pid = child_pid.load(std::sync::atomic::Ordering::SeqCst);
    assert_ne!(child_pid, 0);
    assert!(!alive(child_pid));
}

/// tractor: test_remote_exc_relay / test_remote_error (an error raised in a remote function
/// arrives boxed with its type)
#[test]
fn remote_error_arrives_with_its_type() {
    let err = root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("failer").await?;
            let err = portal.run(fail, ("bad".to_owned(),)).await.unwrap_err();
            let remote = err
                .downcast_ref::<RemoteActorError>()
                .expect("a remote error");
            assert_eq!(remote.actor().name, "failer");
            assert_eq!(remote.kind(), &ErrorKind::Failed);
            assert!(remote.is_type::<Boom>(), "{}", remote.type_name());
            assert_eq!(remote.message(), "boom: bad");
            Err(err)
        })
        .await
    })
    .unwrap_err();
    // The body's error comes out of the nursery as a group holding it.
    let group = err.as_group().expect("a group");
    assert_eq!(group.errors().len(), 1);
    assert!(group.errors()[0].is::<RemoteActorError>());
}

/// tractor: test_spawning.py::test_run_in_actor_same_func_in_child / unknown function
#[test]
fn unknown_function_and_bad_arguments_are_typed_remote_errors() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("strict").await?;
            let err = portal
                .run_named::<i64, _>("no::such::function", ())
                .await
                .unwrap_err();
            let remote = err.downcast_ref::<RemoteActorError>().unwrap();
            assert_eq!(remote.kind(), &ErrorKind::UnknownFunction);
            let name = std::any::type_name_of_val(&add);
            let err = portal
                .run_named::<i64, _>(name, ("one", "two"))
                .await
                .unwrap_err();
            let remote = err.downcast_ref::<RemoteActorError>().unwrap();
            assert_eq!(remote.kind(), &ErrorKind::BadArguments, "{remote}");
            // The actor still serves after both.
            assert_eq!(portal.run(add, (2, 2)).await?, 4);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_cancellation.py::test_cancel_infinite_streamer-style: cancelling the caller
/// cancels the remote task, and the actor keeps serving.
#[test]
fn cancelling_a_remote_call() {
    root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("sleeper").await?;
            let cancelled = trellis::move_on_after(Duration::from_millis(200), async {
                portal.run(sleep_forever, ()).await
            })
            .await?;
            assert!(cancelled.is_none());
            assert_eq!(portal.run(add, (1, 1)).await?, 2);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_spawning.py::test_run_in_actor_results (results gathered at close)
#[test]
fn run_in_actor_result_gathered_when_the_nursery_closes() {
    root(|| async {
        let handle =
            open_nursery(|an| async move { an.run_in_actor("adder", add, (20, 22)).await }).await?;
        assert_eq!(handle.into_value(), Some(42));
        Ok(())
    })
    .unwrap();
}

/// tractor: test_cancellation.py::test_cancel_via_SIGINT-style direct kill: SIGKILL of a child
/// surfaces as an error in its parent's nursery.
#[test]
fn killed_child_surfaces_as_an_error() {
    let err = root(|| async {
        open_nursery(|an| async move {
            let portal = an.start_actor("victim").await?;
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(portal.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await
    })
    .unwrap_err();
    let group = err.as_group().expect("a group");
    let died = group
        .leaves()
        .find_map(|e| e.downcast_ref::<ActorError>())
        .expect("an actor error");
    assert!(matches!(died, ActorError::Died { .. }), "{died}");
    assert!(died.to_string().contains("SIGKILL"), "{died}");
}
