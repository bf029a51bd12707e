//! UDP with checkpoints (Trio: `test_socket.py::test_SocketType_basics` / sendto-recvfrom).

use std::net::Ipv4Addr;
use std::time::Duration;

use trellis::CancelScope;
use trellis_net::UdpSocket;

#[test]
fn datagrams_both_ways_and_cancellation() {
    trellis::testing::run_test(async {
        let a = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let b = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        a.send_to(b"ping", b_addr).await.unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"ping"[..], a_addr));

        // A receive cancelled while waiting loses nothing that arrives later.
        let waited = trellis::move_on_after(Duration::from_millis(10), b.recv_from(&mut buf)).await;
        assert!(matches!(waited, Ok(None)));
        a.send_to(b"after", b_addr).await.unwrap();
        let (n, _) = b.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"after");

        // In a cancelled scope, nothing is sent.
        let scope = CancelScope::new();
        scope.cancel();
        let sent = scope.run(a.send_to(b"lost", b_addr)).await.unwrap();
        assert!(sent.is_none());

        // Connected sockets.
        b.connect(a_addr).await.unwrap();
        b.send(b"pong").await.unwrap();
        let (n, from) = a.recv_from(&mut buf).await.unwrap();
        assert_eq!((&buf[..n], from), (&b"pong"[..], b_addr));
        a.connect(b_addr).await.unwrap();
        a.send(b"x").await.unwrap();
        let n = b.recv(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"x");
        // Nothing else arrived: the datagram sent in the cancelled scope never went out.
        let waited = trellis::move_on_after(Duration::from_millis(10), b.recv(&mut buf)).await;
        assert!(matches!(waited, Ok(None)));
    });
}
