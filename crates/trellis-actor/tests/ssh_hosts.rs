//! Children on other hosts through OpenSSH: three network namespaces made by the test, a
//! real `sshd` in two of them (keys made for the run), and a root in the third that spawns
//! its children there with `Placement::ssh`. Calls, a stream, a remote error and a
//! cancellation cross; a supervised child whose ssh session is killed exits there and is
//! started again; a child behind a cut link exits within the keepalive bound while its
//! parent gets a typed error; and no process is left in any namespace. Erlang's `peer`
//! module is the model (`peer_SUITE`: `dist`, `shutdown_halt`, `control_connection`);
//! tractor has no remote spawning to port.

mod common;

use std::convert::Infallible;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::netns::{ADDRS, Host, Net, can_make_hosts};
use common::sshd::{self, Sshd};
use trellis::supervisor::{Restart, Strategy, Supervision};
use trellis_actor::{
    ActorError, Config, Functions, MsgStream, Placement, RemoteActorError, SshHost, Transport,
    open_nursery, open_supervisor,
};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

async fn fail(why: String) -> Result<(), trellis::Error> {
    Err(trellis::Error::msg(why))
}

async fn count_to(stream: MsgStream<Infallible, u64>, n: u64) -> Result<(), trellis::Error> {
    for i in 1..=n {
        stream.send(i).await?;
    }
    Ok(())
}

async fn nap() -> Result<(), trellis::Error> {
    trellis::sleep_forever().await?;
    Ok(())
}

/// Where this actor listens.
async fn address() -> Result<String, trellis::Error> {
    Ok(trellis_actor::current().addr().to_string())
}

/// How soon a dead link is noticed (about twice this), by TCP and by ssh.
const KEEPALIVE: Duration = Duration::from_secs(1);

fn config() -> Config {
    Config::new(
        Functions::new()
            .register(add)
            .register(fail)
            .register(count_to)
            .register(nap)
            .register(address),
    )
    .keepalive(Some(KEEPALIVE))
    .grace_period(Duration::from_secs(1))
    .child_args(["serve_children", "--exact", "--nocapture", "-q"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// Host `i` as the root reaches it.
fn host(i: usize) -> SshHost {
    let dir = PathBuf::from(std::env::var("TRELLIS_SSH_DIR").expect("the keys' directory"));
    sshd::host(ADDRS[i], &dir)
}

/// Whether process `pid` runs (a zombie does not count).
fn runs(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
            != Some("Z")
    })
}

/// Waits (a bounded while, without blocking the runtime) until process `pid` is gone.
async fn gone(pid: u32, limit: Duration) -> Result<bool, trellis::Error> {
    let until = Instant::now() + limit;
    while runs(pid) {
        if Instant::now() > until {
            return Ok(false);
        }
        trellis::sleep(Duration::from_millis(20)).await?;
    }
    Ok(true)
}

/// This process's `ssh` clients to `addr` (its children, by their command lines).
fn ssh_clients_to(addr: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return found;
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let words: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            let is_ssh = words.first().is_some_and(|w| w.ends_with(b"ssh"));
            let to_addr = words
                .iter()
                .any(|w| *w == format!("root@{addr}").as_bytes());
            if is_ssh && to_addr {
                found.push(pid);
            }
        }
    }
    found
}

fn first_death(error: &trellis::Error) -> Option<String> {
    let typed = match error.as_group() {
        Some(group) => group.leaves().find_map(|e| e.downcast_ref::<ActorError>()),
        None => error.downcast_ref::<ActorError>(),
    };
    match typed {
        Some(died @ ActorError::Died { .. }) => Some(died.to_string()),
        _ => None,
    }
}

/// The root, in host 0: children in hosts 1 and 2.
#[test]
fn ssh_root_program() {
    if std::env::var_os("TRELLIS_SSH_DIR").is_none() {
        return;
    }
    let transport = Transport::Tcp {
        bind: ADDRS[0].parse().unwrap(),
    };
    let outcome = common::root_with(config(), transport, || async {
        // Calls, a stream, an error and a cancellation, to two hosts.
        open_nursery(|an| async move {
            let left = an.start_actor_on("left", &host(1).into()).await?;
            let right = an.start_actor_on("right", &host(2).into()).await?;
            println!("left at {}", left.run(address, ()).await?);
            println!("right at {}", right.run(address, ()).await?);
            assert_eq!(
                left.run(add, (2, 3)).await? + right.run(add, (4, 5)).await?,
                14
            );
            let items = left
                .open_stream_from(count_to, (1000,), |stream| async move {
                    let mut items = Vec::new();
                    while let Some(i) = stream.recv().await? {
                        items.push(i);
                    }
                    Ok(items)
                })
                .await?;
            assert_eq!(items, (1..=1000).collect::<Vec<u64>>());
            let Err(ActorError::Remote(remote)) = right.run(fail, ("over ssh".to_owned(),)).await
            else {
                panic!("a remote error");
            };
            let remote = remote.get().downcast_ref::<RemoteActorError>().unwrap();
            assert!(remote.to_string().contains("over ssh"), "{remote}");
            let napped = trellis::move_on_after(Duration::from_millis(100), right.run(nap, ()));
            assert!(napped.await?.is_none());
            assert_eq!(right.run(add, (1, 1)).await?, 2);
            println!("calls, a stream, an error and a cancellation crossed");
            Ok(())
        })
        .await?;

        // The ssh session of a supervised child is killed: the child there exits, and is
        // started again.
        open_supervisor(Supervision::new(Strategy::OneForOne), |sup| async move {
            let placement = Placement::ssh(host(1));
            let worker = sup
                .start_actor_on("worker", Restart::Permanent, placement)
                .await?;
            let first = worker.portal().await?.pid();
            let sessions = ssh_clients_to(ADDRS[1]);
            assert_eq!(sessions.len(), 1, "one ssh session: {sessions:?}");
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(sessions[0] as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            assert!(gone(first, KEEPALIVE * 15).await?, "the remote child exits");
            println!("the remote child exited with its ssh session");
            let second = loop {
                match worker.run(add, (1, 2)).await {
                    Ok(3) => break worker.portal().await?.pid(),
                    Ok(other) => panic!("{other}"),
                    Err(e) => assert!(matches!(e, ActorError::Died { .. }), "{e}"),
                }
            };
            assert_ne!(first, second);
            let cause = sup.children()[0].last_cause.clone().unwrap_or_default();
            println!("restarted on its host after: {cause}");
            sup.shutdown();
            Ok(())
        })
        .await?;

        // The link to host 2 is cut under a child there.
        let far_pid = std::sync::Mutex::new(0);
        let far_pid = &far_pid;
        let cut = open_nursery(|an| async move {
            let far = an.start_actor_on("far", &host(2).into()).await?;
            *far_pid.lock().unwrap() = far.pid();
            println!("ready to cut");
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await;
        let error = cut.expect_err("the child behind the cut link died");
        let death = first_death(&error).unwrap_or_else(|| panic!("untyped: {error:?}"));
        println!("cut: {death}");
        let far = *far_pid.lock().unwrap();
        assert!(gone(far, KEEPALIVE * 15).await?, "the far child exits");
        println!("the far child exited");
        Ok(())
    });
    common::exit_as(outcome);
}

#[test]
fn children_on_other_hosts_through_ssh() {
    if !can_make_hosts() {
        return;
    }
    if !sshd::have_sshd() {
        panic!("sshd is missing: `.ci/run` installs openssh-server");
    }
    let dir = std::env::temp_dir().join(format!("trellis-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    sshd::keys(&dir, &ADDRS[1..]);
    let net = Net::new("s");
    let sshd = [
        Sshd::start(&net.names[1], ADDRS[1], &dir),
        Sshd::start(&net.names[2], ADDRS[2], &dir),
    ];
    let mut root = Host::start(
        &net,
        0,
        "ssh_root_program",
        &[("TRELLIS_SSH_DIR", dir.display().to_string())],
    );
    let bound = KEEPALIVE * 15;
    let left = root.expect("left at ", Duration::from_secs(30));
    assert!(left.starts_with("left at tcp:10.77.0.2:"), "{left}");
    let right = root.expect("right at ", Duration::from_secs(30));
    assert!(right.starts_with("right at tcp:10.77.0.3:"), "{right}");
    root.expect(
        "calls, a stream, an error and a cancellation crossed",
        bound,
    );
    root.expect("the remote child exited with its ssh session", bound);
    let cause = root.expect("restarted on its host after: ", bound);
    assert!(cause.contains("died unexpectedly"), "{cause}");
    root.expect("ready to cut", bound);
    let cut = Instant::now();
    net.cut(2);
    let death = root.expect("cut: ", bound);
    assert!(death.contains("died unexpectedly"), "{death}");
    root.expect("the far child exited", bound);
    eprintln!("the cut was known on both sides within {:?}", cut.elapsed());
    assert_eq!(
        root.wait(Duration::from_secs(30)),
        Some(0),
        "{:?}",
        root.seen
    );

    // Nothing left anywhere but the ssh servers, and then nothing at all (sessions end on
    // their own, the cut one by sshd's client-alive probes).
    let sshd_pids: Vec<u32> = sshd.iter().map(|s| s.0.id()).collect();
    drop(sshd);
    let until = Instant::now() + bound;
    loop {
        let left: Vec<(usize, Vec<u32>)> = (0..3)
            .map(|i| (i, net.pids(i)))
            .filter(|(_, pids)| !pids.is_empty())
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < until,
            "processes left in the namespaces: {left:?} (sshd was {sshd_pids:?})"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(net);
    let _ = std::fs::remove_dir_all(&dir);
}
