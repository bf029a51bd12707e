//! Functions other actors may call, registered by a stable name, with serde-typed arguments
//! and results.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use trellis_wire::Payload;

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

type Handler = Arc<dyn Fn(Payload) -> BoxFuture<Result<Payload, CallFailure>> + Send + Sync>;

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
#[derive(Clone, Default)]
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

impl Functions {
    /// An empty registry.
    pub fn new() -> Self {
        Functions::default()
    }

    /// Registers `function` under its path.
    ///
    /// # Panics
    ///
    /// When a function of the same name is registered already.
    #[must_use]
    pub fn register<Args, F>(self, function: F) -> Self
    where
        F: ServeFn<Args>,
        Args: DeserializeOwned + Send + 'static,
    {
        let name = function.name();
        self.register_as(name, function)
    }

    /// Registers `function` under `name`.
    ///
    /// # Panics
    ///
    /// When a function of the same name is registered already.
    #[must_use]
    pub fn register_as<Args, F>(mut self, name: &str, function: F) -> Self
    where
        F: ServeFn<Args>,
        Args: DeserializeOwned + Send + 'static,
    {
        let function = Arc::new(function);
        let handler: Handler = Arc::new(move |args: Payload| {
            let function = function.clone();
            Box::pin(async move {
                let args: Args = args
                    .decode()
                    .map_err(|e| CallFailure::BadArguments(e.to_string()))?;
                let value = function.call(args).await.map_err(CallFailure::Failed)?;
                Payload::encode(&value).map_err(|e| CallFailure::BadResult(e.to_string()))
            })
        });
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
