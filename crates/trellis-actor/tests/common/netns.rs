//! Hosts on one machine: network namespaces joined by veth pairs through a bridge, made and
//! removed by the test (it needs root, as CI has), and programs (this test binary in a
//! role) running in them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The hosts' addresses, in 10.77.0.0/24; host 0 holds the bridge.
pub(crate) const ADDRS: [&str; 3] = ["10.77.0.1", "10.77.0.2", "10.77.0.3"];

/// Three namespaces and their links; removed when dropped, whatever happened.
pub(crate) struct Net {
    pub(crate) names: [String; 3],
    tag: String,
}

/// Runs `ip` with `args`; panics with its message if it fails.
pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("ip runs");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    /// Host 0 holds a bridge; hosts 1 and 2 hang off it by veth pairs. `kind` (a letter or
    /// two) keeps the names of concurrent tests apart.
    pub(crate) fn new(kind: &str) -> Net {
        let tag = format!("t{kind}{}", std::process::id() % 100_000);
        let names = [0, 1, 2].map(|i| format!("{tag}h{i}"));
        let net = Net { names, tag };
        let [a, b, c] = &net.names;
        for ns in [a, b, c] {
            ip(&["netns", "add", ns]);
            ip(&["-n", ns, "link", "set", "lo", "up"]);
        }
        ip(&["-n", a, "link", "add", "br0", "type", "bridge"]);
        let bridge_addr = format!("{}/24", ADDRS[0]);
        ip(&["-n", a, "addr", "add", &bridge_addr, "dev", "br0"]);
        ip(&["-n", a, "link", "set", "br0", "up"]);
        for (i, ns) in [(1, b), (2, c)] {
            let (outer, inner) = (net.cable(i), format!("{}e{i}", net.tag));
            ip(&[
                "link", "add", &outer, "type", "veth", "peer", "name", &inner,
            ]);
            ip(&["link", "set", &outer, "netns", a]);
            ip(&["link", "set", &inner, "netns", ns]);
            ip(&["-n", a, "link", "set", &outer, "master", "br0"]);
            ip(&["-n", a, "link", "set", &outer, "up"]);
            let addr = format!("{}/24", ADDRS[i]);
            ip(&["-n", ns, "addr", "add", &addr, "dev", &inner]);
            ip(&["-n", ns, "link", "set", &inner, "up"]);
        }
        net
    }

    /// The bridge's end of host `i`'s cable.
    fn cable(&self, i: usize) -> String {
        format!("{}b{i}", self.tag)
    }

    /// Cuts host `i`'s cable (at the bridge): no packet in or out, no reset, no goodbye.
    pub(crate) fn cut(&self, i: usize) {
        ip(&["-n", &self.names[0], "link", "set", &self.cable(i), "down"]);
    }

    /// The processes in host `i`'s namespace.
    pub(crate) fn pids(&self, i: usize) -> Vec<u32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.names[i]])
            .output()
            .expect("ip runs");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in &self.names {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

/// A program running in a namespace; its output lines arrive on a channel.
pub(crate) struct Host {
    pub(crate) child: Child,
    lines: mpsc::Receiver<String>,
    pub(crate) seen: Vec<String>,
}

impl Host {
    /// Runs this test binary's test `test` in host `i`'s namespace, with `envs`.
    pub(crate) fn start(net: &Net, i: usize, test: &str, envs: &[(&str, String)]) -> Host {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &net.names[i]])
            .arg(std::env::current_exe().unwrap())
            .args([test, "--exact", "--nocapture", "-q"])
            .envs(envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped());
        Host::watch(cmd.spawn().expect("ip netns exec runs"))
    }

    /// Reads `child`'s standard output, line by line.
    pub(crate) fn watch(mut child: Child) -> Host {
        let out = BufReader::new(child.stdout.take().expect("a piped output"));
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in out.lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Host {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Waits for a line starting with `prefix`, at most `limit`; returns it.
    pub(crate) fn expect(&mut self, prefix: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        if let Some(line) = self.seen.iter().find(|l| l.starts_with(prefix)) {
            return line.clone();
        }
        loop {
            match self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Err(_) => panic!("no line {prefix:?} within {limit:?}; saw {:?}", self.seen),
            }
        }
    }

    /// Waits for a line containing `part`, at most `limit`; returns it.
    pub(crate) fn expect_containing(&mut self, part: &str, limit: Duration) -> String {
        let until = Instant::now() + limit;
        if let Some(line) = self.seen.iter().find(|l| l.contains(part)) {
            return line.clone();
        }
        loop {
            match self
                .lines
                .recv_timeout(until.saturating_duration_since(Instant::now()))
            {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(part) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {part:?} within {limit:?}; saw {:?}",
                    self.seen
                ),
            }
        }
    }

    /// Sends it SIGINT (`ip netns exec` execs the program: it is our child).
    pub(crate) fn interrupt(&self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
    }

    pub(crate) fn wait(&mut self, limit: Duration) -> Option<i32> {
        super::exit_code_within(&mut self.child, limit)
            .unwrap_or_else(|| panic!("did not exit within {limit:?}; saw {:?}", self.seen))
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        super::kill_unless_exited(&mut self.child);
    }
}

/// Whether the effective user is root (`/proc/self/status`, line `Uid: real effective …`).
pub(crate) fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|status| {
        status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|ids| ids.split_whitespace().nth(1).map(|e| e == "0"))
            .unwrap_or(false)
    })
}

/// Whether network namespaces can be made here (root and iproute2); says so when not.
pub(crate) fn can_make_hosts() -> bool {
    let can = is_root() && Command::new("ip").arg("-V").output().is_ok();
    if !can {
        eprintln!("skipped: network namespaces need root and iproute2");
    }
    can
}
