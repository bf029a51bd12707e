//! A DTLS echo client: sends datagrams to an echo server and checks that each comes back.
//!
//! ```text
//! cargo run --release -p trellis-dtls --example dtls_echo_client -- --connect ADDR --ca PEM [--count N] [--size BYTES]
//! ```
//!
//! Exits 0 when every echo matched, non-zero with a message saying what went wrong otherwise.

use std::process::ExitCode;
use std::time::Duration;

use openssl::ssl::{SslContextBuilder, SslMethod, SslVerifyMode};
use openssl::x509::X509;
use trellis_dtls::{ClientConfig, open_endpoint};
use trellis_net::UdpSocket;

fn usage(problem: &str) -> ExitCode {
    eprintln!("dtls_echo_client: {problem}");
    eprintln!("usage: dtls_echo_client --connect ADDR --ca PEM [--count N] [--size BYTES]");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (mut connect, mut ca, mut count, mut size) = (None, None, 10usize, 64usize);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(value) = args.next() else {
            return usage(&format!("{arg} needs a value"));
        };
        match arg.as_str() {
            "--connect" => connect = Some(value),
            "--ca" => ca = Some(value),
            "--count" | "--size" => {
                let Ok(n) = value.parse::<usize>() else {
                    return usage(&format!("{arg} takes a number, not {value:?}"));
                };
                if arg == "--count" {
                    count = n
                } else {
                    size = n
                }
            }
            other => return usage(&format!("unknown argument {other}")),
        }
    }
    let (Some(connect), Some(ca)) = (connect, ca) else {
        return usage("--connect and --ca are required");
    };
    if size == 0 {
        return usage("--size must be at least 1");
    }
    let Ok(server) = connect.parse::<std::net::SocketAddr>() else {
        return usage(&format!(
            "--connect takes an address like 127.0.0.1:4433, not {connect:?}"
        ));
    };
    let config = match client_config(&ca) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dtls_echo_client: {e}");
            return ExitCode::from(1);
        }
    };
    let local = if server.is_ipv6() {
        "[::]:0"
    } else {
        "0.0.0.0:0"
    };
    trellis::main(async move {
        let socket = UdpSocket::bind(local).await?;
        open_endpoint(socket, |endpoint| async move {
            let channel = endpoint.connect(server, &config)?;
            trellis::fail_after(
                Duration::from_secs(10),
                channel.do_handshake(Duration::from_secs(1)),
            )
            .await
            .map_err(|e| trellis::Error::msg(format!("handshake with {server}: {e}")))?;
            for i in 0..count {
                let datagram: Vec<u8> = (0..size).map(|j| (i + j) as u8).collect();
                channel.send(&datagram).await?;
                let echo = trellis::fail_after(Duration::from_secs(5), channel.receive())
                    .await
                    .map_err(|e| trellis::Error::msg(format!("datagram {i}: no echo: {e}")))?;
                if echo != datagram {
                    return Err(trellis::Error::msg(format!(
                        "datagram {i}: the echo differs ({} bytes back for {size})",
                        echo.len()
                    )));
                }
            }
            channel.close().await;
            println!("{count} datagrams of {size} bytes echoed");
            Ok(())
        })
        .await
    })
}

fn client_config(ca: &str) -> Result<ClientConfig, String> {
    let pem = std::fs::read(ca).map_err(|e| format!("reading {ca}: {e}"))?;
    let certs = X509::stack_from_pem(&pem).map_err(|e| format!("{ca}: {e}"))?;
    let mut builder = SslContextBuilder::new(SslMethod::dtls()).map_err(|e| e.to_string())?;
    for cert in certs {
        builder
            .cert_store_mut()
            .add_cert(cert)
            .map_err(|e| e.to_string())?;
    }
    builder.set_verify(SslVerifyMode::PEER);
    Ok(ClientConfig::new(builder))
}
