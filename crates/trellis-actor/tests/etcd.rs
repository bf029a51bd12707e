//! The registry in a real etcd (Debian's `etcd-server`, started by the test on loopback
//! ports with its data in a temporary directory): actors register there under leases, are
//! found by reads and waited for by watches; a killed child's entry is removed by its parent,
//! a killed root's vanishes when its lease expires; with etcd stopped, lookups fail with a
//! typed error while calls go on, and work again once it is back. tractor's discovery tests
//! (`test_discovery.py`: `test_register_duplicate_name`, `test_subactors_unregister_on_cancel`)
//! are the model for what a registry must show.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::etcd_server::{EtcdServer, have_etcd};
use common::root_with;
use trellis_actor::{
    ActorError, Config, Etcd, Functions, Transport, find_actor, open_nursery, wait_for_actor,
};

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// The lease of the entries here: etcd's own minimum is about this.
const LEASE: Duration = Duration::from_secs(2);

/// The registry's configuration: the cluster and prefix come from the environment (children
/// run this same configuration).
fn etcd() -> Option<Etcd> {
    let endpoint = std::env::var("TRELLIS_TEST_ETCD").ok()?;
    let prefix = std::env::var("TRELLIS_TEST_ETCD_PREFIX").ok()?;
    Some(Etcd::new([endpoint]).prefix(prefix).lease(LEASE))
}

fn config() -> Config {
    let config = Config::new(Functions::new().register(add))
        .grace_period(Duration::from_millis(500))
        .child_args(["serve_children", "--exact", "--nocapture", "-q"]);
    match etcd() {
        Some(etcd) => config.etcd(etcd),
        None => config,
    }
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// Runs `body` as a root whose registry is the etcd at `endpoint`, under `prefix`; its
/// children learn both from their environment (they run `config()`).
fn with_registry<F, Fut>(endpoint: &str, prefix: &str, body: F) -> Result<(), trellis::Error>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), trellis::Error>>,
{
    let config = Config::new(Functions::new().register(add))
        .grace_period(Duration::from_millis(500))
        .child_args(["serve_children", "--exact", "--nocapture", "-q"])
        .child_env("TRELLIS_TEST_ETCD", endpoint)
        .child_env("TRELLIS_TEST_ETCD_PREFIX", prefix)
        .etcd(Etcd::new([endpoint]).prefix(prefix).lease(LEASE));
    root_with(config, Transport::Unix, body)
}

/// Registration, listing in registration order, lookups, and a wait that a watch ends.
#[test]
fn actors_register_in_etcd_and_are_found_there() {
    if !have_etcd() {
        return;
    }
    let server = EtcdServer::start("find");
    let prefix = "/trellis-test/find";
    let server = &server;
    with_registry(&server.endpoint(), prefix, || async move {
        open_nursery(|an| async move {
            let alpha = an.start_actor("alpha").await?;
            let _beta = an.start_actor("beta").await?;
            let keys = server.keys(&format!("{prefix}/actors/"));
            assert_eq!(keys.len(), 3, "{keys:?}");
            let names: Vec<String> = trellis_actor::current()
                .registered()
                .await?
                .into_iter()
                .map(|r| r.id.name)
                .collect();
            assert_eq!(names, ["root", "alpha", "beta"]);
            let found = find_actor("alpha").await?.expect("alpha is found");
            assert_eq!(found.pid(), alpha.pid());
            assert_eq!(found.run(add, (2, 2)).await?, 4);
            assert!(find_actor("nobody").await?.is_none());
            // A wait that starts before the actor exists ends when it registers.
            let (waited, _gamma) = trellis::open_nursery(|n| async move {
                let waited = n.start_soon(async {
                    let gamma = wait_for_actor("gamma").await?;
                    Ok::<_, trellis::Error>(gamma.run(add, (1, 2)).await?)
                })?;
                trellis::sleep(Duration::from_millis(200)).await?;
                let gamma = an.start_actor("gamma").await?;
                Ok::<_, trellis::Error>((waited, gamma))
            })
            .await?
            .expect("not cancelled");
            assert_eq!(waited.into_value(), Some(3));
            Ok(())
        })
        .await
    })
    .unwrap();
    // Every actor removed its own entry when it ended.
    assert_eq!(
        server.keys(&format!("{prefix}/actors/")),
        Vec::<String>::new()
    );
}

/// A killed child's entry is removed by its parent at once; a killed root's vanishes when its
/// lease expires.
#[test]
fn a_killed_actors_entry_goes() {
    if !have_etcd() {
        return;
    }
    let server = EtcdServer::start("kill");
    let prefix = "/trellis-test/kill";
    let outcome = with_registry(&server.endpoint(), prefix, || async {
        open_nursery(|an| async move {
            let victim = an.start_actor("victim").await?;
            assert!(find_actor("victim").await?.is_some());
            nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(victim.pid() as i32),
                nix::sys::signal::Signal::SIGKILL,
            )
            .unwrap();
            trellis::sleep_forever().await?;
            Ok(())
        })
        .await
    });
    assert!(outcome.is_err(), "the child died");
    let keys = server.keys(&format!("{prefix}/actors/victim/"));
    assert!(keys.is_empty(), "its parent removed it: {keys:?}");

    // A root of its own, killed: nobody removes its entry but its lease.
    let lone = Command::new(std::env::current_exe().unwrap())
        .args(["lone_root", "--exact", "--nocapture", "-q"])
        .env("TRELLIS_TEST_ETCD", server.endpoint())
        .env("TRELLIS_TEST_ETCD_PREFIX", prefix)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut host = common::netns::Host::watch(lone);
    host.expect("registered", Duration::from_secs(30));
    assert_eq!(server.keys(&format!("{prefix}/actors/root/")).len(), 1);
    host.child.kill().unwrap();
    let _ = host.child.wait();
    let killed = Instant::now();
    let until = killed + LEASE * 10;
    while !server.keys(&format!("{prefix}/actors/root/")).is_empty() {
        assert!(Instant::now() < until, "the lease did not expire");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "the killed root's entry went {:?} after it",
        killed.elapsed()
    );
}

/// The root that `a_killed_actors_entry_goes` kills.
#[test]
fn lone_root() {
    if etcd().is_none() {
        return;
    }
    let outcome = root_with(config(), Transport::Unix, || async {
        let _ = trellis_actor::current();
        println!("registered");
        trellis::sleep_forever().await?;
        Ok(())
    });
    common::exit_as(outcome);
}

/// etcd stops: lookups fail with a typed error, calls on open connections go on; it comes
/// back: lookups work again and the entries are there.
#[test]
fn losing_etcd_fails_lookups_not_connections() {
    if !have_etcd() {
        return;
    }
    let server = std::sync::Mutex::new(EtcdServer::start("loss"));
    let endpoint = server.lock().unwrap().endpoint();
    let server = &server;
    with_registry(&endpoint, "/trellis-test/loss", || async move {
        open_nursery(|an| async move {
            let steady = an.start_actor("steady").await?;
            server.lock().unwrap().stop();
            match find_actor("steady").await {
                Err(ActorError::Registry { reason }) => eprintln!("while etcd is away: {reason}"),
                other => panic!("a registry error: {other:?}"),
            }
            assert_eq!(steady.run(add, (20, 22)).await?, 42, "calls go on");
            server.lock().unwrap().run();
            let found = find_actor("steady").await?.expect("found again");
            assert_eq!(found.pid(), steady.pid());
            // Leases that expire (revoked here) are granted again, and the entries put back.
            server.lock().unwrap().revoke_all();
            let until = Instant::now() + LEASE * 10;
            while find_actor("steady").await?.is_none() || find_actor("root").await?.is_none() {
                assert!(Instant::now() < until, "not registered again");
                trellis::sleep(Duration::from_millis(50)).await?;
            }
            Ok(())
        })
        .await
    })
    .unwrap();
}
