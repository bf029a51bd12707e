//! Real OpenSSH servers for tests and benchmarks: keys made for the run, an `sshd` started in
//! a network namespace on one address (ended by its pid), and the client options that trust
//! exactly those keys. Self-contained (std and trellis-actor only): the benchmark runner
//! includes it by path.

#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use trellis_actor::SshHost;

/// Makes the run's keys in `dir`: the hosts' (one for every address in `addrs`), the
/// client's, and what each side trusts.
pub(crate) fn keys(dir: &Path, addrs: &[&str]) {
    let keygen = |file: &str| {
        let out = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(dir.join(file))
            .output()
            .expect("ssh-keygen runs");
        assert!(out.status.success(), "{out:?}");
        std::fs::read_to_string(dir.join(format!("{file}.pub"))).unwrap()
    };
    let host_key = keygen("host_key");
    let client_key = keygen("client_key");
    std::fs::write(dir.join("authorized_keys"), client_key).unwrap();
    let known: String = addrs
        .iter()
        .map(|addr| format!("{addr} {host_key}"))
        .collect();
    std::fs::write(dir.join("known_hosts"), known).unwrap();
}

/// `root@addr` as a launcher reaches it: the run's key and known hosts, nothing of the
/// user's ssh configuration.
pub(crate) fn host(addr: &str, dir: &Path) -> SshHost {
    SshHost::new(format!("root@{addr}"))
        .arg("-F")
        .arg("/dev/null")
        .identity(dir.join("client_key"))
        .option(format!(
            "UserKnownHostsFile={}",
            dir.join("known_hosts").display()
        ))
        .option("StrictHostKeyChecking=yes")
        .option("LogLevel=ERROR")
}

/// The same options for a plain `ssh` command line.
pub(crate) fn ssh_args(addr: &str, dir: &Path) -> Vec<String> {
    vec![
        "-F".into(),
        "/dev/null".into(),
        "-i".into(),
        dir.join("client_key").display().to_string(),
        "-o".into(),
        format!("UserKnownHostsFile={}", dir.join("known_hosts").display()),
        "-o".into(),
        "StrictHostKeyChecking=yes".into(),
        "-o".into(),
        "LogLevel=ERROR".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-T".into(),
        format!("root@{addr}"),
    ]
}

/// A real `sshd` in namespace `netns`, listening on `addr`; ended (by its pid) when dropped.
pub(crate) struct Sshd(pub(crate) Child);

impl Sshd {
    pub(crate) fn start(netns: &str, addr: &str, dir: &Path) -> Sshd {
        let config = dir.join(format!("sshd_config_{addr}"));
        std::fs::write(
            &config,
            format!(
                "ListenAddress {addr}\nPort 22\nHostKey {dir}/host_key\n\
                 AuthorizedKeysFile {dir}/authorized_keys\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n\
                 StrictModes no\nPidFile none\nClientAliveInterval 1\nClientAliveCountMax 3\n\
                 LogLevel ERROR\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        // sshd's privilege separation directory.
        std::fs::create_dir_all("/run/sshd").unwrap();
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "/usr/sbin/sshd", "-D", "-f"])
            .arg(&config)
            .stdin(Stdio::null())
            .spawn()
            .expect("sshd starts");
        // Listening once a connection to its port succeeds from its own namespace.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let probe = Command::new("ip")
                .args(["netns", "exec", netns, "bash", "-c"])
                .arg(format!("exec 3<>/dev/tcp/{addr}/22"))
                .stderr(Stdio::null())
                .status()
                .unwrap();
            if probe.success() {
                return Sshd(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("sshd exited: {status}");
            }
            assert!(Instant::now() < until, "sshd does not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        if self.0.try_wait().ok().flatten().is_none() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Whether OpenSSH's server is installed.
pub(crate) fn have_sshd() -> bool {
    Path::new("/usr/sbin/sshd").exists()
}
