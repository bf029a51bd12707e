//! B6 under attack: round trips to a child actor over TCP while a flood of connections that
//! never do their handshake knocks on the same actor, against the same round trips with no
//! flood. The per-peer limits are what keep the ratio near 1.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use trellis_actor::{Addr, Transport, open_nursery};

use crate::Comparison;

/// B6 with and without a flood of silent connections (1,000 held at a time, the oldest
/// dropped for each new one), p50 of 10,000 round trips each.
pub(crate) fn b6(runs: usize) -> Result<Vec<Comparison>, String> {
    const CALLS: usize = 10_000;
    let rounds = (runs / 5).max(1);
    let config = super::actors::config().transport(Transport::tcp_loopback());
    let (clean, attacked, knocks) = super::actors::root_runtime()
        .run(trellis_actor::run_root("bench", config, || async move {
            open_nursery(|an| async move {
                let portal = an.start_actor("rpc").await?;
                let addr = match portal.info().await?.addr.parse() {
                    Ok(Addr::Tcp(addr)) => addr,
                    other => panic!("a TCP address, not {other:?}"),
                };
                let measure = |portal: trellis_actor::Portal| async move {
                    let mut lat = Vec::with_capacity(CALLS * rounds);
                    for i in 0..(200 + CALLS * rounds) as u64 {
                        let t0 = Instant::now();
                        portal.run(super::actors::echo, (i,)).await?;
                        if i >= 200 {
                            lat.push(t0.elapsed().as_secs_f64());
                        }
                    }
                    Ok::<_, trellis::Error>(lat)
                };
                let clean = measure(portal.clone()).await?;
                let stop = Arc::new(AtomicBool::new(false));
                let knocks = Arc::new(AtomicU64::new(0));
                let flood = {
                    let (stop, knocks) = (stop.clone(), knocks.clone());
                    tokio::spawn(async move {
                        let mut held = std::collections::VecDeque::new();
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(stream) = tokio::net::TcpStream::connect(addr).await {
                                held.push_back(stream);
                                knocks.fetch_add(1, Ordering::Relaxed);
                            }
                            if held.len() > 1000 {
                                held.pop_front();
                            }
                        }
                    })
                };
                let attacked = measure(portal).await;
                stop.store(true, Ordering::Relaxed);
                let _ = flood.await;
                an.cancel();
                Ok((clean, attacked?, knocks.load(Ordering::Relaxed)))
            })
            .await
        }))
        .map_err(|e| format!("{e:?}"))?;
    let p50 = |lat: &[f64]| crate::percentile(lat, 0.5);
    Ok(vec![Comparison {
        id: "B6",
        case: format!("p50 over TCP under a connection flood ({knocks} silent connections)"),
        trellis: p50(&attacked),
        anchor: "the same round trips with no flood".into(),
        anchor_value: p50(&clean),
    }])
}
