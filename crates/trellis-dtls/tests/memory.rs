//! 1,000 clients vanish in the middle of their handshakes with the echo server example (a
//! process of its own): after its handshake timeout it holds none of them, and its resident
//! memory is back within 10% of where it started.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use trellis_dtls::ClientConfig;

use common::{certificate, echo_once, example, vanish};

/// A process's resident set, in KiB, from its `/proc/PID/status`.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .expect("VmRSS in /proc/PID/status");
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// The server's latest `stats name=value …` line.
type Latest = Arc<Mutex<HashMap<String, u64>>>;

fn stat(latest: &Latest, name: &str) -> u64 {
    latest.lock().unwrap().get(name).copied().unwrap_or(0)
}

/// Waits (up to 60 s) until the server's statistics satisfy `done`.
async fn until_stats(latest: &Latest, done: impl Fn(&Latest) -> bool) {
    for _ in 0..600 {
        if done(latest) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("still {:?}", latest.lock().unwrap());
}

/// The resident set once the allocator has given back what a flood freed: the lowest value
/// over 12 s.
async fn settled_rss(pid: u32) -> u64 {
    let mut lowest = rss_kib(pid);
    for _ in 0..24 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        lowest = lowest.min(rss_kib(pid));
    }
    lowest
}

async fn vanish_all(addr: SocketAddr, config: &ClientConfig, clients: usize) {
    for _ in 0..clients / 100 {
        trellis::open_nursery(|n| async move {
            for _ in 0..100 {
                n.start_soon(vanish(addr, config.clone()))?;
            }
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    }
}

#[test]
fn vanished_handshakes_leave_no_memory_behind() {
    let dir = std::env::temp_dir().join(format!("trellis-dtls-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = certificate();
    std::fs::write(dir.join("cert.pem"), cert.to_pem().unwrap()).unwrap();
    std::fs::write(dir.join("key.pem"), key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let mut client = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    client.cert_store_mut().add_cert(cert).unwrap();
    client.set_verify(SslVerifyMode::PEER);
    let config = ClientConfig::new(client);
    let pems = dir.clone();
    trellis::testing::run_test_multi_thread(async move {
        let dir = pems;
        let mut server = Command::new(example("dtls_echo_server"))
            .args(["--listen", "127.0.0.1:0", "--cert"])
            .arg(dir.join("cert.pem"))
            .arg("--key")
            .arg(dir.join("key.pem"))
            .args(["--handshake-timeout", "2", "--stats", "0.1"])
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let pid = server.id().unwrap();
        let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
            .await
            .expect("the server starts")
            .unwrap()
            .unwrap();
        let addr: SocketAddr = first.trim_start_matches("listening on ").parse().unwrap();
        let latest = Latest::default();
        let reading = latest.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                let Some(stats) = line.strip_prefix("stats ") else {
                    continue;
                };
                let parsed = stats
                    .split(' ')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.parse().unwrap()))
                    .collect();
                *reading.lock().unwrap() = parsed;
            }
        });

        // Each client is admitted and then dropped at the deadline (or replaced: a later
        // client may get a port an earlier one had).
        let gone = |s: &Latest| stat(s, "dropped_by_deadline") + stat(s, "replaced");
        // The start is a server that has met this load once: the C allocator makes its
        // per-thread arenas at the first contention and keeps them (a fresh process grows by
        // ~5 MB in the first flood, then no more: 10.5, 15.6, 16.4, 16.7, 16.7 MB over four).
        echo_once(addr, config.clone(), b"warm").await.unwrap();
        vanish_all(addr, &config, 1000).await;
        until_stats(&latest, |s| gone(s) >= 1000 && stat(s, "handshaking") == 0).await;
        let start = settled_rss(pid).await;
        vanish_all(addr, &config, 1000).await;
        until_stats(&latest, |s| gone(s) >= 2000 && stat(s, "handshaking") == 0).await;
        assert_eq!(stat(&latest, "live"), 0);
        assert_eq!(gone(&latest), 2000, "{:?}", latest.lock().unwrap());
        // The allocator gives the memory back in its own time.
        let mut end = rss_kib(pid);
        for _ in 0..300 {
            if end * 10 <= start * 11 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            end = rss_kib(pid);
        }
        eprintln!("server RSS {start} KiB -> {end} KiB");
        assert!(
            end * 10 <= start * 11,
            "server RSS grew from {start} KiB to {end} KiB"
        );
        echo_once(addr, config, b"after").await.unwrap();
        server.kill().await.unwrap();
        reader.abort();
    });
    let _ = std::fs::remove_dir_all(&dir);
}
