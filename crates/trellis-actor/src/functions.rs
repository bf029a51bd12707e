//! Functions other actors may call, registered by a stable name, with serde-typed arguments
//! and results.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_wire::{CallKind, Payload};

use crate::stream::{Context, Link, MsgStream, StreamOverrun};

/// A future as the registry stores it.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// Why a registered function did not produce a value.
pub(crate) enum CallFailure {
    /// The arguments did not decode as the parameters.
    BadArguments(String),
    /// The function failed.
    Failed(trellis::Error),
    /// The result did not encode.
    BadResult(String),
    /// The function panicked.
    Panicked(crate::panic::Panic),
}

type CallFn =
    Arc<dyn Fn(Payload, Option<Link>) -> BoxFuture<Result<Payload, CallFailure>> + Send + Sync>;

/// The signature of an async function other actors can call: implemented for every `async fn`
/// (or function returning a future) of up to six serde arguments returning `Result<R, E>`,
/// where `R` is serde and `E` converts into [`trellis::Error`]. [`Portal::run`](crate::Portal::run)
/// needs only this, so a remote function may call itself in another actor.
///
/// Its wire name is its path (`my_crate::math::add`, from [`std::any::type_name`]), the same in
/// every process running the same executable. Closures have no such name: register them with
/// [`Functions::register_as`] and call them with [`Portal::run_named`](crate::Portal::run_named).
pub trait RemoteFn<Args>: Send + Sync + 'static {
    /// The result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The name it is registered and called under.
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A [`RemoteFn`] this actor can serve: its future can move between threads.
pub trait ServeFn<Args>: RemoteFn<Args> {
    /// Runs the function.
    fn call(&self, args: Args) -> BoxFuture<Result<Self::Output, trellis::Error>>;
}

macro_rules! remote_fn {
    ($($arg:ident),*) => {
        impl<F, Fut, R, E, $($arg),*> RemoteFn<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>>,
            R: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            type Output = R;
        }

        impl<F, Fut, R, E, $($arg),*> ServeFn<($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>> + Send + 'static,
            R: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            #[allow(non_snake_case)]
            fn call(&self, ($($arg,)*): ($($arg,)*)) -> BoxFuture<Result<R, trellis::Error>> {
                let fut = self($($arg),*);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
        }
    };
}

remote_fn!();
remote_fn!(A);
remote_fn!(A, B);
remote_fn!(A, B, C);
remote_fn!(A, B, C, D);
remote_fn!(A, B, C, D, G);
remote_fn!(A, B, C, D, G, H);

/// The signature of an async function that streams to its caller (tractor's one-way stream,
/// `Portal::open_stream_from`): its first parameter is the [`MsgStream`] it sends `Item`s on,
/// the others (up to four) are serde arguments; it returns `Result<(), E>`. `M` is the
/// parameter list, inferred.
///
/// ```
/// use std::convert::Infallible;
/// use trellis_actor::MsgStream;
///
/// async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
///     for i in 1..=n {
///         stream.send(i).await?;
///     }
///     Ok(())
/// }
/// let functions = trellis_actor::Functions::new().register(count_to);
/// # assert!(functions.contains(std::any::type_name_of_val(&count_to)));
/// ```
pub trait StreamFn<M>: Send + Sync + 'static {
    /// What it streams.
    type Item: Serialize + DeserializeOwned + Send + 'static;
    /// Its arguments after the stream, as a tuple.
    type Args: Serialize + DeserializeOwned + Send + 'static;

    /// The name it is registered and called under (its path).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A [`StreamFn`] this actor can serve.
pub trait ServeStreamFn<M>: StreamFn<M> {
    /// Runs the function.
    fn call(
        &self,
        stream: MsgStream<Infallible, Self::Item>,
        args: Self::Args,
    ) -> BoxFuture<Result<(), trellis::Error>>;
}

/// The signature of an async context function (tractor's `@context`, `Portal::open_context`):
/// its first parameter is the [`Context`], the others (up to four) are serde arguments; it
/// returns `Result<R, E>`. `M` is the parameter list, inferred.
pub trait ContextFn<M>: Send + Sync + 'static {
    /// Its arguments after the context, as a tuple.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// Its result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The name it is registered and called under (its path).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

/// A [`ContextFn`] this actor can serve.
pub trait ServeContextFn<M>: ContextFn<M> {
    /// Runs the function.
    fn call(
        &self,
        ctx: Context,
        args: Self::Args,
    ) -> BoxFuture<Result<Self::Output, trellis::Error>>;
}

macro_rules! stream_fns {
    ($($arg:ident),*) => {
        impl<F, Fut, T, E, $($arg),*> StreamFn<(MsgStream<Infallible, T>, $($arg,)*)> for F
        where
            F: Fn(MsgStream<Infallible, T>, $($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), E>>,
            T: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            type Item = T;
            type Args = ($($arg,)*);
        }

        impl<F, Fut, T, E, $($arg),*> ServeStreamFn<(MsgStream<Infallible, T>, $($arg,)*)> for F
        where
            F: Fn(MsgStream<Infallible, T>, $($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<(), E>> + Send + 'static,
            T: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            #[allow(non_snake_case)]
            fn call(
                &self,
                stream: MsgStream<Infallible, T>,
                ($($arg,)*): ($($arg,)*),
            ) -> BoxFuture<Result<(), trellis::Error>> {
                let fut = self(stream, $($arg),*);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
        }

        impl<F, Fut, R, E, $($arg),*> ContextFn<(Context, $($arg,)*)> for F
        where
            F: Fn(Context, $($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>>,
            R: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            type Args = ($($arg,)*);
            type Output = R;
        }

        impl<F, Fut, R, E, $($arg),*> ServeContextFn<(Context, $($arg,)*)> for F
        where
            F: Fn(Context, $($arg),*) -> Fut + Send + Sync + 'static,
            Fut: Future<Output = Result<R, E>> + Send + 'static,
            R: Serialize + DeserializeOwned + Send + 'static,
            E: Into<trellis::Error> + 'static,
            $($arg: Serialize + DeserializeOwned + Send + 'static),*
        {
            #[allow(non_snake_case)]
            fn call(
                &self,
                ctx: Context,
                ($($arg,)*): ($($arg,)*),
            ) -> BoxFuture<Result<R, trellis::Error>> {
                let fut = self(ctx, $($arg),*);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
        }
    };
}

stream_fns!();
stream_fns!(A);
stream_fns!(A, B);
stream_fns!(A, B, C);
stream_fns!(A, B, C, D);

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
    /// The name it is registered under (its path).
    fn name(&self) -> &'static str {
        std::any::type_name::<Self>()
    }
}

impl<M, F: sealed::IntoHandler<M> + Send + Sync + 'static> Register<M> for F {}

pub(crate) use sealed::Handler;

mod sealed {
    use trellis_wire::CallKind;

    /// A registered function: what kind of call it serves, and how to run it (stream and
    /// context calls get their call's [`Link`](crate::stream::Link)).
    #[derive(Clone)]
    pub struct Handler {
        pub(crate) kind: CallKind,
        pub(crate) call: super::CallFn,
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
fn decode_args<Args: DeserializeOwned>(args: &Payload) -> Result<Args, CallFailure> {
    args.decode().or_else(|e| {
        if args.as_bytes().as_ref() == [0x90] {
            if let Ok(none) = Payload::unit().decode() {
                return Ok(none);
            }
        }
        Err(CallFailure::BadArguments(e.to_string()))
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
            call: Arc::new(move |args: Payload, _link| {
                let function = function.clone();
                Box::pin(async move {
                    let args: Args = decode_args(&args)?;
                    let value = function.call(args).await.map_err(CallFailure::Failed)?;
                    encode_result(&value)
                })
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
            call: Arc::new(move |args: Payload, link: Option<Link>| {
                let function = function.clone();
                Box::pin(async move {
                    let args = decode_args(&args)?;
                    let link = link.expect("stream calls have a link");
                    let stream = MsgStream::new(link, crate::stream::StreamOptions::default());
                    function
                        .call(stream, args)
                        .await
                        .map_err(CallFailure::Failed)?;
                    Ok(Payload::unit())
                })
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
            call: Arc::new(move |args: Payload, link: Option<Link>| {
                let function = function.clone();
                Box::pin(async move {
                    let args = decode_args(&args)?;
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
            }),
        }
    }
}

/// The functions an actor serves, by name. Every process of a tree is built with the same
/// registry (it is the same executable), so any actor can call any registered function in any
/// other.
///
/// ```
/// async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
///     Ok(a + b)
/// }
/// let functions = trellis_actor::Functions::new().register(add);
/// assert!(functions.contains(std::any::type_name_of_val(&add)));
/// ```
#[derive(Clone)]
pub struct Functions {
    map: HashMap<String, Handler>,
    errors: HashMap<&'static str, ErrorType>,
}

/// An error value rebuilt on this side.
pub(crate) type Rebuilt = Arc<dyn std::error::Error + Send + Sync>;

/// How an error type registered with [`Functions::error_type`] crosses the wire.
#[derive(Clone, Copy)]
struct ErrorType {
    encode: fn(&trellis::Error) -> Option<Vec<u8>>,
    decode: fn(&[u8]) -> Option<Rebuilt>,
}

fn encode_as<E: Serialize + std::error::Error + 'static>(
    error: &trellis::Error,
) -> Option<Vec<u8>> {
    let value = error.downcast_ref::<E>()?;
    Payload::encode(value).ok().map(|p| p.as_bytes().to_vec())
}

fn decode_as<E>(bytes: &[u8]) -> Option<Rebuilt>
where
    E: DeserializeOwned + std::error::Error + Send + Sync + 'static,
{
    let payload = Payload::from_bytes(bytes.to_vec().into()).ok()?;
    let value: E = payload.decode().ok()?;
    Some(Arc::new(value))
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
            errors: HashMap::new(),
        }
        .error_type::<StreamOverrun>()
        .register_as(crate::introspect::INFO, crate::introspect::info)
        .register_as(crate::logs::LOG, crate::logs::receive)
        .register_as(crate::terminal::TERMINAL, crate::terminal::serve)
    }
}

impl Functions {
    /// An empty registry (that knows the runtime's own error types).
    pub fn new() -> Self {
        Functions::default()
    }

    /// Registers `function` under its path: a run function (`async fn(args…) -> Result<R, E>`),
    /// a stream function (first parameter a [`MsgStream`]) or a context function (first
    /// parameter a [`Context`]).
    ///
    /// # Panics
    ///
    /// When a function of the same name is registered already.
    #[must_use]
    pub fn register<M, F: Register<M>>(self, function: F) -> Self {
        let name = function.name();
        self.register_as(name, function)
    }

    /// Registers `function` under `name`.
    ///
    /// # Panics
    ///
    /// When a function of the same name is registered already.
    #[must_use]
    pub fn register_as<M, F: Register<M>>(mut self, name: &str, function: F) -> Self {
        let handler = sealed::IntoHandler::into_handler(function);
        let previous = self.map.insert(name.to_owned(), handler);
        assert!(previous.is_none(), "function {name} registered twice");
        self
    }

    /// Lets errors of type `E` cross actors as values: a remote function failing with an `E`
    /// sends the value along, and the caller's [`RemoteActorError`](crate::RemoteActorError)
    /// gives it back as a real `E` ([`RemoteActorError::rebuilt`](crate::RemoteActorError::rebuilt)).
    /// Other errors still arrive with their type name, text and causes.
    #[must_use]
    pub fn error_type<E>(mut self) -> Self
    where
        E: std::error::Error + Serialize + DeserializeOwned + Send + Sync + 'static,
    {
        let error_type = ErrorType {
            encode: encode_as::<E>,
            decode: decode_as::<E>,
        };
        self.errors.insert(std::any::type_name::<E>(), error_type);
        self
    }

    /// The value of `error` for the wire, if its type is registered.
    pub(crate) fn encode_error(&self, error: &trellis::Error) -> Option<Vec<u8>> {
        (self.errors.get(error.type_name())?.encode)(error)
    }

    /// The error of type `type_name` rebuilt from its value, if the type is registered.
    pub(crate) fn decode_error(&self, type_name: &str, value: &[u8]) -> Option<Rebuilt> {
        (self.errors.get(type_name)?.decode)(value)
    }

    /// Whether a function is registered under `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    pub(crate) fn get(&self, name: &str) -> Option<Handler> {
        self.map.get(name).cloned()
    }
}
