//! Running an actor: the runtime around a body, the entry point that makes a process a root
//! or a child, and a root inside an existing program.

use std::future::Future;
use std::sync::{Arc, Mutex};

use trellis::{CancelScope, Cancelled};
use trellis_wire::{ActorId, Keyring};

use super::config::Config;
use super::handle::{Actor, ActorCell, Inner, State, new_uid};
use crate::limits::ReadBudget;
use crate::secret::{SECRET_FILE_NAME, Secret};
use crate::transport::{Addr, Listener};

/// What this actor proves when it connects (the tree's secret) and accepts: members, and the
/// outside peers its configuration lets in.
fn keyring(secret: &Secret, config: &Config) -> Keyring {
    let mut keyring = match &config.client {
        None => Keyring::new(secret.key()),
        Some(Some((name, secret))) => {
            Keyring::new(secret.named_key(name).expect("checked by `client`"))
        }
        Some(None) => Keyring::open(),
    };
    for exposed in &config.exposed {
        keyring = match &exposed.credential {
            Some((name, secret)) => {
                keyring.accept(secret.named_key(name).expect("checked by `expose_to`"))
            }
            None => keyring.accept_anonymous(),
        };
    }
    keyring
}

/// Runs this actor's runtime around `body`: binds the listener, serves calls, and when `body`
/// ends, cancels what is still served, says goodbye to every peer and returns `body`'s
/// outcome.
pub(crate) async fn run_actor<B, Fut, T>(
    id: ActorId,
    config: Config,
    registrar: Option<Addr>,
    body: B,
) -> Result<Option<T>, trellis::Error>
where
    B: FnOnce(Actor) -> Fut,
    Fut: Future<Output = Result<T, trellis::Error>>,
{
    crate::panic::install_hook();
    let secret = match &config.secret {
        Some(secret) => secret.clone(),
        None => Secret::from_env()
            .map_err(crate::ActorError::from)?
            .unwrap_or_else(Secret::generate),
    };
    let keyring = keyring(&secret, &config);
    let read_budget = Arc::new(ReadBudget::new(config.limits.read_budget));
    let (listener, addr) =
        Listener::bind(&config.transport, &id.uid).map_err(|e| crate::ActorError::Io {
            context: format!("listening on {:?}", config.transport),
            source: e,
        })?;
    if let Some(dir) = listener.private_dir() {
        // For this user's tools: the `trellis` command finds it next to the socket.
        secret
            .write_private(&dir.join(SECRET_FILE_NAME))
            .map_err(|e| crate::ActorError::Io {
                context: "writing the tree's secret".into(),
                source: e,
            })?;
    }
    // The body's outcome travels out of both nurseries as a value, so that its error is not
    // wrapped in their groups.
    #[cfg(feature = "etcd")]
    let etcd = config
        .etcd
        .clone()
        .map(|etcd| Arc::new(super::etcd_registry::EtcdRegistry::new(etcd)));
    #[cfg(not(feature = "etcd"))]
    let etcd = None;
    let cell = ActorCell::default();
    let set = cell.clone();
    let outcome = trellis::with_local(
        cell,
        trellis::open_nursery(|io| async move {
            let work_io = io.clone();
            let result = trellis::open_nursery(|work| async move {
                let actor = Actor {
                    inner: Arc::new(Inner {
                        id,
                        config,
                        secret,
                        keyring,
                        read_budget,
                        frame_pool: Default::default(),
                        registry: registrar.is_none().then(Default::default),
                        etcd,
                        registrar: registrar.unwrap_or_else(|| addr.clone()),
                        addr,
                        io: work_io.clone(),
                        work: work.clone(),
                        started: std::time::Instant::now(),
                        terminal: trellis::sync::Lock::new(),
                        state: Mutex::new(State::default()),
                        zygote: Mutex::new(None),
                    }),
                };
                let _ = set.0.set(actor.clone());
                work_io.start_soon_named("trellis: accept", actor.clone().accept_loop(listener))?;
                let outcome = body(actor.clone()).await;
                // The body is done: stop serving, say goodbye.
                work.cancel_with_reason("the actor is done (its body returned)");
                Ok::<_, trellis::Error>((outcome, actor))
            })
            .await?;
            if let Some((_, actor)) = &result {
                actor.unregister().await;
                actor.close_all().await;
                // Its children are gone: the zygote that forked them goes too.
                let zygote = (actor.inner.zygote.lock())
                    .unwrap_or_else(|e| e.into_inner())
                    .take();
                if let Some(zygote) = zygote {
                    zygote.end(actor.inner.config.grace).await;
                }
            }
            io.cancel();
            Ok::<_, trellis::Error>(result.map(|(outcome, _)| outcome))
        }),
    )
    .await?;
    match outcome.flatten() {
        Some(Ok(value)) => Ok(Some(value)),
        Some(Err(error)) => Err(error),
        None => Ok(None),
    }
}

/// Runs `root` as a root actor named `name` inside an existing trellis program (for tests and
/// programs that manage their own runtime), and returns its value. See [`main`](crate::main).
///
/// A SIGTERM (a service manager stopping the program) tears the tree down as Ctrl-C does,
/// and the run returns [`Interrupted`](trellis::Interrupted); a second SIGTERM exits the
/// process at once with status 143.
///
/// # Errors
///
/// `root`'s error, [`Interrupted`](trellis::Interrupted) after a SIGTERM, or `Cancelled` when
/// the root actor was cancelled.
pub async fn run_root<F, Fut, T>(name: &str, config: Config, root: F) -> Result<T, trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<T, trellis::Error>>,
{
    let id = ActorId::new(name, new_uid());
    let registrar = config.registrar.clone();
    let register = config.register_root;
    let scope = CancelScope::new();
    let tree = scope.run(run_actor(id, config, registrar, |actor| async move {
        if register {
            actor.register().await?;
        }
        let dumper = actor.clone();
        actor.inner.io.start_soon_named(
            "trellis: task dump on SIGUSR1",
            super::dump::on_sigusr1(dumper),
        )?;
        root().await
    }));
    let terminated = until_terminated(&scope, tree).await;
    match terminated {
        Terminated::No(outcome) => outcome?.flatten().ok_or_else(|| Cancelled::new().into()),
        Terminated::Yes => Err(trellis::Interrupted.into()),
    }
}

/// How a root's run ended.
enum Terminated<T> {
    /// On its own.
    No(T),
    /// It was asked to terminate (SIGTERM) and tore its tree down.
    Yes,
}

/// Runs `tree` (in `scope`); a SIGTERM cancels the scope, as Ctrl-C cancels a program's
/// root scope, so the tree is torn down in order and its socket directories removed. A
/// second SIGTERM exits at once, with status 143.
async fn until_terminated<F: Future>(scope: &CancelScope, tree: F) -> Terminated<F::Output> {
    use tokio::signal::unix::{SignalKind, signal};
    // Without a signal driver (a runtime built without it) there is no SIGTERM to watch.
    let mut sigterm = signal(SignalKind::terminate()).ok();
    let mut terminated = false;
    let mut tree = std::pin::pin!(tree);
    let outcome = std::future::poll_fn(|cx| {
        if let Some(signal) = sigterm.as_mut() {
            while signal.poll_recv(cx).is_ready() {
                if terminated {
                    eprintln!("terminated twice: exiting without cleanup");
                    std::process::exit(143);
                }
                tracing::info!("terminated (SIGTERM): tearing the tree down");
                terminated = true;
                scope.cancel_with_reason("SIGTERM");
            }
        }
        tree.as_mut().poll(cx)
    })
    .await;
    if terminated {
        Terminated::Yes
    } else {
        Terminated::No(outcome)
    }
}
