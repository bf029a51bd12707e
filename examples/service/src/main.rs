//! An axum HTTP service on trellis, started as any tokio service is (`#[tokio::main]`).
//!
//! ```text
//! cargo run --release -p trellis-service-example -- [--listen 127.0.0.1:8080] [--workers 2]
//! curl 'http://127.0.0.1:8080/square?x=3&n=4'                          # 3²+4²+5²+6² from the pool
//! curl -H 'x-deadline-ms: 100' 'http://127.0.0.1:8080/square?delay_ms=500'   # 504
//! curl 'http://127.0.0.1:8080/square?x=13'                             # 500, the error tree in the log
//! curl -N 'http://127.0.0.1:8080/count?n=100&pace_ms=50'               # a streamed response
//! curl 'http://127.0.0.1:8080/stats'
//! ```
//!
//! The service is the root actor of a tree: a supervisor holds a pool of worker processes
//! (this same executable), restarted if they die. Every request's work runs as a task of the
//! service's nursery, inside its trellis root, with the request's deadline (`x-deadline-ms`):
//! its calls into the workers run side by side in a nursery of their own. When the client
//! goes away, axum drops the handler; the work's scope is cancelled, and with it the calls in
//! the worker processes. Ctrl-C (or SIGTERM) stops accepting, cancels what runs, stops the
//! workers and exits 130.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use trellis::supervisor::{Restart, Strategy, Supervision};
use trellis::{CancelScope, Error, Nursery};
use trellis_actor::{ActorPool, Config, Functions, MsgStream, Route, open_supervisor};

/// The deadline of a request that gives none.
const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

/// Calls cancelled in this worker process (what `/stats` adds up).
static CANCELLED: AtomicU64 = AtomicU64::new(0);

/// Counts a cancellation that reaches a worker's function.
fn counted<T>(outcome: Result<T, trellis::Cancelled>) -> Result<T, trellis::Cancelled> {
    if outcome.is_err() {
        CANCELLED.fetch_add(1, Ordering::Relaxed);
    }
    outcome
}

/// In a worker: `x²`, after `delay_ms`. 13 is refused, to show a failure.
async fn square(x: u64, delay_ms: u64) -> Result<u64, Error> {
    counted(trellis::sleep(Duration::from_millis(delay_ms)).await)?;
    if x == 13 {
        return Err(Error::msg("13 is unlucky"));
    }
    Ok(x * x)
}

/// In a worker: streams `0..n`, one every `pace_ms`.
async fn count(out: MsgStream<Infallible, u64>, n: u64, pace_ms: u64) -> Result<(), Error> {
    for i in 0..n {
        out.send(i).await?;
        counted(trellis::sleep(Duration::from_millis(pace_ms)).await)?;
    }
    Ok(())
}

/// In a worker: its process id and the calls cancelled in it.
async fn worker_stats() -> Result<(u32, u64), Error> {
    Ok((std::process::id(), CANCELLED.load(Ordering::Relaxed)))
}

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(square)
            .register(count)
            .register(worker_stats),
    )
}

/// What the handlers share: the pool, and the nursery their work runs in.
#[derive(Clone)]
struct App {
    pool: ActorPool,
    work: Nursery,
}

/// Cancels a scope when dropped, unless disarmed: what ties a handler that axum drops (its
/// client went away) to the work it started.
struct CancelOnDrop(Option<CancelScope>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(scope) = self.0.take() {
            scope.cancel_with_reason("the client went away");
        }
    }
}

/// Runs `work` as a task of the service's nursery (inside the trellis root: its Ctrl-C, the
/// actor it runs in) with `deadline`, and waits for its result. Dropping this future cancels
/// the work.
async fn in_service<T, F>(app: &App, deadline: Duration, work: F) -> Result<T, Error>
where
    F: Future<Output = Result<T, Error>> + Send + 'static,
    T: Send + 'static,
{
    let scope = CancelScope::with_timeout(deadline);
    let mut guard = CancelOnDrop(Some(scope.clone()));
    let (tx, rx) = tokio::sync::oneshot::channel();
    app.work.start_soon(async move {
        let _ = tx.send(scope.run(work).await);
        Ok::<_, Error>(())
    })?;
    let outcome = rx
        .await
        .map_err(|_| Error::msg("the service is shutting down"))?;
    guard.0 = None;
    match outcome {
        Ok(Some(value)) => Ok(value),
        Ok(None) => Err(trellis::TooSlow.into()),
        Err(error) => Err(error),
    }
}

fn deadline_of(headers: &HeaderMap) -> Duration {
    headers
        .get("x-deadline-ms")
        .and_then(|v| v.to_str().ok()?.parse().ok())
        .map_or(DEFAULT_DEADLINE, Duration::from_millis)
}

/// An error as an HTTP answer; the whole error (a tree, for a group) goes to the log.
fn failure(path: &str, error: &Error) -> Response {
    let status = if error.is::<trellis::TooSlow>() {
        StatusCode::GATEWAY_TIMEOUT
    } else if error.is_cancelled() {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    };
    tracing::warn!("{path} answered {status}:\n{error}");
    // The details (remote backtraces among them) stay in the log.
    let said = match status {
        StatusCode::GATEWAY_TIMEOUT => "the request's deadline passed",
        StatusCode::SERVICE_UNAVAILABLE => "the service is shutting down",
        _ => "the work failed",
    };
    (status, format!("{said}\n")).into_response()
}

#[derive(Deserialize)]
struct SquareParams {
    #[serde(default = "two")]
    x: u64,
    #[serde(default = "one")]
    n: u64,
    #[serde(default)]
    delay_ms: u64,
}

fn one() -> u64 {
    1
}

fn two() -> u64 {
    2
}

/// `GET /square?x=X&n=N&delay_ms=D`: the sum of the squares of `X..X+N`, each computed in a
/// worker process, side by side.
async fn squares(
    State(app): State<App>,
    headers: HeaderMap,
    Query(p): Query<SquareParams>,
) -> Response {
    let pool = app.pool.clone();
    let n = p.n.min(64);
    let work = async move {
        let handles = trellis::open_nursery(|calls| async move {
            let mut handles = Vec::new();
            for i in 0..n {
                let pool = pool.clone();
                handles.push(calls.start_soon(async move {
                    pool.run(Route::RoundRobin, square, (p.x + i, p.delay_ms))
                        .await
                })?);
            }
            Ok::<_, Error>(handles)
        })
        .await?
        .unwrap_or_default();
        Ok(handles
            .into_iter()
            .filter_map(|h| h.into_value())
            .sum::<u64>())
    };
    match in_service(&app, deadline_of(&headers), work).await {
        Ok(sum) => format!("{sum}\n").into_response(),
        Err(error) => failure("/square", &error),
    }
}

#[derive(Deserialize)]
struct CountParams {
    #[serde(default = "ten")]
    n: u64,
    #[serde(default)]
    pace_ms: u64,
}

fn ten() -> u64 {
    10
}

/// A response body fed by a task of the service; dropping it (the client went away)
/// cancels the task.
struct Lines {
    lines: tokio::sync::mpsc::Receiver<String>,
    _cancel: CancelOnDrop,
}

impl futures_core::Stream for Lines {
    type Item = Result<String, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.lines.poll_recv(cx).map(|line| line.map(Ok))
    }
}

/// `GET /count?n=N&pace_ms=P`: `0..N` streamed from a worker, one line each.
async fn counting(
    State(app): State<App>,
    headers: HeaderMap,
    Query(p): Query<CountParams>,
) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    let scope = CancelScope::with_timeout(deadline_of(&headers));
    let pool = app.pool.clone();
    let run = scope.clone();
    let started = app.work.start_soon(async move {
        let streamed = run
            .run(pool.open_stream_from(
                Route::LeastBusy,
                count,
                (p.n, p.pace_ms),
                |items| async move {
                    while let Some(i) = items.recv().await? {
                        if tx.send(format!("{i}\n")).await.is_err() {
                            break; // the body is gone: so is the client
                        }
                    }
                    Ok(())
                },
            ))
            .await;
        if let Err(error) = streamed {
            tracing::warn!("/count ended early:\n{error}");
        }
        Ok::<_, Error>(())
    });
    if let Err(closed) = started {
        return failure("/count", &closed.into());
    }
    Body::from_stream(Lines {
        lines: rx,
        _cancel: CancelOnDrop(Some(scope)),
    })
    .into_response()
}

/// `GET /stats`: each worker's pid and the calls cancelled in it, and how many calls the
/// workers serve right now.
async fn stats(State(app): State<App>) -> Response {
    let pool = app.pool.clone();
    let work = async move {
        let mut text = String::new();
        for worker in pool.workers() {
            let (pid, cancelled) = worker.run(worker_stats, ()).await?;
            let serving = worker.portal().await?.info().await?.serving;
            text += &format!("worker {pid} cancelled {cancelled} serving {serving}\n");
        }
        Ok(text)
    };
    match in_service(&app, DEFAULT_DEADLINE, work).await {
        Ok(text) => text.into_response(),
        Err(error) => failure("/stats", &error),
    }
}

struct Args {
    listen: SocketAddr,
    workers: usize,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
        workers: 2,
    };
    let mut given = std::env::args_os().skip(1);
    while let Some(arg) = given.next() {
        let value = given
            .next()
            .and_then(|v| v.into_string().ok())
            .ok_or_else(|| format!("{} needs a value", arg.to_string_lossy()))?;
        match arg.to_str() {
            Some("--listen") => {
                args.listen = value
                    .parse()
                    .map_err(|_| format!("--listen takes HOST:PORT, not {value:?}"))?;
            }
            Some("--workers") => {
                args.workers =
                    value.parse().ok().filter(|&n| n > 0).ok_or_else(|| {
                        format!("--workers takes a positive number, not {value:?}")
                    })?;
            }
            _ => return Err(format!("unknown argument {}", arg.to_string_lossy())),
        }
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> ExitCode {
    // In a worker process this serves the worker actor, and never returns.
    trellis_actor::serve_if_child_async(config()).await;
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let args = match parse_args() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("service: {message}\nusage: service [--listen HOST:PORT] [--workers N]");
            return ExitCode::from(2);
        }
    };
    let service = trellis_actor::run_root("service", config(), move || serve(args));
    match trellis::Root::new().handle_ctrl_c(true).run(service).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) if error.is_interrupted() => {
            eprintln!("service: interrupted; every worker stopped");
            ExitCode::from(130)
        }
        Err(error) => {
            eprintln!("service failed:\n{error}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: Args) -> Result<(), Error> {
    let supervision = Supervision::new(Strategy::OneForOne)
        .name("workers")
        .intensity(5, Duration::from_secs(10));
    open_supervisor(supervision, |sup| async move {
        let pool = sup
            .start_pool("worker", args.workers, Restart::Permanent)
            .await?;
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        trellis::open_nursery(|work| async move {
            let app = Router::new()
                .route("/square", get(squares))
                .route("/count", get(counting))
                .route("/stats", get(stats))
                .with_state(App { pool, work });
            // axum waits for its shutdown signal in a task of its own, outside the root: a
            // token carries the root's cancellation (Ctrl-C) to it. axum then stops accepting
            // and lets the requests in flight end; their work was cancelled with the root.
            trellis::token::with_token(|token| async move {
                axum::serve(listener, app)
                    .with_graceful_shutdown(token.cancelled_owned())
                    .await
            })
            .await?;
            trellis::checkpoint().await?;
            Ok::<_, Error>(())
        })
        .await?;
        Ok(())
    })
    .await?;
    Ok(())
}
