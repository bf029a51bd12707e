"""The Python peer against a real trellis actor.

Run by the Rust test ``crates/trellis-actor/tests/python_peer.rs``, which starts a root actor
(over a Unix socket or TCP) with the functions used here and a child actor ``worker``, and
passes the root's address in ``TRELLIS_PEER_ADDR``.
"""

import os
import socket
import struct
import unittest

import msgpack

from trellis_peer import CallCancelled, ConnectionLost, Peer, RemoteError
from trellis_peer.peer import parse_addr

ADDR = os.environ.get("TRELLIS_PEER_ADDR")


@unittest.skipUnless(ADDR, "TRELLIS_PEER_ADDR is not set (run by python_peer.rs)")
class AgainstARealActor(unittest.TestCase):
    def setUp(self):
        self.peer = Peer.connect(ADDR)

    def tearDown(self):
        self.peer.close()

    def test_handshake_names_the_actor(self):
        self.assertEqual(self.peer.remote["name"], "root")
        self.assertEqual(len(self.peer.remote["uid"]), 32)
        self.assertGreater(self.peer.remote["pid"], 1)
        self.assertEqual(self.peer.remote["version"][0], 2)
        self.assertEqual(self.peer.remote["credential"], "tree")

    def test_run_calls_with_values_and_structs(self):
        self.assertEqual(self.peer.call("add", 1, 2), 3)
        self.assertEqual(self.peer.call("add", -(2**40), 1), -(2**40) + 1)
        # A struct is a map keyed by field name, both ways.
        self.assertEqual(
            self.peer.call("describe", {"name": "Ada", "age": 36}),
            {"name": "ADA", "age": 37, "tags": ["older"]},
        )
        # A function without parameters takes an empty argument list.
        info = self.peer.call("trellis.info")
        self.assertEqual(info["id"]["name"], "root")

    def test_remote_error_carries_its_report(self):
        with self.assertRaises(RemoteError) as caught:
            self.peer.call("fails", "bolts")
        error = caught.exception
        self.assertEqual(error.kind, "Failed")
        self.assertTrue(error.type_name.endswith("OutOfStock"), error.type_name)
        self.assertEqual(error.message, "out of stock: bolts")
        self.assertEqual(error.actor[0], "root")
        # The error value itself travels too (the type is registered on the Rust side).
        self.assertEqual(msgpack.unpackb(error.report["value"]), "bolts")

    def test_unknown_function_and_bad_arguments_are_refused(self):
        with self.assertRaises(RemoteError) as caught:
            self.peer.call("no_such_function")
        self.assertEqual(caught.exception.kind, "UnknownFunction")
        with self.assertRaises(RemoteError) as caught:
            self.peer.call("add", "one", "two")
        self.assertEqual(caught.exception.kind, "BadArguments")
        # The connection is fine afterwards.
        self.assertEqual(self.peer.call("add", 2, 2), 4)

    def test_stream_items_arrive_in_order_under_credit(self):
        # A window of 8: the callee may never have more than 8 items out.
        stream = self.peer.stream("count_to", 1000, window=8)
        self.assertEqual(list(stream), list(range(1, 1001)))
        self.assertIsNone(stream.result)

    def test_context_streams_both_ways(self):
        with self.peer.context("echo", "hello") as ctx:
            self.assertEqual(ctx.first, "hello back")
            for i in range(300):
                ctx.send(i)
                self.assertEqual(ctx.recv(), 2 * i)
        self.assertEqual(ctx.result, 300)

    def test_sending_respects_the_callees_credit(self):
        # `sink` grants 4 items at a time and fails the call if it ever gets more.
        with self.peer.context("sink") as ctx:
            for i in range(500):
                ctx.send(i)
        self.assertEqual(ctx.result, sum(range(500)))

    def test_cancelling_a_stream_ends_it_with_cancel_ack(self):
        stream = self.peer.stream("count_forever", window=8)
        got = [next(stream) for _ in range(20)]
        self.assertEqual(got, list(range(20)))
        stream.cancel()
        with self.assertRaises(CallCancelled) as caught:
            for _ in stream:
                pass
        self.assertEqual(caught.exception.requested_by, self.peer.local)
        self.assertIsNone(caught.exception.reason)
        self.assertEqual(self.peer.call("add", 1, 1), 2)

    def test_a_cancel_reason_comes_back_with_the_cancel_ack(self):
        # Spec 2.1 section 6.4: the callee repeats the Cancel's reason in its CancelAck.
        stream = self.peer.stream("count_forever", window=8)
        self.assertEqual(next(stream), 0)
        stream.cancel("enough for today")
        with self.assertRaises(CallCancelled) as caught:
            for _ in stream:
                pass
        self.assertEqual(caught.exception.reason, ["explicit", "enough for today", None])
        self.assertIn("enough for today", str(caught.exception))

    def test_stop_ends_a_stream_early(self):
        # Spec 1.1 section 6.3: the callee stops producing at the caller's Stop and returns.
        stream = self.peer.stream("count_forever", window=8)
        self.assertEqual([next(stream) for _ in range(3)], [0, 1, 2])
        self.assertIsNone(stream.close())
        self.assertTrue(stream.done)
        self.assertEqual(self.peer.call("add", 1, 1), 2)

    def test_calls_interleave_on_one_connection(self):
        first = self.peer.stream("count_to", 50, window=4)
        second = self.peer.stream("count_to", 50, window=4)
        pairs = list(zip(first, second))
        self.assertEqual(pairs, [(i, i) for i in range(1, 51)])

    def test_actors_are_found_through_the_registrar(self):
        entry = self.peer.call("trellis.find", "worker")
        self.assertEqual(entry["name"], "worker")
        self.assertIsNone(self.peer.call("trellis.find", "nobody"))
        with Peer.connect(entry["addr"]) as worker:
            self.assertEqual(worker.remote["uid"], entry["uid"])
            self.assertEqual(worker.call("add", 40, 2), 42)
            info = worker.call("trellis.info")
            self.assertEqual(info["parent"], self.peer.remote["uid"])

    def test_a_malformed_frame_ends_only_that_connection(self):
        family, where = parse_addr(ADDR)
        with socket.socket(family, socket.SOCK_STREAM) as raw:
            raw.settimeout(10)
            raw.connect(where)
            # A frame announcing 0 bytes (section 2): the actor must close the connection.
            raw.sendall(struct.pack(">I", 0))
            received = b""
            while True:
                chunk = raw.recv(65536)
                if not chunk:
                    break
                received += chunk
        self.assertEqual(self.peer.call("add", 3, 4), 7)

    def test_a_peer_vanishing_mid_stream_leaves_the_actor_serving(self):
        gone = Peer.connect(ADDR)
        stream = gone.stream("count_forever", window=8)
        self.assertEqual([next(stream) for _ in range(5)], list(range(5)))
        gone._sock.close()  # no Goodbye: as if the process died
        gone._sock = None
        self.assertEqual(self.peer.call("add", 20, 22), 42)
        with Peer.connect(ADDR) as again:
            self.assertEqual(list(again.stream("count_to", 3)), [1, 2, 3])

    def test_goodbye_closes_cleanly(self):
        other = Peer.connect(ADDR)
        self.assertEqual(other.call("add", 0, 0), 0)
        other.close()
        with self.assertRaises((ConnectionLost, OSError, AttributeError)):
            other.call("add", 1, 1)


class AgainstABrokenCallee(unittest.TestCase):
    """Spec 1.1 section 6.5 from the caller's side: a callee that breaks one call's rules fails
    that call; the peer cancels it, drops what else comes for it, and goes on. The callee is a
    script on the other end of a socket pair."""

    def test_a_broken_call_fails_alone(self):
        ours, theirs = socket.socketpair()
        seen = []

        def send(message):
            body = msgpack.packb(message, use_bin_type=True)
            theirs.sendall(struct.pack(">I", len(body)) + body)

        def read():
            header = theirs.recv(4, socket.MSG_WAITALL)
            (length,) = struct.unpack(">I", header)
            return msgpack.unpackb(theirs.recv(length, socket.MSG_WAITALL), raw=False)

        def callee():
            seen.append(read())  # Hello
            send([0, [2, 0], b"s" * 32, {}])
            seen.append(read())  # Auth, without a credential (the peer has no secret)
            send([12, None, None, ["script", "1"], 1])
            start = read()
            seen.append(start)
            send([2, start[1]])
            send([4, start[1], 0])  # an item on a run call: the call's rules broken
            seen.append(read())  # the peer's Cancel
            send([9, start[1], ["script", "1"]])  # its CancelAck, to be dropped
            second = read()
            send([2, second[1]])
            send([6, second[1], 42])

        import threading
        thread = threading.Thread(target=callee)
        thread.start()
        peer = Peer(ours)
        with self.assertRaises(Exception) as caught:
            peer.call("first")
        self.assertIn("unexpected message", str(caught.exception))
        self.assertEqual(peer.call("second"), 42)
        thread.join()
        self.assertEqual(seen[1][:3], [12, None, None])
        self.assertEqual(seen[3][0], 8)  # Cancel
        self.assertEqual(seen[3][1], seen[2][1])
        peer._sock.close()
        theirs.close()


if __name__ == "__main__":
    unittest.main()
