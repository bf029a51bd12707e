//! The examples with a fixed command line, run as a user runs them (cargo builds them before
//! the tests).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::etcd_server::{EtcdServer, have_etcd};
use common::netns::{ADDRS, Host, Net, can_make_hosts};
use common::sshd::{self, Sshd};

fn example(name: &str) -> PathBuf {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("the test executable");
    let profile = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target dir");
    let path = profile.join("examples").join(name);
    if !path.exists() {
        // `cargo test --test examples` alone does not build examples; `cargo test` does.
        let status = Command::new(env!("CARGO"))
            .args(["build", "-p", "trellis-actor", "--example", name])
            .status()
            .expect("run cargo");
        assert!(status.success(), "building example {name} failed");
    }
    assert!(path.exists(), "{} is not built", path.display());
    path
}

/// The flagship demo: every act tells its story, the failure arrives as its real type, the
/// crashed relay is restarted and its stream resumed, the supervisor that gives up shows every
/// cause, and every process is reaped.
#[test]
fn market_demo_tells_its_story_and_leaves_nothing() {
    let output = Command::new(example("market"))
        // As many developers keep it: the remote backtrace is in the tree, folded.
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run the market example");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for line in [
        "watch-acme (pid",
        "watch-globex (pid",
        "watch-initech (pid",
        "act 1 done: 4 processes reaped, 0 left",
        "watch-initech#",
        "call cancelled",
        "failed with BadTick: implausible quote",
        "it is a BadTick again on this side",
        "act 2 done: 4 processes torn down and reaped, 0 left",
        "died unexpectedly: exit status: 3",
        "and restarted relay-acme as pid",
        "none lost or repeated; 1 restart",
        "supervisor `market` gave up: 3 restarts within 5s (at most 2 allowed) (3 errors)",
        "act 4 done: 4 processes reaped, 0 left",
        "Remote backtrace:",
        "market::watch::",
        "frames hidden (runtime and std; RUST_BACKTRACE=full shows them)",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // The runtime's frames are folded away.
    assert!(!text.contains("tokio::runtime"), "{text}");
}

/// `docs/many-hosts.md`, run: the demo's root on one host, its feed on a second and its
/// workers on a third, started through ssh, their names kept in etcd. The hosts are network
/// namespaces made here, each other host with a real sshd.
#[test]
fn market_demo_on_three_hosts_with_etcd() {
    if !can_make_hosts() || !have_etcd() {
        return;
    }
    assert!(
        sshd::have_sshd(),
        "sshd is missing: `.ci/run` installs openssh-server"
    );
    let market = example("market");
    let dir = std::env::temp_dir().join(format!("trellis-market-hosts-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    sshd::keys(&dir, &ADDRS[1..]);
    // The guide's ssh configuration: the key, and the hosts it trusts.
    let ssh_config = dir.join("ssh_config");
    std::fs::write(
        &ssh_config,
        format!(
            "Host *\n  User root\n  IdentityFile {dir}/client_key\n  \
             UserKnownHostsFile {dir}/known_hosts\n  StrictHostKeyChecking yes\n  \
             LogLevel ERROR\n",
            dir = dir.display()
        ),
    )
    .unwrap();
    let net = Net::new("k");
    let _sshd = [
        Sshd::start(&net.names[1], ADDRS[1], &dir),
        Sshd::start(&net.names[2], ADDRS[2], &dir),
    ];
    let etcd = EtcdServer::start_in(&net.names[0], ADDRS[0], "market");
    let child = Command::new("ip")
        .args(["netns", "exec", &net.names[0]])
        .arg(&market)
        .args([
            "--listen",
            ADDRS[0],
            "--feed-on",
            ADDRS[1],
            "--workers-on",
            ADDRS[2],
        ])
        .arg("--ssh-config")
        .arg(&ssh_config)
        .args(["--etcd", &etcd.endpoint()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut root = Host::watch(child);
    let limit = Duration::from_secs(60);
    let first = root.expect("[", limit);
    assert!(
        first.contains(&format!("names are kept in etcd at {}", etcd.endpoint())),
        "{first}"
    );
    root.expect_containing("act 1 done", limit);
    assert_eq!(root.wait(limit), Some(0), "{:?}", root.seen);
    let text = root.seen.join("\n");
    eprintln!("{text}");
    for line in [
        "actor feed#",
        "watch-acme (pid",
        "watch-globex (pid",
        "watch-initech (pid",
        "act 1 done: 4 processes on other hosts ended",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    // Every actor removed its name; nothing is left on the hosts but their servers.
    assert_eq!(etcd.keys("/trellis/actors/"), Vec::<String>::new());
    for i in 1..3 {
        let left: Vec<u32> = net
            .pids(i)
            .into_iter()
            .filter(|p| {
                std::fs::read_to_string(format!("/proc/{p}/comm")).is_ok_and(|c| c.trim() != "sshd")
            })
            .collect();
        assert!(left.is_empty(), "processes left on host {i}: {left:?}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
