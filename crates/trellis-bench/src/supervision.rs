//! B12: restarting what crashed. A supervised actor is SIGKILLed and timed until its
//! replacement answers a call, against spawning the same actor and calling it (B5's work
//! without the teardown), alternately in one tree. A supervised task fails and is timed
//! until its replacement runs, against starting a task in a nursery.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use trellis::supervisor::{Restart, Strategy, Supervision};
use trellis_actor::open_nursery;

use crate::actors::{config, echo, root_runtime};
use crate::{Comparison, median};

/// Never gives up within a benchmark.
fn patient() -> Supervision {
    Supervision::new(Strategy::OneForOne).intensity(u32::MAX, Duration::from_secs(3600))
}

pub(crate) fn b12(runs: usize) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    if crate::part_selected("actor") {
        out.extend(actor_restart(runs.max(50))?);
    }
    if crate::part_selected("task") {
        out.extend(task_restart(runs)?);
    }
    Ok(out)
}

/// Median seconds: SIGKILL → replacement answers, and spawn → first answer.
fn actor_restart(reps: usize) -> Result<Vec<Comparison>, String> {
    let (mut restarts, mut spawns) = root_runtime()
        .run(trellis_actor::run_root("bench", config(), || async move {
            let (mut restarts, mut spawns) = (Vec::new(), Vec::new());
            let (r, s) = (&mut restarts, &mut spawns);
            trellis_actor::open_supervisor(patient(), |sup| async move {
                let worker = sup.start_actor("w", Restart::Permanent).await?;
                // One untimed round of each first.
                for i in 0..=reps as u64 {
                    let spawned = open_nursery(|an| async move {
                        let t0 = Instant::now();
                        let portal = an.start_actor("fresh").await?;
                        assert_eq!(portal.run(echo, (i,)).await?, i);
                        Ok(t0.elapsed())
                    })
                    .await?;
                    let pid = worker.try_portal()?.pid();
                    let t0 = Instant::now();
                    kill(Pid::from_raw(pid as i32), Signal::SIGKILL)
                        .map_err(trellis::Error::new)?;
                    // Calls fail until the replacement answers.
                    while worker.run(echo, (i,)).await.is_err() {}
                    let restarted = t0.elapsed();
                    assert_ne!(worker.try_portal()?.pid(), pid);
                    if i > 0 {
                        s.push(spawned.as_secs_f64());
                        r.push(restarted.as_secs_f64());
                    }
                }
                sup.shutdown();
                Ok(())
            })
            .await?;
            Ok::<_, trellis::Error>((restarts, spawns))
        }))
        .map_err(|e| format!("{e:?}"))?;
    Ok(vec![Comparison {
        id: "B12",
        case: "actor: SIGKILL to replacement's answer".into(),
        trellis: median(&mut restarts),
        anchor: "trellis spawn + first answer (B5 without teardown)".into(),
        anchor_value: median(&mut spawns),
    }])
}

/// Median seconds: a task's failure → its replacement's first poll, and `start_soon` → the
/// task's first poll, on both runtime flavours.
fn task_restart(runs: usize) -> Result<Vec<Comparison>, String> {
    let reps = (runs * 100).max(1000);
    let mut out = Vec::new();
    for (case, runner) in [
        ("task, current_thread", trellis::Runner::current_thread()),
        ("task, multi_thread", trellis::Runner::multi_thread()),
    ] {
        let (mut restarts, mut spawns) = runner
            .handle_ctrl_c(false)
            .run(task_rounds(reps))
            .map_err(|e| format!("{e:?}"))?;
        out.push(Comparison {
            id: "B12",
            case: format!("{case}: failure to replacement's first poll"),
            trellis: median(&mut restarts),
            anchor: "trellis start_soon to first poll".into(),
            anchor_value: median(&mut spawns),
        });
    }
    Ok(out)
}

async fn task_rounds(reps: usize) -> Result<(Vec<f64>, Vec<f64>), trellis::Error> {
    // When the child failed, and when its replacement first ran.
    let failed = Arc::new(Mutex::new(None::<Instant>));
    let (started_tx, started_rx) = trellis::channel::<Instant>(1);
    let (fail_tx, fail_rx) = trellis::channel::<()>(1);
    let mut restarts = Vec::new();
    let mut spawns = Vec::new();
    let (r, s) = (&mut restarts, &mut spawns);
    let at_failure = failed.clone();
    trellis::supervisor::open_supervisor(patient(), |sup| async move {
        sup.start("task", Restart::Permanent, move || {
            let (started, fail, failed) = (started_tx.clone(), fail_rx.clone(), at_failure.clone());
            async move {
                started.send(Instant::now()).await?;
                fail.recv().await?;
                // Timed from when the child has its error in hand.
                let error = trellis::Error::msg("failing on purpose");
                *failed.lock().unwrap() = Some(Instant::now());
                Err(error)
            }
        })?;
        started_rx.recv().await?;
        for i in 0..=reps {
            fail_tx.send(()).await?;
            let replaced = started_rx.recv().await?;
            let failed_at = failed.lock().unwrap().take().expect("it failed");
            let spawned = trellis::open_nursery(|n| async move {
                let t0 = Instant::now();
                let (tx, rx) = trellis::channel::<Instant>(1);
                n.start_soon(async move { tx.send(Instant::now()).await })?;
                Ok::<_, trellis::Error>(rx.recv().await? - t0)
            })
            .await?
            .expect("not cancelled");
            if i > 0 {
                r.push((replaced - failed_at).as_secs_f64());
                s.push(spawned.as_secs_f64());
            }
        }
        sup.shutdown();
        Ok::<_, trellis::Error>(())
    })
    .await?;
    Ok((restarts, spawns))
}
