//! A tour of trellis in one program: nurseries, deadlines, error groups drawn as trees,
//! cancellation with shielded cleanup, and Ctrl-C.
//!
//! Run it with `cargo run --release -p trellis --example demo`. Press Ctrl-C while it runs: the
//! whole program is cancelled, every cleanup still runs, and it exits with status 130.

use std::process::ExitCode;
use std::time::Duration;

use trellis::{CancelScope, Error, TaskHandle, fail_after, move_on_after, open_nursery, sleep};

const MS: Duration = Duration::from_millis(1);

/// A stand-in for a network fetch: takes `latency`, then answers.
async fn fetch(page: &'static str, latency: Duration) -> Result<String, Error> {
    sleep(latency).await?;
    Ok(format!("{page}: 200 OK after {} ms", latency.as_millis()))
}

/// Part 1: three fetches in a nursery, each with its own deadline. One is too slow; the pages
/// that did arrive are still collected.
async fn fetch_with_deadlines() -> Result<(), Error> {
    println!("1. Three fetches in a nursery, each with a 300 ms deadline");
    let mut handles: Vec<TaskHandle<String>> = Vec::new();
    let pages = [
        ("fast.example", 40 * MS),
        ("medium.example", 120 * MS),
        ("slow.example", 5000 * MS),
    ];
    let outcome = open_nursery(|n| {
        let handles = &mut handles;
        async move {
            for (page, latency) in pages {
                handles.push(n.start_soon(async move {
                    fail_after(300 * MS, fetch(page, latency))
                        .await
                        .map_err(|e| Error::msg(format!("{page}: {e}")))
                })?);
            }
            Ok::<_, Error>(())
        }
    })
    .await;
    if let Err(group) = outcome {
        println!("   the nursery failed:\n{}", indent(&format!("{group:?}")));
    }
    for page in handles.into_iter().filter_map(TaskHandle::into_value) {
        println!("   arrived anyway: {page}");
    }
    Ok(())
}

/// Part 2: failures in nested nurseries come back as one tree.
async fn nested_failures() -> Result<(), Error> {
    println!("\n2. Failures in nested nurseries, gathered into one error group");
    let outcome = open_nursery(|n| async move {
        n.start_soon(async { Err::<(), _>(Error::msg("broken.example: connection refused")) })?;
        n.start_soon(async {
            open_nursery(|replicas| async move {
                replicas.start_soon(async {
                    Err::<(), _>(Error::msg("replica a: checksum mismatch"))
                })?;
                replicas.start_soon(async { Err::<(), _>(Error::msg("replica b: disk full")) })?;
                Ok::<_, Error>(())
            })
            .await
        })?;
        Ok::<_, Error>(())
    })
    .await;
    let group = outcome
        .expect_err("both children fail")
        .into_group()
        .map_err(|_| Error::msg("not a group"))?;
    println!("{}", indent(&group.to_string()));
    // The predicate also sees nested groups (PEP 654); this one picks leaves only.
    let (disk, rest) =
        group.split_by(&mut |e| e.as_group().is_none() && e.to_string().contains("disk"));
    println!(
        "   split by predicate: {} matching, {} other",
        count(&disk),
        count(&rest)
    );
    Ok(())
}

/// Part 3: a deadline cancels a group of workers; each one's cleanup awaits in a shield.
async fn cancellation_with_cleanup() -> Result<(), Error> {
    println!("\n3. A 150 ms deadline cancels three workers; their async cleanup still runs");
    let outcome = move_on_after(150 * MS, async {
        open_nursery(|n| async move {
            for id in 1..=3u32 {
                n.start_soon(worker(id))?;
            }
            Ok::<_, Error>(())
        })
        .await
    })
    .await?;
    println!(
        "   deadline reached: {}",
        if outcome.is_none() {
            "moved on"
        } else {
            "finished"
        }
    );
    Ok(())
}

async fn worker(id: u32) -> Result<(), Error> {
    let result = async {
        loop {
            sleep(100 * MS).await?;
        }
    }
    .await;
    // `result` is Err(Cancelled) now. Saying goodbye needs to await, so shield it.
    CancelScope::shielded()
        .run(async {
            sleep(10 * MS * id).await?;
            println!("   worker {id}: cancelled, cleaned up");
            Ok::<_, Error>(())
        })
        .await?;
    result
}

/// Part 4: a server-like loop that only Ctrl-C (or the demo's own timer) stops.
async fn serve_until_interrupted() -> Result<(), Error> {
    println!("\n4. Serving for 1 s; press Ctrl-C to interrupt (cleanup runs, exit status 130)");
    move_on_after(1000 * MS, async {
        open_nursery(|n| async move {
            n.start_soon(worker(1))?;
            Ok::<_, Error>(())
        })
        .await
    })
    .await?;
    println!("   done without interruption");
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines()
        .map(|l| format!("   {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn count(group: &Option<trellis::ErrorGroup>) -> usize {
    group.as_ref().map_or(0, |g| g.leaves().count())
}

fn main() -> ExitCode {
    trellis::main(async {
        fetch_with_deadlines().await?;
        nested_failures().await?;
        cancellation_with_cleanup().await?;
        serve_until_interrupted().await
    })
}
