//! How an actor answers the calls its peers make: the runtime's own functions first
//! (`docs/wire-protocol.md` §8), then the registrar's when it is one, then the functions its
//! configuration registered. Arguments are decoded before the call is acknowledged, so that a
//! call with bad arguments is refused instead.

use std::sync::OnceLock;

use serde::Serialize;
use trellis_wire::auth::TREE_CREDENTIAL;
use trellis_wire::{ActorId, CallKind, ErrorKind, Payload};

use super::handle::Actor;
use crate::connection::{Conn, Incoming, Prepared, Service};
use crate::error::ErrorTypes;
use crate::functions::{Functions, call_kind_name};
use crate::info::FunctionInfo;
use crate::names::{CANCEL_ACTOR, CHILD_READY, DUMP, FUNCTIONS, INFO, LOG, TERMINAL};

/// The runtime's own functions that run as served calls.
fn builtins() -> &'static Functions {
    static BUILTINS: OnceLock<Functions> = OnceLock::new();
    BUILTINS.get_or_init(|| {
        Functions::new()
            .insert(LOG, crate::logs::receive)
            .insert(TERMINAL, super::terminal::serve)
    })
}

/// The functions the runtime answers at once, as [`FunctionInfo`]s.
const QUICK: [&str; 5] = [CANCEL_ACTOR, CHILD_READY, INFO, FUNCTIONS, DUMP];

/// An actor serving the calls of one connection.
pub(crate) struct ActorService {
    actor: Actor,
}

impl ActorService {
    pub(crate) fn new(actor: Actor) -> Self {
        ActorService { actor }
    }

    fn functions(&self) -> &Functions {
        &self.actor.inner.config.functions
    }

    /// The functions a peer outside the tree that proved `credential` may call.
    fn list_for(&self, credential: Option<&str>) -> Vec<FunctionInfo> {
        let config = &self.actor.inner.config;
        let mut list = self.list();
        list.retain(|f| f.name != FUNCTIONS && config.may_call(credential, &f.name));
        list
    }

    /// Every function this actor serves, the runtime's included.
    fn list(&self) -> Vec<FunctionInfo> {
        let mut list = self.functions().list();
        list.extend(builtins().list());
        list.extend(QUICK.iter().map(|name| FunctionInfo {
            name: (*name).to_owned(),
            kind: "run".to_owned(),
        }));
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    /// Answers one of the runtime's quick functions; `false` when `function` is none.
    fn quick(&self, conn: &Conn, cid: u64, function: &str, args: &Payload) -> bool {
        fn encoded<T: Serialize>(value: &T) -> Payload {
            Payload::encode(value).unwrap_or_else(|_| Payload::unit())
        }
        match function {
            CANCEL_ACTOR => {
                conn.answer(cid, Payload::unit());
                let peer = conn.peer().actor.clone();
                let reason = crate::cancel_reason::from_args(args, &peer);
                self.actor.cancel_by(peer, reason);
            }
            CHILD_READY => {
                conn.answer(cid, Payload::unit());
                self.actor.child_ready(conn);
            }
            INFO => {
                let mut info = self.actor.info();
                // Not counting this very call.
                info.serving = info.serving.saturating_sub(1);
                conn.answer(cid, encoded(&info));
            }
            FUNCTIONS => conn.answer(cid, encoded(&self.list())),
            DUMP => conn.answer(cid, encoded(&self.actor.dump())),
            _ => return false,
        }
        true
    }

    /// Whether log records `args` from the peer may be passed on: the peer is a child of this
    /// actor, and no record names this actor or another of its children (a member speaks for
    /// itself and its own subtree only; each parent checks its children, so a record reaches
    /// the root only through the subtree of the actor it names). Records that do not decode
    /// go on, to be refused as bad arguments.
    fn may_log(&self, conn: &Conn, args: &Payload) -> bool {
        let peer = &conn.peer().actor;
        if !self.actor.is_child(&peer.uid) {
            tracing::warn!(%peer, "refused log records from an actor that is not a child");
            return false;
        }
        let me = self.actor.id();
        let may = |a: &ActorId| a == peer || (a != me && !self.actor.is_child(&a.uid));
        match crate::logs::forged(args, may) {
            Ok(None) | Err(_) => true,
            Ok(Some(forged)) => {
                tracing::warn!(%peer, %forged, "refused log records speaking for another actor");
                false
            }
        }
    }

    /// The served function `function`, prepared from `args`.
    fn prepare(
        &self,
        conn: &Conn,
        function: &str,
        kind: CallKind,
        args: &Payload,
    ) -> Result<Prepared, (ErrorKind, String)> {
        if let Some(registry) = self.actor.registry()
            && let Some(prepared) =
                super::registry::serve(registry, function, args, conn.key(), &conn.peer().actor)
        {
            return expect_kind(function, CallKind::Run, kind).and_then(|()| {
                prepared.map_err(|e| {
                    (
                        ErrorKind::BadArguments,
                        format!("bad arguments for `{function}`: {e}"),
                    )
                })
            });
        }
        let handler = builtins()
            .get(function)
            .or_else(|| self.functions().get(function))
            .ok_or_else(|| {
                (
                    ErrorKind::UnknownFunction,
                    format!(
                        "no function named `{function}` in actor {}",
                        self.actor.id()
                    ),
                )
            })?;
        expect_kind(function, handler.kind, kind)?;
        (handler.prepare)(args.clone()).map_err(|e| {
            (
                ErrorKind::BadArguments,
                format!("bad arguments for `{function}`: {e}"),
            )
        })
    }
}

fn expect_kind(
    function: &str,
    registered: CallKind,
    called: CallKind,
) -> Result<(), (ErrorKind, String)> {
    if registered == called {
        return Ok(());
    }
    Err((
        ErrorKind::BadArguments,
        format!(
            "`{function}` is a {} function, called as a {}",
            call_kind_name(registered),
            call_kind_name(called)
        ),
    ))
}

impl Service for ActorService {
    fn call(&self, conn: &Conn, call: Incoming) {
        let Incoming {
            cid,
            function,
            kind,
            args,
            trace,
        } = call;
        let function = function.as_str();
        let credential = conn.peer().credential.as_deref();
        if credential != Some(TREE_CREDENTIAL) {
            // A peer from outside the tree: what was exposed to it, and nothing else.
            if function == FUNCTIONS && kind == CallKind::Run {
                let list = Payload::encode(&self.list_for(credential));
                return conn.answer(cid, list.unwrap_or_else(|_| Payload::unit()));
            }
            if !self.actor.inner.config.may_call(credential, function) {
                tracing::warn!(
                    peer = %conn.peer().actor,
                    credential = credential.unwrap_or("none"),
                    function,
                    "refused a call: not authorized"
                );
                let text = format!(
                    "`{function}` may not be called by actor {} (credential {})",
                    conn.peer().actor,
                    credential.unwrap_or("none")
                );
                return conn.refuse(cid, ErrorKind::Unauthorized, text);
            }
        }
        if function == LOG && !self.may_log(conn, &args) {
            let text = format!(
                "actor {} may ship log records of its own subtree only, to its parent",
                conn.peer().actor
            );
            return conn.refuse(cid, ErrorKind::Unauthorized, text);
        }
        if kind == CallKind::Run && self.quick(conn, cid, function, &args) {
            return;
        }
        match self.prepare(conn, function, kind, &args) {
            Ok(prepared) => {
                let prepared = traced(prepared, function, &conn.peer().actor, trace);
                conn.serve_call((cid, function), kind, prepared, &self.actor.inner.work)
            }
            Err((error_kind, text)) => conn.refuse(cid, error_kind, text),
        }
    }

    fn error_types(&self) -> &ErrorTypes {
        self.functions().error_types()
    }

    fn cancelled_by(&self) -> Option<(ActorId, Box<trellis_wire::CancelReason>)> {
        self.actor.cancelled_by()
    }
}

/// `prepared`, run in the call's span (feature `opentelemetry`): the remote child of the
/// caller's span when its `Start` carried a trace context.
#[cfg(feature = "opentelemetry")]
fn traced(
    prepared: Prepared,
    function: &str,
    peer: &ActorId,
    trace: Option<Box<trellis_wire::TraceContext>>,
) -> Prepared {
    // The runtime's own functions (registration, log shipping) are traced only as part of a
    // caller's trace: on their own they are noise.
    if trace.is_none() && function.starts_with(crate::names::RESERVED_PREFIX) {
        return prepared;
    }
    let (function, peer) = (function.to_owned(), peer.clone());
    Box::new(move |link| {
        Box::pin(crate::trace::instrument(
            prepared(link),
            &function,
            &peer,
            trace,
        ))
    })
}

/// `prepared` as it is: without the feature `opentelemetry`, calls are not traced.
#[cfg(not(feature = "opentelemetry"))]
#[inline(always)]
fn traced(
    prepared: Prepared,
    _function: &str,
    _peer: &ActorId,
    _trace: Option<Box<trellis_wire::TraceContext>>,
) -> Prepared {
    prepared
}
