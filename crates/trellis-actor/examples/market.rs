//! The flagship demo: a small market data system in five processes.
//!
//! ```text
//! cargo run --release -p trellis-actor --example market [-- --hold SECONDS]
//! ```
//!
//! With `--hold`, act 1's feed runs for about that long, so that the live tree can be looked
//! at from another terminal: `trellis tree --registrar ADDR` (the address is printed first).
//!
//! The root spawns a `feed` actor that streams quotes, and worker actors that each open a
//! context into the feed (found through the registry), fan its stream out to two local tasks
//! with `subscribe()`, compute, and report back. In the second act one worker fails on
//! purpose: its error crosses two process boundaries as a typed value, the feed's stream into
//! it is cancelled, the rest of the tree is torn down, and every process is reaped. It prints
//! an account of what happens and finishes in about two seconds.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use trellis_actor::{Config, Context, Functions, RemoteActorError, open_nursery};

/// One quote.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Quote {
    seq: u64,
    symbol: String,
    price: f64,
}

/// What a worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Report {
    worker: String,
    pid: u32,
    symbol: String,
    quotes: u64,
    low: f64,
    high: f64,
    mean: f64,
    /// Moves of more than 1% from one quote to the next, seen by the second task.
    jumps: u64,
}

/// The failure the faulty worker reports: a real type, rebuilt on the root's side.
#[derive(Debug, Clone, Serialize, Deserialize, thiserror::Error)]
#[error("implausible quote #{seq}: {symbol} at {price:.2}")]
struct BadTick {
    seq: u64,
    symbol: String,
    price: f64,
}

const SYMBOLS: [&str; 3] = ["ACME", "GLOBEX", "INITECH"];

/// The feed: `ticks` quotes, one every `pace_ms`, prices on a seeded random walk.
async fn quotes(ctx: Context, ticks: u64, pace_ms: u64) -> Result<u64, trellis::Error> {
    ctx.started(SYMBOLS.map(String::from).to_vec()).await?;
    let stream = ctx.open_stream::<(), Quote>()?;
    let mut prices = [100.0, 50.0, 20.0];
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    for seq in 0..ticks {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % 3) as usize;
        let step = ((seed >> 8) % 2001) as f64 / 1000.0 - 1.0; // -1.0 ..= 1.0
        prices[i] *= 1.0 + step * 0.015;
        stream
            .send(Quote {
                seq,
                symbol: SYMBOLS[i].to_owned(),
                price: prices[i],
            })
            .await?;
        trellis::sleep(Duration::from_millis(pace_ms)).await?;
    }
    Ok(ticks)
}

/// A worker: opens a context into the feed, and two local tasks subscribe to its stream —
/// one keeps statistics for `symbol`, one counts jumps across all symbols. With `fail_at`,
/// the statistics task rejects that quote.
async fn watch(symbol: String, ticks: u64, fail_at: Option<u64>) -> Result<Report, trellis::Error> {
    let feed = trellis_actor::wait_for_actor("feed").await?;
    let worker = trellis_actor::current().id().name.clone();
    feed.open_context(quotes, (ticks, 4), |ctx, symbols: Vec<String>| async move {
        assert!(symbols.contains(&symbol), "the feed has no {symbol}");
        let stream = ctx.open_stream::<Quote, ()>()?;
        let (for_stats, for_jumps) = (stream.subscribe(), stream.subscribe());
        let (stats, jumps) = trellis::open_nursery(|n| async move {
            let stats = n.start_soon(async move {
                let (mut count, mut low, mut high, mut sum) = (0u64, f64::MAX, f64::MIN, 0.0);
                while let Some(q) = for_stats.recv().await? {
                    if q.symbol != symbol {
                        continue;
                    }
                    if fail_at.is_some_and(|at| q.seq >= at) {
                        return Err(trellis::Error::new(BadTick {
                            seq: q.seq,
                            symbol: q.symbol,
                            price: q.price * 1000.0,
                        }));
                    }
                    count += 1;
                    low = low.min(q.price);
                    high = high.max(q.price);
                    sum += q.price;
                }
                Ok::<_, trellis::Error>((symbol, count, low, high, sum / count.max(1) as f64))
            })?;
            let jumps = n.start_soon(async move {
                let mut last = std::collections::HashMap::new();
                let mut jumps = 0u64;
                while let Some(q) = for_jumps.recv().await? {
                    if let Some(before) = last.insert(q.symbol.clone(), q.price)
                        && (q.price / before - 1.0).abs() > 0.01
                    {
                        jumps += 1;
                    }
                }
                Ok::<_, trellis::Error>(jumps)
            })?;
            Ok::<_, trellis::Error>((stats, jumps))
        })
        .await?
        .expect("not cancelled");
        let (symbol, quotes, low, high, mean) = stats.into_value().expect("finished");
        Ok(Report {
            worker,
            pid: std::process::id(),
            symbol,
            quotes,
            low,
            high,
            mean,
            jumps: jumps.into_value().expect("finished"),
        })
    })
    .await
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(quotes)
            .register(watch)
            .error_type::<BadTick>(),
    )
}

/// Prints a line with the time since the start.
struct Account(Instant);

impl Account {
    fn say(&self, line: impl std::fmt::Display) {
        println!("[{:5.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

/// `--hold SECONDS`, if given.
fn hold_arg(mut args: impl Iterator<Item = String>) -> Result<Option<Duration>, String> {
    match (args.next().as_deref(), args.next()) {
        (None, _) => Ok(None),
        (Some("--hold"), Some(secs)) => secs
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(|s| Some(Duration::from_secs_f64(s)))
            .ok_or_else(|| format!("--hold takes a number of seconds, not {secs:?}")),
        _ => Err("usage: market [--hold SECONDS]".to_owned()),
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn main() -> std::process::ExitCode {
    let hold = match hold_arg(std::env::args().skip(1)) {
        Ok(hold) => hold,
        Err(message) => {
            eprintln!("market: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    trellis_actor::main(config(), move || async move {
        let log = std::sync::Arc::new(Account(Instant::now()));
        log.say(format!(
            "the registrar is the root, at {} (see it live: trellis tree --registrar ADDR)",
            trellis_actor::current().registrar()
        ));
        // A quote every 4 ms: 300 of them, or as many as fill the hold.
        let ticks = hold.map_or(300, |h| (h.as_millis() / 4).max(300) as u64);
        act_one(&log, ticks).await?;
        println!();
        act_two(&log).await;
        Ok(())
    })
}

/// Act 1: everything works; the workers' reports are gathered when the nursery closes.
async fn act_one(log: &std::sync::Arc<Account>, ticks: u64) -> Result<(), trellis::Error> {
    log.say("act 1: a feed actor and three workers; each worker opens a context into the feed");
    log.say("       and fans its stream out to two local tasks with stream.subscribe()");
    let feed_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = feed_pid.clone();
    let l = log.clone();
    let handles = open_nursery(|an| async move {
        let feed = an.start_actor("feed").await?;
        seen.store(feed.pid(), std::sync::atomic::Ordering::SeqCst);
        l.say(format!(
            "actor {} is up, pid {}",
            feed.actor_id(),
            feed.pid()
        ));
        let mut handles = Vec::new();
        for symbol in SYMBOLS {
            let name = format!("watch-{}", symbol.to_lowercase());
            handles.push(
                an.run_in_actor(&name, watch, (symbol.to_owned(), ticks, None))
                    .await?,
            );
            l.say(format!(
                "actor {name} is up; it finds `feed` through the registry"
            ));
        }
        l.say("the nursery gathers the workers' reports as it closes, then cancels the feed");
        Ok(handles)
    })
    .await?;
    let mut pids = vec![feed_pid.load(std::sync::atomic::Ordering::SeqCst)];
    for report in handles.into_iter().filter_map(|h| h.into_value()) {
        log.say(format!(
            "{} (pid {}): {} {} quotes, low {:.2} high {:.2} mean {:.2}; {} jumps over 1% seen",
            report.worker,
            report.pid,
            report.quotes,
            report.symbol,
            report.low,
            report.high,
            report.mean,
            report.jumps,
        ));
        pids.push(report.pid);
    }
    let left = pids.iter().filter(|&&pid| alive(pid)).count();
    log.say(format!(
        "act 1 done: {} processes reaped, {left} left",
        pids.len()
    ));
    Ok(())
}

/// Act 2: one worker fails on purpose. Its error reaches the root as a typed value, its
/// siblings' calls are cancelled (and with them their contexts into the feed), the actors are
/// torn down and reaped.
async fn act_two(log: &std::sync::Arc<Account>) {
    log.say("act 2: the same, but watch-initech rejects its first quote from #150 on, on purpose");
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pids.clone();
    let l = log.clone();
    let outcome = open_nursery(|an| async move {
        let feed = an.start_actor("feed").await?;
        seen.lock().unwrap().push(feed.pid());
        let mut workers = Vec::new();
        for symbol in SYMBOLS {
            let name = format!("watch-{}", symbol.to_lowercase());
            let portal = an.start_actor(&name).await?;
            seen.lock().unwrap().push(portal.pid());
            workers.push((symbol, portal));
        }
        l.say("feed and three workers are up; the calls run side by side in a nursery");
        trellis::open_nursery(|n| async move {
            for (symbol, portal) in workers {
                let l = l.clone();
                let fail_at = (symbol == "INITECH").then_some(150);
                n.start_soon(async move {
                    let outcome = portal.run(watch, (symbol.to_owned(), 1000, fail_at)).await;
                    match &outcome {
                        Ok(_) => l.say(format!("{} finished", portal.actor_id())),
                        Err(e) if e.is_cancelled() => {
                            l.say(format!("{}: call cancelled", portal.actor_id()))
                        }
                        Err(_) => l.say(format!("{}: call failed", portal.actor_id())),
                    }
                    outcome
                })?;
            }
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await;
    let Err(error) = outcome else {
        log.say("act 2 ended without the failure it was meant to show");
        return;
    };
    log.say("the root's actor nursery failed with:");
    for line in format!("{error}").lines() {
        println!("          {line}");
    }
    let leaf = error.into_single().unwrap_or_else(|e| e);
    let bad = leaf
        .downcast_ref::<RemoteActorError>()
        .and_then(|remote| remote.rebuilt::<BadTick>().map(|b| (remote, b)));
    if let Some((remote, bad)) = bad {
        log.say(format!(
            "it is a BadTick again on this side (quote #{}, {} at {:.2}), from actor {}",
            bad.seq,
            bad.symbol,
            bad.price,
            remote.actor()
        ));
    }
    let pids = pids.lock().unwrap().clone();
    let left = pids.iter().filter(|&&pid| alive(pid)).count();
    log.say(format!(
        "act 2 done: {} processes torn down and reaped, {left} left",
        pids.len()
    ));
}
