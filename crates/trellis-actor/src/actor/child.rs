//! A child actor process: connects back to its parent, serves calls until the parent cancels
//! it (or goes away), tears down what it runs and exits.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use nix::sys::signal::Signal;
use tokio::sync::oneshot;
use trellis_wire::{ActorId, Payload};

use super::config::{Config, EXIT_PARENT_LOST, TCP_AUTO, env};
use super::handle::Actor;
use super::launch::{FROM_STDIN, LAUNCH_ENV, Launch, watch_control};
use super::run::run_actor;
use super::zygote::ZYGOTE;
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

/// Who a child is, where its parent and its tree are, and (for a launched child) its control
/// channel.
struct Start {
    id: ActorId,
    config: Config,
    parent: Addr,
    registrar: Addr,
    control: Option<oneshot::Receiver<()>>,
}

/// What a child does before it runs anything: die with its parent, even when the parent is
/// killed outright, and exit at once if the parent is gone already; then read its
/// environment (a launched child: its launch block). `Err` is the exit status to leave with.
fn prepare(config: Config) -> Result<Start, i32> {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    let launched = std::env::var(LAUNCH_ENV).ok();
    let launch = match launched.as_deref() {
        None => None,
        Some(FROM_STDIN) => match Launch::read(&mut std::io::stdin().lock()) {
            Ok(launch) => Some(launch),
            Err(message) => {
                eprintln!("trellis-actor: bad launch block: {message}");
                return Err(2);
            }
        },
        Some(other) => {
            eprintln!("trellis-actor: bad {LAUNCH_ENV}: {other:?}");
            return Err(2);
        }
    };
    if launch.is_some() {
        // A session and process group of its own (pgid = pid): its parent, on another host,
        // can end the whole group through the launcher.
        let _ = nix::unistd::setsid();
    } else {
        let parent_pid = std::env::var(env::PARENT_PID)
            .ok()
            .and_then(|p| p.parse::<i32>().ok());
        if parent_pid.is_some_and(|pid| nix::unistd::getppid().as_raw() != pid) {
            return Err(EXIT_PARENT_LOST.into());
        }
    }
    let control = launch.is_some();
    started(setup(config, launch, control))
}

/// The start of a child whose environment was read: its logs go to its parent from now on.
fn started(setup: Result<Start, String>) -> Result<Start, i32> {
    match setup {
        Ok(start) => {
            crate::logs::forward_from_child(start.id.clone(), start.config.log_level);
            Ok(start)
        }
        Err(message) => {
            eprintln!("trellis-actor: bad child environment: {message}");
            Err(2)
        }
    }
}

/// Serves as the child actor described by the environment on a runtime of its own (one
/// thread), then exits the process. A zygote serves as one instead.
pub(crate) fn serve(config: Config) -> ! {
    if std::env::var(LAUNCH_ENV).as_deref() == Ok(ZYGOTE) {
        super::zygote::serve(|launch, zygote| serve_forked(config.clone(), launch, zygote));
    }
    let code = match prepare(config) {
        Ok(start) => run_child(start),
        Err(code) => code,
    };
    std::process::exit(code);
}

/// Serves `start` on a runtime of its own (one thread); the exit status.
fn run_child(start: Start) -> i32 {
    exit_code(
        trellis::Runner::current_thread()
            .handle_ctrl_c(false)
            .run(serve_child(start)),
    )
}

/// A child forked by the zygote `zygote`: dies with it, leads a process group of its own (as a
/// child started with `exec` does), and serves as `launch` says; the exit status.
fn serve_forked(config: Config, launch: Launch, zygote: nix::unistd::Pid) -> i32 {
    let _ = nix::sys::prctl::set_pdeathsig(Signal::SIGKILL);
    if nix::unistd::getppid() != zygote {
        return EXIT_PARENT_LOST.into();
    }
    let _ = nix::unistd::setpgid(nix::unistd::Pid::from_raw(0), nix::unistd::Pid::from_raw(0));
    match started(setup(config, Some(launch), false)) {
        Ok(start) => run_child(start),
        Err(code) => code,
    }
}

/// [`serve`] on the tokio runtime that polls it (a child whose `main` is `#[tokio::main]`),
/// in a trellis root of its own; then exits the process.
pub(crate) async fn serve_async(config: Config) -> ! {
    if std::env::var(LAUNCH_ENV).as_deref() == Ok(ZYGOTE) {
        // A runtime runs here already, with threads a fork would leave behind.
        eprintln!(
            "trellis-actor: the zygote backend needs `serve_if_child` before any runtime \
             starts; this program calls `serve_if_child_async`"
        );
        std::process::exit(2);
    }
    let code = match prepare(config) {
        Ok(start) => exit_code(trellis::root(serve_child(start)).await),
        Err(code) => code,
    };
    std::process::exit(code);
}

/// Reads who the child is from `launch` (or the environment), with a control channel to
/// watch when `control` says so.
fn setup(config: Config, launch: Option<Launch>, control: bool) -> Result<Start, String> {
    let var = |name: &str| {
        match &launch {
            Some(launch) => launch.var(name).map(str::to_owned),
            None => std::env::var(name).ok(),
        }
        .ok_or_else(|| format!("{name} is not set"))
    };
    let id = ActorId::new(var(env::NAME)?, var(env::UID)?);
    let parent = Addr::from_str(&var(env::PARENT)?).map_err(|e| e.to_string())?;
    let registrar = Addr::from_str(&var(env::REGISTRAR)?).map_err(|e| e.to_string())?;
    let root = Addr::from_str(&var(env::ROOT)?).map_err(|e| e.to_string())?;
    let transport = match var(env::TRANSPORT)?.as_str() {
        "unix" => Transport::Unix,
        TCP_AUTO => Transport::Tcp {
            bind: route_to(&parent)?,
        },
        tcp => match tcp.strip_prefix("tcp:").map(str::parse) {
            Some(Ok(bind)) => Transport::Tcp { bind },
            _ => return Err(format!("bad {}: {tcp:?}", env::TRANSPORT)),
        },
    };
    let (secret, control) = match launch {
        Some(launch) => (launch.secret, control.then(watch_control).flatten()),
        // The parent writes the tree's secret to our standard input, then closes it.
        None => (
            Secret::receive(std::io::stdin().lock()).map_err(|e| e.to_string())?,
            None,
        ),
    };
    let mut config = config.transport(transport).secret(secret);
    config.root = Some(root);
    Ok(Start {
        id,
        config,
        parent,
        registrar,
        control,
    })
}

/// The address of this host's interface on the way to `parent`: where a child on another
/// host listens, so that its parent and its tree reach it by the route it reached them.
fn route_to(parent: &Addr) -> Result<IpAddr, String> {
    let Addr::Tcp(parent) = parent else {
        return Err(format!("{TCP_AUTO} needs a parent on TCP, not {parent}"));
    };
    let any: IpAddr = if parent.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    // A connected datagram socket sends nothing: the kernel only picks the route.
    let socket = std::net::UdpSocket::bind((any, 0)).map_err(|e| e.to_string())?;
    socket.connect(parent).map_err(|e| e.to_string())?;
    Ok(socket.local_addr().map_err(|e| e.to_string())?.ip())
}

/// The child's service: connect to the parent, register, report ready, serve until the
/// parent cancels it or goes away.
async fn serve_child(start: Start) -> Result<Option<Exit>, trellis::Error> {
    let Start {
        id,
        config,
        parent,
        registrar,
        control,
    } = start;
    // From the start: a parent that gave up on this child while it was still connecting
    // (and closed its control channel) ends it too.
    let control_closed = async {
        match control {
            Some(control) => {
                let _ = control.await;
            }
            None => std::future::pending().await,
        }
    };
    run_actor(id, config, Some(registrar), |actor| async move {
        let served = serve_parent(actor, parent);
        tokio::select! {
            served = served => served,
            () = control_closed => {
                tracing::warn!("the launcher's control channel closed: exiting");
                Ok(Exit::ParentLost)
            }
        }
    })
    .await
}

/// Connects to the parent, registers, reports ready and serves until the parent cancels this
/// actor or goes away.
async fn serve_parent(actor: Actor, parent: Addr) -> Result<Exit, trellis::Error> {
    let conn = actor.connect(&parent).await?;
    actor.set_parent(conn.peer().actor.clone());
    actor.register().await?;
    let parent_conn = conn.clone();
    actor.inner.work.start_soon_named(
        "trellis: log shipping",
        crate::logs::ship(move |records| {
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
        }),
    )?;
    conn.call(CHILD_READY, Payload::unit()).await?;
    Ok(match conn.ended().await {
        Err(_cancelled) => Exit::Cancelled,
        Ok(End::Goodbye | End::Lost(_)) => Exit::ParentLost,
    })
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
