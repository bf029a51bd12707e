//! How a tree of actors runs, and what a parent tells a child process.

use std::ffi::OsString;
use std::sync::Arc;
use std::time::Duration;

use trellis_wire::auth::TREE_CREDENTIAL;

use crate::functions::Functions;
use crate::limits::Limits;
use crate::secret::Secret;
use crate::tls::TreeTls;
use crate::transport::{Addr, Transport};

/// Environment variables through which a parent tells a child process who it is.
pub(crate) mod env {
    pub(crate) const NAME: &str = "TRELLIS_ACTOR_NAME";
    pub(crate) const UID: &str = "TRELLIS_ACTOR_UID";
    pub(crate) const PARENT: &str = "TRELLIS_ACTOR_PARENT";
    pub(crate) const PARENT_PID: &str = "TRELLIS_ACTOR_PARENT_PID";
    pub(crate) const TRANSPORT: &str = "TRELLIS_ACTOR_TRANSPORT";
    pub(crate) const REGISTRAR: &str = "TRELLIS_ACTOR_REGISTRAR";
    pub(crate) const ROOT: &str = "TRELLIS_ACTOR_ROOT";
}

/// The transport a parent gives a child it launches on another host: TCP on the address of
/// the child's interface towards its parent.
pub(crate) const TCP_AUTO: &str = "tcp:auto";

/// Exit status of a child actor whose parent went away.
pub(crate) const EXIT_PARENT_LOST: u8 = 3;

/// How a tree of actors runs. Every process of the tree is built from the same configuration
/// (it is the same executable).
#[derive(Debug, Clone)]
pub struct Config {
    pub(crate) functions: Arc<Functions>,
    pub(crate) transport: Transport,
    pub(crate) grace: Duration,
    pub(crate) child_args: Vec<OsString>,
    pub(crate) spawn_timeout: Duration,
    pub(crate) registrar: Option<Addr>,
    pub(crate) child_env: Vec<(OsString, OsString)>,
    pub(crate) register_root: bool,
    pub(crate) log_level: Option<tracing::Level>,
    /// The root of the tree, for a child.
    pub(crate) root: Option<Addr>,
    pub(crate) keepalive: Option<Duration>,
    /// The tree's secret; a root without one reads the environment or makes one.
    pub(crate) secret: Option<Secret>,
    /// Functions peers outside the tree may call.
    pub(crate) exposed: Vec<Exposed>,
    /// What a client outside the tree proves when it connects, instead of the tree's secret:
    /// a credential, or (`None`) nothing.
    pub(crate) client: Option<Option<(String, Secret)>>,
    pub(crate) limits: Limits,
    pub(crate) tls: Option<TreeTls>,
    /// The registry in etcd, instead of the registrar's table.
    #[cfg(feature = "etcd")]
    pub(crate) etcd: Option<crate::etcd::Etcd>,
    pub(crate) spawn: SpawnBackend,
}

/// How a parent starts a child actor's process on its own host ([`Config::spawn_backend`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SpawnBackend {
    /// `fork` and `exec` of the program, for every child: the default.
    #[default]
    Exec,
    /// Forked from a *zygote*, a single-threaded process of the program that the parent starts
    /// (with `exec`, once) at its first spawn and keeps until it ends: a child then costs a
    /// `fork` of a small process, without the `exec`, the dynamic loader and the program's
    /// start-up (tractor's forkserver). Its children die with it, and it with the parent. The
    /// program's child entry must be [`serve_if_child`](crate::serve_if_child), called before
    /// any runtime starts (not `serve_if_child_async`). Children placed through a launcher, or
    /// on another program, are started as before.
    Zygote,
}

/// A client credential, checked: its name is not the members' and fits the wire.
///
/// # Panics
///
/// If `name` is `tree`, empty or longer than 255 bytes.
fn client_credential(name: &str, secret: Secret) -> (String, Secret) {
    assert!(
        name != TREE_CREDENTIAL && secret.named_key(name).is_ok(),
        "a client credential needs a name of 1 to 255 bytes other than `{TREE_CREDENTIAL}`"
    );
    (name.to_owned(), secret)
}

/// Functions a peer outside the tree may call: with a named client credential, or (`None`)
/// with none at all.
#[derive(Debug, Clone)]
pub(crate) struct Exposed {
    pub(crate) credential: Option<(String, Secret)>,
    pub(crate) functions: Vec<String>,
}

impl Config {
    /// A configuration serving `functions`, over Unix sockets, with a grace period of 2 s.
    pub fn new(functions: Functions) -> Self {
        Config {
            functions: Arc::new(functions),
            transport: Transport::Unix,
            grace: Duration::from_secs(2),
            child_args: Vec::new(),
            spawn_timeout: Duration::from_secs(10),
            registrar: None,
            child_env: Vec::new(),
            register_root: true,
            log_level: Some(tracing::Level::INFO),
            root: None,
            keepalive: Some(Duration::from_secs(10)),
            secret: None,
            exposed: Vec::new(),
            client: None,
            limits: Limits::default(),
            tls: None,
            #[cfg(feature = "etcd")]
            etcd: None,
            spawn: SpawnBackend::Exec,
        }
    }

    /// How children on this host are started: [`SpawnBackend::Exec`] (the default) or
    /// [`SpawnBackend::Zygote`].
    #[must_use]
    pub fn spawn_backend(mut self, backend: SpawnBackend) -> Self {
        self.spawn = backend;
        self
    }

    /// The tree's secret, which every connection between its actors proves (see [`Secret`]).
    /// Without it a root uses the one the environment names ([`Secret::from_env`]), or makes
    /// a fresh one; its children always get their parent's. Trees that span hosts, and tools
    /// that call into a TCP tree, share one through a file.
    #[must_use]
    pub fn secret(mut self, secret: Secret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// Lets a peer outside the tree call `functions` (and `trellis.functions`, which then
    /// lists only these) by proving the client credential `name` with `secret` instead of
    /// the tree's. Everything else it calls is refused with an error of kind
    /// [`Unauthorized`](trellis_wire::ErrorKind::Unauthorized).
    ///
    /// # Panics
    ///
    /// If `name` is `tree` (the members' credential), empty or longer than 255 bytes.
    #[must_use]
    pub fn expose_to<I, S>(mut self, name: &str, secret: Secret, functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exposed.push(Exposed {
            credential: Some(client_credential(name, secret)),
            functions: functions.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Lets anyone who can connect call `functions` (a health check), with no credential at
    /// all. Such a peer sees nothing else: every other call is refused as in
    /// [`expose_to`](Config::expose_to), and it learns no actor's address but this one's.
    #[must_use]
    pub fn expose_to_anyone<I, S>(mut self, functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.exposed.push(Exposed {
            credential: None,
            functions: functions.into_iter().map(Into::into).collect(),
        });
        self
    }

    /// Runs TCP connections inside TLS 1.3 with mutual certificate authentication: this
    /// actor presents `tls`'s certificate and accepts only peers whose certificates the
    /// tree's CA issued (the secret is still proved inside). Every actor of the tree, and
    /// every tool that calls into it, needs one; Unix sockets are not affected.
    #[must_use]
    pub fn tls(mut self, tls: TreeTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// What one peer may hold of this actor: connections, memory, calls and time (see
    /// [`Limits`]; a child has those of the configuration its program serves with).
    #[must_use]
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// A client outside any tree (a tool, a service calling into a tree it does not belong
    /// to): it proves the credential `name` with `secret` when it connects, instead of a
    /// tree's secret, and may call what the actors it calls exposed to `name`
    /// ([`expose_to`](Config::expose_to)). Children it starts are of no tree it can reach.
    ///
    /// # Panics
    ///
    /// If `name` is `tree`, empty or longer than 255 bytes.
    #[must_use]
    pub fn client(mut self, name: &str, secret: Secret) -> Self {
        self.client = Some(Some(client_credential(name, secret)));
        self
    }

    /// A client that proves nothing when it connects: it may call what the actors it calls
    /// exposed to anyone ([`expose_to_anyone`](Config::expose_to_anyone)).
    #[must_use]
    pub fn anonymous_client(mut self) -> Self {
        self.client = Some(None);
        self
    }

    /// Whether a peer that proved `credential` (`None`: none) may call `function`. What is
    /// exposed to anyone is exposed to every credential; the runtime's functions
    /// (`trellis.*`) are never exposed.
    pub(crate) fn may_call(&self, credential: Option<&str>, function: &str) -> bool {
        credential == Some(TREE_CREDENTIAL)
            || !function.starts_with(crate::names::RESERVED_PREFIX)
                && self.exposed.iter().any(|e| {
                    let to = e.credential.as_ref().map(|(name, _)| name.as_str());
                    (to.is_none() || to == credential) && e.functions.iter().any(|f| f == function)
                })
    }

    /// An environment variable for child processes (`RUST_LOG`, `RUST_BACKTRACE`, …).
    #[must_use]
    pub fn child_env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.child_env.push((key.into(), value.into()));
        self
    }

    /// Keeps the registry in etcd (feature `etcd`) instead of in the registrar's table: every
    /// actor of the tree (its children get it from their program's configuration, which
    /// should name the same cluster) puts its entry there under a lease it keeps alive, and
    /// [`find_actor`](crate::find_actor), [`wait_for_actor`](crate::wait_for_actor) (a
    /// watch, not polling) and [`Actor::registered`](crate::Actor::registered) read it. A
    /// killed actor's entry is removed by its parent, or vanishes when its lease expires.
    /// When etcd is unreachable, lookups fail with [`ActorError::Registry`](crate::ActorError::Registry)
    /// and work again when it returns; connections are not affected.
    #[cfg(feature = "etcd")]
    #[must_use]
    pub fn etcd(mut self, etcd: crate::etcd::Etcd) -> Self {
        self.etcd = Some(etcd);
        self
    }

    /// The registrar for a root actor to use, instead of being the registrar of its tree
    /// (actors of several trees, on one host or many, then find each other there).
    #[must_use]
    pub fn registrar(mut self, registrar: Addr) -> Self {
        self.registrar = Some(registrar);
        self
    }

    /// A root that does not register with its registrar: a tool that looks at a tree (lists
    /// it, calls into it) without being part of what it shows.
    #[must_use]
    pub fn unregistered(mut self) -> Self {
        self.register_root = false;
        self
    }

    /// Which `tracing` events of child actors reach the root (default: `INFO` and above), or
    /// `None` to leave children's logging alone. The root emits them as its own events, with
    /// target `trellis::remote` and the fields `actor` and `origin` (the event's target); a
    /// child's panic message comes the same way. `TRELLIS_LOG` (`error` … `trace`, `off`) in
    /// the environment overrides it.
    #[must_use]
    pub fn child_log_level(mut self, level: Option<tracing::Level>) -> Self {
        self.log_level = level;
        self
    }

    /// How soon a TCP connection to an actor that became unreachable (a cut link, a host
    /// gone, with no goodbye and no reset) fails: after about twice `after` (default 10 s, so
    /// ~20 s), by kernel keepalive probes and a limit on unacknowledged data. Every call on
    /// the connection then fails with [`ActorError`](crate::ActorError)s, as if the peer had
    /// died. `None` leaves the system's defaults (hours). Unix sockets do not need it.
    #[must_use]
    pub fn keepalive(mut self, after: Option<Duration>) -> Self {
        self.keepalive = after;
        self
    }

    /// How actors reach each other.
    #[must_use]
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// How long a child actor has to exit after being asked to, before it is killed.
    #[must_use]
    pub fn grace_period(mut self, grace: Duration) -> Self {
        self.grace = grace;
        self
    }

    /// Command-line arguments for child processes (the executable is this one). Test binaries
    /// use this to run one test that serves; see [`serve_if_child`](crate::serve_if_child).
    #[must_use]
    pub fn child_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.child_args = args.into_iter().map(Into::into).collect();
        self
    }
}
