//! B1 (spawn and join), B2 (cancel many blocked tasks) and B11 (a deadline per task): the
//! core's benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::runtime::Runtime;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::{Comparison, alternate, anchors, case_selected};

const B1_TASKS: usize = 100_000;
const B2_TASKS: usize = 10_000;
const B11_TASKS: usize = 100_000;

pub(crate) fn runtimes() -> Vec<(&'static str, Runtime)> {
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("multi-thread runtime");
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("current-thread runtime");
    vec![("multi_thread", multi), ("current_thread", current)]
        .into_iter()
        .filter(|(case, _)| case_selected(case))
        .collect()
}

/// B1 with trellis: a nursery of `n` tasks that each pass one checkpoint.
async fn b1_trellis(n: usize) -> f64 {
    let t0 = Instant::now();
    trellis::open_nursery(|nursery| async move {
        for _ in 0..n {
            nursery.start_soon(trellis::checkpoint())?;
        }
        Ok::<_, trellis::Error>(())
    })
    .await
    .expect("nursery failed");
    t0.elapsed().as_secs_f64()
}

/// B1 with tokio: `JoinSet` spawn of tasks that yield once, then join them all.
async fn b1_joinset(n: usize) -> f64 {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(tokio::task::yield_now());
    }
    while let Some(r) = set.join_next().await {
        r.expect("task failed");
    }
    t0.elapsed().as_secs_f64()
}

pub(crate) fn b1(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    let mut multi_thread_trellis = None;
    for (case, rt) in runtimes() {
        let (t, a) = alternate(
            runs,
            || rt.block_on(b1_trellis(B1_TASKS)),
            || rt.block_on(b1_joinset(B1_TASKS)),
        );
        if case == "multi_thread" {
            multi_thread_trellis = Some(t);
        }
        out.push(Comparison {
            id: "B1",
            case: case.into(),
            trellis: t,
            anchor: "tokio JoinSet".into(),
            anchor_value: a,
        });
    }
    if python {
        let trellis = multi_thread_trellis.ok_or("--anchors python needs the multi_thread case")?;
        out.push(anchors::trio_comparison(
            "B1",
            "b1_spawn.py",
            B1_TASKS,
            "total_s",
            runs,
            trellis,
        )?);
    }
    Ok(out)
}

/// Returns once all `n` tasks have bumped `ready` (each does so right before it blocks) and had
/// a moment to park.
async fn until_all_blocked(ready: &AtomicUsize, n: usize) {
    while ready.load(Ordering::Acquire) < n {
        tokio::task::yield_now().await;
    }
    for _ in 0..8 {
        tokio::task::yield_now().await;
    }
}

/// B2 with trellis: `n` tasks in `sleep_forever`; time from `cancel()` to the nursery's return.
async fn b2_trellis(n: usize) -> f64 {
    let ready = Arc::new(AtomicUsize::new(0));
    let mut t0 = None;
    trellis::open_nursery(|nursery| {
        let t0 = &mut t0;
        async move {
            for _ in 0..n {
                let ready = ready.clone();
                nursery.start_soon(async move {
                    ready.fetch_add(1, Ordering::Release);
                    trellis::sleep_forever().await
                })?;
            }
            until_all_blocked(&ready, n).await;
            *t0 = Some(Instant::now());
            nursery.cancel();
            Ok::<_, trellis::Error>(())
        }
    })
    .await
    .expect("nursery failed");
    t0.expect("cancelled").elapsed().as_secs_f64()
}

/// B2 with tokio: each task selects on a child `CancellationToken`; cancel the parent token and
/// join them all.
async fn b2_token(n: usize) -> f64 {
    let ready = Arc::new(AtomicUsize::new(0));
    let token = CancellationToken::new();
    let mut set = JoinSet::new();
    for _ in 0..n {
        let (ready, child) = (ready.clone(), token.child_token());
        set.spawn(async move {
            ready.fetch_add(1, Ordering::Release);
            tokio::select! {
                _ = child.cancelled() => {}
                _ = std::future::pending::<()>() => {}
            }
        });
    }
    until_all_blocked(&ready, n).await;
    let t0 = Instant::now();
    token.cancel();
    while let Some(r) = set.join_next().await {
        r.expect("task failed");
    }
    t0.elapsed().as_secs_f64()
}

/// B2 with tokio: `JoinSet::shutdown` of pending tasks.
async fn b2_shutdown(n: usize) -> f64 {
    let ready = Arc::new(AtomicUsize::new(0));
    let mut set = JoinSet::new();
    for _ in 0..n {
        let ready = ready.clone();
        set.spawn(async move {
            ready.fetch_add(1, Ordering::Release);
            std::future::pending::<()>().await
        });
    }
    until_all_blocked(&ready, n).await;
    let t0 = Instant::now();
    set.shutdown().await;
    t0.elapsed().as_secs_f64()
}

pub(crate) fn b2(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    let mut multi_thread_trellis = None;
    for (case, rt) in runtimes() {
        let (t, a) = alternate(
            runs,
            || rt.block_on(b2_trellis(B2_TASKS)),
            || rt.block_on(b2_token(B2_TASKS)),
        );
        out.push(Comparison {
            id: "B2",
            case: case.into(),
            trellis: t,
            anchor: "tokio CancellationToken+select".into(),
            anchor_value: a,
        });
        let (t, a) = alternate(
            runs,
            || rt.block_on(b2_trellis(B2_TASKS)),
            || rt.block_on(b2_shutdown(B2_TASKS)),
        );
        if case == "multi_thread" {
            multi_thread_trellis = Some(t);
        }
        out.push(Comparison {
            id: "B2",
            case: case.into(),
            trellis: t,
            anchor: "tokio JoinSet::shutdown".into(),
            anchor_value: a,
        });
    }
    if python {
        let trellis = multi_thread_trellis.ok_or("--anchors python needs the multi_thread case")?;
        out.push(anchors::trio_comparison(
            "B2",
            "b2_cancel.py",
            B2_TASKS,
            "cancel_to_exit_s",
            runs,
            trellis,
        )?);
    }
    Ok(out)
}

/// B11 with trellis: a nursery of `n` tasks, each inside its own `fail_after(10 s)` scope,
/// passing one checkpoint. Scope deadlines are checked at checkpoints and need a timer only
/// when a task blocks, so none of these pays for one.
async fn b11_trellis(n: usize) -> f64 {
    let t0 = Instant::now();
    trellis::open_nursery(|nursery| async move {
        for _ in 0..n {
            nursery.start_soon(trellis::fail_after(
                std::time::Duration::from_secs(10),
                async { Ok::<_, trellis::Error>(trellis::checkpoint().await?) },
            ))?;
        }
        Ok::<_, trellis::Error>(())
    })
    .await
    .expect("nursery failed");
    t0.elapsed().as_secs_f64()
}

/// B11 with tokio: `JoinSet` of `n` tasks, each a `yield_now` inside `tokio::time::timeout`.
async fn b11_timeout(n: usize) -> f64 {
    let t0 = Instant::now();
    let mut set = JoinSet::new();
    for _ in 0..n {
        set.spawn(tokio::time::timeout(
            std::time::Duration::from_secs(10),
            tokio::task::yield_now(),
        ));
    }
    while let Some(r) = set.join_next().await {
        r.expect("task failed").expect("timed out");
    }
    t0.elapsed().as_secs_f64()
}

/// B11: a deadline per task, against tokio's `timeout` per task.
pub(crate) fn b11(runs: usize) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    for (case, rt) in runtimes() {
        let (t, a) = alternate(
            runs,
            || rt.block_on(b11_trellis(B11_TASKS)),
            || rt.block_on(b11_timeout(B11_TASKS)),
        );
        out.push(Comparison {
            id: "B11",
            case: case.into(),
            trellis: t,
            anchor: "tokio JoinSet+timeout".into(),
            anchor_value: a,
        });
    }
    Ok(out)
}
