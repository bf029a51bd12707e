//! The signatures of functions other actors may call: run functions (one result), stream
//! functions (a [`MsgStream`] to send on) and context functions (a [`Context`]), with serde
//! arguments and results. Implemented for every matching `async fn`.

use std::convert::Infallible;
use std::future::Future;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::calls::{Context, MsgStream};
use crate::connection::BoxFuture;
use crate::error::bare_name;

/// The signature of an async function other actors can call: implemented for every `async fn`
/// (or function returning a future) of up to six serde arguments returning `Result<R, E>`,
/// where `R` is serde and `E` converts into [`trellis::Error`]. [`Portal::run`](crate::Portal::run)
/// needs only this, so a remote function may call itself in another actor.
///
/// Its wire name is its bare identifier (`add` for `my_crate::math::add`): stable when the
/// function moves module, the same in a peer written in another language. Register it under
/// another name with [`Functions::register_as`](crate::Functions::register_as) and call it by
/// that name with [`Portal::run_named`](crate::Portal::run_named); closures have no identifier
/// and must be registered so.
pub trait RemoteFn<Args>: Send + Sync + 'static {
    /// The result.
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// The name it is registered and called under: its bare identifier.
    fn name(&self) -> &'static str {
        bare_name(std::any::type_name::<Self>())
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
/// # assert!(functions.contains("count_to"));
/// ```
pub trait StreamFn<M>: Send + Sync + 'static {
    /// What it streams.
    type Item: Serialize + DeserializeOwned + Send + 'static;
    /// Its arguments after the stream, as a tuple.
    type Args: Serialize + DeserializeOwned + Send + 'static;

    /// The name it is registered and called under: its bare identifier.
    fn name(&self) -> &'static str {
        bare_name(std::any::type_name::<Self>())
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

    /// The name it is registered and called under: its bare identifier.
    fn name(&self) -> &'static str {
        bare_name(std::any::type_name::<Self>())
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
