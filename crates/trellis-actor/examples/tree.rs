//! A tree of actor processes: `--depth D` levels of `--fanout F` actors below the root, each
//! printed as `actor NAME pid PID` once it is up. The function `grow` is called in every
//! actor (it starts that actor's children); the tree holds for `--hold SECONDS` (or until
//! Ctrl-C), is torn down level by level, and the program exits 0. If an actor dies
//! unexpectedly, the error tree is printed and the exit status is non-zero.
//!
//! ```sh
//! cargo run --release -p trellis-actor --example tree -- --depth 2 --fanout 3 --hold 5
//! ```

use std::process::ExitCode;
use std::time::Duration;

use trellis_actor::{ActorNursery, Config, Functions, open_nursery};

/// Starts `fanout` children named `NAME.i` (if `depth` is above 0), prints each, calls `grow`
/// in each, and holds them until `hold` ends (cancellation).
async fn spawn_level(
    an: &ActorNursery,
    n: &trellis::Nursery,
    name: &str,
    depth: u32,
    fanout: u32,
) -> Result<(), trellis::Error> {
    if depth == 0 {
        return Ok(());
    }
    for i in 0..fanout {
        let child = if name.is_empty() {
            format!("a{i}")
        } else {
            format!("{name}.{i}")
        };
        let portal = an.start_actor(&child).await?;
        println!("actor {child} pid {}", portal.pid());
        n.start_soon(async move { portal.run(grow, (child, depth - 1, fanout)).await })?;
    }
    Ok(())
}

/// Runs in every actor below the root: grows its own subtree and holds it until cancelled.
async fn grow(name: String, depth: u32, fanout: u32) -> Result<(), trellis::Error> {
    open_nursery(|an| async move {
        trellis::open_nursery(|n| async move {
            spawn_level(&an, &n, &name, depth, fanout).await?;
            trellis::sleep_forever().await?;
            Ok::<_, trellis::Error>(())
        })
        .await?;
        Ok(())
    })
    .await
}

struct Args {
    depth: u32,
    fanout: u32,
    hold: Duration,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        depth: 1,
        fanout: 2,
        hold: Duration::ZERO,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = |v: &str| v.parse::<f64>().map_err(|e| format!("{flag} {v:?}: {e}"));
        match flag.as_str() {
            "--depth" => args.depth = number(&value)? as u32,
            "--fanout" => args.fanout = number(&value)? as u32,
            "--hold" => args.hold = Duration::from_secs_f64(number(&value)?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(args)
}

fn main() -> ExitCode {
    let config = Config::new(Functions::new().register(grow));
    // Ctrl-C ends the hold below, after which the tree is torn down and the exit status is 0.
    let runner = trellis::Runner::multi_thread().handle_ctrl_c(false);
    trellis_actor::main_with(runner, config, || async {
        // Parsed in the root only: a child actor serves and never gets here.
        let args = parse_args().map_err(trellis::Error::msg)?;
        println!("actor root pid {}", std::process::id());
        open_nursery(|an| async move {
            trellis::open_nursery(|n| async move {
                spawn_level(&an, &n, "", args.depth, args.fanout).await?;
                trellis::move_on_after(args.hold, async {
                    trellis::cancellable(tokio::signal::ctrl_c()).await?.ok();
                    Ok::<_, trellis::Error>(())
                })
                .await?;
                eprintln!("tearing the tree down");
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await?;
            Ok(())
        })
        .await
    })
}
