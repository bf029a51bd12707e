"""A Python peer for trellis actors.

Written from ``docs/wire-protocol.md`` alone; its only dependency is ``msgpack``. It connects to
an actor over TCP or a Unix socket, does the handshake (proving the tree's secret, found as
``Peer.connect`` says), and makes calls: run calls, stream
calls whose items it consumes, and contexts with a stream both ways. Flow control follows the
protocol's credit rules. It is synchronous: one thread drives one connection, and the calls it
makes may interleave (messages for a call that is not being read are kept for it).

    from trellis_peer import Peer

    with Peer.connect("tcp:127.0.0.1:4000") as peer:
        print(peer.call("add", 1, 2))
        for item in peer.stream("count_to", 10):
            print(item)
        with peer.context("echo", "hello") as ctx:
            print(ctx.first)
            ctx.send(5)
            print(ctx.recv())
"""

from .peer import (
    PROTOCOL_VERSION,
    CallCancelled,
    ConnectionLost,
    Context,
    Peer,
    PeerError,
    ProtocolError,
    RemoteError,
    Stream,
    Unauthorized,
)

__all__ = [
    "PROTOCOL_VERSION",
    "CallCancelled",
    "ConnectionLost",
    "Context",
    "Peer",
    "PeerError",
    "ProtocolError",
    "RemoteError",
    "Stream",
    "Unauthorized",
]
