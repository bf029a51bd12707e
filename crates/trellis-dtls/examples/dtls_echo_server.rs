//! A DTLS echo server: every datagram of every peer comes back.
//!
//! ```text
//! cargo run --release -p trellis-dtls --example dtls_echo_server -- --listen ADDR --cert PEM --key PEM
//! ```
//!
//! Prints `listening on ADDR` once it serves (with the port the system chose, for port 0).
//! Ctrl-C stops it. Options: `--handshake-timeout SECS` and `--max-associations N` set the
//! endpoint's bounds; `--stats SECS` prints a line of the endpoint's statistics that often
//! (`stats live=… handshaking=… …`).

use std::process::ExitCode;
use std::time::Duration;

use openssl::pkey::PKey;
use openssl::ssl::{SslContextBuilder, SslMethod};
use openssl::x509::X509;
use trellis_dtls::{DtlsEndpoint, DtlsError, ServerConfig, open_endpoint};
use trellis_net::UdpSocket;

fn usage(problem: &str) -> ExitCode {
    eprintln!("dtls_echo_server: {problem}");
    eprintln!(
        "usage: dtls_echo_server --listen ADDR --cert PEM --key PEM \\\n       \
         [--handshake-timeout SECS] [--max-associations N] [--stats SECS]"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let (mut listen, mut cert, mut key) = (None, None, None);
    let (mut handshake_timeout, mut max_associations, mut stats) = (None, None, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--listen" => &mut listen,
            "--cert" => &mut cert,
            "--key" => &mut key,
            "--handshake-timeout" => &mut handshake_timeout,
            "--max-associations" => &mut max_associations,
            "--stats" => &mut stats,
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
    let seconds = |value: &Option<String>, name: &str| match value {
        None => Ok(None),
        Some(v) => match v
            .parse::<f64>()
            .ok()
            .and_then(|s| Duration::try_from_secs_f64(s).ok())
        {
            Some(d) if !d.is_zero() => Ok(Some(d)),
            _ => Err(format!(
                "{name} takes a positive number of seconds, not {v}"
            )),
        },
    };
    let (handshake_timeout, stats) = match (
        seconds(&handshake_timeout, "--handshake-timeout"),
        seconds(&stats, "--stats"),
    ) {
        (Ok(h), Ok(s)) => (h, s),
        (Err(e), _) | (_, Err(e)) => return usage(&e),
    };
    let max_associations = match max_associations.map(|n| n.parse::<usize>()) {
        None => None,
        Some(Ok(n)) if n > 0 => Some(n),
        Some(_) => return usage("--max-associations takes a positive whole number"),
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
            if let Some(timeout) = handshake_timeout {
                endpoint.set_handshake_timeout(timeout);
            }
            if let Some(n) = max_associations {
                endpoint.set_max_associations(n);
            }
            println!("listening on {addr}");
            trellis::open_nursery(|n| async move {
                if let Some(every) = stats {
                    n.start_soon(print_statistics(endpoint.clone(), every))?;
                }
                serve(endpoint, config).await?;
                n.cancel();
                Ok::<_, trellis::Error>(())
            })
            .await
            .map(drop)
        })
        .await
    })
}

/// Prints the endpoint's statistics every `every`, until cancelled.
async fn print_statistics(
    endpoint: DtlsEndpoint,
    every: Duration,
) -> Result<(), trellis::Cancelled> {
    loop {
        trellis::sleep(every).await?;
        println!("stats {}", endpoint.statistics());
    }
}

/// Echoes every datagram of every peer.
async fn serve(endpoint: DtlsEndpoint, config: ServerConfig) -> Result<(), trellis::Error> {
    endpoint
        .serve(config, |channel| async move {
            loop {
                match channel.receive().await {
                    Ok(data) => channel.send(&data).await?,
                    // The peer went away, started over, or never finished its handshake
                    // (counted in the statistics): not a failure.
                    Err(
                        DtlsError::Closed
                        | DtlsError::PeerReconnected(_)
                        | DtlsError::HandshakeTimedOut(_),
                    ) => return Ok(()),
                    // Shutting down: the cancellation goes on.
                    Err(e @ DtlsError::Cancelled(_)) => return Err(e.into()),
                    Err(e) => {
                        eprintln!("peer {}: {e}", channel.peer());
                        return Ok(());
                    }
                }
            }
        })
        .await
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
