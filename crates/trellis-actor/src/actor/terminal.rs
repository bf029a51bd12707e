//! The tree-wide terminal lock: an actor takes exclusive use of the terminal through the root,
//! so that prompts from different actors never interleave (tractor's debugger lock, issues 148
//! and 320).
//!
//! The terminal is the root's: child actors run with standard input closed, and in process
//! groups of their own (Ctrl-C reaches the root only). [`with_terminal`] in a child opens a
//! context into the root (`trellis.terminal`); the root takes its FIFO terminal lock, and then
//! writes and reads lines on the child's behalf until the body ends. Ctrl-C while an actor holds
//! the lock cancels the root, which cancels the context: the holder's body sees the
//! cancellation, nobody waits on a lock that will never be released, and the tree tears down.

use std::io::{BufRead, Write};
use std::sync::{OnceLock, mpsc};

use serde::{Deserialize, Serialize};

use crate::ActorError;
use crate::calls::{Context, MsgStream};
use crate::functions::ContextFn;
use crate::names::TERMINAL;

/// The reserved context function that serves the terminal.

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Write(String),
    ReadLine,
}

#[derive(Debug, Serialize, Deserialize)]
enum Reply {
    Written,
    Line(Option<String>),
}

/// Exclusive use of the tree's terminal, inside [`with_terminal`].
#[derive(Debug)]
pub struct Terminal {
    /// The stream into the root; `None` in the root itself.
    remote: Option<MsgStream<Reply, Request>>,
}

/// Runs `body` with exclusive use of the terminal of the tree's root (its standard input and
/// output): waits, first come first served, until no other actor of the tree holds it.
///
/// ```no_run
/// # async fn f() -> Result<(), trellis::Error> {
/// let answer = trellis_actor::with_terminal(|term| async move {
///     Ok(term.prompt("continue? [y/n] ").await?)
/// })
/// .await?;
/// # Ok(()) }
/// ```
///
/// # Errors
///
/// `body`'s error; `Cancelled`; [`ActorError`](crate::ActorError)s when the root cannot be
/// reached (it is going away: Ctrl-C, say).
pub async fn with_terminal<F, Fut, T>(body: F) -> Result<T, trellis::Error>
where
    F: FnOnce(Terminal) -> Fut,
    Fut: std::future::Future<Output = Result<T, trellis::Error>>,
{
    let actor = super::handle::current();
    match actor.root() {
        None => {
            let _held = hold(&actor).await?;
            body(Terminal { remote: None }).await
        }
        Some(root) => {
            let root = actor.portal(&root).await?;
            root.open_context(TerminalCall, (), |ctx, ()| async move {
                let stream = ctx.open_stream::<Reply, Request>()?;
                body(Terminal {
                    remote: Some(stream),
                })
                .await
            })
            .await
        }
    }
}

impl Terminal {
    /// Writes `text` to the terminal (no newline added) and flushes it.
    ///
    /// # Errors
    ///
    /// [`ActorError::Io`] when the terminal cannot be written; [`ActorError::Cancelled`];
    /// [`ActorError::ConnectionLost`] when the root went away.
    pub async fn write(&self, text: impl Into<String>) -> Result<(), ActorError> {
        let text = text.into();
        match &self.remote {
            None => write_out(&text),
            Some(stream) => {
                stream.send(Request::Write(text)).await?;
                match stream.recv().await? {
                    Some(Reply::Written) => Ok(()),
                    other => Err(unexpected(stream, other)),
                }
            }
        }
    }

    /// Reads one line (without its line end); `None` at the end of input.
    ///
    /// # Errors
    ///
    /// [`ActorError::Io`] when the terminal cannot be read; [`ActorError::Cancelled`] (the
    /// line, once typed, is kept for the
    /// next reader); the root going away.
    pub async fn read_line(&self) -> Result<Option<String>, ActorError> {
        match &self.remote {
            None => read_line().await,
            Some(stream) => {
                stream.send(Request::ReadLine).await?;
                match stream.recv().await? {
                    Some(Reply::Line(line)) => Ok(line),
                    other => Err(unexpected(stream, other)),
                }
            }
        }
    }

    /// Writes `text`, then reads the answer line.
    ///
    /// # Errors
    ///
    /// As [`write`](Terminal::write) and [`read_line`](Terminal::read_line).
    pub async fn prompt(&self, text: impl Into<String>) -> Result<Option<String>, ActorError> {
        self.write(text).await?;
        self.read_line().await
    }
}

fn unexpected(stream: &MsgStream<Reply, Request>, reply: Option<Reply>) -> ActorError {
    ActorError::Protocol {
        actor: stream.peer().clone(),
        error: format!("the terminal's server answered {reply:?}"),
    }
}

/// Calls `trellis.terminal` by its reserved name.
struct TerminalCall;

impl ContextFn<()> for TerminalCall {
    type Args = ();
    type Output = ();

    fn name(&self) -> &'static str {
        TERMINAL
    }
}

/// Served as `trellis.terminal`: holds the terminal lock for the caller and does its I/O.
pub(crate) async fn serve(ctx: Context) -> Result<(), trellis::Error> {
    let actor = super::handle::current();
    let _held = hold(&actor).await?;
    ctx.started(()).await?;
    let stream = ctx.open_stream::<Request, Reply>()?;
    while let Some(request) = stream.recv().await? {
        let reply = match request {
            Request::Write(text) => {
                write_out(&text)?;
                Reply::Written
            }
            Request::ReadLine => Reply::Line(read_line().await?),
        };
        stream.send(reply).await?;
    }
    Ok(())
}

/// Takes the tree's terminal lock (kept by `actor`, the root), first come first served.
async fn hold(
    actor: &super::handle::Actor,
) -> Result<trellis::sync::LockGuard<'_>, trellis::Error> {
    actor
        .inner
        .terminal
        .acquire()
        .await
        .map_err(trellis::Error::new)
}

fn write_out(text: &str) -> Result<(), ActorError> {
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())
        .and_then(|()| out.flush())
        .map_err(|source| ActorError::Io {
            context: "writing to the terminal".to_owned(),
            source,
        })
}

/// Standard input, read a line at a time on a thread of its own: a reader that is cancelled
/// leaves the line it asked for to the next reader, and a read that never finishes (nobody
/// types) holds up nothing, not even the process's exit.
struct Stdin {
    requests: mpsc::Sender<()>,
    lines: tokio::sync::Mutex<Lines>,
}

/// The thread's answers, and whether one was asked for and not yet taken.
struct Lines {
    answers: tokio::sync::mpsc::UnboundedReceiver<std::io::Result<Option<String>>>,
    asked: bool,
}

fn stdin() -> &'static Stdin {
    static STDIN: OnceLock<Stdin> = OnceLock::new();
    STDIN.get_or_init(|| {
        let (requests, asked) = mpsc::channel::<()>();
        let (send, answers) = tokio::sync::mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name("trellis-stdin".into())
            .spawn(move || {
                while asked.recv().is_ok() {
                    let mut line = String::new();
                    let read = std::io::stdin()
                        .lock()
                        .read_line(&mut line)
                        .map(|n| (n > 0).then(|| line.trim_end_matches(['\n', '\r']).to_owned()));
                    if send.send(read).is_err() {
                        return;
                    }
                }
            })
            .expect("a thread for standard input");
        Stdin {
            requests,
            lines: tokio::sync::Mutex::new(Lines {
                answers,
                asked: false,
            }),
        }
    })
}

async fn read_line() -> Result<Option<String>, ActorError> {
    let stdin = stdin();
    let failed = |source| ActorError::Io {
        context: "reading the terminal".to_owned(),
        source,
    };
    let gone = || failed(std::io::Error::other("the standard input thread is gone"));
    let mut lines = trellis::cancellable(stdin.lines.lock()).await?;
    if !lines.asked {
        stdin.requests.send(()).map_err(|_| gone())?;
        lines.asked = true;
    }
    let line = trellis::cancellable(lines.answers.recv())
        .await?
        .ok_or_else(gone)?;
    lines.asked = false;
    line.map_err(failed)
}
