//! A real etcd for tests (Debian's `etcd-server` and `etcd-client`, which `.ci/run`
//! installs): started on loopback ports with its data in a temporary directory, stopped by
//! its pid. Shared by the actor crate's tests and the `trellis` command's (by path).

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A real etcd on loopback ports (or in a network namespace, on an address of its), stopped
/// (by its pid) and its data removed when dropped.
pub(crate) struct EtcdServer {
    child: Option<Child>,
    dir: PathBuf,
    /// The namespace it runs in, if not this process's.
    netns: Option<String>,
    addr: String,
    client: u16,
    peer: u16,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl EtcdServer {
    pub(crate) fn start(tag: &str) -> EtcdServer {
        let dir = std::env::temp_dir().join(format!("trellis-etcd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = EtcdServer {
            child: None,
            dir,
            netns: None,
            addr: "127.0.0.1".into(),
            client: free_port(),
            peer: free_port(),
        };
        server.run();
        server
    }

    /// A server in namespace `netns`, listening on `addr` (the namespace's own: its usual
    /// ports are free).
    pub(crate) fn start_in(netns: &str, addr: &str, tag: &str) -> EtcdServer {
        let dir = std::env::temp_dir().join(format!("trellis-etcd-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let mut server = EtcdServer {
            child: None,
            dir,
            netns: Some(netns.to_owned()),
            addr: addr.to_owned(),
            client: 2379,
            peer: 2380,
        };
        server.run();
        server
    }

    pub(crate) fn endpoint(&self) -> String {
        format!("http://{}:{}", self.addr, self.client)
    }

    /// `program`, run in the server's namespace.
    fn command(&self, program: &str) -> Command {
        match &self.netns {
            Some(netns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", netns, program]);
                command
            }
            None => Command::new(program),
        }
    }

    /// Starts (or restarts, on the same data) the server, and waits until it answers.
    pub(crate) fn run(&mut self) {
        let peer = format!("http://{}:{}", self.addr, self.peer);
        let child = self
            .command("etcd")
            .arg("--name=trellis")
            .arg(format!("--data-dir={}", self.dir.display()))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=trellis={peer}"))
            .arg("--log-level=error")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("etcd starts (Debian's etcd-server; `.ci/run` installs it)");
        self.child = Some(child);
        let until = Instant::now() + Duration::from_secs(30);
        while !self.etcdctl(&["endpoint", "health"]).status.success() {
            assert!(Instant::now() < until, "etcd does not answer");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub(crate) fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if child.try_wait().ok().flatten().is_none() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    pub(crate) fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        self.command("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--dial-timeout=1s")
            .args(args)
            .output()
            .expect("etcdctl runs")
    }

    /// Revokes every lease: the keys under them go, as when leases expire.
    pub(crate) fn revoke_all(&self) {
        let out = self.etcdctl(&["lease", "list"]);
        let leases = String::from_utf8_lossy(&out.stdout).into_owned();
        let ids: Vec<&str> = leases.lines().skip(1).map(str::trim).collect();
        assert!(!ids.is_empty(), "{leases}");
        for id in ids {
            assert!(self.etcdctl(&["lease", "revoke", id]).status.success());
        }
    }

    /// The keys under `prefix`, as etcd itself lists them.
    pub(crate) fn keys(&self, prefix: &str) -> Vec<String> {
        let out = self.etcdctl(&["get", "--prefix", "--keys-only", prefix]);
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether etcd and etcdctl are here; says so when not.
pub(crate) fn have_etcd() -> bool {
    let found = Command::new("etcd").arg("--version").output().is_ok()
        && Command::new("etcdctl").arg("version").output().is_ok();
    if !found {
        eprintln!(
            "skipped: etcd and etcdctl are missing (`.ci/run` installs etcd-server and etcd-client)"
        );
    }
    found
}
