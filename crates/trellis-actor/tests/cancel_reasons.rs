//! Cancel reasons across processes (protocol 2.1): why a call was cancelled, and where the
//! cancellation began, travel with `Cancel`, `CancelAck` and `trellis.cancel_actor`, so that a
//! function two processes away sees "cancelled due to deadline in actor root#…" and an error
//! tree says who cancelled what, and why. tractor has the `canceller` half of this
//! (test_inter_peer_cancellation.py::test_peer_canceller); the reasons are trellis's own.

mod common;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use trellis::CancelScope;
use trellis_actor::{ActorError, Config, Functions, Portal, Transport, open_nursery};

#[derive(Debug, thiserror::Error)]
#[error("boom")]
struct Boom;

static SLEEPING: AtomicU32 = AtomicU32::new(0);
static LAST_REASON: Mutex<String> = Mutex::new(String::new());

/// Sleeps until cancelled, and keeps the cancellation's text for `last_reason`.
async fn sleep_and_record() -> Result<(), trellis::Error> {
    SLEEPING.fetch_add(1, Ordering::SeqCst);
    let cancelled = trellis::sleep_forever().await.unwrap_err();
    SLEEPING.fetch_sub(1, Ordering::SeqCst);
    *LAST_REASON.lock().unwrap() = cancelled.to_string();
    Err(cancelled.into())
}

async fn sleeping() -> Result<u32, trellis::Error> {
    Ok(SLEEPING.load(Ordering::SeqCst))
}

async fn last_reason() -> Result<String, trellis::Error> {
    Ok(LAST_REASON.lock().unwrap().clone())
}

/// In an actor: calls `sleep_and_record` in the actor `name`, recording its own cancellation
/// as that function does; any other end of the call is this function's failure.
async fn relay(name: String) -> Result<(), trellis::Error> {
    let peer = trellis_actor::wait_for_actor(&name).await?;
    match peer.run(sleep_and_record, ()).await {
        Err(ActorError::Cancelled(cancelled)) => {
            *LAST_REASON.lock().unwrap() = cancelled.to_string();
            Err(cancelled.into())
        }
        Err(other) => Err(other.into()),
        Ok(()) => Ok(()),
    }
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(sleep_and_record)
            .register(sleeping)
            .register(last_reason)
            .register(relay),
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

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

async fn until_sleeping(actor: &Portal) -> Result<(), trellis::Error> {
    while actor.run(sleeping, ()).await? == 0 {
        trellis::sleep(Duration::from_millis(5)).await?;
    }
    Ok(())
}

/// A deadline passing in the root cancels its call into A, and A's call into B: both say the
/// deadline passed in the root, not that A cancelled B.
fn a_deadline_reason_crosses_two_hops(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            let scope = CancelScope::new();
            let call = scope.clone();
            let (relayed, watched) = (a.clone(), b.clone());
            trellis::open_nursery(|n| async move {
                n.start_soon(async move {
                    call.run(async {
                        Ok::<_, trellis::Error>(relayed.run(relay, ("b".to_owned(),)).await?)
                    })
                    .await
                })?;
                until_sleeping(&watched).await?;
                scope.set_deadline(Some(trellis::current_time()));
                Ok::<_, trellis::Error>(())
            })
            .await?;
            let root = trellis_actor::current().id().to_string();
            let want = format!("cancelled due to deadline in actor {root}");
            let in_a = a.run(last_reason, ()).await?;
            let in_b = b.run(last_reason, ()).await?;
            assert_eq!(in_a, want, "one hop");
            assert_eq!(in_b, want, "two hops");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// A sibling's failure cancels a nursery; the remote call it held learns which failure.
fn a_sibling_failure_is_the_remote_reason(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let b = an.start_actor("b").await?;
            let (sleeper, watched) = (b.clone(), b.clone());
            let failed = trellis::open_nursery(|n| async move {
                n.start_soon(async move {
                    Ok::<_, trellis::Error>(sleeper.run(sleep_and_record, ()).await?)
                })?;
                until_sleeping(&watched).await?;
                Err::<(), _>(trellis::Error::new(Boom))
            })
            .await;
            assert!(failed.is_err());
            let seen = b.run(last_reason, ()).await?;
            let root = trellis_actor::current().id().to_string();
            assert!(
                seen.starts_with(&format!(
                    "cancelled due to nursery in actor {root} with reason '"
                )),
                "{seen}"
            );
            assert!(seen.contains("failed: boom"), "{seen}");
            Ok(())
        })
        .await
    })
    .unwrap();
}

/// The root cancels B, saying why; A's call into B ends with `ContextCancelled` naming the
/// root and carrying the reason; A fails with it, and the root's error tree shows it all:
/// the reason crossed root → B → A → root.
fn a_cancel_actor_reason_reaches_the_error_tree(transport: Transport) {
    common::root_with(config(), transport, || async {
        open_nursery(|an| async move {
            let a = an.start_actor("a").await?;
            let b = an.start_actor("b").await?;
            let relayed = a.clone();
            let failure = trellis::open_nursery(|n| async move {
                let call = n.start_soon(async move {
                    Ok::<_, trellis::Error>(relayed.run(relay, ("b".to_owned(),)).await)
                })?;
                until_sleeping(&b).await?;
                b.cancel_actor_with_reason("rolling restart").await?;
                Ok::<_, trellis::Error>(call)
            })
            .await?
            .expect("not cancelled")
            .into_value()
            .expect("the call's outcome")
            .expect_err("A's relay fails");
            let root = trellis_actor::current().id().to_string();
            let ActorError::Remote(remote) = &failure else {
                panic!("a remote failure, got {failure:?}");
            };
            let text = format!("{remote}");
            assert!(
                text.contains(&format!(
                    "was cancelled by actor {root}: cancelled due to explicit in actor {root} \
                     with reason 'rolling restart'"
                )),
                "{text}"
            );
            Ok(())
        })
        .await
    })
    .unwrap();
}

on_both_transports!(
    a_deadline_reason_crosses_two_hops,
    a_sibling_failure_is_the_remote_reason,
    a_cancel_actor_reason_reaches_the_error_tree,
);
