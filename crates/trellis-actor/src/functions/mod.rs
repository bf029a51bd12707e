//! Functions other actors may call: their signatures (`signatures.rs`) and the registry an
//! actor serves them from (`registry.rs`).

mod registry;
mod signatures;

pub(crate) use registry::call_kind_name;
pub use registry::{ContextCall, Functions, Register, RunCall, StreamCall};
pub use signatures::{ContextFn, RemoteFn, ServeContextFn, ServeFn, ServeStreamFn, StreamFn};
