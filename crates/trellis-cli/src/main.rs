//! `trellis`: look at a live actor tree and call into it.
//!
//! ```text
//! trellis tree [--registrar ADDR | --etcd URLS] [--secret-file PATH] [--tls-dir DIR]
//! trellis call [--registrar ADDR | --etcd URLS] [--secret-file PATH] [--tls-dir DIR] ACTOR FUNCTION JSON-ARGS
//! trellis call [--registrar ADDR | --etcd URLS] [--secret-file PATH] [--tls-dir DIR] ACTOR --list
//! ```
//!
//! The registrar's address (`unix:PATH` or `tcp:HOST:PORT`) comes from `--registrar` or the
//! environment variable `TRELLIS_REGISTRAR`; a tree that keeps its names in etcd is read
//! from there instead (`--etcd`, `TRELLIS_ETCD`; the keys' prefix `--etcd-prefix`,
//! `TRELLIS_ETCD_PREFIX`, default `/trellis`). The tree's secret, which the command proves to
//! every actor it talks to, comes from `--secret-file`, else the file `TRELLIS_SECRET_FILE`
//! names, else `TRELLIS_SECRET`, else the `secret` file next to a `unix:` registrar's socket
//! (readable by the tree's user only). A tree over TLS also needs a certificate its CA issued:
//! `--tls-dir` (or `TRELLIS_TLS_DIR`) names a directory with `ca.pem`, `cert.pem` and
//! `key.pem`. Usage errors and unreachable or unknown actors are
//! one line on standard error and exit status 2; a remote function that fails prints its error
//! and exits 1.

use std::process::ExitCode;
use std::time::Duration;

use trellis_actor::{ActorInfo, Addr, Config, Etcd, Functions, Registered, Secret, TreeTls};

mod args;
mod tree;

use args::{Command, Registry, Usage};

/// How long one actor may take to describe itself or answer a call before it is reported as
/// unresponsive.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

fn main() -> ExitCode {
    let invocation = match args::parse(std::env::args_os()) {
        Ok(invocation) => invocation,
        Err(Usage::Clap(e)) => {
            // Help and the version on standard output with status 0; usage errors on
            // standard error with status 2.
            let _ = e.print();
            return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
        }
        Err(Usage::Bad(message)) => {
            eprintln!("trellis: {message} (try `trellis --help`)");
            return ExitCode::from(2);
        }
    };
    let command = invocation.command;
    let secret = match find_secret(invocation.secret_file, command.registry()) {
        Ok(secret) => secret,
        Err(message) => {
            eprintln!("trellis: {message}");
            return ExitCode::from(2);
        }
    };
    let mut config = Config::new(Functions::new()).unregistered().secret(secret);
    if let Some(dir) = invocation.tls_dir {
        match TreeTls::from_dir(&dir) {
            Ok(tls) => config = config.tls(tls),
            Err(e) => {
                eprintln!("trellis: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let outcome = trellis::Runner::current_thread().run(async move {
        match command {
            Command::Tree {
                registry,
                json,
                watch,
            } => match watch {
                Some(every) => watch_tree(config, registry, every).await,
                None => tree_of(config, registry, json).await,
            },
            Command::Call {
                registry,
                actor,
                function,
                args,
            } => call(config, registry, actor, function, args).await,
            Command::List { registry, actor } => functions_of(config, registry, actor).await,
            Command::Dump {
                registry,
                json,
                all,
            } => dump_of(config, registry, json, all).await,
        }
    });
    match outcome {
        Ok(Ok(output)) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Ok(Err(Failure::Usage(message))) => {
            eprintln!("trellis: {message}");
            ExitCode::from(2)
        }
        Ok(Err(Failure::Remote(error))) => {
            eprintln!("trellis: the call failed:\n{error}");
            ExitCode::from(1)
        }
        Err(error) if error.is_interrupted() => ExitCode::from(130),
        Err(error) => {
            eprintln!("trellis: {}", one_line(&error));
            ExitCode::from(2)
        }
    }
}

/// The tree's secret: `--secret-file`, else the environment's, else the one next to a Unix
/// registrar's socket.
fn find_secret(file: Option<std::path::PathBuf>, registry: &Registry) -> Result<Secret, String> {
    if let Some(file) = file {
        return Secret::from_file(file).map_err(|e| e.to_string());
    }
    if let Some(secret) = Secret::from_env().map_err(|e| e.to_string())? {
        return Ok(secret);
    }
    match registry {
        Registry::Registrar(Addr::Unix(path)) => Secret::beside(path)
            .map_err(|e| format!("{e} (pass --secret-file, or set TRELLIS_SECRET_FILE)")),
        _ => Err(format!(
            "no secret for the tree of {registry}: pass --secret-file, or set \
             TRELLIS_SECRET_FILE or TRELLIS_SECRET"
        )),
    }
}

/// Why a command failed.
enum Failure {
    /// The tree could not be asked: no registry, no such actor. One line, exit 2.
    Usage(String),
    /// The remote function failed. Its error tree, exit 1.
    Remote(trellis::Error),
}

/// Whether `error` is an actor refusing a call it does not have or cannot decode.
fn refused(error: &trellis_actor::ActorError) -> bool {
    error.as_remote().is_some_and(|remote| {
        matches!(
            remote.kind(),
            trellis_actor::ErrorKind::UnknownFunction | trellis_actor::ErrorKind::BadArguments
        )
    })
}

fn one_line(error: &trellis::Error) -> String {
    format!("{error}").lines().collect::<Vec<_>>().join(" ")
}

fn unreachable(registry: &Registry, error: &trellis::Error) -> Failure {
    Failure::Usage(format!("cannot reach {registry}: {}", one_line(error)))
}

/// Runs `body` as an unregistered root actor that uses `registry`.
async fn as_tool<T, F, Fut>(
    config: Config,
    registry: Registry,
    body: F,
) -> Result<T, trellis::Error>
where
    F: FnOnce(trellis_actor::Actor) -> Fut,
    Fut: std::future::Future<Output = Result<T, trellis::Error>>,
{
    let config = match registry {
        Registry::Registrar(registrar) => config.registrar(registrar),
        Registry::Etcd { endpoints, prefix } => config.etcd(
            Etcd::new(
                endpoints
                    .split(',')
                    .map(str::trim)
                    .filter(|e| !e.is_empty()),
            )
            .prefix(prefix)
            .request_timeout(ANSWER_TIMEOUT),
        ),
    };
    trellis_actor::run_root("trellis-cli", config, || body(trellis_actor::current())).await
}

/// What the registry lists; `Err(Err(_))` only when this program is cancelled.
async fn list(
    actor: &trellis_actor::Actor,
    registry: &Registry,
) -> Result<Vec<Registered>, Result<Failure, trellis::Error>> {
    let registered = async { actor.registered().await.map_err(trellis::Error::from) };
    match trellis::move_on_after(ANSWER_TIMEOUT, registered).await {
        Ok(Some(list)) => Ok(list),
        Ok(None) => Err(Ok(Failure::Usage(format!(
            "{registry} did not answer within {ANSWER_TIMEOUT:?}"
        )))),
        Err(e) if e.is_cancelled() => Err(Err(e)),
        Err(e) => Err(Ok(unreachable(registry, &e))),
    }
}

/// What a command prints, or why it failed; `Err` only when the program is cancelled.
type Outcome = Result<Result<String, Failure>, trellis::Error>;

/// Runs `body` with what the registry lists (a registry that does not answer is a failure).
async fn with_registered<F, Fut>(config: Config, registry: Registry, body: F) -> Outcome
where
    F: FnOnce(trellis_actor::Actor, Registry, Vec<Registered>) -> Fut,
    Fut: std::future::Future<Output = Outcome>,
{
    let r = registry.clone();
    as_tool(config, registry, |actor| async move {
        match list(&actor, &r).await {
            Ok(registered) => body(actor, r, registered).await,
            Err(failure) => failure.map(Err),
        }
    })
    .await
}

async fn tree_of(config: Config, registry: Registry, json: bool) -> Outcome {
    with_registered(config, registry, |actor, r, registered| async move {
        let infos = describe_all(&actor, &registered).await?;
        Ok(Ok(if json {
            tree::json(&r, &infos)
        } else {
            tree::draw(&r, &infos)
        }))
    })
    .await
}

/// The last snapshot `--watch` drew, and when: its streams' rates come from the next one.
type Last = std::sync::Arc<std::sync::Mutex<Option<(std::time::Instant, tree::Snapshot)>>>;

/// The tree drawn with its streams' rates since `last` (then replaced by this snapshot).
async fn tree_since(config: Config, registry: Registry, last: Last) -> Outcome {
    with_registered(config, registry, |actor, r, registered| async move {
        let infos = describe_all(&actor, &registered).await?;
        let now = std::time::Instant::now();
        let mut last = last.lock().unwrap_or_else(|e| e.into_inner());
        let previous = last
            .as_ref()
            .map(|(at, infos)| (infos.as_slice(), now - *at));
        let text = tree::draw_since(&r, &infos, previous);
        *last = Some((now, infos));
        Ok(Ok(text))
    })
    .await
}

/// Draws the tree every `every`, in place (the terminal cleared first), until interrupted.
async fn watch_tree(config: Config, registry: Registry, every: std::time::Duration) -> Outcome {
    use std::io::Write as _;
    let last = Last::default();
    // Between frames no root is running to hear a SIGTERM (tokio's handler, once installed,
    // would swallow it): this receiver ends the loop as Ctrl-C does.
    let mut terminate =
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    loop {
        let drawn = tree_since(config.clone(), registry.clone(), last.clone()).await?;
        let text = match drawn {
            Ok(text) => text,
            Err(Failure::Usage(message)) => format!("trellis: {message}\n"),
            Err(failure) => return Ok(Err(failure)),
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "\x1b[2J\x1b[H{text}(every {every:?}; Ctrl-C to stop)");
        let _ = out.flush();
        drop(out);
        let terminated = async {
            match terminate.as_mut() {
                Some(signal) => signal.recv().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            slept = trellis::sleep(every) => slept?,
            _ = terminated => return Err(trellis::Interrupted.into()),
        }
    }
}

async fn dump_of(config: Config, registry: Registry, json: bool, all: bool) -> Outcome {
    with_registered(config, registry, |actor, r, registered| async move {
        let ask = |portal: trellis_actor::Portal| async move { portal.dump().await };
        // A tree that looks stalled is asked again (listed again too: an actor that registered
        // meanwhile is asked, and the rounds, not having the same actors, do not agree).
        let mut listed = Some(registered);
        let (actor, r) = (&actor, &r);
        let round = || {
            let listed = listed.take();
            async move {
                let entries = match listed {
                    Some(entries) => entries,
                    None => list(actor, r).await.map_err(|f| Early(f.map(Err)))?,
                };
                ask_all(actor, &entries, ask)
                    .await
                    .map_err(|e| Early(Err(e)))
            }
        };
        let (dumps, stalled) =
            match trellis_actor::stall_checked(round, |dumps: &Vec<_>| answered(dumps)).await {
                Ok(checked) => checked,
                Err(Early(outcome)) => return outcome,
            };
        Ok(Ok(if json {
            let text = tree::json_of(r, &dumps, "dump", |dump| serde_json::to_value(dump));
            with_verdicts(&text, &dumps, stalled)
        } else {
            let mut text = tree::draw_dumps(r, &dumps, all);
            if stalled {
                text.push_str(trellis_actor::STALLED);
                text.push('\n');
            }
            text
        }))
    })
    .await
}

/// An outcome that ends a command before its end.
struct Early(Outcome);

impl From<trellis::Cancelled> for Early {
    fn from(cancelled: trellis::Cancelled) -> Self {
        Early(Err(cancelled.into()))
    }
}

/// The dumps, when every actor answered.
fn answered(
    dumps: &[(Registered, Result<trellis_actor::ActorDump, String>)],
) -> Option<Vec<trellis_actor::ActorDump>> {
    dumps
        .iter()
        .map(|(_, d)| d.as_ref().ok().cloned())
        .collect()
}

/// The `--json` dump with its deadlocks, `"deadlocks": [[{"actor", "task", "waiting_on"}]]`,
/// and whether the tree is stalled, `"stalled": bool` ([`trellis_actor::stalled`]).
fn with_verdicts(
    text: &str,
    dumps: &[(Registered, Result<trellis_actor::ActorDump, String>)],
    stalled: bool,
) -> String {
    let answered: Vec<_> = dumps
        .iter()
        .filter_map(|(_, d)| d.as_ref().ok().cloned())
        .collect();
    let cycles: Vec<serde_json::Value> = trellis_actor::deadlocks(&answered)
        .into_iter()
        .map(|cycle| {
            cycle
                .into_iter()
                .map(|(actor, task)| {
                    serde_json::json!({
                        "actor": actor.to_string(),
                        "task": task.name,
                        "waiting_on": task.waiting_on,
                    })
                })
                .collect()
        })
        .collect();
    let mut value: serde_json::Value = serde_json::from_str(text).unwrap_or_default();
    value["deadlocks"] = serde_json::Value::Array(cycles);
    value["stalled"] = serde_json::Value::Bool(stalled);
    format!("{value:#}\n")
}

/// Asks every registered actor, side by side, to describe itself.
async fn describe_all(
    actor: &trellis_actor::Actor,
    registered: &[Registered],
) -> Result<Vec<(Registered, Result<ActorInfo, String>)>, trellis::Error> {
    ask_all(
        actor,
        registered,
        |portal| async move { portal.info().await },
    )
    .await
}

/// Asks every registered actor, side by side, what `ask` asks; an actor that does not answer
/// in time, or fails, gets the reason instead.
async fn ask_all<T, F, Fut>(
    actor: &trellis_actor::Actor,
    registered: &[Registered],
    ask: F,
) -> Result<Vec<(Registered, Result<T, String>)>, trellis::Error>
where
    T: Send + 'static,
    F: Fn(trellis_actor::Portal) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<T, trellis_actor::ActorError>> + Send,
{
    let described = trellis::open_nursery(|n| async move {
        let mut tasks = Vec::new();
        for entry in registered.iter().cloned() {
            let actor = actor.clone();
            let ask = ask.clone();
            tasks.push(n.start_soon(async move {
                let info = trellis::move_on_after(ANSWER_TIMEOUT, async {
                    let portal = actor.portal(&entry.addr).await?;
                    Ok::<_, trellis::Error>(ask(portal).await?)
                })
                .await;
                let info = match info {
                    Ok(Some(info)) => Ok(info),
                    Ok(None) => Err(format!("no answer within {ANSWER_TIMEOUT:?}")),
                    Err(e) if e.is_cancelled() => return Err(e),
                    Err(e) => Err(one_line(&e)),
                };
                Ok::<_, trellis::Error>((entry, info))
            })?);
        }
        Ok::<_, trellis::Error>(tasks)
    })
    .await?
    .unwrap_or_default();
    Ok(described
        .into_iter()
        .filter_map(|task| task.into_value())
        .collect())
}

/// A portal to the first actor registered as `name`, or why there is none.
async fn find(
    actor: &trellis_actor::Actor,
    registry: &Registry,
    registered: &[Registered],
    name: &str,
) -> Result<trellis_actor::Portal, Failure> {
    let Some(entry) = registered.iter().find(|e| e.id.name == name) else {
        return Err(Failure::Usage(format!(
            "no actor named `{name}` is registered with {registry}"
        )));
    };
    actor.portal(&entry.addr).await.map_err(|e| {
        Failure::Usage(format!(
            "cannot reach actor `{name}` at {}: {}",
            entry.addr,
            one_line(&e.into())
        ))
    })
}

async fn functions_of(config: Config, registry: Registry, name: String) -> Outcome {
    with_registered(config, registry, |actor, r, registered| async move {
        let portal = match find(&actor, &r, &registered, &name).await {
            Ok(portal) => portal,
            Err(failure) => return Ok(Err(failure)),
        };
        match trellis::move_on_after(ANSWER_TIMEOUT, portal.functions()).await {
            Ok(Some(list)) => Ok(Ok(list
                .iter()
                .map(|f| format!("{:<8}{}\n", f.kind, f.name))
                .collect())),
            Ok(None) => Ok(Err(Failure::Usage(format!(
                "actor `{name}` did not answer within {ANSWER_TIMEOUT:?}"
            )))),
            Err(e) if e.is_cancelled() => Err(e.into()),
            Err(e) => Ok(Err(Failure::Remote(e.into()))),
        }
    })
    .await
}

async fn call(
    config: Config,
    registry: Registry,
    name: String,
    function: String,
    args: serde_json::Value,
) -> Outcome {
    with_registered(config, registry, |actor, r, registered| async move {
        let portal = match find(&actor, &r, &registered, &name).await {
            Ok(portal) => portal,
            Err(failure) => return Ok(Err(failure)),
        };
        match portal
            .run_named::<serde_json::Value, _>(&function, args)
            .await
        {
            Ok(value) => Ok(Ok(format!("{value}\n"))),
            Err(e) if e.is_cancelled() => Err(e.into()),
            // The call never ran: the caller got the name or the arguments wrong.
            Err(e) if refused(&e) => Ok(Err(Failure::Usage(one_line(&e.into())))),
            Err(e) => Ok(Err(Failure::Remote(e.into()))),
        }
    })
    .await
}
