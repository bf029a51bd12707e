//! The flagship demo: a small market data system in five processes.
//!
//! ```text
//! cargo run --release -p trellis-actor --example market [-- --hold SECONDS]
//! cargo run --release -p trellis-actor --example market -- --listen IP \
//!     [--feed-on SSH-DEST] [--workers-on SSH-DEST] [--ssh-config FILE] [--etcd URLS]
//! ```
//!
//! With `--hold`, act 1's feed runs for about that long, so that the live tree can be looked
//! at from another terminal: `trellis tree --registrar ADDR` (the address is printed first).
//!
//! On several hosts (`docs/many-hosts.md`): the root listens on TCP at `--listen`, the feed
//! runs on the host `--feed-on` names and the workers on `--workers-on` (ssh destinations;
//! `--ssh-config` is passed to ssh as `-F`), and with `--etcd` every actor keeps its name in
//! that etcd cluster instead of the root's registrar. Only act 1 runs then.
//!
//! The root spawns a `feed` actor that streams quotes, and worker actors that each open a
//! context into the feed (found through the registry), fan its stream out to two local tasks
//! with `subscribe()`, compute, and report back. In the second act one worker fails on
//! purpose: its error crosses two process boundaries as a typed value, the feed's stream into
//! it is cancelled, the rest of the tree is torn down, and every process is reaped. It prints
//! an account of what happens. In the third act the root supervises the feed and a worker
//! that relays its quotes: the worker's process crashes on purpose, its supervisor reaps and
//! restarts it, and the root resumes the stream where it broke, losing no quote. In the
//! fourth, the worker crashes on every start until the restart intensity is exceeded, and
//! the supervisor gives up with every cause in its error tree. It finishes in about three
//! seconds.

use std::time::{Duration, Instant};

use std::convert::Infallible;

use serde::{Deserialize, Serialize};
use trellis::supervisor::{Restart, Strategy, Supervision};
use trellis_actor::{
    ActorError, Config, Context, Etcd, Functions, MsgStream, Placement, RemoteActorError, SshHost,
    Transport, open_nursery, open_supervisor,
};

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
    quotes_from(ctx, 0, ticks, pace_ms).await
}

/// The feed from quote `from` on: the same walk, so that a stream resumed there goes on as
/// if it had never broken.
async fn quotes_from(
    ctx: Context,
    from: u64,
    ticks: u64,
    pace_ms: u64,
) -> Result<u64, trellis::Error> {
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
        if seq < from {
            continue;
        }
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

/// A relay: streams the feed's quotes of `symbol` from quote `from` on to its caller. With
/// `crash_at`, its process dies at that quote, as a crash does: no goodbye, no cleanup.
async fn relay(
    out: MsgStream<Infallible, Quote>,
    symbol: String,
    from: u64,
    ticks: u64,
    crash_at: Option<u64>,
) -> Result<(), trellis::Error> {
    let feed = trellis_actor::wait_for_actor("feed").await?;
    feed.open_context(
        quotes_from,
        (from, ticks, 2),
        |ctx, _: Vec<String>| async move {
            let quotes = ctx.open_stream::<Quote, ()>()?;
            while let Some(q) = quotes.recv().await? {
                if crash_at.is_some_and(|at| q.seq >= at) {
                    std::process::exit(3);
                }
                if q.symbol == symbol {
                    out.send(q).await?;
                }
            }
            Ok(())
        },
    )
    .await
}

/// Where the demo's children learn of the etcd cluster (the root passes it on).
const ETCD_ENV: &str = "MARKET_ETCD";

fn config() -> Config {
    let config = Config::new(
        Functions::new()
            .register(quotes)
            .register(quotes_from)
            .register(relay)
            .register(watch)
            .error_type::<BadTick>(),
    );
    match std::env::var(ETCD_ENV) {
        Ok(endpoints) => config.etcd(Etcd::new(endpoints.split(','))),
        Err(_) => config,
    }
}

/// Prints a line with the time since the start.
struct Account(Instant);

impl Account {
    fn say(&self, line: impl std::fmt::Display) {
        println!("[{:5.2}s] {line}", self.0.elapsed().as_secs_f64());
    }
}

/// The command line.
#[derive(Default)]
struct Options {
    hold: Option<Duration>,
    listen: Option<std::net::IpAddr>,
    feed_on: Option<String>,
    workers_on: Option<String>,
    ssh_config: Option<String>,
    etcd: Option<String>,
}

const USAGE: &str = "usage: market [--hold SECONDS] [--listen IP] [--feed-on SSH-DEST] \
                     [--workers-on SSH-DEST] [--ssh-config FILE] [--etcd URLS]";

fn options(mut args: impl Iterator<Item = String>) -> Result<Options, String> {
    let mut options = Options::default();
    while let Some(flag) = args.next() {
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value; {USAGE}"))?;
        match flag.as_str() {
            "--hold" => {
                options.hold = Some(
                    value
                        .parse::<f64>()
                        .ok()
                        .filter(|s| s.is_finite() && *s >= 0.0)
                        .map(Duration::from_secs_f64)
                        .ok_or_else(|| {
                            format!("--hold takes a number of seconds, not {value:?}")
                        })?,
                );
            }
            "--listen" => {
                options.listen = Some(
                    value
                        .parse()
                        .map_err(|_| format!("--listen takes an IP address, not {value:?}"))?,
                );
            }
            "--feed-on" => options.feed_on = Some(value),
            "--workers-on" => options.workers_on = Some(value),
            "--ssh-config" => options.ssh_config = Some(value),
            "--etcd" => options.etcd = Some(value),
            _ => return Err(USAGE.to_owned()),
        }
    }
    Ok(options)
}

impl Options {
    /// Where act 1's feed and workers run: on this host, or on the hosts named.
    fn placements(&self) -> (Placement, Placement) {
        let on = |dest: &Option<String>| match dest {
            None => Placement::local(),
            Some(dest) => {
                let host = SshHost::new(dest.clone());
                Placement::ssh(match &self.ssh_config {
                    Some(file) => host.arg("-F").arg(file),
                    None => host,
                })
            }
        };
        (on(&self.feed_on), on(&self.workers_on))
    }

    fn on_many_hosts(&self) -> bool {
        self.feed_on.is_some() || self.workers_on.is_some()
    }
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn main() -> std::process::ExitCode {
    // A child serves before the command line is read: its own is the test harness's or empty.
    trellis_actor::serve_if_child(config());
    let options = match options(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("market: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut root = config();
    if let Some(bind) = options.listen {
        root = root.transport(Transport::Tcp { bind });
    }
    if let Some(endpoints) = &options.etcd {
        root = root
            .etcd(Etcd::new(endpoints.split(',')))
            .child_env(ETCD_ENV, endpoints);
    }
    trellis_actor::main(root, move || async move {
        let log = std::sync::Arc::new(Account(Instant::now()));
        match &options.etcd {
            Some(etcd) => log.say(format!(
                "names are kept in etcd at {etcd} (see them live: trellis tree --etcd URLS)"
            )),
            None => log.say(format!(
                "the registrar is the root, at {} (see it live: trellis tree --registrar ADDR)",
                trellis_actor::current().registrar()
            )),
        }
        // A quote every 4 ms: 300 of them, or as many as fill the hold.
        let ticks = options
            .hold
            .map_or(300, |h| (h.as_millis() / 4).max(300) as u64);
        if options.on_many_hosts() {
            return act_one(&log, ticks, options.placements(), false).await;
        }
        act_one(&log, ticks, options.placements(), true).await?;
        println!();
        act_two(&log).await;
        println!();
        act_three(&log).await?;
        println!();
        act_four(&log).await;
        Ok(())
    })
}

/// Act 1: everything works; the workers' reports are gathered when the nursery closes. The
/// feed and the workers run where `placements` say; `local` checks that their processes
/// are gone at the end (they are this host's).
async fn act_one(
    log: &std::sync::Arc<Account>,
    ticks: u64,
    (feed_on, workers_on): (Placement, Placement),
    local: bool,
) -> Result<(), trellis::Error> {
    log.say("act 1: a feed actor and three workers; each worker opens a context into the feed");
    log.say("       and fans its stream out to two local tasks with stream.subscribe()");
    let feed_pid = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
    let seen = feed_pid.clone();
    let l = log.clone();
    let handles = open_nursery(|an| async move {
        let feed = an.start_actor_on("feed", &feed_on).await?;
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
                an.run_in_actor_on(&name, &workers_on, watch, (symbol.to_owned(), ticks, None))
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
    if local {
        let left = pids.iter().filter(|&&pid| alive(pid)).count();
        log.say(format!(
            "act 1 done: {} processes reaped, {left} left",
            pids.len()
        ));
    } else {
        log.say(format!(
            "act 1 done: {} processes on other hosts ended",
            pids.len()
        ));
    }
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

/// Act 3: the root supervises the feed and a relay; the relay's process crashes mid-stream,
/// is reaped and restarted, and the root resumes the stream where it broke.
async fn act_three(log: &std::sync::Arc<Account>) -> Result<(), trellis::Error> {
    log.say("act 3: a supervisor (one for one) holds the feed and relay-acme, which streams");
    log.say("       ACME quotes to the root; its process crashes at quote #120, on purpose");
    let l = log.clone();
    open_supervisor(
        Supervision::new(Strategy::OneForOne).name("market"),
        |sup| async move {
            sup.start_actor("feed", Restart::Permanent).await?;
            let relay_actor = sup.start_actor("relay-acme", Restart::Permanent).await?;
            let (mut next, mut received, mut crash_at) = (0u64, 0u64, Some(120));
            let first_pid = relay_actor.try_portal()?.pid();
            loop {
                let from = next;
                let (last, count) = (&mut next, &mut received);
                let streamed = relay_actor
                    .open_stream_from(
                        relay,
                        ("ACME".to_owned(), from, 300, crash_at),
                        |quotes| async move {
                            while let Some(q) = quotes.recv().await? {
                                assert_eq!(q.symbol, "ACME");
                                assert!(q.seq >= *last, "no quote twice");
                                *last = q.seq + 1;
                                *count += 1;
                            }
                            Ok(())
                        },
                    )
                    .await;
                match streamed {
                    Ok(()) => break,
                    Err(e) if matches!(e.downcast_ref(), Some(ActorError::Died { .. })) => {
                        l.say(format!("the stream ended with: {e}"));
                        crash_at = None;
                        let pid = relay_actor.portal().await?.pid();
                        l.say(format!(
                            "the supervisor reaped pid {first_pid} and restarted relay-acme as pid \
                             {pid}; resuming at quote #{next}"
                        ));
                    }
                    Err(e) => return Err(e),
                }
            }
            let restarts = sup.children().iter().map(|c| c.restarts).sum::<u64>();
            l.say(format!(
                "act 3 done: {received} ACME quotes of 300 ticks, none lost or repeated; \
                 {restarts} restart"
            ));
            sup.shutdown();
            Ok(())
        },
    )
    .await?;
    Ok(())
}

/// Act 4: the relay crashes every time it starts; at most 2 restarts within 5 s are allowed,
/// so the third crash makes the supervisor give up, with every cause.
async fn act_four(log: &std::sync::Arc<Account>) {
    log.say("act 4: relay-acme now crashes on every start; the intensity is 2 restarts in 5 s");
    let pids = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = pids.clone();
    let outcome = open_supervisor(
        Supervision::new(Strategy::OneForOne)
            .name("market")
            .intensity(2, Duration::from_secs(5)),
        |sup| async move {
            let feed = sup.start_actor("feed", Restart::Permanent).await?;
            let pid = feed.portal().await?.pid();
            seen.lock().unwrap().push(pid);
            let relay_actor = sup.start_actor("relay-acme", Restart::Permanent).await?;
            loop {
                let pid = relay_actor.portal().await?.pid();
                seen.lock().unwrap().push(pid);
                let _ = relay_actor
                    .open_stream_from(
                        relay,
                        ("ACME".to_owned(), 0, 300, Some(5)),
                        |quotes| async move {
                            while quotes.recv().await?.is_some() {}
                            Ok(())
                        },
                    )
                    .await;
            }
            #[allow(unreachable_code)]
            Ok::<(), trellis::Error>(())
        },
    )
    .await;
    let Err(error) = outcome else {
        log.say("act 4 ended without the failure it was meant to show");
        return;
    };
    log.say("the supervisor gave up; its error tree holds every cause:");
    for line in format!("{error}").lines() {
        println!("          {line}");
    }
    let pids = pids.lock().unwrap().clone();
    let left = pids.iter().filter(|&&pid| alive(pid)).count();
    log.say(format!(
        "act 4 done: {} processes reaped, {left} left",
        pids.len()
    ));
}
