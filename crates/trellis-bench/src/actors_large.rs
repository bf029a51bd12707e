//! B7's large items: a child streams 1,000 items of 1 MiB (`bytes::Bytes`) to its parent,
//! against a raw tokio child writing the same bytes as length-prefixed frames over a Unix
//! socket, read by the parent into a buffer of its own.

use std::convert::Infallible;
use std::time::Instant;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use trellis_actor::{MsgStream, open_nursery};

use crate::actors::{RawListener, root_runtime, spawn_raw_as};
use crate::{Comparison, median};

/// Items per run.
const ITEMS: u64 = 1000;
/// Bytes per item.
const ITEM: usize = 1 << 20;

/// The raw child's role: `blobs:PATH:N:SIZE`.
pub(crate) const RAW_ROLE: &str = "TRELLIS_BENCH_RAW_BLOBS";

/// The streaming function: `n` items of `size` bytes.
pub(crate) async fn blobs(
    stream: MsgStream<Infallible, Bytes>,
    n: u64,
    size: usize,
) -> Result<(), trellis::Error> {
    let blob = Bytes::from(vec![7u8; size]);
    for _ in 0..n {
        stream.send(blob.clone()).await?;
    }
    Ok(())
}

/// Runs this process as the raw child when it was started as one.
pub(crate) fn serve_raw_role() {
    let Ok(role) = std::env::var(RAW_ROLE) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let mut parts = role.split(':').skip(1);
        let path = parts.next().unwrap();
        let n: u64 = parts.next().unwrap().parse().unwrap();
        let size: usize = parts.next().unwrap().parse().unwrap();
        let mut stream = UnixStream::connect(path).await.expect("connect");
        // Each frame (its length, then its bytes) in one buffer, written with one call.
        let mut frame = (size as u32).to_be_bytes().to_vec();
        frame.resize(4 + size, 7);
        for _ in 0..n {
            if stream.write_all(&frame).await.is_err() {
                return;
            }
        }
        let mut buf = [0u8; 1];
        let _ = stream.read(&mut buf).await;
    });
    std::process::exit(0);
}

/// Seconds for `ITEMS` items of `ITEM` bytes: (trellis, raw).
pub(crate) fn b7_large(runs: usize) -> Result<Comparison, String> {
    let trellis = if crate::side_selected("trellis") {
        root_runtime()
            .run(trellis_actor::run_root(
                "bench",
                crate::actors::config(),
                || async move {
                    open_nursery(|an| async move {
                        let portal = an.start_actor("blobs").await?;
                        let mut times = Vec::new();
                        for round in 0..=runs {
                            let t0 = Instant::now();
                            let total = portal
                                .open_stream_from(blobs, (ITEMS, ITEM), |stream| async move {
                                    let mut total = 0usize;
                                    while let Some(item) = stream.recv().await? {
                                        total += item.len();
                                    }
                                    Ok(total)
                                })
                                .await?;
                            assert_eq!(total, ITEMS as usize * ITEM);
                            if round > 0 {
                                times.push(t0.elapsed().as_secs_f64());
                            }
                        }
                        Ok(median(&mut times))
                    })
                    .await
                },
            ))
            .map_err(|e| format!("{e:?}"))?
    } else {
        1.0
    };
    let raw = if crate::side_selected("anchor") {
        raw_blobs(runs)?
    } else {
        1.0
    };
    Ok(Comparison {
        id: "B7",
        case: "1,000 Bytes items of 1 MiB (s)".into(),
        trellis,
        anchor: "raw tokio unix socket, 1 MiB length-prefixed frames".into(),
        anchor_value: raw,
    })
}

fn raw_blobs(runs: usize) -> Result<f64, String> {
    root_runtime()
        .run(async move {
            let raw = RawListener::bind();
            let role = format!("blobs:PATH:{ITEMS}:{ITEM}");
            let mut times = Vec::new();
            for round in 0..=runs {
                let mut child = spawn_raw_as(&raw, RAW_ROLE, &role).await;
                let t0 = Instant::now();
                // The floor: each frame read straight into one reused buffer.
                let mut body = vec![0u8; ITEM];
                let mut total = 0usize;
                for _ in 0..ITEMS {
                    let mut header = [0u8; 4];
                    child.stream.read_exact(&mut header).await.unwrap();
                    let len = u32::from_be_bytes(header) as usize;
                    child.stream.read_exact(&mut body[..len]).await.unwrap();
                    total += len;
                }
                assert_eq!(total, ITEMS as usize * ITEM);
                if round > 0 {
                    times.push(t0.elapsed().as_secs_f64());
                }
                drop(child.stream);
                child.process.wait().await.unwrap();
            }
            Ok::<_, trellis::Error>(median(&mut times))
        })
        .map_err(|e| format!("{e:?}"))
}
