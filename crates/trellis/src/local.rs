//! Values that code inherits from where it runs, as Trio tasks inherit `contextvars`: a value
//! given to [`with_local`] is seen by the future it runs and by every task that future starts
//! in a nursery, however deeply nested, and by nothing else.

use std::future::Future;
use std::sync::Arc;

use crate::cancel::node::Node;
use crate::context::{self, InNode};

/// Runs `future` with `value` visible to it (and to the tasks it starts) through [`local`].
/// An inner `with_local` of the same type hides an outer one.
///
/// ```
/// # #[tokio::main] async fn main() -> Result<(), trellis::Error> {
/// #[derive(Clone, Debug, PartialEq)]
/// struct RequestId(u64);
///
/// trellis::with_local(RequestId(7), async {
///     trellis::open_nursery(|n| async move {
///         n.start_soon(async {
///             assert_eq!(trellis::local::<RequestId>(), Some(RequestId(7)));
///             Ok::<_, trellis::Error>(())
///         })?;
///         Ok::<_, trellis::Error>(())
///     })
///     .await
/// })
/// .await?;
/// assert_eq!(trellis::local::<RequestId>(), None);
/// # Ok(()) }
/// ```
pub async fn with_local<T, F>(value: T, future: F) -> F::Output
where
    T: Send + Sync + 'static,
    F: Future,
{
    // A node that is never cancelled itself: it only carries the value, and passes the
    // cancellation of the scopes around it down to the code inside.
    let node = Node::new_child(context::current().as_ref());
    node.set_local(Arc::new(value));
    let leave = Leave(&node);
    let output = InNode::new(future, node.clone()).await;
    drop(leave);
    output
}

/// Leaves the parent when the local's scope ends, also by being dropped.
struct Leave<'a>(&'a Arc<Node>);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.detach();
    }
}

/// The value of type `T` given to the nearest enclosing [`with_local`], if any.
pub fn local<T: Clone + Send + Sync + 'static>() -> Option<T> {
    context::current().and_then(|node| node.find_local::<T>())
}
