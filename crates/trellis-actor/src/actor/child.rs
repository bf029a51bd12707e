//! A child actor process: connects back to its parent, serves calls until the parent cancels
//! it (or goes away), tears down what it runs and exits.

use std::str::FromStr;

use nix::sys::signal::Signal;
use trellis_wire::{ActorId, Payload};

use super::config::{Config, EXIT_PARENT_LOST, env};
use super::run::run_actor;
use crate::connection::End;
use crate::error::RemoteActorError;
use crate::logs::Shipped;
use crate::names::{CHILD_READY, LOG};
use crate::secret::Secret;
use crate::transport::{Addr, Transport};

/// How a child's service ended.
enum Exit {
    /// Its parent (or another actor) cancelled it.
    Cancelled,
    /// The connection to its parent ended.
    ParentLost,
}

/// What a child does before it runs anything: die with its parent, even when the parent is
/// killed outright, and exit at once if the parent is gone already; then read its
/// environment. `Err` is the exit status to leave with.
fn prepare(config: Config) -> Result<(ActorId, Config, Addr, Addr), i32> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let parent_pid = std::env::var(env::PARENT_PID)
        .ok()
        .and_then(|p| p.parse::<i32>().ok());
    if parent_pid.is_some_and(|pid| nix::unistd::getppid().as_raw() != pid) {
        return Err(EXIT_PARENT_LOST.into());
    }
    match setup(config) {
        Ok((id, config, parent, registrar)) => {
            crate::logs::forward_from_child(id.clone(), config.log_level);
            Ok((id, config, parent, registrar))
        }
        Err(message) => {
            eprintln!("trellis-actor: bad child environment: {message}");
            Err(2)
        }
    }
}

/// Serves as the child actor described by the environment on a runtime of its own (one
/// thread), then exits the process.
pub(crate) fn serve(config: Config) -> ! {
    let code = match prepare(config) {
        Ok((id, config, parent, registrar)) => exit_code(
            trellis::Runner::current_thread()
                .handle_ctrl_c(false)
                .run(serve_child(id, config, parent, registrar)),
        ),
        Err(code) => code,
    };
    std::process::exit(code);
}

/// [`serve`] on the tokio runtime that polls it (a child whose `main` is `#[tokio::main]`),
/// in a trellis root of its own; then exits the process.
pub(crate) async fn serve_async(config: Config) -> ! {
    let code = match prepare(config) {
        Ok((id, config, parent, registrar)) => {
            exit_code(trellis::root(serve_child(id, config, parent, registrar)).await)
        }
        Err(code) => code,
    };
    std::process::exit(code);
}

fn setup(config: Config) -> Result<(ActorId, Config, Addr, Addr), String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let id = ActorId::new(var(env::NAME)?, var(env::UID)?);
    let parent = Addr::from_str(&var(env::PARENT)?).map_err(|e| e.to_string())?;
    let registrar = Addr::from_str(&var(env::REGISTRAR)?).map_err(|e| e.to_string())?;
    let root = Addr::from_str(&var(env::ROOT)?).map_err(|e| e.to_string())?;
    let transport = match var(env::TRANSPORT)?.as_str() {
        "unix" => Transport::Unix,
        tcp => match tcp.strip_prefix("tcp:").map(str::parse) {
            Some(Ok(bind)) => Transport::Tcp { bind },
            _ => return Err(format!("bad {}: {tcp:?}", env::TRANSPORT)),
        },
    };
    // The parent writes the tree's secret to our standard input, then closes it.
    let secret = Secret::receive(std::io::stdin().lock()).map_err(|e| e.to_string())?;
    let mut config = config.transport(transport).secret(secret);
    config.root = Some(root);
    Ok((id, config, parent, registrar))
}

/// The child's service: connect to the parent, register, report ready, serve until the
/// parent cancels it or goes away.
async fn serve_child(
    id: ActorId,
    config: Config,
    parent: Addr,
    registrar: Addr,
) -> Result<Option<Exit>, trellis::Error> {
    run_actor(id, config, Some(registrar), |actor| async move {
        let conn = actor.connect(&parent).await?;
        actor.set_parent(conn.peer().actor.clone());
        actor.register().await?;
        let parent_conn = conn.clone();
        actor
            .inner
            .work
            .start_soon(crate::logs::ship(move |records| {
                let conn = parent_conn.clone();
                async move {
                    match conn.call(LOG, records).await {
                        Ok(_) => Ok(Shipped::Taken),
                        Err(e) if e.downcast_ref::<RemoteActorError>().is_some() => {
                            Ok(Shipped::Refused)
                        }
                        Err(e) => Err(e),
                    }
                }
            }))?;
        conn.call(CHILD_READY, Payload::unit()).await?;
        Ok(match conn.ended().await {
            Err(_cancelled) => Exit::Cancelled,
            Ok(End::Goodbye | End::Lost(_)) => Exit::ParentLost,
        })
    })
    .await
}

fn exit_code(outcome: Result<Option<Exit>, trellis::Error>) -> i32 {
    match outcome {
        Ok(Some(Exit::Cancelled) | None) => 0,
        Ok(Some(Exit::ParentLost)) => EXIT_PARENT_LOST.into(),
        Err(error) => {
            eprintln!("trellis-actor: child actor failed: {error:?}");
            1
        }
    }
}
