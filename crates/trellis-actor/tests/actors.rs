//! Actor trees with real child processes, ported from tractor's test suite (the original
//! test is named on each).

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use trellis_actor::{
    ActorError, Config, ErrorKind, Functions, RemoteActorError, Transport, open_nursery,
};

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

/// An error type whose values cross actors (registered with `error_type`).
#[derive(Debug, PartialEq, thiserror::Error, serde::Serialize, serde::Deserialize)]
enum Insufficient {
    #[error("need {need}, have {have}")]
    Funds { need: u64, have: u64 },
}

async fn withdraw(amount: u64) -> Result<u64, trellis::Error> {
    Err(Insufficient::Funds {
        need: amount,
        have: 3,
    }
    .into())
}

async fn explode() -> Result<(), trellis::Error> {
    panic!("kaboom");
}

static SLEEPERS: AtomicU32 = AtomicU32::new(0);

/// Sleeps until cancelled, counted in `SLEEPERS` while it sleeps.
async fn counted_sleep() -> Result<(), trellis::Error> {
    SLEEPERS.fetch_add(1, Ordering::SeqCst);
    let slept = trellis::sleep_forever().await;
    SLEEPERS.fetch_sub(1, Ordering::SeqCst);
    slept?;
    Ok(())
}

async fn sleepers() -> Result<u32, trellis::Error> {
    Ok(SLEEPERS.load(Ordering::SeqCst))
}

/// In an actor: calls `counted_sleep` in the actor `name` and says who cancelled it.
async fn sleep_in(name: String) -> Result<String, trellis::Error> {
    let peer = trellis_actor::find_actor(&name)
        .await?
        .ok_or_else(|| trellis::Error::msg("no such actor"))?;
    let err = peer.run(counted_sleep, ()).await.unwrap_err();
    match err {
        ActorError::ContextCancelled { requested_by, .. } => Ok(requested_by.name),
        err => Err(err.into()),
    }
}

static CANCELS_SEEN: AtomicU32 = AtomicU32::new(0);

/// Sleeps until cancelled, and counts the cancellation in its process.
async fn sleep_counting_cancels() -> Result<(), trellis::Error> {
    let slept = trellis::sleep_forever().await;
    CANCELS_SEEN.fetch_add(1, Ordering::SeqCst);
    slept?;
    Ok(())
}

async fn cancels_seen() -> Result<u32, trellis::Error> {
    Ok(CANCELS_SEEN.load(Ordering::SeqCst))
}

/// Opens a nursery of `breadth` actors each running this with `depth - 1`; at depth 0, fails.
async fn spawn_and_fail(depth: u32, breadth: u32) -> Result<(), trellis::Error> {
    if depth == 0 {
        return Err(Boom(format!("leaf in {}", trellis_actor::current().id().name)).into());
    }
    open_nursery(|an| async move {
        for i in 0..breadth {
            an.run_in_actor(
                &format!("d{depth}.{i}"),
                spawn_and_fail,
                (depth - 1, breadth),
            )
            .await?;
        }
        Ok(())
    })
    .await
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fail)
            .register(sleep_forever)
            .register(pid)
            .register(sleep_counting_cancels)
            .register(cancels_seen)
            .register(spawn_and_fail)
            .register(withdraw)
            .register(explode)
            .register(counted_sleep)
            .register(sleepers)
            .register(sleep_in)
            .error_type::<Insufficient>(),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
    .grace_period(Duration::from_secs(2))
    // Remote backtraces are part of what the tests check, whatever the environment says.
    .child_env("RUST_BACKTRACE", "1")
}

/// In a child process, this test serves as the child actor.
#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

fn root<F, Fut>(transport: Transport, body: F) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    common::root_with(config(), transport, body)
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// tractor: test_spawning.py::test_spawn_and_check_registry (the call part)
fn remote_call_returns_value(transport: Transport) {
    let child_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = child_pid.clone();
    root(transport, || async {
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
fn remote_error_arrives_with_its_type(transport: Transport) {
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("failer").await?;
            let err = portal.run(fail, ("bad".to_owned(),)).await.unwrap_err();
            let remote = err.as_remote().expect("a remote error");
            assert_eq!(remote.actor().name, "failer");
            assert_eq!(remote.kind(), &ErrorKind::Failed);
            assert!(remote.is_type::<Boom>(), "{}", remote.type_name());
            assert_eq!(remote.message(), "boom: bad");
            // `?` hands the remote failure itself to the nursery, not the typed error.
            Err(err.into())
        })
        .await
    })
    .unwrap_err();
    // The body's error comes out of the nursery as a group holding it.
    let group = err.as_group().expect("a group");
    assert_eq!(group.errors().len(), 1);
    assert!(group.errors()[0].is::<RemoteActorError>());
}

/// tractor: test_remote_exc_relay with a boxed type that the caller knows: registered error
/// types come back as their real type; others as type name and text.
fn registered_error_types_are_rebuilt(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let bank = an.start_actor("bank").await?;
            let err = bank.run(withdraw, (10,)).await.unwrap_err();
            let remote = err.as_remote().unwrap();
            assert_eq!(
                remote.rebuilt::<Insufficient>(),
                Some(&Insufficient::Funds { need: 10, have: 3 })
            );
            // Found through the source chain as well.
            assert!(
                trellis::Error::from(err)
                    .chain()
                    .any(|e| e.is::<Insufficient>())
            );
            let err = bank.run(fail, ("x".to_owned(),)).await.unwrap_err();
            let remote = err.as_remote().unwrap();
            assert!(remote.rebuilt::<Boom>().is_none());
            assert!(remote.is_type::<Boom>());
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_remote_exc_relay for a crash: a panic in a remote function fails the call with
/// the panic's message and the remote backtrace, and the actor goes on serving.
fn remote_panic_arrives_with_its_backtrace(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("fragile").await?;
            let err = portal.run(explode, ()).await.unwrap_err();
            let remote = err.as_remote().unwrap();
            assert_eq!(remote.type_name(), "panic");
            assert_eq!(remote.message(), "kaboom");
            let backtrace = remote.backtrace().expect("captured with RUST_BACKTRACE=1");
            assert!(backtrace.contains("explode"), "{backtrace}");
            assert_eq!(portal.run(add, (1, 2)).await?, 3);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_remote_exc_relay — a remote function's error arrives with the backtrace of
/// where it was made, when the remote actor captures backtraces.
fn remote_error_arrives_with_its_backtrace(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("failing").await?;
            let err = portal.run(fail, ("no luck".to_owned(),)).await.unwrap_err();
            let remote = err.as_remote().unwrap();
            let backtrace = remote.backtrace().expect("captured with RUST_BACKTRACE=1");
            assert!(backtrace.contains("actors::fail"), "{backtrace}");
            assert!(format!("{remote:?}").contains("Remote backtrace:"));
            // The error the caller holds shows it too, as a note after the message.
            assert!(format!("{err:?}").contains("Remote backtrace:"), "{err:?}");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_inter_peer_cancellation.py::test_peer_canceller — an actor's call into a peer
/// that a third actor cancels ends with `ContextCancelled` naming the canceller.
fn context_cancelled_names_the_canceller(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let caller = an.start_actor("caller").await?;
            let sleeper = an.start_actor("sleeper").await?;
            let answer = trellis::open_nursery(|n| async move {
                let answer =
                    n.start_soon(
                        async move { caller.run(sleep_in, ("sleeper".to_owned(),)).await },
                    )?;
                while sleeper.run(sleepers, ()).await? == 0 {
                    trellis::sleep(Duration::from_millis(5)).await?;
                }
                sleeper.cancel_actor().await?;
                Ok::<_, trellis::Error>(answer)
            })
            .await?
            .expect("not cancelled");
            assert_eq!(answer.into_value().as_deref(), Some("root"));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_spawning.py::test_run_in_actor_same_func_in_child / unknown function
fn unknown_function_and_bad_arguments_are_typed_remote_errors(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("strict").await?;
            let err = portal
                .run_named::<i64, _>("no::such::function", ())
                .await
                .unwrap_err();
            let remote = err.as_remote().unwrap();
            assert_eq!(remote.kind(), &ErrorKind::UnknownFunction);
            let name = "add";
            let err = portal
                .run_named::<i64, _>(name, ("one", "two"))
                .await
                .unwrap_err();
            let remote = err.as_remote().unwrap();
            assert_eq!(remote.kind(), &ErrorKind::BadArguments, "{remote}");
            // The actor still serves after both.
            assert_eq!(portal.run(add, (2, 2)).await?, 4);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_cancellation.py::test_cancel_single_subactor / the remote task sees the
/// cancellation: cancelling the caller cancels the remote task, which sees `Cancelled` at its
/// checkpoint, and the actor keeps serving.
fn cancelling_a_remote_call(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("sleeper").await?;
            let cancelled = trellis::move_on_after(Duration::from_millis(100), async {
                portal.run(sleep_counting_cancels, ()).await
            })
            .await?;
            assert!(cancelled.is_none());
            assert_eq!(portal.run(cancels_seen, ()).await?, 1);
            assert_eq!(portal.run(add, (1, 1)).await?, 2);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A call whose future is dropped (not cancelled: dropped, as a `select!`, an aborted task or
/// a web framework whose client went away does) cancels the remote call too.
fn dropping_a_call_cancels_it(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("sleeper").await?;
            let dropped =
                tokio::time::timeout(Duration::from_millis(100), portal.run(counted_sleep, ()))
                    .await;
            assert!(dropped.is_err(), "the timeout dropped the call");
            while portal.run(sleepers, ()).await? > 0 {
                trellis::sleep(Duration::from_millis(5)).await?;
            }
            assert_eq!(portal.info().await?.serving, 0);
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_cancellation.py::test_some_cancels_all (`2_run_in_actors_fail`): failing
/// run_in_actor children cancel the daemon siblings; all failures are raised, no actor remains.
fn failing_run_in_actor_children_cancel_the_daemons(transport: Transport) {
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pids.clone();
    let err = root(transport, || async {
        open_nursery(|an| async move {
            for i in 0..2 {
                let daemon = an.start_actor(&format!("daemon{i}")).await?;
                seen.lock().unwrap().push(daemon.pid());
            }
            for i in 0..2 {
                an.run_in_actor(&format!("failer{i}"), fail, (format!("no {i}"),))
                    .await?;
            }
            Ok(())
        })
        .await
    })
    .unwrap_err();
    let group = err.as_group().expect("a group");
    assert_eq!(group.errors().len(), 2, "{err:?}");
    assert!(group.errors().iter().all(|e| e.is::<RemoteActorError>()));
    for pid in pids.lock().unwrap().iter() {
        assert!(!alive(*pid), "daemon {pid} still alive");
    }
}

/// tractor: test_cancellation.py::test_some_cancels_all (`1_daemon_actors_fail`): a daemon's
/// failing call fails the body, which cancels the run_in_actor siblings sleeping forever.
fn failing_daemon_call_cancels_run_in_actor_siblings(transport: Transport) {
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let daemon = an.start_actor("daemon").await?;
            for i in 0..3 {
                an.run_in_actor(&format!("sleeper{i}"), sleep_forever, ())
                    .await?;
            }
            daemon.run(fail, ("daemon call".to_owned(),)).await?;
            Ok(())
        })
        .await
    })
    .unwrap_err();
    let group = err.as_group().expect("a group");
    assert_eq!(group.errors().len(), 1, "{err:?}");
    let remote = group.errors()[0]
        .downcast_ref::<RemoteActorError>()
        .unwrap();
    assert_eq!(remote.actor().name, "daemon");
}

/// tractor: test_cancellation.py::test_multierror_fast_nursery — 25 children that all fail
/// give a group of exactly 25 errors.
fn twenty_five_failing_children_give_a_group_of_25(transport: Transport) {
    let err = root(transport, || async {
        open_nursery(|an| async move {
            for i in 0..25 {
                an.run_in_actor(&format!("errorer{i}"), fail, (format!("no {i}"),))
                    .await?;
            }
            Ok(())
        })
        .await
    })
    .unwrap_err();
    let group = err.as_group().expect("a group");
    assert_eq!(group.errors().len(), 25);
    let mut names: Vec<_> = group
        .errors()
        .iter()
        .map(|e| {
            e.downcast_ref::<RemoteActorError>()
                .unwrap()
                .actor()
                .name
                .clone()
        })
        .collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25);
}

/// tractor: test_cancellation.py::test_nested_multierrors — a tree three deep whose leaves fail
/// gives groups nested as the tree.
fn nested_trees_give_nested_groups(transport: Transport) {
    let err = root(transport, || async {
        open_nursery(|an| async move {
            for i in 0..2 {
                an.run_in_actor(&format!("d3.{i}"), spawn_and_fail, (2u32, 2u32))
                    .await?;
            }
            Ok(())
        })
        .await
    })
    .unwrap_err();
    // root group → a group per depth-3 actor → a group per depth-2 actor → two Boom leaves
    // from depth-1 actors each: every result is gathered before anything is cancelled.
    fn check(err: &trellis::Error, levels_left: usize) -> usize {
        if levels_left == 0 {
            let remote = err
                .downcast_ref::<RemoteActorError>()
                .expect("a remote leaf");
            assert!(remote.is_type::<Boom>(), "{remote:?}");
            assert!(remote.actor().name.starts_with("d1."), "{remote}");
            return 1;
        }
        let group = err.as_group().unwrap_or_else(|| panic!("a group: {err:?}"));
        assert_eq!(group.errors().len(), 2, "{err}");
        group
            .errors()
            .iter()
            .map(|e| check(e, levels_left - 1))
            .sum()
    }
    assert_eq!(check(&err, 3), 8);
}

/// A call whose remote function failed with a group is `ActorError::Remote` holding that
/// group; `?` hands the group itself on, so that the caller's nursery nests it as the tree was
/// (tractor: test_cancellation.py::test_nested_multierrors, seen through the typed error).
fn a_remote_group_is_typed_and_question_mark_keeps_it(transport: Transport) {
    let err = root(transport, || async {
        open_nursery(|an| async move {
            let portal = an.start_actor("d2").await?;
            let err = portal.run(spawn_and_fail, (1u32, 2u32)).await.unwrap_err();
            assert!(matches!(err, ActorError::Remote(_)), "{err:?}");
            assert!(!err.is_cancelled());
            assert!(err.as_remote().is_none(), "a group, not one remote error");
            let group = err.remote().and_then(|e| e.as_group()).expect("a group");
            assert_eq!(group.errors().len(), 2);
            Err(err)?
        })
        .await
    })
    .unwrap_err();
    // root nursery → the remote function's nursery → its two failed children.
    let outer = err.as_group().expect("the root nursery's group");
    assert_eq!(outer.errors().len(), 1);
    let remote = outer.errors()[0]
        .as_group()
        .expect("the remote group, not a typed error");
    assert_eq!(remote.errors().len(), 2);
    for leaf in remote.errors() {
        assert!(
            leaf.downcast_ref::<RemoteActorError>()
                .unwrap()
                .is_type::<Boom>()
        );
    }
}

/// tractor: test_spawning.py::test_run_in_actor_results (results gathered at close)
fn run_in_actor_result_gathered_when_the_nursery_closes(transport: Transport) {
    root(transport, || async {
        let handle =
            open_nursery(|an| async move { Ok(an.run_in_actor("adder", add, (20, 22)).await?) })
                .await?;
        assert_eq!(handle.into_value(), Some(42));
        Ok(())
    })
    .unwrap();
}

/// tractor: test_cancellation.py::test_cancel_via_SIGINT-style direct kill: SIGKILL of a child
/// surfaces as an error in its parent's nursery.
fn killed_child_surfaces_as_an_error(transport: Transport) {
    let err = root(transport, || async {
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

// Every test above, once over Unix sockets and once over TCP on the loopback interface.
on_both_transports!(
    dropping_a_call_cancels_it,
    remote_call_returns_value,
    remote_error_arrives_with_its_type,
    unknown_function_and_bad_arguments_are_typed_remote_errors,
    cancelling_a_remote_call,
    failing_run_in_actor_children_cancel_the_daemons,
    registered_error_types_are_rebuilt,
    remote_panic_arrives_with_its_backtrace,
    remote_error_arrives_with_its_backtrace,
    context_cancelled_names_the_canceller,
    failing_daemon_call_cancels_run_in_actor_siblings,
    twenty_five_failing_children_give_a_group_of_25,
    nested_trees_give_nested_groups,
    a_remote_group_is_typed_and_question_mark_keeps_it,
    run_in_actor_result_gathered_when_the_nursery_closes,
    killed_child_surfaces_as_an_error,
);
