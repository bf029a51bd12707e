//! Actors on three "hosts": three network namespaces joined by veth pairs through a bridge,
//! made and removed by this test (it needs root, as CI has; elsewhere it says it skipped).
//! A registrar runs in one; a `feed` actor and a `consumer` actor, roots of trees of their
//! own, run in the others and find each other through the registrar over TCP. The consumer
//! calls the feed and consumes a context stream from it; then the test cuts the consumer's
//! link. Every side must learn of it by a typed error within a bounded time (keepalive: the
//! kernel's default would take hours), and every process must end.
//! tractor's original: `test_multi_program.py` / `test_discovery.py` across hosts.

mod common;

use std::time::{Duration, Instant};

use common::netns::{ADDRS, Host, Net, can_make_hosts};

use trellis_actor::{Config, Context, Functions, Transport, find_actor};

/// The feed: numbers, one every millisecond, until the stream breaks.
async fn ticks(ctx: Context) -> Result<(), trellis::Error> {
    ctx.started(()).await?;
    let stream = ctx.open_stream::<(), u64>()?;
    for n in 0.. {
        let sent = async {
            stream.send(n).await?;
            trellis::sleep(Duration::from_millis(1)).await?;
            Ok::<_, trellis::Error>(())
        };
        if let Err(e) = sent.await {
            // Cancelled because the consumer's connection broke: the context says so.
            let why = ctx.caller_lost().unwrap_or_else(|| e.into());
            println!("feed: stream to the consumer failed: {}", kind_of(&why));
            return Err(why.into());
        }
    }
    Ok(())
}

async fn add(a: i64, b: i64) -> Result<i64, trellis::Error> {
    Ok(a + b)
}

/// What kind of error: the type of the innermost error (the test checks it is typed).
fn kind_of(e: &trellis_actor::ActorError) -> String {
    match e {
        trellis_actor::ActorError::Other(untyped) => format!("untyped: {}", untyped.get()),
        typed => format!("ActorError: {typed}"),
    }
}

/// How soon a dead link is noticed (about twice this).
const KEEPALIVE: Duration = Duration::from_secs(1);

fn config() -> Config {
    Config::new(Functions::new().register(ticks).register(add))
        .keepalive(Some(KEEPALIVE))
        .child_args(["serve_children", "--exact", "--nocapture", "-q"])
}

#[test]
fn serve_children() {
    trellis_actor::serve_if_child(config());
}

/// The programs of the three hosts, when `TRELLIS_NETNS_ROLE` says which.
#[test]
fn netns_program() {
    let Ok(role) = std::env::var("TRELLIS_NETNS_ROLE") else {
        return;
    };
    let bind = std::env::var("TRELLIS_NETNS_BIND")
        .unwrap()
        .parse()
        .unwrap();
    let mut config = config().transport(Transport::Tcp { bind });
    if let Ok(registrar) = std::env::var("TRELLIS_NETNS_REGISTRAR") {
        config = config.registrar(registrar.parse().unwrap());
    }
    let outcome = trellis::Runner::multi_thread().run(trellis_actor::run_root(
        &role.clone(),
        config,
        || async move {
            let me = trellis_actor::current();
            match role.as_str() {
                "registrar" => {
                    println!("registrar at {}", me.addr());
                    let mut had_consumer = false;
                    loop {
                        let names: Vec<String> = me
                            .registered()
                            .await?
                            .into_iter()
                            .map(|r| r.id.name)
                            .collect();
                        let has = names.iter().any(|n| n == "consumer");
                        if has && !had_consumer {
                            println!("registrar: consumer registered");
                        }
                        if had_consumer && !has {
                            println!("registrar: consumer's registration removed");
                        }
                        had_consumer = has;
                        trellis::sleep(Duration::from_millis(50)).await?;
                    }
                }
                "feed" => {
                    println!("feed at {}", me.addr());
                    trellis::sleep(Duration::from_secs(3600)).await?;
                    Ok(())
                }
                _ => {
                    let feed = loop {
                        if let Some(feed) = find_actor("feed").await? {
                            break feed;
                        }
                        trellis::sleep(Duration::from_millis(50)).await?;
                    };
                    println!(
                        "consumer: 2 + 3 = {} (from the feed)",
                        feed.run(add, (2, 3)).await?
                    );
                    let outcome = feed
                        .open_context(ticks, (), |ctx, ()| async move {
                            let stream = ctx.open_stream::<u64, ()>()?;
                            let mut got = 0u64;
                            while let Some(n) = stream.recv().await? {
                                assert_eq!(n, got, "items in order, none lost");
                                got += 1;
                                if got == 200 {
                                    println!("consumer: 200 items received");
                                }
                            }
                            Ok(())
                        })
                        .await;
                    match outcome {
                        Err(e) if !e.is_cancelled() => {
                            println!("consumer: stream failed: {}", kind_of(&e.into()));
                            std::process::exit(3);
                        }
                        other => other,
                    }
                }
            }
        },
    ));
    common::exit_as(outcome);
}

/// The secret file's path: removed when the test ends.
struct SecretFile;

impl Drop for SecretFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(secret_path());
    }
}

fn secret_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("trellis-multihost-{}.secret", std::process::id()))
}

/// A file holding the secret the hosts share, readable by its owner only.
fn secret_file() -> std::path::PathBuf {
    use std::os::unix::fs::OpenOptionsExt;
    let path = secret_path();
    if !path.exists() {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&path)
            .expect("a secret file");
        std::io::Write::write_all(&mut file, b"the hosts' shared tree secret\n").unwrap();
    }
    path
}

/// Host `i`'s program in `role`; the hosts' trees share a secret through a file, as a
/// deployment would.
fn start(net: &Net, i: usize, role: &str, registrar: Option<&str>) -> Host {
    let mut envs = vec![
        ("TRELLIS_NETNS_ROLE", role.to_owned()),
        ("TRELLIS_NETNS_BIND", ADDRS[i].to_owned()),
        (
            trellis_actor::SECRET_FILE_ENV,
            secret_file().display().to_string(),
        ),
    ];
    if let Some(registrar) = registrar {
        envs.push(("TRELLIS_NETNS_REGISTRAR", registrar.to_owned()));
    }
    Host::start(net, i, "netns_program", &envs)
}

#[test]
fn actors_on_three_hosts_call_stream_and_survive_a_cut_link() {
    if !can_make_hosts() {
        return;
    }
    // A generous bound for "learns within a bounded time": the keepalive makes it ~2 s; the
    // kernel's defaults would make it hours.
    let bound = KEEPALIVE * 15;
    let _secret = SecretFile;
    let net = Net::new("m");
    let mut registrar = start(&net, 0, "registrar", None);
    let addr = registrar.expect("registrar at ", Duration::from_secs(30));
    let addr = addr.trim_start_matches("registrar at ").to_owned();
    assert!(addr.starts_with("tcp:10.77.0.1:"), "{addr}");
    let mut feed = start(&net, 1, "feed", Some(&addr));
    feed.expect("feed at tcp:10.77.0.2:", Duration::from_secs(30));
    let mut consumer = start(&net, 2, "consumer", Some(&addr));
    consumer.expect("consumer: 2 + 3 = 5", Duration::from_secs(30));
    consumer.expect("consumer: 200 items received", Duration::from_secs(30));
    registrar.expect("registrar: consumer registered", Duration::from_secs(30));

    let cut = Instant::now();
    net.cut(2);
    let failed = consumer.expect("consumer: stream failed: ", bound);
    assert!(failed.contains("ActorError"), "untyped: {failed}");
    assert_eq!(consumer.wait(bound), Some(3));
    let failed = feed.expect("feed: stream to the consumer failed: ", bound);
    assert!(failed.contains("ActorError"), "untyped: {failed}");
    registrar.expect("registrar: consumer's registration removed", bound);
    eprintln!("every side knew within {:?} of the cut", cut.elapsed());

    // The rest of the system goes on, and ends cleanly.
    feed.interrupt();
    registrar.interrupt();
    assert_eq!(
        feed.wait(Duration::from_secs(30)),
        Some(130),
        "{:?}",
        feed.seen
    );
    assert_eq!(
        registrar.wait(Duration::from_secs(30)),
        Some(130),
        "{:?}",
        registrar.seen
    );
    drop(net);
}
