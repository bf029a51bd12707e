//! TCP: happy eyeballs against real listeners on loopback that accept, refuse or never answer
//! (a listener whose accept queue is full drops new connection attempts), with the autojump
//! clock; listeners and structured servers. Ported from Trio's
//! `test_highlevel_open_tcp_stream.py`, `test_highlevel_open_tcp_listeners.py` and
//! `test_highlevel_serve_listeners.py` (the original named on each test).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::time::Instant;
use trellis_net::testing::echo;
use trellis_net::{
    ConnectError, ConnectOptions, Listener, ReceiveStream, Resolve, SendStream, TcpListener,
    TcpStream, open_tcp_listeners, open_tcp_stream, open_tcp_stream_with, reorder_for_rfc_6555,
    serve_tcp,
};

/// A resolver that answers with fixed addresses.
struct Fixed(Vec<SocketAddr>);

impl Resolve for Fixed {
    async fn resolve(&self, _host: &str, _port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(self.0.clone())
    }
}

/// A listener that accepts.
async fn good() -> (tokio::net::TcpListener, SocketAddr) {
    let l = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    (l, addr)
}

/// An address where connecting fails at once (nothing listens).
fn refusing() -> SocketAddr {
    let l = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    l.local_addr().unwrap() // closed again when `l` drops
}

/// A listener whose accept queue is full: connection attempts to it hang.
struct Blackhole {
    _listener: tokio::net::TcpListener,
    _filler: std::net::TcpStream,
    addr: SocketAddr,
}

fn blackhole() -> Blackhole {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind((Ipv4Addr::LOCALHOST, 0).into()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let filler = std::net::TcpStream::connect(addr).unwrap();
    Blackhole {
        _listener: listener,
        _filler: filler,
        addr,
    }
}

fn delay(ms: u64) -> ConnectOptions {
    ConnectOptions {
        happy_eyeballs_delay: Duration::from_millis(ms),
        local_address: None,
    }
}

/// Trio: test_reorder_for_rfc_6555_section_5_4
#[test]
fn reorder_puts_another_family_second() {
    let v4 = |p| SocketAddr::from((Ipv4Addr::LOCALHOST, p));
    let v6 = |p| SocketAddr::from((Ipv6Addr::LOCALHOST, p));
    let mut addrs = vec![v4(1), v4(2), v6(3), v6(4)];
    reorder_for_rfc_6555(&mut addrs);
    assert_eq!(addrs, [v4(1), v6(3), v4(2), v6(4)]);
    let mut addrs = vec![v6(1), v4(2), v6(3)];
    reorder_for_rfc_6555(&mut addrs);
    assert_eq!(addrs, [v6(1), v4(2), v6(3)]);
    let mut addrs = vec![v4(1), v4(2)];
    reorder_for_rfc_6555(&mut addrs);
    assert_eq!(addrs, [v4(1), v4(2)]);
    reorder_for_rfc_6555(&mut []);
}

/// Trio: test_open_tcp_stream_real_socket_smoketest
#[test]
fn real_socket_smoketest() {
    trellis::testing::run_test(async {
        let (l, addr) = good().await;
        let mut listener = TcpListener::new(l);
        let mut client = open_tcp_stream("127.0.0.1", addr.port()).await.unwrap();
        let mut server = listener.accept().await.unwrap();
        client.send_all(b"x").await.unwrap();
        assert_eq!(&server.receive_some(1).await.unwrap()[..], b"x");
        assert!(client.get_ref().unwrap().nodelay().unwrap());
    });
}

/// Trio: test_one_host_quick_fail / test_all_fail — every attempt's error, in order.
#[test]
fn all_fail_reports_every_attempt() {
    trellis::testing::run_test(async {
        let addrs = vec![refusing(), refusing()];
        let err = open_tcp_stream_with(&Fixed(addrs.clone()), "h", 1, &delay(250))
            .await
            .unwrap_err();
        let ConnectError::AllFailed { attempts, .. } = &err else {
            panic!("{err:?}");
        };
        let tried: Vec<_> = attempts.iter().map(|(a, _)| *a).collect();
        assert_eq!(tried, addrs);
        assert!(
            attempts
                .iter()
                .all(|(_, e)| e.kind() == io::ErrorKind::ConnectionRefused)
        );
    });
}

/// Trio: test_no_hosts
#[test]
fn no_address_is_an_error() {
    trellis::testing::run_test(async {
        let err = open_tcp_stream_with(&Fixed(vec![]), "nowhere", 1, &delay(250))
            .await
            .unwrap_err();
        assert!(matches!(err, ConnectError::NoAddress { .. }));
    });
}

/// Trio: test_basic_fallthrough — a refusal starts the next attempt at once; a silent address
/// holds it for the delay; the first success wins, at exactly that time.
#[test]
fn falls_through_refusals_and_silence() {
    trellis::testing::run_test(async {
        let hole = blackhole();
        let (l, ok) = good().await;
        let t0 = Instant::now();
        let stream =
            open_tcp_stream_with(&Fixed(vec![refusing(), hole.addr, ok]), "h", 1, &delay(300))
                .await
                .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(300));
        let peer = stream.get_ref().unwrap().peer_addr().unwrap();
        assert_eq!(peer, ok);
        drop(l);
    });
}

/// Trio: test_early_success — a later attempt that succeeds first wins; the earlier, still
/// pending one is cancelled.
#[test]
fn early_success_of_a_later_attempt_wins() {
    trellis::testing::run_test(async {
        let (hole_a, hole_b) = (blackhole(), blackhole());
        let (_l, ok) = good().await;
        let t0 = Instant::now();
        let stream = open_tcp_stream_with(
            &Fixed(vec![hole_a.addr, hole_b.addr, ok]),
            "h",
            1,
            &delay(250),
        )
        .await
        .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_millis(500));
        assert_eq!(stream.get_ref().unwrap().peer_addr().unwrap(), ok);
    });
}

/// Trio: test_custom_delay
#[test]
fn custom_delay() {
    trellis::testing::run_test(async {
        let hole = blackhole();
        let (_l, ok) = good().await;
        let t0 = Instant::now();
        open_tcp_stream_with(&Fixed(vec![hole.addr, ok]), "h", 1, &delay(1_000))
            .await
            .unwrap();
        assert_eq!(t0.elapsed(), Duration::from_secs(1));
    });
}

/// Trio: test_cancel — cancelling the caller cancels every attempt.
#[test]
fn cancel_while_connecting() {
    trellis::testing::run_test(async {
        let (a, b) = (blackhole(), blackhole());
        let outcome = trellis::move_on_after(Duration::from_millis(400), async {
            open_tcp_stream_with(&Fixed(vec![a.addr, b.addr]), "h", 1, &delay(250)).await
        })
        .await
        .unwrap();
        assert!(outcome.is_none());
    });
}

/// Trio: test_open_tcp_listeners_basic — port 0 gives both families the same port.
#[test]
fn listeners_on_both_families_share_the_port() {
    trellis::testing::run_test(async {
        let listeners = open_tcp_listeners(0, None).await.unwrap();
        let ports: Vec<u16> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().port())
            .collect();
        assert!(!ports.is_empty());
        assert!(ports.iter().all(|p| *p == ports[0]), "{ports:?}");
        let families: Vec<bool> = listeners
            .iter()
            .map(|l| l.local_addr().unwrap().is_ipv4())
            .collect();
        assert!(families.contains(&true));
    });
}

/// Trio: test_serve_tcp / test_serve_listeners_basic — reports its addresses through
/// `start`, serves each connection in a task, and stops when cancelled.
#[test]
fn serve_tcp_serves_each_connection() {
    trellis::testing::run_test(async {
        trellis::open_nursery(|n| async move {
            let addrs = n
                .start(|status| serve_tcp(echo::<TcpStream>, 0, status))
                .await?;
            let port = addrs[0].port();
            let mut clients = Vec::new();
            for i in 0..3u8 {
                let mut c = open_tcp_stream("127.0.0.1", port).await?;
                c.send_all(&[i; 10]).await?;
                clients.push(c);
            }
            for (i, c) in clients.iter_mut().enumerate() {
                let mut got = Vec::new();
                while got.len() < 10 {
                    got.extend_from_slice(&c.receive_some(10).await?);
                }
                assert_eq!(got, [i as u8; 10]);
            }
            n.cancel();
            Ok::<_, trellis::Error>(())
        })
        .await
        .unwrap();
    });
}
