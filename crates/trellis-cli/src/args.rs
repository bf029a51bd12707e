//! The command line, on clap's derive API: two commands, their options, and the checks clap
//! cannot make (a registrar or etcd is needed, JSON-ARGS is a JSON array).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use trellis_actor::Addr;

/// A command, where the tree's secret is, and its TLS certificates.
#[derive(Debug, PartialEq)]
pub(crate) struct Invocation {
    pub(crate) command: Command,
    /// `--secret-file`, if given.
    pub(crate) secret_file: Option<PathBuf>,
    /// `--tls-dir`, else `TRELLIS_TLS_DIR`: the tree's TLS certificates, if it uses TLS.
    pub(crate) tls_dir: Option<PathBuf>,
}

/// Where the command finds the tree's actors.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Registry {
    /// A registrar actor.
    Registrar(Addr),
    /// An etcd cluster (its client endpoints, comma-separated) and the prefix of the keys.
    Etcd { endpoints: String, prefix: String },
}

impl std::fmt::Display for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Registry::Registrar(addr) => write!(f, "the registrar at {addr}"),
            Registry::Etcd { endpoints, prefix } => {
                write!(f, "etcd at {endpoints} (keys under {prefix})")
            }
        }
    }
}

/// What to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Draw the live tree: once, as JSON once, or again every `watch`.
    Tree {
        registry: Registry,
        json: bool,
        watch: Option<std::time::Duration>,
    },
    /// Call `function` in the actor registered as `actor` with `args` (a JSON array).
    Call {
        registry: Registry,
        actor: String,
        function: String,
        args: serde_json::Value,
    },
    /// List the functions the actor registered as `actor` serves.
    List { registry: Registry, actor: String },
    /// Print what every task of every actor is doing: as a tree (the runtime's own tasks
    /// folded unless `all`), or as JSON.
    Dump {
        registry: Registry,
        json: bool,
        all: bool,
    },
}

impl Command {
    /// Where the command finds the actors.
    pub(crate) fn registry(&self) -> &Registry {
        match self {
            Command::Tree { registry, .. }
            | Command::Call { registry, .. }
            | Command::List { registry, .. }
            | Command::Dump { registry, .. } => registry,
        }
    }
}

/// Why there is nothing to run.
#[derive(Debug)]
pub(crate) enum Usage {
    /// Help or the version was asked for, or the command line is wrong: clap's text, and its
    /// exit status (0 for help and the version, 2 otherwise).
    Clap(clap::Error),
    /// The command line parses but cannot run: one line, exit 2.
    Bad(String),
}

const EXIT_STATUS: &str =
    "Exit status: 0 done, 1 the remote function failed, 2 bad usage, no registry, unknown actor.";

/// The whole command line.
#[derive(Debug, Parser)]
#[command(
    name = "trellis",
    version,
    about = "Look at a live trellis actor tree and call into it",
    after_help = EXIT_STATUS
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    #[command(flatten)]
    common: Common,
}

/// Options of every command.
#[derive(Debug, Args)]
struct Common {
    /// The registrar, unix:PATH or tcp:HOST:PORT
    #[arg(long, global = true, value_name = "ADDR", env = "TRELLIS_REGISTRAR")]
    registrar: Option<Addr>,
    /// Instead of a registrar: the etcd cluster that keeps the tree's names
    /// (http://HOST:PORT, several comma-separated)
    #[arg(
        long,
        global = true,
        value_name = "URLS",
        env = "TRELLIS_ETCD",
        conflicts_with = "registrar"
    )]
    etcd: Option<String>,
    /// The prefix of the tree's keys in etcd
    #[arg(
        long,
        global = true,
        value_name = "PREFIX",
        env = "TRELLIS_ETCD_PREFIX",
        default_value = "/trellis"
    )]
    etcd_prefix: String,
    /// The tree's secret (default: the file $TRELLIS_SECRET_FILE names, else
    /// $TRELLIS_SECRET, else the `secret` file next to a unix: registrar)
    #[arg(long, global = true, value_name = "PATH")]
    secret_file: Option<PathBuf>,
    /// For a tree over TLS: a directory with ca.pem (the tree's CA), cert.pem and key.pem (a
    /// certificate that CA issued)
    #[arg(long, global = true, value_name = "DIR", env = "TRELLIS_TLS_DIR")]
    tls_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum Sub {
    /// Draw every actor the registrar knows, as a tree: name, pid, host, address, uptime,
    /// the calls it serves and makes, its open streams
    #[command(after_help = "An actor that does not answer is shown with the reason.")]
    Tree {
        /// Print one snapshot as JSON (for scripts): the registrar, and each actor's entry and
        /// what it said about itself (`info`), or why it did not answer (`error`)
        #[arg(long)]
        json: bool,
        /// Draw the tree again every SECS seconds, in place, until Ctrl-C
        #[arg(long, value_name = "SECS", conflicts_with = "json")]
        watch: Option<f64>,
    },
    /// Print what every task of every actor is doing: each actor's nurseries, cancel scopes
    /// (deadline, shielded, cancelled) and tasks, with what each waits on (a lock, a channel,
    /// a call into another actor, a stream's credit), drawn as one tree
    #[command(after_help = "SIGUSR1 to a root actor prints the same on its standard error.")]
    Dump {
        /// Print it as JSON (for scripts): the registrar, and each actor's dump, or why it
        /// did not answer (`error`)
        #[arg(long)]
        json: bool,
        /// Show the runtime's own tasks too (connections, supervision, log shipping), which
        /// are otherwise folded into a count
        #[arg(long, conflicts_with = "json")]
        all: bool,
    },
    /// Call FUNCTION in the actor registered as ACTOR and print the result as JSON, or with
    /// --list, list the functions it serves
    #[command(after_help = "Example: trellis call calc add '[1, 2]'")]
    Call {
        /// List the functions ACTOR serves, one per line: its call kind (run, stream,
        /// context) and its name
        #[arg(long)]
        list: bool,
        /// The name the actor registered under
        #[arg(value_name = "ACTOR")]
        actor: String,
        /// The function, by the name it was registered under
        #[arg(value_name = "FUNCTION", required_unless_present = "list")]
        function: Option<String>,
        /// A JSON array of the arguments
        #[arg(
            value_name = "JSON-ARGS",
            default_value = "[]",
            conflicts_with = "list"
        )]
        json_args: String,
    },
}

/// Parses the command line (`args`, the program's name first).
pub(crate) fn parse<I, T>(args: I) -> Result<Invocation, Usage>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = Cli::try_parse_from(args).map_err(Usage::Clap)?;
    let Some(sub) = cli.command else {
        // No command: the overview, as `--help` shows it.
        let help = Cli::try_parse_from(["trellis", "--help"]).expect_err("help");
        return Err(Usage::Clap(help));
    };
    let Common {
        registrar,
        etcd,
        etcd_prefix,
        secret_file,
        tls_dir,
    } = cli.common;
    let registry = match (registrar, etcd) {
        (Some(registrar), _) => Registry::Registrar(registrar),
        (None, Some(endpoints)) => Registry::Etcd {
            endpoints,
            prefix: etcd_prefix,
        },
        (None, None) => {
            return Err(Usage::Bad(
                "no registry: pass --registrar ADDR or --etcd URLS (or set TRELLIS_REGISTRAR \
                 or TRELLIS_ETCD)"
                    .into(),
            ));
        }
    };
    let command = match sub {
        Sub::Tree { json, watch } => Command::Tree {
            registry,
            json,
            watch: watch.map(every).transpose()?,
        },
        Sub::Dump { json, all } => Command::Dump {
            registry,
            json,
            all,
        },
        Sub::Call {
            list: true, actor, ..
        } => Command::List { registry, actor },
        Sub::Call {
            actor,
            function,
            json_args,
            ..
        } => Command::Call {
            registry,
            actor,
            function: function.expect("clap requires FUNCTION without --list"),
            args: json_array(&json_args)?,
        },
    };
    Ok(Invocation {
        command,
        secret_file,
        tls_dir,
    })
}

/// `--watch SECS`: a positive, finite number of seconds, at least 0.1.
fn every(secs: f64) -> Result<std::time::Duration, Usage> {
    if secs.is_finite() && secs >= 0.1 {
        Ok(std::time::Duration::from_secs_f64(secs))
    } else {
        Err(Usage::Bad(format!(
            "--watch takes a number of seconds of at least 0.1, not {secs}"
        )))
    }
}

/// JSON-ARGS, which must be a JSON array.
fn json_array(json: &str) -> Result<serde_json::Value, Usage> {
    match serde_json::from_str(json) {
        Ok(value @ serde_json::Value::Array(_)) => Ok(value),
        Ok(_) => Err(Usage::Bad(format!(
            "JSON-ARGS must be a JSON array of the arguments, as [1, 2]; got {json}"
        ))),
        Err(e) => Err(Usage::Bad(format!("JSON-ARGS is not JSON: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses `args` after the program's name.
    fn parse(args: &[&str]) -> Result<Invocation, Usage> {
        super::parse(std::iter::once("trellis").chain(args.iter().copied()))
    }

    fn command(args: &[&str]) -> Command {
        parse(args).map(|i| i.command).unwrap()
    }

    fn bad(args: &[&str]) -> String {
        match parse(args) {
            Err(Usage::Bad(message)) => message,
            Err(Usage::Clap(e)) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                e.to_string()
            }
            Ok(i) => panic!("parsed {i:?}"),
        }
    }

    #[test]
    fn clap_accepts_the_definition() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn tree_takes_json_or_watch() {
        let registry = Registry::Registrar("unix:/r".parse().unwrap());
        assert_eq!(
            command(&["tree", "--registrar", "unix:/r", "--json"]),
            Command::Tree {
                registry: registry.clone(),
                json: true,
                watch: None,
            }
        );
        assert_eq!(
            command(&["tree", "--registrar", "unix:/r", "--watch", "0.5"]),
            Command::Tree {
                registry,
                json: false,
                watch: Some(std::time::Duration::from_millis(500)),
            }
        );
        for secs in ["0", "inf", "NaN", "0.01", "soon"] {
            let message = bad(&["tree", "--registrar", "unix:/r", "--watch", secs]);
            assert!(
                message.contains("--watch") || message.contains("soon"),
                "{message}"
            );
        }
        // A negative number reads as an option, which clap refuses.
        bad(&["tree", "--registrar", "unix:/r", "--watch", "-1"]);
        let message = bad(&["tree", "--registrar", "unix:/r", "--watch", "1", "--json"]);
        assert!(message.contains("cannot be used with"), "{message}");
    }

    #[test]
    fn the_secret_file_and_tls_directory_are_options_of_every_command() {
        let parsed = parse(&[
            "tree",
            "--secret-file",
            "/s",
            "--tls-dir",
            "/tls",
            "--registrar",
            "unix:/r",
        ])
        .unwrap();
        assert_eq!(parsed.secret_file, Some(PathBuf::from("/s")));
        assert_eq!(parsed.tls_dir, Some(PathBuf::from("/tls")));
        let parsed = parse(&[
            "--secret-file=/t",
            "call",
            "--registrar=unix:/r",
            "--tls-dir=/d",
            "a",
            "f",
        ])
        .unwrap();
        assert_eq!(parsed.secret_file, Some(PathBuf::from("/t")));
        assert_eq!(parsed.tls_dir, Some(PathBuf::from("/d")));
        assert!(bad(&["tree", "--secret-file"]).contains("a value is required"));
    }

    #[test]
    fn call_takes_a_json_array() {
        assert_eq!(
            command(&["call", "--registrar", "unix:/r", "calc", "add", "[1, 2]"]),
            Command::Call {
                registry: Registry::Registrar("unix:/r".parse().unwrap()),
                actor: "calc".into(),
                function: "add".into(),
                args: serde_json::json!([1, 2]),
            }
        );
        assert_eq!(
            command(&["call", "--registrar", "unix:/r", "calc", "ping"]),
            Command::Call {
                registry: Registry::Registrar("unix:/r".parse().unwrap()),
                actor: "calc".into(),
                function: "ping".into(),
                args: serde_json::json!([]),
            }
        );
        assert!(bad(&["call", "--registrar", "unix:/r", "calc", "add", "{"]).contains("not JSON"));
        assert!(
            bad(&["call", "--registrar", "unix:/r", "calc", "add", "3"]).contains("JSON array")
        );
        assert!(bad(&["call", "--registrar", "unix:/r", "calc"]).contains("FUNCTION"));
    }

    #[test]
    fn call_lists_with_list() {
        assert_eq!(
            command(&["call", "--registrar", "unix:/r", "calc", "--list"]),
            Command::List {
                registry: Registry::Registrar("unix:/r".parse().unwrap()),
                actor: "calc".into()
            }
        );
        bad(&["call", "--registrar", "unix:/r", "--list"]);
        bad(&["tree", "--registrar", "unix:/r", "--list"]);
        bad(&[
            "call",
            "--registrar",
            "unix:/r",
            "calc",
            "--list",
            "f",
            "[]",
        ]);
    }

    #[test]
    fn every_command_has_help_and_the_program_a_version() {
        for args in [&[][..], &["--help"], &["tree", "--help"], &["call", "-h"]] {
            match parse(args) {
                Err(Usage::Clap(e)) => {
                    assert_eq!(e.exit_code(), 0, "{args:?}");
                    assert!(e.to_string().contains("Usage"), "{args:?}: {e}");
                }
                other => panic!("{args:?}: {other:?}"),
            }
        }
        match parse(&["--version"]) {
            Err(Usage::Clap(e)) => {
                assert_eq!(e.exit_code(), 0);
                assert!(e.to_string().starts_with("trellis "), "{e}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_registry_is_needed_and_a_registrar_must_be_an_address() {
        assert!(bad(&["tree"]).contains("no registry"));
        assert_eq!(
            command(&["tree", "--etcd", "http://e:2379"]).registry(),
            &Registry::Etcd {
                endpoints: "http://e:2379".into(),
                prefix: "/trellis".into()
            }
        );
        bad(&["tree", "--etcd", "http://e:2379", "--registrar", "unix:/r"]);
        assert!(bad(&["tree", "--registrar", "nowhere"]).contains("nowhere"));
        assert!(bad(&["frobnicate"]).contains("frobnicate"));
        assert!(bad(&["tree", "--registrar", "unix:/r", "extra"]).contains("extra"));
    }

    #[test]
    fn arguments_that_are_not_utf8_are_an_error() {
        use std::os::unix::ffi::OsStringExt;
        let args = [
            OsString::from("trellis"),
            OsString::from("call"),
            OsString::from("--registrar=unix:/r"),
            OsString::from_vec(vec![b'c', 0xff, b'x']),
            OsString::from("f"),
        ];
        match super::parse(args) {
            Err(Usage::Clap(e)) => assert_eq!(e.exit_code(), 2, "{e}"),
            other => panic!("{other:?}"),
        }
    }
}
