//! The names of the runtime's own functions (`docs/wire-protocol.md` §8). Every actor serves
//! the first group; a registrar also serves the second.

/// What every runtime function's name starts with; no registered function's may.
pub(crate) const RESERVED_PREFIX: &str = "trellis.";

/// A new child, connected and registered, tells its parent it serves.
pub(crate) const CHILD_READY: &str = "trellis.child_ready";
/// Asks an actor to cancel everything it runs and exit.
pub(crate) const CANCEL_ACTOR: &str = "trellis.cancel_actor";
/// An actor's identity and load.
pub(crate) const INFO: &str = "trellis.info";
/// What every task of an actor is doing.
pub(crate) const DUMP: &str = "trellis.dump";
/// The functions an actor serves, with their call kinds.
pub(crate) const FUNCTIONS: &str = "trellis.functions";
/// A child's log records, for its parent.
pub(crate) const LOG: &str = "trellis.log";
/// The root's terminal, borrowed by a descendant.
pub(crate) const TERMINAL: &str = "trellis.terminal";

/// Registrar: records an actor's entry.
pub(crate) const REGISTER: &str = "trellis.register";
/// Registrar: removes an actor's entry.
pub(crate) const UNREGISTER: &str = "trellis.unregister";
/// Registrar: the first actor registered under a name.
pub(crate) const FIND: &str = "trellis.find";
/// Registrar: waits for an actor registered under a name.
pub(crate) const WAIT_FOR: &str = "trellis.wait_for";
/// Registrar: waits until no actor of a uid is registered.
pub(crate) const WAIT_UNREGISTERED: &str = "trellis.wait_unregistered";
/// Registrar: every registered actor.
pub(crate) const LIST: &str = "trellis.list";
