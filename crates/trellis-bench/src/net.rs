//! B9: TCP on 127.0.0.1 — 20,000 ping-pong round trips of 16 bytes, and 256 MiB one way in
//! 64 KiB writes — through trellis-net streams against raw tokio `TcpStream`s doing the same.

use std::net::Ipv4Addr;
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use trellis_net::{Listener, ReceiveStream, SendStream, TcpListener, open_tcp_stream};

use crate::{Comparison, alternate, anchors};

const ROUND_TRIPS: usize = 20_000;
const MESSAGE: usize = 16;
const BULK: usize = 256 << 20;
const CHUNK: usize = 64 << 10;

/// A tokio listener on a free loopback port, and its address.
async fn loopback_listener() -> (tokio::net::TcpListener, std::net::SocketAddr) {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .expect("bind on loopback");
    let addr = listener.local_addr().expect("bound address");
    (listener, addr)
}

async fn trellis_pingpong() -> f64 {
    pingpong_through_trellis(MESSAGE, ROUND_TRIPS).await
}

/// Seconds for `round_trips` ping-pongs of `message` bytes through trellis-net TCP streams
/// on the loopback interface (B9, and B10's TCP side).
pub(crate) async fn pingpong_through_trellis(message: usize, round_trips: usize) -> f64 {
    let (listener, addr) = loopback_listener().await;
    let port = addr.port();
    let mut listener = TcpListener::new(listener);
    trellis::open_nursery(|n| async move {
        n.start_soon(async move {
            let mut server = listener.accept().await?;
            loop {
                let data = server.receive_some(65_536).await?;
                if data.is_empty() {
                    return Ok::<_, trellis::Error>(());
                }
                server.send_all(&data).await?;
            }
        })?;
        let mut client = open_tcp_stream("127.0.0.1", port).await?;
        let bytes = vec![7u8; message];
        let t0 = Instant::now();
        for _ in 0..round_trips {
            client.send_all(&bytes).await?;
            let mut got = 0;
            while got < message {
                got += client.receive_some(message - got).await?.len();
            }
        }
        let elapsed = t0.elapsed().as_secs_f64();
        client.close().await?;
        Ok::<_, trellis::Error>(elapsed)
    })
    .await
    .expect("trellis ping-pong")
    .expect("not cancelled")
}

async fn raw_pingpong() -> f64 {
    let (listener, addr) = loopback_listener().await;
    let server = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        s.set_nodelay(true).unwrap();
        let mut buf = vec![0u8; 65_536];
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let message = [7u8; MESSAGE];
    let mut back = [0u8; MESSAGE];
    let t0 = Instant::now();
    for _ in 0..ROUND_TRIPS {
        client.write_all(&message).await.unwrap();
        client.read_exact(&mut back).await.unwrap();
    }
    let elapsed = t0.elapsed().as_secs_f64();
    drop(client);
    server.await.unwrap();
    elapsed
}

async fn trellis_bulk() -> f64 {
    let (listener, addr) = loopback_listener().await;
    let port = addr.port();
    let mut listener = TcpListener::new(listener);
    trellis::open_nursery(|n| async move {
        let sink = n.start_soon(async move {
            let mut server = listener.accept().await?;
            let mut total = 0;
            loop {
                let data = server.receive_some(CHUNK * 4).await?;
                if data.is_empty() {
                    return Ok::<_, trellis::Error>((total, Instant::now()));
                }
                total += data.len();
            }
        })?;
        let mut client = open_tcp_stream("127.0.0.1", port).await?;
        let chunk = vec![0u8; CHUNK];
        let t0 = Instant::now();
        for _ in 0..BULK / CHUNK {
            client.send_all(&chunk).await?;
        }
        client.close().await?;
        Ok::<_, trellis::Error>((sink, t0))
    })
    .await
    .expect("trellis bulk")
    .map(|(sink, t0)| {
        let (total, end) = sink.into_value().expect("sink value");
        assert_eq!(total, BULK);
        (end - t0).as_secs_f64()
    })
    .expect("not cancelled")
}

async fn raw_bulk() -> f64 {
    let (listener, addr) = loopback_listener().await;
    let sink = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = vec![0u8; CHUNK * 4];
        let mut total = 0;
        loop {
            let n = s.read(&mut buf).await.unwrap();
            if n == 0 {
                return (total, Instant::now());
            }
            total += n;
        }
    });
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.set_nodelay(true).unwrap();
    let chunk = vec![0u8; CHUNK];
    let t0 = Instant::now();
    for _ in 0..BULK / CHUNK {
        client.write_all(&chunk).await.unwrap();
    }
    drop(client);
    let (total, end) = sink.await.unwrap();
    assert_eq!(total, BULK);
    (end - t0).as_secs_f64()
}

/// B9: ping-pong and bulk, each side by side with raw tokio, on both runtime flavours.
pub(crate) fn b9(runs: usize, python: bool) -> Result<Vec<Comparison>, String> {
    let runs = runs.min(7);
    let mut out = Vec::new();
    let mut multi_thread = None;
    for (flavor, rt) in crate::core::runtimes() {
        let (pingpong, a) = alternate(
            runs,
            || rt.block_on(trellis_pingpong()),
            || rt.block_on(raw_pingpong()),
        );
        out.push(Comparison {
            id: "B9",
            case: format!("{flavor} pingpong 20000 x 16 B"),
            trellis: pingpong,
            anchor: "raw tokio TcpStream".into(),
            anchor_value: a,
        });
        let (bulk, a) = alternate(
            runs,
            || rt.block_on(trellis_bulk()),
            || rt.block_on(raw_bulk()),
        );
        out.push(Comparison {
            id: "B9",
            case: format!("{flavor} bulk 256 MiB"),
            trellis: bulk,
            anchor: "raw tokio TcpStream".into(),
            anchor_value: a,
        });
        if flavor == "current_thread" || multi_thread.is_none() {
            // Trio runs client and server in one thread: compare with the same.
            multi_thread = Some((flavor, pingpong, bulk));
        }
    }
    if python && let Some((flavor, pingpong, bulk)) = multi_thread {
        for (mode, case, trellis) in [
            ("pingpong", "pingpong 20000 x 16 B", pingpong),
            ("bulk", "bulk 256 MiB", bulk),
        ] {
            let mut c = anchors::trio_comparison_args(
                "B9",
                "b4_tcp.py",
                &[mode.to_owned()],
                "s",
                runs,
                trellis,
            )?;
            c.case = format!("{flavor} {case}");
            out.push(c);
        }
    }
    Ok(out)
}
