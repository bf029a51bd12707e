//! The registry: actors register when they start, unregister when they exit, and find each
//! other by name. Ported from tractor's `test_discovery.py` (the original is named on each).

mod common;

use trellis_actor::{
    ActorError, Config, Functions, Transport, find_actor, open_nursery, wait_for_actor,
};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// In an actor: finds the actor `name` through the registrar and calls `add` in it.
async fn call_peer(name: String) -> Result<(String, i64), trellis::Error> {
    let peer = find_actor(&name)
        .await?
        .ok_or_else(|| trellis::Error::msg(format!("{name} is not registered")))?;
    Ok((peer.actor_id().uid.clone(), peer.run(add, (40, 2)).await?))
}

/// In an actor: asks the registrar, over the wire, to wait until `uid` is not registered.
async fn wait_unregistered(uid: String) -> Result<(), trellis::Error> {
    let actor = trellis_actor::current();
    let registrar = actor.portal(actor.registrar()).await?;
    Ok(registrar
        .run_named::<(), _>("trellis.wait_unregistered", (uid,))
        .await?)
}

/// In an actor: waits for `name` to register, then calls it.
async fn wait_and_call(name: String) -> Result<i64, trellis::Error> {
    let peer = wait_for_actor(&name).await?;
    Ok(peer.run(add, (1, 1)).await?)
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(call_peer)
            .register(wait_and_call)
            .register(wait_unregistered),
    )
    .child_args([
        "serve_children",
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ])
}

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

/// tractor: test_discovery.py::test_reg_then_unreg — an actor is found while it runs and is
/// gone from the registry once it exited.
fn registered_then_unregistered(transport: Transport) {
    root(transport, || async {
        let uid = open_nursery(|an| async move {
            let calc = an.start_actor("calc").await?;
            let found = find_actor("calc").await?.expect("calc is registered");
            assert_eq!(found.actor_id(), calc.actor_id());
            assert_eq!(found.run(add, (2, 3)).await?, 5);
            assert!(find_actor("nobody").await?.is_none());
            // The root registers itself too.
            assert!(find_actor("root").await?.is_some());
            Ok(calc.actor_id().uid.clone())
        })
        .await?;
        assert!(
            find_actor("calc").await?.is_none(),
            "{uid} still registered"
        );
        Ok(())
    })
    .unwrap();
}

/// tractor: test_discovery.py::test_wait_for_actor — waiting for a name returns once an actor
/// of that name has registered.
fn wait_for_an_actor(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let opened = trellis::open_nursery(|n| async move {
                let waiter = n.start_soon(async {
                    let portal = wait_for_actor("late").await?;
                    Ok::<_, trellis::Error>(portal.actor_id().uid.clone())
                })?;
                let late = an.start_actor("late").await?;
                let uid = late.actor_id().uid.clone();
                Ok::<_, trellis::Error>((waiter, uid))
            })
            .await?;
            let (mut waiter, uid) = opened.expect("not cancelled");
            assert_eq!(waiter.take_value(), Some(uid));
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// tractor: test_discovery.py::test_stale_entry_is_deleted — an actor killed without the
/// chance to unregister leaves no entry behind.
fn stale_entry_removed_when_the_actor_is_killed(transport: Transport) {
    root(transport, || async {
        let killed = open_nursery(|an| async move {
            let victim = an.start_actor("victim").await?;
            assert!(find_actor("victim").await?.is_some());
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await
        .unwrap_err();
        assert!(
            killed
                .as_group()
                .is_some_and(|g| g.leaves().any(|e| e.is::<ActorError>())),
            "{killed:?}"
        );
        assert!(find_actor("victim").await?.is_none());
        Ok(())
    })
    .unwrap();
}

/// tractor: test_discovery.py::test_subactors_unregister_on_cancel / peers find each other: a
/// child (not the registrar) finds a sibling through the root and calls it over a connection of
/// its own; another child waits for an actor that registers later.
fn children_find_each_other(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            let (uid, sum) = a.run(call_peer, ("b".to_owned(),)).await?;
            assert_eq!(uid, b.actor_id().uid);
            assert_eq!(sum, 42);
            let answer = trellis::open_nursery(|n| async move {
                let waiting = a.clone();
                let answer =
                    n.start_soon(
                        async move { waiting.run(wait_and_call, ("c".to_owned(),)).await },
                    )?;
                an.start_actor("c").await?;
                Ok::<_, trellis::Error>(answer)
            })
            .await?
            .expect("not cancelled");
            assert_eq!(answer.into_value(), Some(2));
            Ok(())
        })
        .await
    })
    .unwrap();
}

// Every test above, once over Unix sockets and once over TCP on the loopback interface.
/// `trellis.wait_unregistered` (what a supervisor calls before a replacement starts) waits
/// while the actor is registered and returns once its entry is gone.
fn wait_unregistered_returns_once_the_entry_is_gone(transport: Transport) {
    root(transport, || async {
        open_nursery(|an| async move {
            let b = an.start_actor("b").await?;
            let a = an.start_actor("a").await?;
            let uid = a.actor_id().uid.clone();
            trellis::open_nursery(|n| async move {
                let mut call =
                    n.start_soon(async move { b.run(wait_unregistered, (uid,)).await })?;
                trellis::sleep(std::time::Duration::from_millis(300)).await?;
                assert!(!call.is_finished(), "it waits while `a` is registered");
                a.cancel_actor().await?;
                call.join().await?;
                Ok::<_, trellis::Error>(())
            })
            .await?;
            Ok(())
        })
        .await
    })
    .unwrap();
}

on_both_transports!(
    wait_unregistered_returns_once_the_entry_is_gone,
    registered_then_unregistered,
    wait_for_an_actor,
    stale_entry_removed_when_the_actor_is_killed,
    children_find_each_other,
);
