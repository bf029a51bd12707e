//! Every trellis stream passes the conformance checks (Trio runs `check_two_way_stream` and
//! `check_half_closeable_stream` on its `SocketStream`, memory and lockstep pairs:
//! `test_highlevel_socket.py::test_SocketStream_generic`, `test_testing.py::test_memory_stream_pair`
//! and `test_lockstep_stream_pair`).

use std::net::{Ipv4Addr, SocketAddr};

use trellis_net::testing::{check_half_closeable_stream, check_two_way_stream};
use trellis_net::{
    Listener, TcpListener, TcpStream, UnixListener, UnixStream, lockstep_stream_pair,
    memory_stream_pair, open_tcp_stream, open_unix_stream,
};

async fn tcp_pair() -> Result<(TcpStream, TcpStream), trellis::Error> {
    let listener =
        tokio::net::TcpListener::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).await?;
    let port = listener.local_addr()?.port();
    let mut listener = TcpListener::new(listener);
    let client = open_tcp_stream("127.0.0.1", port).await?;
    let server = listener.accept().await?;
    Ok((client, server))
}

async fn unix_pair() -> Result<(UnixStream, UnixStream), trellis::Error> {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(format!(
        "trellis-net-test-{}-{}.sock",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let mut listener = UnixListener::bind(&path)?;
    let client = open_unix_stream(&path).await?;
    let server = listener.accept().await?;
    Ok((client, server))
}

#[test]
fn memory_streams_conform() {
    trellis::testing::run_test(async {
        check_half_closeable_stream(|| async { Ok(memory_stream_pair(4096)) })
            .await
            .unwrap();
    });
}

#[test]
fn lockstep_streams_conform() {
    trellis::testing::run_test(async {
        check_half_closeable_stream(|| async { Ok(lockstep_stream_pair()) })
            .await
            .unwrap();
    });
}

#[test]
fn tcp_streams_conform() {
    trellis::testing::run_test(async {
        check_half_closeable_stream(tcp_pair).await.unwrap();
    });
}

#[test]
fn unix_streams_conform() {
    trellis::testing::run_test(async {
        check_half_closeable_stream(unix_pair).await.unwrap();
    });
}

#[test]
fn tcp_streams_conform_on_the_multi_thread_runtime() {
    trellis::testing::run_test_multi_thread(async {
        check_two_way_stream(tcp_pair).await.unwrap();
    });
}

/// Trellis streams are tokio streams too: a tokio-util codec frames lines over a TCP pair.
#[test]
fn tokio_codecs_work_on_trellis_streams() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_util::codec::{Framed, LinesCodec};
    trellis::testing::run_test(async {
        let (client, server) = tcp_pair().await.unwrap();
        let mut client = Framed::new(client, LinesCodec::new());
        let mut server = Framed::new(server, LinesCodec::new());
        client.send("first line").await.unwrap();
        client.send("second").await.unwrap();
        assert_eq!(server.next().await.unwrap().unwrap(), "first line");
        assert_eq!(server.next().await.unwrap().unwrap(), "second");
    });
}

/// A send cancelled after part of its data went out breaks the stream: the caller cannot
/// send the next frame after half of this one (the guarantee `SendStream` documents). A send
/// cancelled before anything went out leaves the stream usable.
#[test]
fn partly_sent_and_cancelled_breaks_the_stream() {
    use trellis_net::{ReceiveStream, SendStream, StreamError};
    trellis::testing::run_test(async {
        let (mut a, mut b) = lockstep_stream_pair();
        // Nobody receives: the 1-byte pipe takes one byte, then the send waits.
        let cut = trellis::move_on_after(std::time::Duration::from_millis(10), async {
            a.send_all(b"a whole frame").await
        })
        .await
        .unwrap();
        assert!(cut.is_none());
        let next = trellis::move_on_after(std::time::Duration::from_millis(10), async {
            a.send_all(b"next").await
        })
        .await;
        assert!(matches!(next, Err(StreamError::Broken(_))), "{next:?}");
        assert_eq!(&b.receive_some(64).await.unwrap()[..], b"a");

        let (mut a, mut b) = lockstep_stream_pair();
        let scope = trellis::CancelScope::new();
        scope.cancel();
        assert!(scope.run(a.send_all(b"x")).await.unwrap().is_none());
        let (sent, got) = tokio::join!(a.send_all(b"y"), b.receive_some(8));
        sent.unwrap();
        assert_eq!(&got.unwrap()[..], b"y");
    });
}

/// `serve_unix`: a Unix-socket server reporting its path through `start`.
#[test]
fn serve_unix_serves_each_connection() {
    use trellis_net::{ReceiveStream, SendStream, serve_unix};
    trellis::testing::run_test(async {
        let path =
            std::env::temp_dir().join(format!("trellis-net-serve-{}.sock", std::process::id()));
        trellis::open_nursery(|n| async move {
            let path = n
                .start(|status| {
                    serve_unix(
                        |mut s: UnixStream| async move {
                            let data = s.receive_some(64).await?;
                            s.send_all(&data).await?;
                            Ok(())
                        },
                        path,
                        status,
                    )
                })
                .await?;
            let mut c = open_unix_stream(&path).await?;
            c.send_all(b"over unix").await?;
            let mut got = Vec::new();
            while got.len() < 9 {
                got.extend_from_slice(&c.receive_some(64).await?);
            }
            assert_eq!(got, b"over unix");
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    });
}
