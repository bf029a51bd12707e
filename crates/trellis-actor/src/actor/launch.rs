//! A child actor started through a launcher (ssh, a cluster's own command) rather than by its
//! parent directly. Its command line says only that it was launched; who it is, where its
//! parent listens and the tree's secret come through its standard input as a *launch block*,
//! and the input then stays open as the control channel: when it closes (the ssh session
//! ended, the launcher was killed, the parent died) the child exits, as Erlang's `peer` nodes
//! do.
//!
//! The block is text, one item per line:
//!
//! ```text
//! trellis-launch 1
//! var TRELLIS_ACTOR_NAME 776f726b6572        (a variable: its name, its value in hex)
//! secret 8f3a…                               (the tree's secret in hex)
//! end
//! ```

use std::io::{BufRead, Read};

use crate::secret::Secret;

/// The variable, on the launched command line (not secret), that makes a program a launched
/// child; its value says where the block comes from.
pub(crate) const LAUNCH_ENV: &str = "TRELLIS_ACTOR_LAUNCH";
/// The only source of a launch block today: standard input.
pub(crate) const FROM_STDIN: &str = "stdin";

const HEADER: &str = "trellis-launch 1";
/// Bounds on what a launched child reads before it knows its parent.
const MAX_LINE: u64 = 8 * 1024;
const MAX_LINES: usize = 64;

/// What a parent tells a child it launches.
pub(crate) struct Launch {
    pub(crate) vars: Vec<(String, String)>,
    pub(crate) secret: Secret,
}

impl Launch {
    /// The block, as the parent writes it.
    pub(crate) fn encode(&self) -> String {
        let mut block = format!("{HEADER}\n");
        for (name, value) in &self.vars {
            block.push_str(&format!("var {name} {}\n", hex(value.as_bytes())));
        }
        block.push_str(&format!("secret {}", self.secret.handoff()));
        block.push_str("end\n");
        block
    }

    /// Reads a block up to its `end` line; nothing after it is consumed from `from`'s
    /// underlying stream beyond what `from` buffers.
    pub(crate) fn read(from: &mut impl BufRead) -> Result<Launch, String> {
        let mut vars = Vec::new();
        let mut secret = None;
        let mut line = Vec::new();
        for index in 0..MAX_LINES {
            line.clear();
            from.by_ref()
                .take(MAX_LINE)
                .read_until(b'\n', &mut line)
                .map_err(|e| format!("reading the launch block: {e}"))?;
            if line.last() != Some(&b'\n') {
                return Err("the launch block ended early or has a line too long".into());
            }
            let text = std::str::from_utf8(&line[..line.len() - 1])
                .map_err(|_| "the launch block is not text".to_owned())?;
            if index == 0 {
                if text != HEADER {
                    return Err(format!("not a launch block: {text:?}"));
                }
                continue;
            }
            let mut words = text.split(' ');
            match (words.next(), words.next(), words.next(), words.next()) {
                (Some("end"), None, None, None) => {
                    let secret = secret.ok_or("the launch block has no secret")?;
                    return Ok(Launch { vars, secret });
                }
                (Some("var"), Some(name), Some(value), None) if is_var_name(name) => {
                    let value = String::from_utf8(unhex(value)?)
                        .map_err(|_| format!("variable {name} is not text"))?;
                    vars.push((name.to_owned(), value));
                }
                (Some("secret"), Some(value), None, None) => {
                    secret = Some(Secret::new(unhex(value)?).map_err(|e| e.to_string())?);
                }
                _ => return Err(format!("bad launch block line {}", index + 1)),
            }
        }
        Err(format!("the launch block has more than {MAX_LINES} lines"))
    }

    /// The value of variable `name`.
    pub(crate) fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Watches the control channel (standard input, after the block) on a thread of its own; the
/// receiver completes when it closes or fails. `None` when no thread could be started (the
/// connection to the parent still ends the child).
pub(crate) fn watch_control() -> Option<tokio::sync::oneshot::Receiver<()>> {
    let (closed, watch) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("trellis-control".into())
        .spawn(move || {
            let mut stdin = std::io::stdin();
            let mut buf = [0u8; 256];
            // Whatever the parent sends later is ignored; only the end counts.
            loop {
                match stdin.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            let _ = closed.send(());
        })
        .ok()?;
    Some(watch)
}

fn is_var_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_')
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Result<Vec<u8>, String> {
    if text.len() % 2 != 0 {
        return Err("an odd number of hex digits".into());
    }
    (0..text.len())
        .step_by(2)
        .map(|i| {
            text.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<Vec<u8>>>()
        .ok_or_else(|| "not hex digits".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block() -> Launch {
        Launch {
            vars: vec![
                ("TRELLIS_ACTOR_NAME".into(), "wörker one".into()),
                ("TRELLIS_ACTOR_UID".into(), String::new()),
            ],
            secret: Secret::new(*b"0123456789abcdef0123").unwrap(),
        }
    }

    #[test]
    fn a_block_reads_back_and_leaves_the_rest_of_the_stream() {
        let mut bytes = block().encode().into_bytes();
        bytes.extend_from_slice(b"after");
        let mut from = std::io::Cursor::new(bytes);
        let launch = Launch::read(&mut from).unwrap();
        assert_eq!(launch.var("TRELLIS_ACTOR_NAME"), Some("wörker one"));
        assert_eq!(launch.var("TRELLIS_ACTOR_UID"), Some(""));
        assert_eq!(launch.var("TRELLIS_ACTOR_ROOT"), None);
        assert_eq!(launch.secret.handoff(), block().secret.handoff());
        let mut rest = String::new();
        from.read_to_string(&mut rest).unwrap();
        assert_eq!(rest, "after");
    }

    #[test]
    fn bad_blocks_are_refused_with_a_reason() {
        let good = block().encode();
        let cases = [
            String::new(),
            "trellis-launch 2\nend\n".into(),
            good.replace("\nend\n", "\n"),
            good.replace("secret", "secrets"),
            good.replace("var TRELLIS_ACTOR_UID ", "var lower "),
            good.replace("var TRELLIS_ACTOR_UID \n", "var TRELLIS_ACTOR_UID 0\n"),
            good.replace("var TRELLIS_ACTOR_UID \n", "var TRELLIS_ACTOR_UID zz\n"),
            format!("{HEADER}\nvar A {}\nend\n", "0".repeat(20_000)),
            format!("{HEADER}\n{}", "var A 00\n".repeat(100)),
            format!("{HEADER}\nvar A 00\nend\n"),
            format!("{HEADER}\nsecret 00\nend\n"),
        ];
        for case in cases {
            let outcome = Launch::read(&mut std::io::Cursor::new(case.as_bytes()));
            assert!(outcome.is_err(), "accepted {case:?}");
        }
    }
}
