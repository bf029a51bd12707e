//! The functions an actor serves, by stable name, and the error types whose values cross
//! actors.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_wire::{CallKind, Payload};

use super::signatures::{ServeContextFn, ServeFn, ServeStreamFn};
use crate::calls::{Context, MsgStream, StreamOptions};
use crate::connection::{Link, Prepared};
use crate::error::{CallFailure, ErrorTypes, StreamOverrun, bare_name};
use crate::info::FunctionInfo;

/// Marks a run function for [`Register`].
#[derive(Debug)]
pub enum RunCall {}
/// Marks a stream function for [`Register`].
#[derive(Debug)]
pub enum StreamCall {}
/// Marks a context function for [`Register`].
#[derive(Debug)]
pub enum ContextCall {}

/// Anything [`Functions::register`] takes: a [`ServeFn`], a [`ServeStreamFn`] or a
/// [`ServeContextFn`]. `M` tells them apart and is inferred. Sealed.
pub trait Register<M>: sealed::IntoHandler<M> + Send + Sync + 'static {
    /// The name it is registered under: its bare identifier.
    fn name(&self) -> &'static str {
        bare_name(std::any::type_name::<Self>())
    }
}

impl<M, F: sealed::IntoHandler<M> + Send + Sync + 'static> Register<M> for F {}

pub(crate) use sealed::Handler;

/// Prepares a call from its arguments: the arguments decoded, or why they do not decode.
type PrepareFn = Arc<dyn Fn(Payload) -> Result<Prepared, String> + Send + Sync>;

mod sealed {
    use trellis_wire::CallKind;

    /// A registered function: what kind of call it serves, and how to prepare a call of it
    /// from its arguments (decoded before the call is acknowledged, so that bad arguments
    /// are refused instead).
    #[derive(Clone)]
    pub struct Handler {
        pub(crate) kind: CallKind,
        pub(crate) prepare: super::PrepareFn,
    }

    impl std::fmt::Debug for Handler {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.debug_struct("Handler").field("kind", &self.kind).finish()
        }
    }

    /// How a registered function becomes a [`Handler`].
    pub trait IntoHandler<M> {
        fn into_handler(self) -> Handler;
    }
}

/// The arguments as the parameters. A function without parameters takes nil (what trellis
/// sends) or an empty array (what a peer that always sends an argument list sends).
fn decode_args<Args: DeserializeOwned>(args: &Payload) -> Result<Args, String> {
    args.decode().or_else(|e| {
        if args.as_bytes() == [0x90]
            && let Ok(none) = Payload::unit().decode()
        {
            return Ok(none);
        }
        Err(e.to_string())
    })
}

fn encode_result<R: Serialize>(value: &R) -> Result<Payload, CallFailure> {
    Payload::encode(value).map_err(|e| CallFailure::BadResult(e.to_string()))
}

impl<F, Args> sealed::IntoHandler<(RunCall, Args)> for F
where
    F: ServeFn<Args>,
    Args: DeserializeOwned + Send + 'static,
{
    fn into_handler(self) -> Handler {
        let function = Arc::new(self);
        Handler {
            kind: CallKind::Run,
            prepare: Arc::new(move |args: Payload| {
                let args: Args = decode_args(&args)?;
                let function = function.clone();
                Ok(Box::new(move |_link| {
                    Box::pin(async move {
                        let value = function.call(args).await.map_err(CallFailure::Failed)?;
                        encode_result(&value)
                    })
                }))
            }),
        }
    }
}

impl<F, M> sealed::IntoHandler<(StreamCall, M)> for F
where
    F: ServeStreamFn<M>,
    M: 'static,
{
    fn into_handler(self) -> Handler {
        let function = Arc::new(self);
        Handler {
            kind: CallKind::Stream,
            prepare: Arc::new(move |args: Payload| {
                let args = decode_args(&args)?;
                let function = function.clone();
                Ok(Box::new(move |link: Option<Link>| {
                    Box::pin(async move {
                        let link = link.expect("stream calls have a link");
                        let stream = MsgStream::new(link, StreamOptions::default());
                        function
                            .call(stream, args)
                            .await
                            .map_err(CallFailure::Failed)?;
                        Ok(Payload::unit())
                    })
                }))
            }),
        }
    }
}

impl<F, M> sealed::IntoHandler<(ContextCall, M)> for F
where
    F: ServeContextFn<M>,
    M: 'static,
{
    fn into_handler(self) -> Handler {
        let function = Arc::new(self);
        Handler {
            kind: CallKind::Context,
            prepare: Arc::new(move |args: Payload| {
                let args = decode_args(&args)?;
                let function = function.clone();
                Ok(Box::new(move |link: Option<Link>| {
                    Box::pin(async move {
                        let link = link.expect("context calls have a link");
                        let local = link.conn.local().clone();
                        let ctx = Context::new(link);
                        let started = ctx.started_flag();
                        let value = function
                            .call(ctx, args)
                            .await
                            .map_err(CallFailure::Failed)?;
                        if !started.load(std::sync::atomic::Ordering::Acquire) {
                            let error = crate::ActorError::NotStarted { actor: local };
                            return Err(CallFailure::Failed(error.into()));
                        }
                        encode_result(&value)
                    })
                }))
            }),
        }
    }
}

/// The functions an actor serves, by name. Every process of a tree is built with the same
/// registry (it is the same executable), so any actor can call any registered function in any
/// other.
///
/// A function's name is explicit and stable: its bare identifier (`add` for
/// `my_crate::math::add`), or the name given to [`register_as`](Functions::register_as).
/// Names starting with `trellis.` are the runtime's.
///
/// ```
/// async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
///     Ok(a + b)
/// }
/// let functions = trellis_actor::Functions::new().register(add);
/// assert!(functions.contains("add"));
/// ```
#[derive(Clone)]
pub struct Functions {
    map: HashMap<String, Handler>,
    errors: ErrorTypes,
}

impl std::fmt::Debug for Functions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<_> = self.map.keys().collect();
        names.sort();
        f.debug_struct("Functions").field("names", &names).finish()
    }
}

impl Default for Functions {
    fn default() -> Self {
        Functions {
            map: HashMap::new(),
            errors: ErrorTypes::default(),
        }
        .error_type::<StreamOverrun>()
    }
}

pub(crate) fn call_kind_name(kind: CallKind) -> &'static str {
    match kind {
        CallKind::Run => "run",
        CallKind::Stream => "stream",
        CallKind::Context => "context",
    }
}

impl Functions {
    /// An empty registry (that knows the runtime's own error types).
    pub fn new() -> Self {
        Functions::default()
    }

    /// Registers `function` under its bare identifier: a run function
    /// (`async fn(args…) -> Result<R, E>`), a stream function (first parameter a
    /// [`MsgStream`]) or a context function (first parameter a [`Context`]).
    ///
    /// # Panics
    ///
    /// When the name is taken already (two functions of the same identifier in different
    /// modules: give one a name with [`register_as`](Functions::register_as)), or `function`
    /// has no identifier (a closure).
    #[must_use]
    pub fn register<M, F: Register<M>>(self, function: F) -> Self {
        let name = function.name();
        assert!(
            !name.starts_with('{') && !name.is_empty(),
            "a closure has no name: register it with `register_as`"
        );
        self.register_as(name, function)
    }

    /// Registers `function` under `name`.
    ///
    /// # Panics
    ///
    /// When the name is taken already, or starts with the runtime's `trellis.`.
    #[must_use]
    pub fn register_as<M, F: Register<M>>(self, name: &str, function: F) -> Self {
        assert!(
            !name.starts_with(crate::names::RESERVED_PREFIX),
            "`{name}`: names starting with `trellis.` are the runtime's"
        );
        self.insert(name, function)
    }

    /// Registers one of the runtime's own functions.
    pub(crate) fn insert<M, F: Register<M>>(mut self, name: &str, function: F) -> Self {
        let handler = sealed::IntoHandler::into_handler(function);
        let previous = self.map.insert(name.to_owned(), handler);
        assert!(
            previous.is_none(),
            "two functions registered under the name `{name}`"
        );
        self
    }

    /// Lets errors of type `E` cross actors as values, under `E`'s bare name: a remote function
    /// failing with an `E` sends the value along, and the caller's
    /// [`RemoteActorError`](crate::RemoteActorError) gives it back as a real `E`
    /// ([`RemoteActorError::rebuilt`](crate::RemoteActorError::rebuilt)). Other errors still
    /// arrive with their type name, text and causes.
    ///
    /// # Panics
    ///
    /// When another registered error type has the same name, or `E` is registered already.
    #[must_use]
    pub fn error_type<E>(self) -> Self
    where
        E: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let name = bare_name(std::any::type_name::<E>()).to_owned();
        self.error_type_as::<E>(&name)
    }

    /// [`error_type`](Functions::error_type) under `name`.
    ///
    /// # Panics
    ///
    /// As [`error_type`](Functions::error_type).
    #[must_use]
    pub fn error_type_as<E>(mut self, name: &str) -> Self
    where
        E: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        assert!(
            self.errors.insert::<E>(name),
            "error type `{}` registered twice, or the name `{name}` is taken",
            std::any::type_name::<E>()
        );
        self
    }

    /// The error types, for the connections.
    pub(crate) fn error_types(&self) -> &ErrorTypes {
        &self.errors
    }

    /// Whether a function is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// The registered functions and their call kinds, by name.
    pub fn list(&self) -> Vec<FunctionInfo> {
        let mut list: Vec<FunctionInfo> = self
            .map
            .iter()
            .map(|(name, handler)| FunctionInfo {
                name: name.clone(),
                kind: call_kind_name(handler.kind).to_owned(),
            })
            .collect();
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Handler> {
        self.map.get(name)
    }
}
