//! Interoperation with OpenSSL's own tools: our server with `openssl s_client -dtls1_2`, our
//! client with `openssl s_server -dtls1_2`, and the fixed-command-line examples against each
//! other. The `openssl` command is required (`.ci/run` installs it when missing).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use trellis_dtls::{ClientConfig, open_endpoint};

use common::example;
use trellis_net::UdpSocket;

/// A directory with `cert.pem` and `key.pem` (self-signed, `localhost`), made by the
/// `openssl` command; removed when dropped.
struct Pems(PathBuf);

impl Pems {
    fn new(name: &str) -> Pems {
        let dir = std::env::temp_dir().join(format!("trellis-dtls-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
            ])
            .args(["-nodes", "-days", "1", "-subj", "/CN=localhost"])
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stderr(Stdio::null())
            .status()
            .expect("the openssl command (install it: apt-get install openssl)");
        assert!(status.success());
        Pems(dir)
    }

    fn cert(&self) -> PathBuf {
        self.0.join("cert.pem")
    }

    fn key(&self) -> PathBuf {
        self.0.join("key.pem")
    }
}

impl Drop for Pems {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn client_config(ca: &Path) -> ClientConfig {
    let mut builder = SslContextBuilder::new(SslMethod::dtls()).unwrap();
    let cert = X509::from_pem(&std::fs::read(ca).unwrap()).unwrap();
    builder.cert_store_mut().add_cert(cert).unwrap();
    builder.set_verify(SslVerifyMode::PEER);
    ClientConfig::new(builder)
}

/// Reads lines from `reader` until one contains `needle` (bounded by the caller's deadline).
async fn wait_for_line<R: tokio::io::AsyncRead + Unpin>(
    lines: &mut tokio::io::Lines<BufReader<R>>,
    needle: &str,
) -> String {
    while let Some(line) = lines.next_line().await.unwrap() {
        if line.contains(needle) {
            return line;
        }
    }
    panic!("the output ended before a line with {needle:?}");
}

/// Starts the echo server example with its fixed command line; returns it and the address it
/// says it listens on.
async fn start_echo_server(pems: &Pems) -> (tokio::process::Child, String) {
    let mut server = Command::new(example("dtls_echo_server"))
        .args(["--listen", "127.0.0.1:0", "--cert"])
        .arg(pems.cert())
        .arg("--key")
        .arg(pems.key())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(server.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(
        Duration::from_secs(20),
        wait_for_line(&mut out, "listening on"),
    )
    .await
    .expect("the server says where it listens");
    (server, line.trim_start_matches("listening on ").to_owned())
}

/// Our echo server (the example, as a user runs it) answers `openssl s_client -dtls1_2`.
#[test]
fn our_server_with_openssl_s_client() {
    let pems = Pems::new("server");
    trellis::testing::run_test_multi_thread(async move {
        let (mut server, addr) = start_echo_server(&pems).await;
        let mut client = Command::new("openssl")
            .args([
                "s_client", "-dtls1_2", "-quiet", "-connect", &addr, "-CAfile",
            ])
            .arg(pems.cert())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdin = client.stdin.take().unwrap();
        stdin.write_all(b"hello from s_client\n").await.unwrap();
        let mut echoed = BufReader::new(client.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(
            Duration::from_secs(20),
            wait_for_line(&mut echoed, "hello from s_client"),
        )
        .await
        .expect("the echo comes back through s_client");
        assert_eq!(line, "hello from s_client");
        client.kill().await.unwrap();
        server.kill().await.unwrap();
    });
}

/// Our client against `openssl s_server -dtls1_2`: what we send appears on its output, what
/// it is given on its input reaches us.
#[test]
fn our_client_with_openssl_s_server() {
    let pems = Pems::new("client");
    let port = {
        let probe = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    trellis::testing::run_test_multi_thread(async move {
        let mut server = Command::new("openssl")
            .args(["s_server", "-dtls1_2", "-quiet", "-accept"])
            .arg(format!("127.0.0.1:{port}"))
            .arg("-cert")
            .arg(pems.cert())
            .arg("-key")
            .arg(pems.key())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut server_in = server.stdin.take().unwrap();
        let mut server_out = BufReader::new(server.stdout.take().unwrap()).lines();
        let config = client_config(&pems.cert());
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        open_endpoint(
            UdpSocket::bind("127.0.0.1:0").await.unwrap(),
            |endpoint| async move {
                let channel = endpoint.connect(addr, &config)?;
                // s_server may not listen yet: the handshake resends its first flight until it does.
                trellis::fail_after(
                    Duration::from_secs(20),
                    channel.do_handshake(Duration::from_millis(200)),
                )
                .await?;
                channel.send(b"ping from trellis\n").await?;
                let line = tokio::time::timeout(
                    Duration::from_secs(20),
                    wait_for_line(&mut server_out, "ping from trellis"),
                )
                .await
                .expect("s_server prints what we sent");
                assert_eq!(line, "ping from trellis");
                server_in.write_all(b"pong from s_server\n").await.unwrap();
                let got = trellis::fail_after(Duration::from_secs(20), channel.receive()).await?;
                assert_eq!(got, b"pong from s_server\n");
                Ok(())
            },
        )
        .await
        .unwrap();
        server.kill().await.unwrap();
    });
}

/// The two examples with their fixed command lines: the client exits 0 after its echoes.
#[test]
fn echo_examples_against_each_other() {
    let pems = Pems::new("examples");
    trellis::testing::run_test_multi_thread(async move {
        let (mut server, addr) = start_echo_server(&pems).await;
        let client = Command::new(example("dtls_echo_client"))
            .args(["--connect", &addr, "--ca"])
            .arg(pems.cert())
            .args(["--count", "20", "--size", "1200"])
            .output()
            .await
            .unwrap();
        assert!(
            client.status.success(),
            "{}",
            String::from_utf8_lossy(&client.stderr)
        );
        assert!(
            String::from_utf8_lossy(&client.stdout).contains("20 datagrams of 1200 bytes echoed")
        );
        // A server that is not there: a clear failure, not a hang.
        let nobody = Command::new(example("dtls_echo_client"))
            .args(["--connect", "127.0.0.1:9", "--ca"])
            .arg(pems.cert())
            .output()
            .await
            .unwrap();
        assert!(!nobody.status.success());
        assert!(String::from_utf8_lossy(&nobody.stderr).contains("handshake with 127.0.0.1:9"));
        server.kill().await.unwrap();
    });
}
