//! A small pipeline: a producer, a pool of workers on a channel, blocking work on threads, and
//! a broadcast of the results to two observers — all in one nursery, cancelled by a deadline.
//!
//! Run it with `cargo run --release -p trellis --example pipeline`.

use std::process::ExitCode;
use std::time::Duration;

use trellis::broadcast::{BroadcastError, broadcast_receiver};
use trellis::channel::{RecvError, channel};
use trellis::{Error, move_on_after, open_nursery, threads};

fn main() -> ExitCode {
    trellis::main(async {
        let (jobs_tx, jobs_rx) = channel::<u64>(16);
        let (results_tx, results_rx) = channel::<(u64, u64)>(16);
        let results = broadcast_receiver(results_rx, 64);
        let outcome = move_on_after(Duration::from_millis(500), async {
            open_nursery(|n| async move {
                // The producer: numbers to factor, then the end of the channel.
                n.start_soon(async move {
                    for job in 1_000_000_000u64..1_000_000_040 {
                        jobs_tx.send(job).await?;
                    }
                    Ok::<_, Error>(())
                })?;
                // Four workers share the jobs; the CPU work runs on threads.
                for _ in 0..4 {
                    let (jobs, results) = (jobs_rx.clone(), results_tx.clone());
                    n.start_soon(async move {
                        loop {
                            let job = match jobs.recv().await {
                                Ok(job) => job,
                                Err(RecvError::EndOfChannel) => return Ok(()),
                                Err(e) => return Err(Error::new(e)),
                            };
                            let factor = threads::run_sync(move || smallest_factor(job)).await?;
                            results.send((job, factor)).await?;
                        }
                    })?;
                }
                drop((jobs_rx, results_tx));
                // Two observers each see every result.
                for name in ["printer", "counter"] {
                    let observer = results.subscribe()?;
                    n.start_soon(async move {
                        let mut seen = 0;
                        loop {
                            match observer.recv().await {
                                Ok((job, factor)) if name == "printer" && factor != job => {
                                    println!("{job} = {factor} × {}", job / factor);
                                }
                                Ok(_) => {}
                                Err(BroadcastError::EndOfChannel) => break,
                                Err(e) => return Err(Error::new(e)),
                            }
                            seen += 1;
                        }
                        println!("{name}: saw {seen} results");
                        Ok::<_, Error>(())
                    })?;
                }
                drop(results);
                Ok::<_, Error>(())
            })
            .await
        })
        .await?;
        if outcome.is_none() {
            println!("deadline reached: everything still running was cancelled");
        }
        Ok::<_, Error>(())
    })
}

fn smallest_factor(n: u64) -> u64 {
    (2..)
        .take_while(|d| d * d <= n)
        .find(|d| n % d == 0)
        .unwrap_or(n)
}
