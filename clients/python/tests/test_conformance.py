"""The conformance scenarios (``conformance/scenarios.json`` at the repository root) run from
Python against a live trellis actor serving the standard functions.

Run by the Rust test ``crates/trellis-actor/tests/conformance.rs``, which starts the actor and
passes its address in ``TRELLIS_CONFORMANCE_ADDR``. The scenario notation is read and written
here from the document alone: a message is ``[name, fields...]``; ``"_"`` in an expected
message matches anything; an expected map matches when each of its keys does.
"""

import json
import os
import socket
import struct
import unittest
from pathlib import Path

import msgpack

from trellis_peer.peer import parse_addr

ADDR = os.environ.get("TRELLIS_CONFORMANCE_ADDR")
SCENARIOS = Path(__file__).resolve().parents[3] / "conformance" / "scenarios.json"

KINDS = ["Hello", "Start", "StartAck", "Started", "Yield", "Stop", "Return", "Error",
         "Cancel", "CancelAck", "Credit", "Goodbye"]
CALL_KINDS = ["run", "stream", "context"]


def frame(message, extra=()):
    name, fields = message[0], list(message[1:])
    if name == "Start":
        fields[2] = CALL_KINDS.index(fields[2])
    body = msgpack.packb([KINDS.index(name), *fields, *extra], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def notation(raw):
    """A received message (the decoded array) in the scenario notation."""
    kind, fields = raw[0], list(raw[1:])
    name = KINDS[kind]
    if name == "Start":
        fields[2] = CALL_KINDS[fields[2]]
    if name == "Hello":
        fields = fields[:4]
    return [name, *fields]


def matches(pattern, actual):
    if pattern == "_":
        return True
    if isinstance(pattern, dict):
        return isinstance(actual, dict) and all(
            k in actual and matches(v, actual[k]) for k, v in pattern.items())
    if isinstance(pattern, list):
        return (isinstance(actual, list) and len(pattern) == len(actual)
                and all(matches(p, a) for p, a in zip(pattern, actual)))
    return pattern == actual


class Live:
    """One connection to the actor; ``next`` is the next message, or None at its end."""

    def __init__(self, addr):
        family, where = parse_addr(addr)
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.settimeout(20)
        self.sock.connect(where)
        self.buf = bytearray()

    def send(self, data):
        try:
            self.sock.sendall(data)
        except OSError:
            pass  # the actor closed already; what it said is what counts

    def _fill(self):
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        self.buf += chunk
        return bool(chunk)

    def next(self):
        while True:
            if len(self.buf) >= 4:
                (length,) = struct.unpack(">I", self.buf[:4])
                if len(self.buf) >= 4 + length:
                    body = bytes(self.buf[4:4 + length])
                    del self.buf[:4 + length]
                    return notation(msgpack.unpackb(body, raw=False, strict_map_key=False))
            if not self._fill():
                return None

    def close(self):
        self.sock.close()


def hello():
    return frame(["Hello", [1, 1], ["conformance", "00000000000000000000000000000001"], 0, {}])


def run(scenario, wire):
    where = f"scenario {scenario['name']} (§{scenario['spec']}: {scenario['must']})"
    peeked = []
    take = lambda: peeked.pop() if peeked else wire.next()  # noqa: E731
    if scenario.get("hello", True):
        wire.send(hello())
        first = take()
        assert first and first[0] == "Hello", f"{where}: expected Hello, got {first}"
    for i, step in enumerate(scenario["steps"], 1):
        if "send" in step:
            wire.send(frame(step["send"], step.get("extra", ())))
        elif "send_hex" in step:
            wire.send(bytes.fromhex(step["send_hex"].replace(" ", "")))
        elif "expect" in step:
            got = take()
            assert got is not None and matches(step["expect"], got), \
                f"{where}, step {i}: expected {step['expect']}, got {got}"
        elif "skip" in step:
            while True:
                got = take()
                if got is None or not matches(step["skip"], got):
                    peeked.append(got)
                    break
        elif "expect_close" in step:
            got = take()
            assert got is None, f"{where}, step {i}: expected the end, got {got}"
        else:
            raise ValueError(f"unknown step {step}")


@unittest.skipUnless(ADDR, "TRELLIS_CONFORMANCE_ADDR is not set (run by conformance.rs)")
class Conformance(unittest.TestCase):
    def test_every_scenario(self):
        scenarios = json.loads(SCENARIOS.read_text())["scenarios"]
        self.assertGreaterEqual(len(scenarios), 30)
        for scenario in scenarios:
            with self.subTest(scenario["name"]):
                wire = Live(ADDR)
                try:
                    run(scenario, wire)
                finally:
                    wire.close()


if __name__ == "__main__":
    unittest.main()
