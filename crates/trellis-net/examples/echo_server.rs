//! An echo server: every connection is served in a task of the server's nursery; Ctrl-C
//! cancels the nursery, which closes every connection and returns.
//!
//! ```sh
//! cargo run -p trellis-net --example echo_server -- 7777
//! ```

use trellis_net::{ReceiveStream, SendStream, TcpStream, serve_tcp};

async fn echo(mut stream: TcpStream) -> Result<(), trellis::Error> {
    loop {
        let data = stream.receive_some(64 * 1024).await?;
        if data.is_empty() {
            return Ok(()); // the client closed its side
        }
        stream.send_all(&data).await?;
    }
}

fn main() -> std::process::ExitCode {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(7777);
    trellis::main(async move {
        trellis::open_nursery(|n| async move {
            let addrs = n.start(|status| serve_tcp(echo, port, status)).await?;
            for addr in addrs {
                println!("echo server listening on {addr}");
            }
            Ok::<_, trellis::Error>(())
        })
        .await
    })
}
