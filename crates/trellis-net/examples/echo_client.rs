//! Sends each line of standard input to an echo server and prints what comes back; the
//! connection is made with happy eyeballs.
//!
//! ```sh
//! echo hello | cargo run -p trellis-net --example echo_client -- localhost 7777
//! ```

use std::io::BufRead;

use trellis_net::{HalfCloseableStream, ReceiveStream, SendStream, open_tcp_stream};

fn main() -> std::process::ExitCode {
    let mut args = std::env::args().skip(1);
    let host = args.next().unwrap_or_else(|| "localhost".into());
    let port: u16 = args.next().and_then(|p| p.parse().ok()).unwrap_or(7777);
    let lines: Vec<String> = std::io::stdin()
        .lock()
        .lines()
        .map_while(Result::ok)
        .collect();
    trellis::main(async move {
        let mut stream = open_tcp_stream(&host, port).await?;
        for line in lines {
            stream.send_all(format!("{line}\n").as_bytes()).await?;
            let mut echoed = Vec::new();
            while echoed.len() < line.len() + 1 {
                let chunk = stream.receive_some(4096).await?;
                if chunk.is_empty() {
                    return Err(trellis::Error::msg("the server closed the connection"));
                }
                echoed.extend_from_slice(&chunk);
            }
            print!("{}", String::from_utf8_lossy(&echoed));
        }
        stream.send_eof().await?;
        Ok::<_, trellis::Error>(())
    })
}
