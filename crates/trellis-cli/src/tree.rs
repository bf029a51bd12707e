//! Drawing the tree: actors under their parents, roots in registration order.

use std::collections::HashMap;
use std::fmt::Write;

use trellis_actor::{ActorInfo, Addr, Registered};

/// One line per actor, children indented under their parent with box-drawing lines.
pub(crate) fn draw(registrar: &Addr, actors: &[(Registered, Result<ActorInfo, String>)]) -> String {
    let mut out = format!(
        "registrar {registrar}: {} actor{}\n",
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
    for &root in &roots {
        line(&mut out, "", "", &actors[root]);
        walk(&mut out, root, "", actors, &children, 0);
    }
    out
}

fn walk(
    out: &mut String,
    node: usize,
    prefix: &str,
    actors: &[(Registered, Result<ActorInfo, String>)],
    children: &HashMap<usize, Vec<usize>>,
    depth: usize,
) {
    let Some(kids) = children.get(&node) else {
        return;
    };
    // A parent pointer cycle cannot come from a live tree; stop rather than loop.
    if depth > actors.len() {
        return;
    }
    for (k, &kid) in kids.iter().enumerate() {
        let last = k + 1 == kids.len();
        let (branch, next) = if last {
            ("└── ", "    ")
        } else {
            ("├── ", "│   ")
        };
        line(out, prefix, branch, &actors[kid]);
        walk(
            out,
            kid,
            &format!("{prefix}{next}"),
            actors,
            children,
            depth + 1,
        );
    }
}

fn line(
    out: &mut String,
    prefix: &str,
    branch: &str,
    actor: &(Registered, Result<ActorInfo, String>),
) {
    let (registered, info) = actor;
    let _ = match info {
        Ok(info) => writeln!(
            out,
            "{prefix}{branch}{}  pid {}  host {}  {}  up {}  calls {} in / {} out  streams {}",
            info.id,
            info.pid,
            info.host,
            info.addr,
            uptime(info.uptime_ms),
            info.serving,
            info.calling,
            info.streams
        ),
        Err(reason) => writeln!(
            out,
            "{prefix}{branch}{}  {}  (no answer: {reason})",
            registered.id, registered.addr
        ),
    };
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
        let drawn = draw(&"unix:/tmp/root.sock".parse().unwrap(), &actors);
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
}
