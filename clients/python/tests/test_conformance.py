"""The conformance scenarios (``conformance/scenarios.json`` at the repository root) run from
Python against a live trellis actor serving the standard functions.

Run by the Rust test ``crates/trellis-actor/tests/conformance.rs``, which starts the actor and
passes its address in ``TRELLIS_CONFORMANCE_ADDR``. The scenario notation is read and written
here from the document alone: a message is ``[name, fields...]``; ``{"bin": hex}`` is a
binary string; ``"_"`` in an expected message matches anything; an expected map matches when
each of its keys does. The actor holds the tree secret the file names; the script proves it
in its handshake and checks the actor's proof (section 4).
"""

import hashlib
import hmac
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
         "Cancel", "CancelAck", "Credit", "Goodbye", "Auth"]
CALL_KINDS = ["run", "stream", "context"]
FILE = json.loads(SCENARIOS.read_text())
SECRET = FILE["secret"].encode()
SCRIPT = FILE["peer"]
SCRIPT_NONCE = b"\x5a" * 32


def to_wire(value):
    if isinstance(value, dict) and set(value) == {"bin"}:
        return bytes.fromhex(value["bin"])
    return value


def frame(message, extra=()):
    name, fields = message[0], [to_wire(f) for f in message[1:]]
    if name == "Start":
        fields[2] = CALL_KINDS.index(fields[2])
    body = msgpack.packb([KINDS.index(name), *fields, *extra], use_bin_type=True)
    return struct.pack(">I", len(body)) + body


def from_wire(value):
    return {"bin": value.hex()} if isinstance(value, bytes) else value


def notation(raw):
    """A received message (the decoded array) in the scenario notation."""
    kind, fields = raw[0], [from_wire(f) for f in raw[1:]]
    name = KINDS[kind]
    if name == "Start":
        fields[2] = CALL_KINDS[fields[2]]
    if name == "Hello":
        fields = fields[:3]
    if name == "Auth":
        fields = fields[:4]
    return [name, *fields]


def proof(label, nonce_connector, nonce_acceptor, credential, connector, acceptor=None,
          secret=SECRET):
    fields = [label, nonce_connector, nonce_acceptor, credential.encode(),
              connector[0].encode(), connector[1].encode()]
    if acceptor is not None:
        fields += [acceptor[0].encode(), acceptor[1].encode()]
    transcript = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def auth(theirs, secret=SECRET, credential="tree"):
    """The script's Auth over the actor's nonce ``theirs``."""
    if secret is None or credential is None:
        return frame(["Auth", None, None, SCRIPT, 0])
    p = proof(b"trellis connector proof", SCRIPT_NONCE, theirs, credential, SCRIPT,
              secret=secret)
    return frame(["Auth", credential, {"bin": p.hex()}, SCRIPT, 0])


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


def matches_message(pattern, actual):
    """A message may carry more fields than its pattern lists (a newer minor version's)."""
    if isinstance(pattern, list) and isinstance(actual, list) and len(actual) > len(pattern):
        actual = actual[:len(pattern)]
    return matches(pattern, actual)


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
    return frame(["Hello", [2, 0], {"bin": SCRIPT_NONCE.hex()}, {}])


def run(scenario, wire):
    where = f"scenario {scenario['name']} (§{scenario['spec']}: {scenario['must']})"
    peeked = []
    theirs = [b""]

    def take():
        got = peeked.pop() if peeked else wire.next()
        if got and got[0] == "Hello":
            theirs[0] = bytes.fromhex(got[2]["bin"])
        return got

    if scenario.get("hello", True):
        wire.send(hello())
        first = take()
        assert first and first[0] == "Hello", f"{where}: expected Hello, got {first}"
        wire.send(auth(theirs[0]))
        answer = take()
        assert answer and answer[0] == "Auth" and answer[1] == "tree", \
            f"{where}: expected the actor's Auth, got {answer}"
        expected = proof(b"trellis acceptor proof", SCRIPT_NONCE, theirs[0], "tree", SCRIPT,
                         answer[3])
        assert hmac.compare_digest(bytes.fromhex(answer[2]["bin"]), expected), \
            f"{where}: the actor's proof is wrong"
    for i, step in enumerate(scenario["steps"], 1):
        if "send_auth" in step:
            a = step["send_auth"]
            secret = a.get("secret")
            over = b"\x11" * 32 if a.get("nonce") == "other" else theirs[0]
            wire.send(auth(over, secret.encode() if secret else None, a.get("credential")))
        elif "send" in step:
            wire.send(frame(step["send"], step.get("extra", ())))
        elif "send_hex" in step:
            wire.send(bytes.fromhex(step["send_hex"].replace(" ", "")))
        elif "expect" in step:
            got = take()
            assert got is not None and matches_message(step["expect"], got), \
                f"{where}, step {i}: expected {step['expect']}, got {got}"
        elif "skip" in step:
            while True:
                got = take()
                if got is None or not matches_message(step["skip"], got):
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
