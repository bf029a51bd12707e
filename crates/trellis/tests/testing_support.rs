//! The testing helpers themselves, ported from Trio's `_tests/test_testing.py`.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use trellis::testing::{
    Sequencer, assert_checkpoints, assert_no_checkpoints, wait_all_tasks_blocked,
    wait_all_tasks_blocked_with_cushion,
};
use trellis::{Cancelled, Error, checkpoint, checkpoint_if_cancelled, open_nursery, sleep};

type Record = Arc<Mutex<Vec<String>>>;

fn push(record: &Record, s: &str) {
    record.lock().unwrap().push(s.to_owned());
}

/// Trio: test_wait_all_tasks_blocked
async fn waits_for_busy_tasks() {
    let record: Record = Default::default();
    let rec = record.clone();
    open_nursery(|n| async move {
        let r = rec.clone();
        n.start_soon(async move {
            for _ in 0..10 {
                checkpoint().await?;
            }
            push(&r, "busy bee exhausted");
            Ok::<_, Error>(())
        })?;
        for _ in 0..2 {
            let r = rec.clone();
            n.start_soon(async move {
                wait_all_tasks_blocked().await?;
                push(&r, "quiet at last!");
                Ok::<_, Error>(())
            })?;
        }
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        *record.lock().unwrap(),
        ["busy bee exhausted", "quiet at last!", "quiet at last!"]
    );
}

/// Trio: test_wait_all_tasks_blocked (cancellation part)
async fn wait_all_tasks_blocked_is_cancellable() {
    let record: Record = Default::default();
    let rec = record.clone();
    open_nursery(|n| async move {
        n.start_soon(async move {
            let r = wait_all_tasks_blocked().await;
            assert_eq!(r, Err(Cancelled::new()));
            push(&rec, "ok");
            r
        })?;
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(*record.lock().unwrap(), ["ok"]);
}

/// Trio: test_wait_all_tasks_blocked_with_timeouts — returns before the clock jumps.
async fn wait_all_tasks_blocked_before_clock_jumps() {
    let record: Record = Default::default();
    let rec = record.clone();
    let t0 = Instant::now();
    open_nursery(|n| async move {
        let r = rec.clone();
        n.start_soon(async move {
            push(&r, "tt start");
            sleep(Duration::from_secs(5)).await?;
            push(&r, "tt finished");
            Ok::<_, Error>(())
        })?;
        wait_all_tasks_blocked().await?;
        assert_eq!(*rec.lock().unwrap(), ["tt start"]);
        assert_eq!(
            t0.elapsed(),
            Duration::ZERO,
            "the clock jumped before we were told"
        );
        sleep(Duration::from_secs(10)).await?;
        wait_all_tasks_blocked().await?;
        assert_eq!(*rec.lock().unwrap(), ["tt start", "tt finished"]);
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
}

/// Trio: test_Sequencer
async fn sequencer_orders_blocks() {
    let record: Record = Default::default();
    let seq = Sequencer::new();
    let (rec, s) = (record.clone(), seq.clone());
    open_nursery(|n| async move {
        for (name, turns) in [("f1", vec![1usize, 3, 4]), ("f2", vec![0, 2])] {
            let (rec, s) = (rec.clone(), s.clone());
            n.start_soon(async move {
                for t in turns {
                    let _turn = s.at(t).await?;
                    push(&rec, &format!("{name} {t}"));
                }
                Ok::<_, Error>(())
            })?;
        }
        let _turn = s.at(5).await?;
        wait_all_tasks_blocked().await?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        *record.lock().unwrap(),
        ["f2 0", "f1 1", "f2 2", "f1 3", "f1 4"]
    );
}

/// Trio: test_Sequencer — a position cannot be used twice.
#[test]
fn sequencer_position_reuse_panics() {
    let r = std::panic::catch_unwind(|| {
        trellis::testing::run_test(async {
            let seq = Sequencer::new();
            let _a = seq.at(0).await.unwrap();
            let _b = seq.at(0).await;
        })
    });
    assert!(r.is_err());
}

/// Trio: test_Sequencer_cancel — a cancelled waiter breaks the sequencer for everyone.
async fn sequencer_cancel_breaks_it() {
    let seq = Sequencer::new();
    let record: Record = Default::default();
    let (rec, s) = (record.clone(), seq.clone());
    open_nursery(|n| async move {
        for i in [1usize, 2] {
            let (rec, s) = (rec.clone(), s.clone());
            n.start_soon(async move {
                match s.at(i).await {
                    Ok(_) => push(&rec, &format!("{i} ran")),
                    Err(e) if e.is_cancelled() => push(&rec, &format!("{i} cancelled")),
                    Err(_) => push(&rec, &format!("{i} broken")),
                }
                Ok::<_, Error>(())
            })?;
        }
        wait_all_tasks_blocked().await?;
        n.cancel();
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    let mut got = record.lock().unwrap().clone();
    got.sort();
    // Both waiters were blocked; both are cancelled (the second may see the break first).
    assert_eq!(got.len(), 2);
    assert!(
        got.iter()
            .all(|s| s.ends_with("cancelled") || s.ends_with("broken"))
    );
    let err = seq.at(0).await.unwrap_err();
    assert!(err.to_string().contains("broken"));
}

/// Trio: test_assert_checkpoints
async fn assert_checkpoints_counts_full_checkpoints() {
    assert_checkpoints(checkpoint()).await.unwrap();
    assert_checkpoints(sleep(Duration::ZERO)).await.unwrap();
    let missing = tokio::spawn(assert_checkpoints(async { 1 + 1 })).await;
    assert!(missing.is_err());
    // A cancel point alone is not a checkpoint.
    let partial = tokio::spawn(assert_checkpoints(async { checkpoint_if_cancelled() })).await;
    assert!(partial.is_err());
}

/// Trio: test_assert_no_checkpoints
async fn assert_no_checkpoints_rejects_checkpoints() {
    assert_eq!(assert_no_checkpoints(async { 1 + 1 }).await, 2);
    let r = tokio::spawn(assert_no_checkpoints(checkpoint())).await;
    assert!(r.is_err());
}

/// Trio: test_wait_all_tasks_blocked_with_cushion — a task that blocks on work outside the
/// runtime (here a thread) three times in a row: without a cushion the waiter returns while
/// the first piece is out; with a cushion longer than each piece, only once all three are done.
async fn cushion_waits_for_outside_work() {
    let record = Arc::new(Mutex::new(Vec::new()));
    let rec = record.clone();
    open_nursery(|n| async move {
        let r = rec.clone();
        n.start_soon(async move {
            push(&r, "blink start");
            for _ in 0..3 {
                trellis::threads::run_sync(|| std::thread::sleep(Duration::from_millis(5))).await?;
            }
            push(&r, "blink end");
            Ok::<_, Error>(())
        })?;
        let r = rec.clone();
        n.start_soon(async move {
            wait_all_tasks_blocked().await?;
            push(&r, "wait_no_cushion end");
            Ok::<_, Error>(())
        })?;
        let r = rec.clone();
        n.start_soon(async move {
            wait_all_tasks_blocked_with_cushion(Duration::from_millis(300)).await?;
            push(&r, "wait_cushion end");
            Ok::<_, Error>(())
        })?;
        Ok::<_, Error>(())
    })
    .await
    .unwrap();
    assert_eq!(
        *record.lock().unwrap(),
        [
            "blink start",
            "wait_no_cushion end",
            "blink end",
            "wait_cushion end"
        ]
    );
}

both_flavors!(
    waits_for_busy_tasks,
    wait_all_tasks_blocked_is_cancellable,
    sequencer_orders_blocks,
    sequencer_cancel_breaks_it,
    assert_checkpoints_counts_full_checkpoints,
    assert_no_checkpoints_rejects_checkpoints,
);

autojump!(
    wait_all_tasks_blocked_before_clock_jumps,
    cushion_waits_for_outside_work
);
