//! B4: one sender, 16 subscriber tasks, 100,000 `u64`, lossless, against
//! `tokio::sync::broadcast` with the same buffer and the same rule (the sender waits for room).

use std::time::Instant;

use tokio::task::JoinSet;

use crate::core::runtimes;
use crate::{Comparison, alternate};

const VALUES: u64 = 100_000;
const SUBSCRIBERS: usize = 16;
const BUFFER: usize = 128;

async fn trellis_run() -> f64 {
    let t0 = Instant::now();
    let (tx, rx) = trellis::channel::channel::<u64>(BUFFER);
    let first = trellis::broadcast::lossless_broadcast_receiver(rx, BUFFER);
    let counts = trellis::open_nursery(|n| async move {
        let mut counts = Vec::new();
        for _ in 0..SUBSCRIBERS {
            let sub = first.subscribe()?;
            counts.push(n.start_soon(async move {
                let mut count = 0u64;
                while sub.recv().await.is_ok() {
                    count += 1;
                }
                Ok::<_, trellis::Error>(count)
            })?);
        }
        drop(first);
        n.start_soon(async move {
            for i in 0..VALUES {
                tx.send(i).await?;
            }
            Ok::<_, trellis::Error>(0)
        })?;
        Ok::<_, trellis::Error>(counts)
    })
    .await
    .expect("broadcast run failed")
    .expect("not cancelled");
    for count in counts {
        assert_eq!(
            count.into_value(),
            Some(VALUES),
            "lossless: every subscriber gets every value"
        );
    }
    t0.elapsed().as_secs_f64()
}

async fn tokio_run() -> f64 {
    let t0 = Instant::now();
    let (tx, _) = tokio::sync::broadcast::channel::<u64>(BUFFER);
    let mut set = JoinSet::new();
    for _ in 0..SUBSCRIBERS {
        let mut rx = tx.subscribe();
        set.spawn(async move {
            let mut count = 0u64;
            loop {
                match rx.recv().await {
                    Ok(_) => count += 1,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return count,
                    Err(e) => panic!("lossless rule broken: {e}"),
                }
            }
        });
    }
    set.spawn(async move {
        for i in 0..VALUES {
            // The same lossless rule: wait for room (the slowest receiver read the oldest).
            while tx.len() >= BUFFER {
                tokio::task::yield_now().await;
            }
            tx.send(i).expect("receivers alive");
        }
        VALUES
    });
    while let Some(count) = set.join_next().await {
        assert_eq!(count.expect("task"), VALUES);
    }
    t0.elapsed().as_secs_f64()
}

pub(crate) fn b4(runs: usize) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    for (case, rt) in runtimes() {
        let (t, a) = alternate(
            runs,
            || rt.block_on(trellis_run()),
            || rt.block_on(tokio_run()),
        );
        out.push(Comparison {
            id: "B4",
            case: case.into(),
            trellis: t,
            anchor: "tokio broadcast".into(),
            anchor_value: a,
        });
    }
    Ok(out)
}
