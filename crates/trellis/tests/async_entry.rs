//! A trellis root inside a tokio runtime that is already running (`#[tokio::main]`, both
//! flavours), and what trellis primitives do with no root at all.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use trellis::instrument::{Instrument, TaskId};
use trellis::{CancelScope, Error, open_nursery};

/// Nurseries, failures and cancellation work as under `trellis::run`.
async fn a_root_gives_structure() {
    let err = trellis::root(async {
        open_nursery(|n| async move {
            n.start_soon(async { Err::<(), _>(Error::msg("boom")) })?;
            trellis::sleep_forever().await?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await
    .unwrap_err();
    let group = err.as_group().expect("a nursery's group");
    assert_eq!(group.errors().len(), 1);
    assert!(group.errors()[0].to_string().contains("boom"));
}

struct Spawns(AtomicUsize);

impl Instrument for Spawns {
    fn task_spawned(&self, _task: TaskId) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Instruments given to the root hear its tasks.
async fn a_root_runs_its_instruments() {
    let spawns = Arc::new(Spawns(AtomicUsize::new(0)));
    trellis::Root::new()
        .instrument(spawns.clone())
        .run(async {
            open_nursery(|n| async move {
                for _ in 0..3 {
                    n.start_soon(async { trellis::checkpoint().await })?;
                }
                Ok::<_, Error>(())
            })
            .await
        })
        .await
        .unwrap();
    assert_eq!(spawns.0.load(Ordering::Relaxed), 3);
}

/// The root's scope is a real one: a scope inside catches its own cancellation, and a
/// cancellation of the root's tasks' scope reaches them.
async fn scopes_inside_a_root() {
    let caught = trellis::root(async {
        let scope = CancelScope::new();
        let s = scope.clone();
        let got = scope
            .run(async move {
                s.cancel();
                trellis::sleep_forever().await?;
                Ok::<_, Error>(())
            })
            .await?;
        Ok::<_, Error>(got.is_none() && scope.cancelled_caught())
    })
    .await
    .unwrap();
    assert!(caught);
}

/// With no root (a plain `tokio::spawn`ed task, never inside `run` or `root`), trellis still
/// works: checkpoints succeed, scopes and nurseries nest under an implicit root that nothing
/// cancels from outside. This is the behaviour the guide documents.
async fn primitives_without_a_root() {
    let value = tokio::spawn(async {
        trellis::checkpoint().await?;
        let scope = CancelScope::new();
        let s = scope.clone();
        let cancelled = scope
            .run(async move {
                s.cancel();
                trellis::checkpoint().await?;
                Ok::<_, Error>(())
            })
            .await?;
        assert_eq!(cancelled, None);
        open_nursery(|n| async move {
            let task = n.start_soon(async { Ok::<_, Error>(5) })?;
            Ok::<_, Error>(task)
        })
        .await
    })
    .await
    .unwrap()
    .unwrap()
    .and_then(|task| task.into_value());
    assert_eq!(value, Some(5));
}

macro_rules! on_both_tokio_flavours {
    ($($name:ident),* $(,)?) => {
        mod current_thread {
            $( #[tokio::test(flavor = "current_thread")] async fn $name() { super::$name().await } )*
        }
        mod multi_thread {
            $( #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name().await } )*
        }
    };
}

on_both_tokio_flavours!(
    a_root_gives_structure,
    a_root_runs_its_instruments,
    scopes_inside_a_root,
    primitives_without_a_root,
);
