//! B3: a million `u64` through a channel of capacity 128, against flume, async-channel and
//! tokio's mpsc.

use std::time::Instant;

use tokio::runtime::Runtime;
use tokio::task::JoinSet;

use crate::core::runtimes;
use crate::{Comparison, alternate, anchors};

const MESSAGES: u64 = 1_000_000;
const CAPACITY: usize = 128;

/// The values each of `producers` sends: an equal share of `MESSAGES`.
fn share(producers: u64) -> u64 {
    MESSAGES / producers
}

async fn trellis_run(producers: u64, consumers: u64) -> f64 {
    let t0 = Instant::now();
    let (tx, rx) = trellis::channel::channel::<u64>(CAPACITY);
    let total = trellis::open_nursery(|n| async move {
        for _ in 0..producers {
            let tx = tx.clone();
            n.start_soon(async move {
                for i in 0..share(producers) {
                    tx.send(i).await?;
                }
                Ok::<_, trellis::Error>(())
            })?;
        }
        drop(tx);
        let mut counts = Vec::new();
        for _ in 0..consumers {
            let rx = rx.clone();
            counts.push(n.start_soon(async move {
                let mut count = 0u64;
                loop {
                    match rx.recv().await {
                        Ok(_) => count += 1,
                        Err(trellis::channel::RecvError::EndOfChannel) => return Ok(count),
                        Err(e) => return Err(trellis::Error::from(e)),
                    }
                }
            })?);
        }
        Ok::<_, trellis::Error>(counts)
    })
    .await
    .expect("channel run failed")
    .expect("not cancelled");
    let received: u64 = total
        .into_iter()
        .map(|h| h.into_value().expect("consumer value"))
        .sum();
    assert_eq!(received, share(producers) * producers);
    t0.elapsed().as_secs_f64()
}

/// The anchor side of B3, the same for every MPMC channel crate: `$make` builds the bounded
/// channel, `$send` / `$recv` name its async operations.
macro_rules! mpmc_anchor {
    ($name:ident, $make:expr, $send:ident, $recv:ident) => {
        async fn $name(producers: u64, consumers: u64) -> f64 {
            let t0 = Instant::now();
            let (tx, rx) = $make;
            let mut set = JoinSet::new();
            for _ in 0..producers {
                let tx = tx.clone();
                set.spawn(async move {
                    for i in 0..share(producers) {
                        tx.$send(i).await.expect("anchor send");
                    }
                    0
                });
            }
            drop(tx);
            for _ in 0..consumers {
                let rx = rx.clone();
                set.spawn(async move {
                    let mut count = 0u64;
                    while rx.$recv().await.is_ok() {
                        count += 1;
                    }
                    count
                });
            }
            let mut received = 0;
            while let Some(count) = set.join_next().await {
                received += count.expect("task");
            }
            assert_eq!(received, share(producers) * producers);
            t0.elapsed().as_secs_f64()
        }
    };
}

mpmc_anchor!(
    flume_run,
    flume::bounded::<u64>(CAPACITY),
    send_async,
    recv_async
);
mpmc_anchor!(
    async_channel_run,
    async_channel::bounded::<u64>(CAPACITY),
    send,
    recv
);

async fn tokio_mpsc_run() -> f64 {
    let t0 = Instant::now();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<u64>(CAPACITY);
    let producer = tokio::spawn(async move {
        for i in 0..MESSAGES {
            tx.send(i).await.expect("mpsc send");
        }
    });
    let mut count = 0u64;
    while rx.recv().await.is_some() {
        count += 1;
    }
    producer.await.expect("producer");
    assert_eq!(count, MESSAGES);
    t0.elapsed().as_secs_f64()
}

fn compare(
    runs: usize,
    rt: &Runtime,
    case: String,
    producers: u64,
    consumers: u64,
    anchor: &str,
    mut anchor_run: impl FnMut() -> f64,
) -> Comparison {
    let (t, a) = alternate(
        runs,
        || rt.block_on(trellis_run(producers, consumers)),
        &mut anchor_run,
    );
    Comparison {
        id: "B3",
        case,
        trellis: t,
        anchor: anchor.into(),
        anchor_value: a,
    }
}

pub(crate) fn b3(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let mut out = Vec::new();
    let mut multi_thread = Vec::new();
    for (flavor, rt) in runtimes() {
        for (p, c) in [(1u64, 1u64), (4, 4)] {
            let case = format!("{flavor} {p}p{c}c");
            out.push(compare(runs, &rt, case.clone(), p, c, "flume", || {
                rt.block_on(flume_run(p, c))
            }));
            out.push(compare(
                runs,
                &rt,
                case.clone(),
                p,
                c,
                "async-channel",
                || rt.block_on(async_channel_run(p, c)),
            ));
            if (p, c) == (1, 1) {
                out.push(compare(runs, &rt, case, p, c, "tokio mpsc", || {
                    rt.block_on(tokio_mpsc_run())
                }));
            }
            if flavor == "multi_thread" {
                multi_thread.push((p, c, out.last().expect("pushed").trellis));
            }
        }
    }
    if python {
        for (p, c, trellis) in multi_thread {
            let args = [MESSAGES.to_string(), p.to_string(), c.to_string()];
            let mut comparison =
                anchors::trio_comparison_args("B3", "b3_channel.py", &args, "s", runs, trellis)?;
            comparison.case = format!("multi_thread {p}p{c}c");
            out.push(comparison);
        }
    }
    Ok(out)
}
