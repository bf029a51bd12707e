//! Drawing the tree: actors under their parents, roots in registration order.

use std::collections::HashMap;
use std::fmt::Write;

use trellis_actor::{ActorDump, ActorInfo, Registered, StreamInfo, SupervisedChild};

use crate::args::Registry;

/// One registered actor with its `trellis.info` answer, or why there was none.
pub(crate) type Described = (Registered, Result<ActorInfo, String>);

/// What the registrar listed, each described.
pub(crate) type Snapshot = Vec<Described>;

/// Every actor's dump as one tree (actors under their parents, each one's tasks under it),
/// then the actors that did not answer.
pub(crate) fn draw_dumps(
    registry: &Registry,
    dumps: &[(Registered, Result<ActorDump, String>)],
    all: bool,
) -> String {
    let mut out = format!(
        "{}: {} actor{}\n",
        source(registry),
        dumps.len(),
        if dumps.len() == 1 { "" } else { "s" }
    );
    let answered: Vec<ActorDump> = dumps
        .iter()
        .filter_map(|(_, d)| d.as_ref().ok().cloned())
        .collect();
    out.push_str(&if all {
        trellis_actor::draw_all_dumps(&answered)
    } else {
        trellis_actor::draw_dumps(&answered)
    });
    for (registered, dump) in dumps {
        if let Err(reason) = dump {
            let _ = writeln!(out, "actor {}: {reason}", registered.id);
        }
    }
    out
}

fn source(registry: &Registry) -> String {
    match registry {
        Registry::Registrar(addr) => format!("registrar {addr}"),
        Registry::Etcd { endpoints, prefix } => format!("etcd {endpoints} {prefix}"),
    }
}

/// One line per actor, children indented under their parent with box-drawing lines.
pub(crate) fn draw(
    registry: &Registry,
    actors: &[(Registered, Result<ActorInfo, String>)],
) -> String {
    draw_since(registry, actors, None)
}

/// [`draw`], with each stream's items per second since `previous`, an earlier snapshot taken
/// that long before.
pub(crate) fn draw_since(
    registry: &Registry,
    actors: &[(Registered, Result<ActorInfo, String>)],
    previous: Option<(&[Described], std::time::Duration)>,
) -> String {
    let rates = previous.map(|(before, elapsed)| Rates::between(before, actors, elapsed));
    let source = source(registry);
    let mut out = format!(
        "{source}: {} actor{}\n",
        actors.len(),
        if actors.len() == 1 { "" } else { "s" }
    );
    let known: HashMap<&str, usize> = actors
        .iter()
        .enumerate()
        .map(|(i, (r, _))| (r.id.uid.as_str(), i))
        .collect();
    let mut children: HashMap<usize, Vec<usize>> = HashMap::new();
    let mut roots = Vec::new();
    for (i, (_, info)) in actors.iter().enumerate() {
        let parent = info
            .as_ref()
            .ok()
            .and_then(|info| info.parent.as_deref())
            .and_then(|p| known.get(p));
        match parent {
            Some(&p) if p != i => children.entry(p).or_default().push(i),
            _ => roots.push(i),
        }
    }
    let draw = Draw {
        actors,
        children: &children,
        rates: rates.as_ref(),
    };
    for &root in &roots {
        draw.line(&mut out, "", "", root, None);
        draw.walk(&mut out, root, "", 0);
    }
    out
}

/// Items per second of each stream, by (actor uid, peer, call id): (sent, received).
struct Rates(HashMap<(String, String, u64), (f64, f64)>);

impl Rates {
    fn between(
        before: &[(Registered, Result<ActorInfo, String>)],
        now: &[(Registered, Result<ActorInfo, String>)],
        elapsed: std::time::Duration,
    ) -> Rates {
        let secs = elapsed.as_secs_f64().max(1e-3);
        let counts = |actors: &[(Registered, Result<ActorInfo, String>)]| {
            let mut counts = HashMap::new();
            for (registered, info) in actors {
                for s in info.iter().flat_map(|i| &i.stream_stats) {
                    let key = (registered.id.uid.clone(), s.peer.clone(), s.cid);
                    counts.insert(key, (s.sent, s.received));
                }
            }
            counts
        };
        let before = counts(before);
        Rates(
            counts(now)
                .into_iter()
                .map(|(key, (sent, received))| {
                    let (s0, r0) = before.get(&key).copied().unwrap_or((0, 0));
                    let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
                    (key, (rate(sent, s0), rate(received, r0)))
                })
                .collect(),
        )
    }
}

/// What drawing needs throughout.
struct Draw<'a> {
    actors: &'a [(Registered, Result<ActorInfo, String>)],
    children: &'a HashMap<usize, Vec<usize>>,
    rates: Option<&'a Rates>,
}

/// One snapshot as JSON: `{"registrar" | "etcd", "actors": [{"name", "uid", "addr", "info" | "error"}]}`,
/// `info` as `trellis.info` answered it.
pub(crate) fn json(
    registry: &Registry,
    actors: &[(Registered, Result<ActorInfo, String>)],
) -> String {
    json_of(registry, actors, "info", |info| serde_json::to_value(info))
}

/// [`json`] for any answer: each actor's under `key` (`value` makes it JSON), or its
/// `error`.
pub(crate) fn json_of<T>(
    registry: &Registry,
    actors: &[(Registered, Result<T, String>)],
    key: &str,
    value: fn(&T) -> serde_json::Result<serde_json::Value>,
) -> String {
    let actors: Vec<serde_json::Value> = actors
        .iter()
        .map(|(registered, info)| {
            let mut entry = serde_json::json!({
                "name": registered.id.name,
                "uid": registered.id.uid,
                "addr": registered.addr.to_string(),
            });
            match info {
                Ok(answer) => entry[key] = value(answer).unwrap_or_default(),
                Err(reason) => entry["error"] = serde_json::Value::from(reason.as_str()),
            }
            entry
        })
        .collect();
    let snapshot = match registry {
        Registry::Registrar(addr) => serde_json::json!({
            "registrar": addr.to_string(),
            "actors": actors,
        }),
        Registry::Etcd { endpoints, prefix } => serde_json::json!({
            "etcd": { "endpoints": endpoints, "prefix": prefix },
            "actors": actors,
        }),
    };
    format!("{snapshot:#}\n")
}

/// What `parent`'s supervisors say of their child `name`.
fn supervised<'a>(
    parent: &'a (Registered, Result<ActorInfo, String>),
    name: &str,
) -> Option<&'a SupervisedChild> {
    let info = parent.1.as_ref().ok()?;
    info.supervised.iter().find(|c| c.name == name)
}

/// The supervised children of `parent` that no registered actor stands for (down, between
/// two runs).
fn down_children<'a>(
    parent: &'a (Registered, Result<ActorInfo, String>),
    kids: &[usize],
    actors: &[(Registered, Result<ActorInfo, String>)],
) -> Vec<&'a SupervisedChild> {
    let Ok(info) = &parent.1 else {
        return Vec::new();
    };
    info.supervised
        .iter()
        .filter(|c| !kids.iter().any(|&k| actors[k].0.id.name == c.name))
        .collect()
}

/// `  restarts N (last: CAUSE)`, when there were restarts.
fn restarts(child: Option<&SupervisedChild>) -> String {
    match child {
        Some(c) if c.restarts > 0 => match &c.last_cause {
            Some(cause) => format!("  restarts {} (last: {cause})", c.restarts),
            None => format!("  restarts {}", c.restarts),
        },
        _ => String::new(),
    }
}

impl Draw<'_> {
    fn walk(&self, out: &mut String, node: usize, prefix: &str, depth: usize) {
        let actors = self.actors;
        let kids = self.children.get(&node).map_or(&[][..], Vec::as_slice);
        // A parent pointer cycle cannot come from a live tree; stop rather than loop.
        if depth > actors.len() {
            return;
        }
        let down = down_children(&actors[node], kids, actors);
        for (k, &kid) in kids.iter().enumerate() {
            let last = k + 1 == kids.len() && down.is_empty();
            let (branch, next) = if last {
                ("└── ", "    ")
            } else {
                ("├── ", "│   ")
            };
            let status = supervised(&actors[node], &actors[kid].0.id.name);
            self.line(out, prefix, branch, kid, status);
            self.walk(out, kid, &format!("{prefix}{next}"), depth + 1);
        }
        for (k, child) in down.iter().enumerate() {
            let branch = if k + 1 == down.len() {
                "└── "
            } else {
                "├── "
            };
            let _ = writeln!(
                out,
                "{prefix}{branch}{}  ({} under supervisor {}){}",
                child.name,
                child.state,
                child.supervisor,
                restarts(Some(child))
            );
        }
    }

    fn line(
        &self,
        out: &mut String,
        prefix: &str,
        branch: &str,
        node: usize,
        supervised: Option<&SupervisedChild>,
    ) {
        let (registered, info) = &self.actors[node];
        let info = match info {
            Ok(info) => info,
            Err(reason) => {
                let _ = writeln!(
                    out,
                    "{prefix}{branch}{}  {}  (no answer: {reason})",
                    registered.id, registered.addr
                );
                return;
            }
        };
        let _ = writeln!(
            out,
            "{prefix}{branch}{}  pid {}  host {}  {}  up {}  calls {} in / {} out  streams {}{}",
            info.id,
            info.pid,
            info.host,
            info.addr,
            uptime(info.uptime_ms),
            info.serving,
            info.calling,
            info.streams,
            restarts(supervised),
        );
        // The actor's streams, under its line (and above its children's).
        let under = match branch {
            "├── " => "│   ",
            "└── " => "    ",
            _ => "",
        };
        let has_children = self.children.get(&node).is_some_and(|k| !k.is_empty());
        let bar = if has_children { "│ " } else { "  " };
        for stream in &info.stream_stats {
            let rate = self.rates.and_then(|r| {
                r.0.get(&(registered.id.uid.clone(), stream.peer.clone(), stream.cid))
            });
            let _ = writeln!(out, "{prefix}{under}{bar} {}", stream_line(stream, rate));
        }
    }
}

/// `context #3 (caller) with feed#1a2b: sent 10, received 4,096, unread 12, credit waits 2`,
/// with items per second when known.
fn stream_line(stream: &StreamInfo, rate: Option<&(f64, f64)>) -> String {
    let mut text = format!(
        "{} #{} ({}) with {}: sent {}, received {}, unread {}, credit waits {}",
        stream.kind,
        stream.cid,
        stream.role,
        stream.peer,
        stream.sent,
        stream.received,
        stream.unread,
        stream.credit_waits
    );
    if let Some((sent, received)) = rate {
        let _ = write!(text, "  ({sent:.0}/s out, {received:.0}/s in)");
    }
    text
}

fn uptime(ms: u64) -> String {
    match ms {
        0..=59_999 => format!("{:.1}s", ms as f64 / 1000.0),
        60_000..=3_599_999 => format!("{}m{:02}s", ms / 60_000, ms / 1000 % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, ms / 60_000 % 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_actor::ActorId;

    fn actor(
        name: &str,
        uid: &str,
        parent: Option<&str>,
    ) -> (Registered, Result<ActorInfo, String>) {
        let id = ActorId::new(name, uid);
        let addr = format!("unix:/tmp/{name}.sock");
        (
            Registered {
                id: id.clone(),
                addr: addr.parse().unwrap(),
            },
            Ok(ActorInfo {
                id,
                pid: 7,
                host: "h".into(),
                addr,
                parent: parent.map(str::to_owned),
                uptime_ms: 61_500,
                serving: 1,
                calling: 2,
                streams: 3,
                supervised: Vec::new(),
                stream_stats: Vec::new(),
            }),
        )
    }

    #[test]
    fn children_are_drawn_under_their_parents() {
        let actors = vec![
            actor("root", "r0000000", None),
            actor("a", "a0000000", Some("r0000000")),
            actor("b", "b0000000", Some("r0000000")),
            actor("a1", "a1000000", Some("a0000000")),
            (
                Registered {
                    id: ActorId::new("gone", "g0000000"),
                    addr: "unix:/tmp/gone.sock".parse().unwrap(),
                },
                Err("connection refused".into()),
            ),
        ];
        let drawn = draw(
            &Registry::Registrar("unix:/tmp/root.sock".parse().unwrap()),
            &actors,
        );
        let shape: Vec<String> = drawn
            .lines()
            .map(|l| l.find('#').map_or(l, |i| &l[..i + 9]).to_owned())
            .collect();
        assert_eq!(
            shape,
            [
                "registrar unix:/tmp/root.sock: 5 actors",
                "root#r0000000",
                "├── a#a0000000",
                "│   └── a1#a1000000",
                "└── b#b0000000",
                "gone#g0000000",
            ]
        );
        assert!(
            drawn.contains(
                "pid 7  host h  unix:/tmp/a.sock  up 1m01s  calls 1 in / 2 out  streams 3"
            )
        );
        assert!(drawn.contains("(no answer: connection refused)"));
    }

    /// A supervisor's children show their restarts and last cause; one that is down (no
    /// registered actor stands for it) is drawn as such under its parent.
    #[test]
    fn supervised_children_show_their_restarts() {
        let child = |name: &str, restarts, state: &str| SupervisedChild {
            name: name.into(),
            supervisor: "market".into(),
            restarts,
            last_cause: Some("actor died unexpectedly: signal: 9 (SIGKILL)".into()),
            state: state.into(),
        };
        let mut root = actor("root", "r0000000", None);
        if let Ok(info) = &mut root.1 {
            info.supervised = vec![child("relay", 2, "running"), child("feed", 1, "restarting")];
        }
        let actors = vec![root, actor("relay", "e0000000", Some("r0000000"))];
        let drawn = draw(
            &Registry::Registrar("unix:/tmp/root.sock".parse().unwrap()),
            &actors,
        );
        let lines: Vec<&str> = drawn.lines().collect();
        assert!(lines[2].starts_with("├── relay#e0000000"), "{drawn}");
        assert!(
            lines[2].ends_with("restarts 2 (last: actor died unexpectedly: signal: 9 (SIGKILL))"),
            "{drawn}"
        );
        assert_eq!(
            lines[3],
            "└── feed  (restarting under supervisor market)  restarts 1 \
             (last: actor died unexpectedly: signal: 9 (SIGKILL))"
        );
    }

    /// An actor's open streams are drawn under it, with items per second between two
    /// snapshots (`--watch`).
    #[test]
    fn streams_are_drawn_with_their_rates() {
        let stream = |sent, received| StreamInfo {
            peer: "feed#f0000000".into(),
            cid: 3,
            kind: "context".into(),
            role: "caller".into(),
            sent,
            received,
            unread: 12,
            credit_waits: 2,
        };
        let with = |sent, received| {
            let mut a = actor("root", "r0000000", None);
            a.1.as_mut().unwrap().stream_stats = vec![stream(sent, received)];
            vec![a, actor("feed", "f0000000", Some("r0000000"))]
        };
        let registrar = Registry::Registrar("unix:/tmp/root.sock".parse().unwrap());
        let (before, now) = (with(10, 1000), with(10, 3000));
        let once = draw(&registrar, &now);
        let lines: Vec<&str> = once.lines().collect();
        assert_eq!(
            lines[2],
            "│  context #3 (caller) with feed#f0000000: sent 10, received 3000, unread 12, \
             credit waits 2"
        );
        assert!(lines[3].starts_with("└── feed#f0000000"), "{once}");
        let watched = draw_since(
            &registrar,
            &now,
            Some((&before, std::time::Duration::from_secs(2))),
        );
        assert!(
            watched.contains("credit waits 2  (0/s out, 1000/s in)"),
            "{watched}"
        );
    }
}
