//! Where a child actor runs: a process of this host (the default), another host reached
//! through OpenSSH, or wherever a cluster's own launcher (`srun`, `kubectl exec`,
//! `docker exec`, …) puts it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::time::Duration;

use tokio::process::Command;

use crate::actor::{FROM_STDIN, LAUNCH_ENV};

/// Where a child actor runs, for [`ActorNursery::start_actor_on`](crate::ActorNursery::start_actor_on)
/// and [`ActorSupervisor::start_actor_on`](crate::ActorSupervisor::start_actor_on).
///
/// A child started through a launcher runs the same program (or the one the launcher names)
/// with the variable `TRELLIS_ACTOR_LAUNCH=stdin` and its usual arguments
/// ([`Config::child_args`](crate::Config::child_args)) on its command line, and
/// [`Config::child_env`](crate::Config::child_env)'s variables before them (so they are as
/// visible as a command line: keep secrets out of them). Who it is, where its parent listens
/// and the tree's secret come through its standard input, which then stays open: when it
/// closes (the ssh session ends, the launcher is killed) the child exits, as when its
/// connection to its parent drops. It connects back over TCP (inside TLS when the tree's
/// configuration has it) and is then an ordinary child: calls, streams, cancellation,
/// errors, supervision, the terminal lock and log forwarding. It listens on its host's
/// address on the route to its parent.
///
/// Ending one asks it to exit over its connection, as for any child; after the grace period
/// its process group is killed through the launcher (`kill -s KILL -- -<pgid>` run by the
/// launcher's kill command), then the launcher itself is killed and reaped.
#[derive(Debug, Clone, Default)]
pub struct Placement {
    how: How,
}

#[derive(Debug, Clone, Default)]
enum How {
    #[default]
    Local,
    Ssh(SshHost),
    Command(CommandLauncher),
}

impl Placement {
    /// A child process of this one, on this host (what `start_actor` does).
    pub fn local() -> Placement {
        Placement::default()
    }

    /// A process on another host, started by the OpenSSH client. The parent must listen on
    /// TCP on an address that host can reach ([`Transport::Tcp`](crate::Transport::Tcp)).
    pub fn ssh(host: SshHost) -> Placement {
        Placement {
            how: How::Ssh(host),
        }
    }

    /// A process started by a command of the user's choosing (a cluster's launcher).
    pub fn command(launcher: CommandLauncher) -> Placement {
        Placement {
            how: How::Command(launcher),
        }
    }

    /// Whether the child is a child process of this one, started directly.
    pub fn is_local(&self) -> bool {
        matches!(self.how, How::Local)
    }

    /// Whether the child is on another host for sure (it then needs TCP).
    pub(super) fn is_remote(&self) -> bool {
        matches!(self.how, How::Ssh(_))
    }

    /// The program a launched child runs, when the launcher names one.
    pub(super) fn program(&self) -> Option<&PathBuf> {
        match &self.how {
            How::Local => None,
            How::Ssh(host) => host.program.as_ref(),
            How::Command(launcher) => launcher.program.as_ref(),
        }
    }

    /// The command that starts `words` (a program and its arguments, preceded by the
    /// variables it runs with) through the launcher; `None` for a local child.
    pub(super) fn launch(
        &self,
        words: &[OsString],
        keepalive: Option<Duration>,
    ) -> Option<Command> {
        match &self.how {
            How::Local => None,
            How::Ssh(host) => Some(host.command(&shell_words(words), keepalive)),
            How::Command(launcher) => {
                let mut command = Command::new(&launcher.argv[0]);
                command.args(&launcher.argv[1..]).args(words);
                Some(command)
            }
        }
    }

    /// The command that kills process group `pgid` where the launcher put it, if it can.
    pub(super) fn kill(&self, pgid: u32) -> Option<Command> {
        // `-s KILL`: dash's built-in `kill` (a login shell's, over ssh) takes no `-KILL --`.
        let words = ["kill", "-s", "KILL", "--", &format!("-{pgid}")].map(OsString::from);
        match &self.how {
            How::Local => None,
            How::Ssh(host) => Some(host.command(&shell_words(&words), None)),
            How::Command(launcher) => launcher.kill.as_ref().map(|prefix| {
                let mut command = Command::new(&prefix[0]);
                command.args(&prefix[1..]).args(words);
                command
            }),
        }
    }
}

impl From<SshHost> for Placement {
    fn from(host: SshHost) -> Self {
        Placement::ssh(host)
    }
}

impl From<CommandLauncher> for Placement {
    fn from(launcher: CommandLauncher) -> Self {
        Placement::command(launcher)
    }
}

/// A host reached by the OpenSSH client (`ssh`), with the client's usual configuration
/// (`~/.ssh/config`, agent, known hosts) plus what is set here. The client runs in batch
/// mode (it never asks for a password), with server-alive probes at the tree's keepalive
/// interval ([`Config::keepalive`](crate::Config::keepalive)) so that a dead link ends the
/// session.
#[derive(Debug, Clone)]
pub struct SshHost {
    destination: String,
    ssh: OsString,
    args: Vec<OsString>,
    program: Option<PathBuf>,
}

impl SshHost {
    /// The host `destination`, as `ssh` takes it (`host`, `user@host`, a `Host` alias of the
    /// client's configuration).
    pub fn new(destination: impl Into<String>) -> SshHost {
        SshHost {
            destination: destination.into(),
            ssh: "ssh".into(),
            args: Vec::new(),
            program: None,
        }
    }

    /// The ssh client to run (default `ssh`, found on `PATH`).
    #[must_use]
    pub fn ssh_program(mut self, program: impl Into<OsString>) -> SshHost {
        self.ssh = program.into();
        self
    }

    /// An option of the client's configuration (`-o`), such as `UserKnownHostsFile=/path`.
    #[must_use]
    pub fn option(mut self, option: impl Into<OsString>) -> SshHost {
        self.args.push("-o".into());
        self.args.push(option.into());
        self
    }

    /// The private key to log in with (`-i`).
    #[must_use]
    pub fn identity(mut self, key: impl Into<PathBuf>) -> SshHost {
        self.args.push("-i".into());
        self.args.push(key.into().into_os_string());
        self
    }

    /// The port of the host's ssh server (`-p`).
    #[must_use]
    pub fn port(mut self, port: u16) -> SshHost {
        self.args.push("-p".into());
        self.args.push(port.to_string().into());
        self
    }

    /// Any other argument for the client, before the destination.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> SshHost {
        self.args.push(arg.into());
        self
    }

    /// The program to run there (default: the path of this executable, for hosts that share
    /// it or have it at the same place).
    #[must_use]
    pub fn program(mut self, path: impl Into<PathBuf>) -> SshHost {
        self.program = Some(path.into());
        self
    }

    fn command(&self, remote: &OsStr, keepalive: Option<Duration>) -> Command {
        let mut command = Command::new(&self.ssh);
        // The user's options first: for ssh, the first value given for an option wins.
        command.args(&self.args).args(["-T", "-o", "BatchMode=yes"]);
        if let Some(every) = keepalive {
            let secs = every.as_secs().max(1);
            command.args([
                "-o".to_owned(),
                format!("ServerAliveInterval={secs}"),
                "-o".to_owned(),
                "ServerAliveCountMax=2".to_owned(),
                "-o".to_owned(),
                format!("ConnectTimeout={}", secs * 2),
            ]);
        }
        command.arg("--").arg(&self.destination).arg(remote);
        command
    }
}

/// A launcher of the user's choosing: a command (and its arguments) that runs the command
/// line it is given after them, where it places processes, with its standard input connected
/// to ours: `srun --ntasks=1`, `kubectl exec -i pod --`, `docker exec -i container`, or
/// `setsid --wait` to start a detached child on this host.
#[derive(Debug, Clone)]
pub struct CommandLauncher {
    argv: Vec<OsString>,
    kill: Option<Vec<OsString>>,
    program: Option<PathBuf>,
}

impl CommandLauncher {
    /// Runs children with `program`, which gets the child's command line as its last
    /// arguments.
    pub fn new(program: impl Into<OsString>) -> CommandLauncher {
        CommandLauncher {
            argv: vec![program.into()],
            kill: None,
            program: None,
        }
    }

    /// An argument for the launcher, before the child's command line.
    #[must_use]
    pub fn arg(mut self, arg: impl Into<OsString>) -> CommandLauncher {
        self.argv.push(arg.into());
        self
    }

    /// Arguments for the launcher, before the child's command line.
    #[must_use]
    pub fn args<I, S>(mut self, args: I) -> CommandLauncher
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.argv.extend(args.into_iter().map(Into::into));
        self
    }

    /// How to kill a child's process group where the launcher placed it: a command that runs
    /// `kill -s KILL -- -<pgid>` given after it (`kubectl exec pod --`). Without it, a child
    /// that outstays its grace period is ended by killing the launcher (and closing its
    /// control channel).
    #[must_use]
    pub fn kill_with<I, S>(mut self, prefix: I) -> CommandLauncher
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let prefix: Vec<OsString> = prefix.into_iter().map(Into::into).collect();
        self.kill = (!prefix.is_empty()).then_some(prefix);
        self
    }

    /// The program the child runs (default: the path of this executable).
    #[must_use]
    pub fn program(mut self, path: impl Into<PathBuf>) -> CommandLauncher {
        self.program = Some(path.into());
        self
    }
}

/// The command line a launched child runs: `env TRELLIS_ACTOR_LAUNCH=stdin K=V… program
/// args…`.
pub(super) fn launched_words(
    program: &OsStr,
    args: &[OsString],
    vars: &[(OsString, OsString)],
) -> Vec<OsString> {
    let mut words: Vec<OsString> = vec!["env".into(), format!("{LAUNCH_ENV}={FROM_STDIN}").into()];
    for (key, value) in vars {
        let mut word = key.clone();
        word.push("=");
        word.push(value);
        words.push(word);
    }
    words.push(program.to_owned());
    words.extend(args.iter().cloned());
    words
}

/// `words` as one command line for the remote user's login shell, which sshd runs the command
/// with (sh, dash, bash, zsh): each word that is not plainly safe goes in single quotes (a
/// word starting with `=` too, which zsh would expand).
fn shell_words(words: &[OsString]) -> OsString {
    let mut line = Vec::new();
    for (i, word) in words.iter().enumerate() {
        if i > 0 {
            line.push(b' ');
        }
        let bytes = word.as_bytes();
        let plain = !bytes.is_empty()
            && bytes[0] != b'='
            && bytes
                .iter()
                .all(|b| b.is_ascii_alphanumeric() || b"_-./=:@%+,".contains(b));
        if plain {
            line.extend_from_slice(bytes);
        } else {
            line.push(b'\'');
            for &b in bytes {
                if b == b'\'' {
                    line.extend_from_slice(b"'\\''");
                } else {
                    line.push(b);
                }
            }
            line.push(b'\'');
        }
    }
    OsString::from_vec(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shell_line_keeps_every_word_whole() {
        let words: Vec<OsString> = ["env", "A=b c", "it's", "", "/bin/x", "$HOME", "a\nb", "=x"]
            .map(OsString::from)
            .to_vec();
        let line = shell_words(&words);
        // The shell itself splits it back.
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for w in {}; do printf '<%s>' \"$w\"; done",
                line.to_str().unwrap()
            ))
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            "<env><A=b c><it's><></bin/x><$HOME><a\nb><=x>"
        );
    }

    #[test]
    fn a_launched_command_line_names_no_tree_detail() {
        let words = launched_words(
            OsStr::new("/bin/prog"),
            &["serve".into()],
            &[("RUST_LOG".into(), "debug".into())],
        );
        assert_eq!(
            words,
            [
                "env",
                "TRELLIS_ACTOR_LAUNCH=stdin",
                "RUST_LOG=debug",
                "/bin/prog",
                "serve"
            ]
            .map(OsString::from)
            .to_vec()
        );
    }
}
