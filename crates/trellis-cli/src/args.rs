//! The command line, parsed by hand: two commands, two options.

use std::path::PathBuf;

use trellis_actor::Addr;

/// A command and where the tree's secret is.
#[derive(Debug, PartialEq)]
pub(crate) struct Invocation {
    pub(crate) command: Command,
    /// `--secret-file`, if given.
    pub(crate) secret_file: Option<PathBuf>,
    /// `--tls-dir`, else `TRELLIS_TLS_DIR`: the tree's TLS certificates, if it uses TLS.
    pub(crate) tls_dir: Option<PathBuf>,
}

/// What to do.
#[derive(Debug, PartialEq)]
pub(crate) enum Command {
    /// Draw the live tree.
    Tree { registrar: Addr },
    /// Call `function` in the actor registered as `actor` with `args` (a JSON array).
    Call {
        registrar: Addr,
        actor: String,
        function: String,
        args: serde_json::Value,
    },
    /// List the functions the actor registered as `actor` serves.
    List { registrar: Addr, actor: String },
}

impl Command {
    /// The registrar the command asks.
    pub(crate) fn registrar(&self) -> &Addr {
        match self {
            Command::Tree { registrar }
            | Command::Call { registrar, .. }
            | Command::List { registrar, .. } => registrar,
        }
    }
}

/// Why there is nothing to run.
#[derive(Debug, PartialEq)]
pub(crate) enum Usage {
    /// Help was asked for: print it, exit 0.
    Help(&'static str),
    /// The command line is wrong: one line, exit 2.
    Bad(String),
}

const HELP: &str = "\
trellis: look at a live trellis actor tree and call into it

Usage:
  trellis tree [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR]
  trellis call [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR] ACTOR FUNCTION [JSON-ARGS]
  trellis call [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR] ACTOR --list
  trellis COMMAND --help

Commands:
  tree   draw every actor the registrar knows, as a tree: name, pid, host, address,
         uptime, the calls it serves and makes, its open streams
  call   call FUNCTION in the actor registered as ACTOR and print the result as JSON,
         or with --list, list the functions it serves

Options:
  --registrar ADDR   the registrar, unix:PATH or tcp:HOST:PORT
                     (default: the environment variable TRELLIS_REGISTRAR)
  --secret-file PATH the tree's secret (default: the file $TRELLIS_SECRET_FILE names,
                     else $TRELLIS_SECRET, else the `secret` file next to a unix: registrar)
  --tls-dir DIR      for a tree over TLS: a directory with ca.pem (the tree's CA),
                     cert.pem and key.pem (a certificate that CA issued)
                     (default: $TRELLIS_TLS_DIR)
  -h, --help         this text

Exit status: 0 done, 1 the remote function failed, 2 bad usage, no registrar, unknown actor.
";

const TREE_HELP: &str = "\
trellis tree: draw the live actor tree

Usage: trellis tree [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR]

Asks the registrar for every actor it knows and each actor to describe itself, and draws
them under their parents: name#id, pid, host, address, uptime, calls served/made, streams.
An actor that does not answer is shown with the reason.

Options:
  --registrar ADDR   the registrar, unix:PATH or tcp:HOST:PORT (default: $TRELLIS_REGISTRAR)
  --secret-file PATH the tree's secret (default: the file $TRELLIS_SECRET_FILE names,
                     else $TRELLIS_SECRET, else the `secret` file next to a unix: registrar)
  --tls-dir DIR      for a tree over TLS: a directory with ca.pem (the tree's CA),
                     cert.pem and key.pem (a certificate that CA issued)
                     (default: $TRELLIS_TLS_DIR)
  -h, --help         this text
";

const CALL_HELP: &str = "\
trellis call: make an ad-hoc call

Usage: trellis call [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR] ACTOR FUNCTION [JSON-ARGS]
       trellis call [--registrar ADDR] [--secret-file PATH] [--tls-dir DIR] ACTOR --list

Finds the first actor registered as ACTOR, calls its run function FUNCTION (the name it was
registered under) with JSON-ARGS, a JSON array of the arguments (default []), and prints the
result as one line of JSON.

Example: trellis call calc add '[1, 2]'

Options:
  --list             list the functions ACTOR serves, one per line: its call kind (run,
                     stream, context) and its name
  --registrar ADDR   the registrar, unix:PATH or tcp:HOST:PORT (default: $TRELLIS_REGISTRAR)
  --secret-file PATH the tree's secret (default: the file $TRELLIS_SECRET_FILE names,
                     else $TRELLIS_SECRET, else the `secret` file next to a unix: registrar)
  --tls-dir DIR      for a tree over TLS: a directory with ca.pem (the tree's CA),
                     cert.pem and key.pem (a certificate that CA issued)
                     (default: $TRELLIS_TLS_DIR)
  -h, --help         this text
";

/// Parses the arguments after the program's name; `TRELLIS_REGISTRAR` is the default
/// registrar.
pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Invocation, Usage> {
    let mut secret_file = None;
    let mut tls_dir = std::env::var_os("TRELLIS_TLS_DIR").map(PathBuf::from);
    let mut rest = Vec::new();
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let slot = match arg.split_once('=').map_or(arg.as_str(), |(name, _)| name) {
            "--secret-file" => &mut secret_file,
            "--tls-dir" => &mut tls_dir,
            _ => {
                rest.push(arg);
                continue;
            }
        };
        let path = match arg.split_once('=') {
            Some((_, path)) => path.to_owned(),
            None => args
                .next()
                .ok_or_else(|| Usage::Bad(format!("{arg} needs a path")))?,
        };
        *slot = Some(PathBuf::from(path));
    }
    let command = parse_with(rest, std::env::var("TRELLIS_REGISTRAR").ok())?;
    Ok(Invocation {
        command,
        secret_file,
        tls_dir,
    })
}

fn parse_with(
    args: impl IntoIterator<Item = String>,
    default_registrar: Option<String>,
) -> Result<Command, Usage> {
    let mut args = args.into_iter();
    let command = match args.next().as_deref() {
        None | Some("-h" | "--help" | "help") => return Err(Usage::Help(HELP)),
        Some(c @ ("tree" | "call")) => c.to_owned(),
        Some(other) => return Err(Usage::Bad(format!("unknown command `{other}`"))),
    };
    let help = if command == "tree" {
        TREE_HELP
    } else {
        CALL_HELP
    };
    let mut registrar = None;
    let mut list = false;
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(Usage::Help(help)),
            "--list" if command == "call" => list = true,
            "--registrar" => {
                registrar = Some(
                    args.next()
                        .ok_or_else(|| Usage::Bad("--registrar needs an address".into()))?,
                );
            }
            a if a.starts_with("--registrar=") => {
                registrar = Some(a["--registrar=".len()..].to_owned());
            }
            a if a.starts_with('-') && a.len() > 1 => {
                return Err(Usage::Bad(format!("unknown option `{a}` for `{command}`")));
            }
            _ => positional.push(arg),
        }
    }
    let registrar = registrar.or(default_registrar).ok_or_else(|| {
        Usage::Bad("no registrar: pass --registrar ADDR or set TRELLIS_REGISTRAR".into())
    })?;
    let registrar: Addr = registrar
        .parse()
        .map_err(|e: trellis_actor::BadAddr| Usage::Bad(e.to_string()))?;
    if command == "tree" {
        if let Some(extra) = positional.first() {
            return Err(Usage::Bad(format!(
                "`tree` takes no argument, got `{extra}`"
            )));
        }
        return Ok(Command::Tree { registrar });
    }
    let mut positional = positional.into_iter();
    if list {
        let Some(actor) = positional.next() else {
            return Err(Usage::Bad("`call --list` needs ACTOR".into()));
        };
        if let Some(extra) = positional.next() {
            return Err(Usage::Bad(format!("unexpected argument `{extra}`")));
        }
        return Ok(Command::List { registrar, actor });
    }
    let (Some(actor), Some(function)) = (positional.next(), positional.next()) else {
        return Err(Usage::Bad("`call` needs ACTOR and FUNCTION".into()));
    };
    let args = match positional.next() {
        None => serde_json::Value::Array(Vec::new()),
        Some(json) => match serde_json::from_str(&json) {
            Ok(value @ serde_json::Value::Array(_)) => value,
            Ok(_) => {
                return Err(Usage::Bad(format!(
                    "JSON-ARGS must be a JSON array of the arguments, as [1, 2]; got {json}"
                )));
            }
            Err(e) => return Err(Usage::Bad(format!("JSON-ARGS is not JSON: {e}"))),
        },
    };
    if let Some(extra) = positional.next() {
        return Err(Usage::Bad(format!("unexpected argument `{extra}`")));
    }
    Ok(Command::Call {
        registrar,
        actor,
        function,
        args,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str], env: Option<&str>) -> Result<Command, Usage> {
        parse_with(args.iter().map(|a| (*a).to_owned()), env.map(str::to_owned))
    }

    #[test]
    fn the_secret_file_is_an_option_of_every_command() {
        let parsed = super::parse(
            ["tree", "--secret-file", "/s", "--registrar", "unix:/r"].map(String::from),
        );
        assert_eq!(parsed.map(|i| i.secret_file), Ok(Some(PathBuf::from("/s"))));
        let parsed = super::parse(
            ["call", "--registrar=unix:/r", "--secret-file=/t", "a", "f"].map(String::from),
        );
        assert_eq!(parsed.map(|i| i.secret_file), Ok(Some(PathBuf::from("/t"))));
        assert!(matches!(
            super::parse(["tree", "--secret-file"].map(String::from)),
            Err(Usage::Bad(m)) if m.contains("needs a path")
        ));
    }

    #[test]
    fn the_tls_directory_is_an_option_of_every_command() {
        let parsed = super::parse(
            [
                "tree",
                "--tls-dir",
                "/tls",
                "--registrar",
                "tcp:127.0.0.1:1",
            ]
            .map(String::from),
        );
        assert_eq!(parsed.map(|i| i.tls_dir), Ok(Some(PathBuf::from("/tls"))));
        let parsed = super::parse(
            [
                "call",
                "--tls-dir=/t",
                "--registrar=tcp:127.0.0.1:1",
                "a",
                "f",
            ]
            .map(String::from),
        );
        assert_eq!(parsed.map(|i| i.tls_dir), Ok(Some(PathBuf::from("/t"))));
    }

    #[test]
    fn call_lists_with_list() {
        assert_eq!(
            parse(&["call", "calc", "--list"], Some("unix:/r")),
            Ok(Command::List {
                registrar: "unix:/r".parse().unwrap(),
                actor: "calc".into()
            })
        );
        assert!(matches!(
            parse(&["call", "--list"], Some("unix:/r")),
            Err(Usage::Bad(_))
        ));
        assert!(matches!(
            parse(&["tree", "--list"], Some("unix:/r")),
            Err(Usage::Bad(_))
        ));
    }

    #[test]
    fn every_command_has_help() {
        assert_eq!(parse(&[], None), Err(Usage::Help(HELP)));
        assert_eq!(parse(&["--help"], None), Err(Usage::Help(HELP)));
        assert_eq!(
            parse(&["tree", "--help"], None),
            Err(Usage::Help(TREE_HELP))
        );
        assert_eq!(parse(&["call", "-h"], None), Err(Usage::Help(CALL_HELP)));
    }

    #[test]
    fn the_registrar_comes_from_the_option_or_the_environment() {
        let tree = |addr: &str| Command::Tree {
            registrar: addr.parse().unwrap(),
        };
        assert_eq!(
            parse(&["tree", "--registrar", "tcp:127.0.0.1:9"], None),
            Ok(tree("tcp:127.0.0.1:9"))
        );
        assert_eq!(
            parse(&["tree"], Some("unix:/r.sock")),
            Ok(tree("unix:/r.sock"))
        );
        assert_eq!(
            parse(&["tree", "--registrar=unix:/a"], Some("unix:/b")),
            Ok(tree("unix:/a"))
        );
        assert!(matches!(parse(&["tree"], None), Err(Usage::Bad(m)) if m.contains("no registrar")));
        assert!(matches!(
            parse(&["tree", "--registrar", "x"], None),
            Err(Usage::Bad(_))
        ));
    }

    #[test]
    fn call_takes_a_json_array() {
        let Ok(Command::Call {
            actor,
            function,
            args,
            ..
        }) = parse(&["call", "calc", "add", "[1, 2]"], Some("unix:/r"))
        else {
            panic!("not parsed");
        };
        assert_eq!((actor.as_str(), function.as_str()), ("calc", "add"));
        assert_eq!(args, serde_json::json!([1, 2]));
        let Ok(Command::Call { args, .. }) = parse(&["call", "a", "f"], Some("unix:/r")) else {
            panic!("not parsed");
        };
        assert_eq!(args, serde_json::json!([]));
        for bad in [
            &["call", "a", "f", "{"][..],
            &["call", "a", "f", "3"],
            &["call", "a"],
        ] {
            assert!(
                matches!(parse(bad, Some("unix:/r")), Err(Usage::Bad(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(parse(&["frobnicate"], None), Err(Usage::Bad(_))));
        assert!(matches!(
            parse(&["tree", "--verbose"], Some("unix:/r")),
            Err(Usage::Bad(_))
        ));
    }
}
