//! A DTLS echo server: every datagram of every peer comes back.
//!
//! ```text
//! cargo run --release -p trellis-dtls --example dtls_echo_server -- --listen ADDR --cert PEM --key PEM
//! ```
//!
//! Prints `listening on ADDR` once it serves (with the port the system chose, for port 0).
//! Ctrl-C stops it.

use std::process::ExitCode;

use openssl::pkey::PKey;
use openssl::ssl::{SslContextBuilder, SslMethod};
use openssl::x509::X509;
use trellis_dtls::{DtlsError, ServerConfig, open_endpoint};
use trellis_net::UdpSocket;

fn usage(problem: &str) -> ExitCode {
    eprintln!("dtls_echo_server: {problem}");
    eprintln!("usage: dtls_echo_server --listen ADDR --cert PEM --key PEM");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (mut listen, mut cert, mut key) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--listen" => &mut listen,
            "--cert" => &mut cert,
            "--key" => &mut key,
            other => return usage(&format!("unknown argument {other}")),
        };
        match args.next() {
            Some(value) => *slot = Some(value),
            None => return usage(&format!("{arg} needs a value")),
        }
    }
    let (Some(listen), Some(cert), Some(key)) = (listen, cert, key) else {
        return usage("--listen, --cert and --key are required");
    };
    let config = match server_config(&cert, &key) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("dtls_echo_server: {e}");
            return ExitCode::from(1);
        }
    };
    trellis::main(async move {
        let socket = UdpSocket::bind(listen.as_str()).await?;
        let addr = socket.local_addr()?;
        open_endpoint(socket, |endpoint| async move {
            println!("listening on {addr}");
            endpoint
                .serve(config, |channel| async move {
                    loop {
                        match channel.receive().await {
                            Ok(data) => channel.send(&data).await?,
                            Err(e) => {
                                return match e.downcast_ref::<DtlsError>() {
                                    // The peer went away or started over: not a failure.
                                    Some(DtlsError::Closed | DtlsError::PeerReconnected(_)) => {
                                        Ok(())
                                    }
                                    _ => {
                                        eprintln!("peer {}: {e}", channel.peer());
                                        Ok(())
                                    }
                                };
                            }
                        }
                    }
                })
                .await
        })
        .await
    })
}

fn server_config(cert: &str, key: &str) -> Result<ServerConfig, String> {
    let read = |path: &str| std::fs::read(path).map_err(|e| format!("reading {path}: {e}"));
    let cert = X509::from_pem(&read(cert)?).map_err(|e| format!("{cert}: {e}"))?;
    let key = PKey::private_key_from_pem(&read(key)?).map_err(|e| format!("{key}: {e}"))?;
    let mut builder = SslContextBuilder::new(SslMethod::dtls()).map_err(|e| e.to_string())?;
    builder.set_certificate(&cert).map_err(|e| e.to_string())?;
    builder.set_private_key(&key).map_err(|e| e.to_string())?;
    builder
        .check_private_key()
        .map_err(|e| format!("the key does not match the certificate: {e}"))?;
    Ok(ServerConfig::new(builder))
}
