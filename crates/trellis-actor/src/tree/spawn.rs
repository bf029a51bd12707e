//! Starting a child actor's process, here or through a launcher, and ending it for sure.

use std::process::{ExitStatus, Stdio};

use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, Command};
use trellis::CancelScope;

use super::placement::{Placement, launched_words};
use crate::actor::{
    Actor, Forked, LAUNCH_ENV, Launch, SpawnBackend, TCP_AUTO, Zygote, env, new_uid,
};
use crate::actor_error::ActorError;
use crate::connection::Conn;
use crate::secret::SECRET_ENV;
use crate::transport::{Transport, remove_socket_dir};

/// A child actor's process as its parent holds it: the actor itself, or the launcher that
/// runs it elsewhere.
pub(super) struct Process {
    child: Os,
    /// A launched child's standard input: its control channel, closed when this is dropped.
    control: Option<ChildStdin>,
    placement: Placement,
}

/// The process itself: one we started with `exec`, or one a zygote forked for us.
enum Os {
    Exec(Child),
    Forked(Forked),
}

impl Os {
    fn id(&self) -> Option<u32> {
        match self {
            Os::Exec(child) => child.id(),
            Os::Forked(forked) => Some(forked.id()),
        }
    }

    async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        match self {
            Os::Exec(child) => child.wait().await,
            Os::Forked(forked) => forked.wait().await,
        }
    }

    fn start_kill(&mut self) {
        match self {
            Os::Exec(child) => {
                let _ = child.start_kill();
            }
            Os::Forked(forked) => forked.start_kill(),
        }
    }
}

impl Process {
    /// Waits for the process (the launcher, for a launched child) to exit.
    pub(super) async fn wait(&mut self) -> std::io::Result<ExitStatus> {
        self.child.wait().await
    }

    /// The process id of the child (of its launcher, for a launched child).
    pub(super) fn id(&self) -> Option<u32> {
        self.child.id()
    }

    /// Kills the process and waits for it, whatever the caller's cancellation. For a
    /// launched child whose process group is known (`pgid`, the id it gave when it
    /// connected), the launcher's kill command ends that group where it runs first, within
    /// `grace`; then the control channel is closed and the launcher's own group killed.
    pub(super) async fn kill_and_reap(&mut self, pgid: Option<u32>, grace: std::time::Duration) {
        // Never `kill -- -1` (every process the user may signal): a child that is pid 1 where
        // it runs (a container's first process) is ended with its launcher instead.
        let pgid = pgid.filter(|&pgid| pgid > 1);
        if let Some(mut kill) = pgid.and_then(|pgid| self.placement.kill(pgid)) {
            kill.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true);
            let _ = CancelScope::shielded()
                .run(trellis::move_on_after(grace, async {
                    trellis::cancellable(async {
                        if let Ok(mut running) = kill.spawn() {
                            let _ = running.wait().await;
                        }
                    })
                    .await
                }))
                .await;
        }
        self.control = None;
        match (self.placement.is_local(), self.child.id()) {
            // The launcher leads a process group of its own: what it started here goes too.
            (false, Some(pid)) => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            _ => self.child.start_kill(),
        }
        let _ = CancelScope::shielded()
            .run(async { trellis::cancellable(self.child.wait()).await })
            .await;
    }
}

/// Starts a process for a child actor named `name` where `placement` says, and waits until
/// it has connected back.
pub(super) async fn spawn(
    actor: &Actor,
    name: &str,
    placement: &Placement,
) -> Result<(Process, Conn), trellis::Error> {
    let config = &actor.inner.config;
    let failed = |reason: String| ActorError::SpawnFailed {
        name: name.to_owned(),
        reason,
    };
    let transport = match (&config.transport, placement.is_local()) {
        (Transport::Unix, _) if placement.is_remote() => {
            return Err(failed("a child on another host needs the TCP transport".into()).into());
        }
        (Transport::Unix, _) => "unix".to_owned(),
        (Transport::Tcp { bind }, true) => format!("tcp:{bind}"),
        // Wherever the launcher puts it, it listens where its parent can reach it.
        (Transport::Tcp { .. }, false) => TCP_AUTO.to_owned(),
    };
    let uid = new_uid();
    let vars = [
        (env::NAME, name.to_owned()),
        (env::UID, uid.clone()),
        (env::PARENT, actor.addr().to_string()),
        (env::TRANSPORT, transport),
        (env::REGISTRAR, actor.registrar().to_string()),
        (env::ROOT, actor.root_addr().to_string()),
    ];
    let mut connected = actor.expect_child(&uid);
    let forked = config.spawn == SpawnBackend::Zygote
        && placement.is_local()
        && placement.program().is_none();
    let started: Result<Process, trellis::Error> = if forked {
        match fork(actor, &launch_block(actor, &vars)).await {
            Ok(Ok(child)) => Ok(Process {
                child: Os::Forked(child),
                control: None,
                placement: placement.clone(),
            }),
            Ok(Err(reason)) => Err(failed(reason).into()),
            Err(cancelled) => Err(cancelled.into()),
        }
    } else {
        exec(actor, &vars, placement)
            .await
            .map_err(|reason| failed(reason).into())
    };
    let mut process = started.inspect_err(|_| actor.forget_child(&uid))?;
    let waited = trellis::move_on_after(config.spawn_timeout, async {
        let outcome = trellis::cancellable(async {
            tokio::select! {
                accepted = &mut connected => accepted.map_err(|_| "the actor shut down".to_owned()),
                status = process.child.wait() => Err(match status {
                    Ok(status) => format!("exited before connecting: {status}"),
                    Err(e) => e.to_string(),
                }),
            }
        })
        .await?;
        Ok::<_, trellis::Error>(outcome)
    })
    .await;
    let outcome = match waited {
        Ok(Some(Ok(conn))) => return Ok((process, conn)),
        Ok(Some(Err(reason))) => Err(failed(reason).into()),
        Ok(None) => Err(failed(format!("no connection within {:?}", config.spawn_timeout)).into()),
        Err(e) => Err(e),
    };
    actor.forget_child(&uid);
    let pid = process.id();
    process.kill_and_reap(None, config.grace).await;
    if let Some(pid) = pid {
        remove_socket_dir(pid, &uid);
    }
    outcome
}

/// Starts a child's process with `exec` (here, or through the placement's launcher), and
/// hands it what it must know; or why it could not.
async fn exec(
    actor: &Actor,
    vars: &[(&str, String)],
    placement: &Placement,
) -> Result<Process, String> {
    let config = &actor.inner.config;
    let program = match placement.program() {
        Some(program) => program.clone(),
        None => std::env::current_exe().map_err(|e| format!("no executable: {e}"))?,
    };
    let words = launched_words(program.as_os_str(), &config.child_args, &config.child_env);
    let (mut command, handoff) = match placement.launch(&words, config.keepalive) {
        Some(command) => (command, launch_block(actor, vars).encode()),
        None => {
            let mut command = Command::new(&program);
            command
                .args(&config.child_args)
                .envs(config.child_env.iter().map(|(k, v)| (k, v)))
                .envs(vars.iter().map(|(k, v)| (k, v)))
                // A child of a launched child is started here, directly.
                .env_remove(LAUNCH_ENV)
                .env(env::PARENT_PID, std::process::id().to_string());
            (command, actor.inner.secret.handoff())
        }
    };
    // The tree's secret comes through a pipe: not on the command line, not in the
    // environment (which its own children would inherit). Its own process group: a Ctrl-C at
    // the terminal reaches the root only, which tears the tree down in order.
    command
        .stdin(Stdio::piped())
        // Nor through a secret this process was given in its environment: a launcher such as
        // `srun` would carry it to the other host.
        .env_remove(SECRET_ENV)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| format!("{:?}: {e}", command.as_std().get_program()))?;
    let mut control = child.stdin.take();
    if let Some(stdin) = &mut control {
        // A few hundred bytes into an empty pipe: never blocks. A child that died at once is
        // seen by the caller.
        let _ = stdin.write_all(handoff.as_bytes()).await;
    }
    Ok(Process {
        child: Os::Exec(child),
        // A local child's input closes now; a launched child's stays open while it lives.
        control: control.filter(|_| !placement.is_local()),
        placement: placement.clone(),
    })
}

/// A child of `actor` forked by its zygote (started now if it has none, or its last one
/// exited), as `launch` says.
async fn fork(
    actor: &Actor,
    launch: &Launch,
) -> Result<Result<Forked, String>, trellis::Cancelled> {
    let zygote = {
        let mut slot = actor.inner.zygote.lock().unwrap_or_else(|e| e.into_inner());
        match &*slot {
            Some(zygote) if !zygote.is_gone() => zygote.clone(),
            _ => match Zygote::start(&actor.inner.config, &actor.id().uid) {
                Ok(zygote) => {
                    *slot = Some(zygote.clone());
                    zygote
                }
                Err(e) => return Ok(Err(format!("starting the zygote: {e}"))),
            },
        }
    };
    zygote.fork(launch).await
}

/// What a child launched or forked is told: who it is, where its tree is, the tree's secret.
fn launch_block(actor: &Actor, vars: &[(&str, String)]) -> Launch {
    Launch {
        vars: vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect(),
        secret: actor.inner.secret.clone(),
    }
}
