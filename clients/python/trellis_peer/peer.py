"""The connection, the calls, the messages (section numbers refer to docs/wire-protocol.md)."""

import collections
import hashlib
import hmac
import os
import socket
import stat
import struct
import uuid

import msgpack

PROTOCOL_VERSION = (2, 1)

# Message kinds (section 3).
(HELLO, START, START_ACK, STARTED, YIELD, STOP, RETURN, ERROR, CANCEL, CANCEL_ACK, CREDIT,
 GOODBYE, AUTH) = range(13)
NONCE_LEN = 32
TREE = "tree"
# Call kinds.
RUN, STREAM, CONTEXT = 0, 1, 2

MAX_FRAME = 16 * 1024 * 1024
UNLIMITED = 2**32 - 1


class PeerError(Exception):
    """Anything that went wrong talking to an actor."""


class ProtocolError(PeerError):
    """The actor sent what the protocol does not allow, or undecodable bytes."""


class Unauthorized(PeerError):
    """The handshake failed on authentication (section 4): the actor refused our proof, or
    could not prove the secret itself."""


class ConnectionLost(PeerError):
    """The connection ended: the actor said goodbye, or vanished."""


class RemoteError(PeerError):
    """A call failed in the actor (section 7): the report's fields as attributes."""

    def __init__(self, report):
        self.report = report
        actor = report.get("actor") or {}
        self.actor = (actor.get("name"), actor.get("uid"))
        self.kind = report.get("kind")
        self.type_name = report.get("type_name")
        self.message = report.get("message")
        self.chain = list(report.get("chain") or [])
        self.backtrace = report.get("backtrace")
        self.group = [RemoteError(r) for r in report.get("group") or []]
        super().__init__(
            f"actor {self.actor[0]} failed: {self.type_name}: {self.message}"
        )


class CallCancelled(PeerError):
    """The call ended with CancelAck: it was cancelled, at the request of ``requested_by``;
    ``reason`` is the CancelAck's ``[source, message, origin]`` (protocol 2.1), or None."""

    def __init__(self, requested_by, reason=None):
        self.requested_by = requested_by
        self.reason = reason
        text = f"call cancelled by {requested_by[0]}#{requested_by[1][:8]}"
        if reason is not None:
            text += f" ({reason[0]}: {reason[1]})" if reason[1] else f" ({reason[0]})"
        super().__init__(text)


def _reason(message, at):
    """The optional reason at ``message[at]`` (section 3): a list of at least three elements
    whose first is a string, or None for anything else."""
    if len(message) > at:
        reason = message[at]
        if isinstance(reason, list) and len(reason) >= 3 and isinstance(reason[0], str):
            return reason[:3]
    return None


def parse_addr(addr):
    """``unix:PATH`` or ``tcp:HOST:PORT`` (section 8's address form)."""
    if addr.startswith("unix:"):
        return socket.AF_UNIX, addr[len("unix:"):]
    if addr.startswith("tcp:"):
        host, _, port = addr[len("tcp:"):].rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        return family, (host, int(port))
    raise ValueError(f"not an actor address (unix:PATH or tcp:HOST:PORT): {addr!r}")


class Peer:
    """One connection to one actor, as the connector (odd call ids, section 5)."""

    def __init__(self, sock, name="python-peer", secret=None, credential=TREE):
        """Runs the handshake (section 4) over ``sock``, proving ``secret`` (bytes) as
        ``credential``; with no secret, the peer presents no credential (an actor serves such
        a peer only the functions it exposes to anyone)."""
        self._sock = sock
        self._buf = bytearray()
        self._next_cid = 1
        self._pending = {}  # cid -> deque of messages not yet taken by their call
        self._abandoned = set()  # calls the callee broke: dropped until their end (6.5)
        self._ended = None
        self.local = (name, uuid.uuid4().hex)
        nonce = os.urandom(NONCE_LEN)
        self._send([HELLO, list(PROTOCOL_VERSION), nonce, {}])
        hello = self._read_message()
        if not isinstance(hello, list) or len(hello) < 2 or hello[0] != HELLO:
            raise ProtocolError(f"expected Hello first, got {hello!r}")
        version = hello[1]
        if not isinstance(version, list) or len(version) < 2 or version[0] != PROTOCOL_VERSION[0]:
            self._send([ERROR, None, _report(("", ""), "Protocol", f"version {version} not spoken")])
            self.close()
            raise ProtocolError(f"the actor speaks protocol {version}, this peer {PROTOCOL_VERSION}")
        if len(hello) < 4 or not isinstance(hello[2], bytes) or len(hello[2]) != NONCE_LEN:
            self.close()
            raise ProtocolError(f"a Hello without a {NONCE_LEN}-byte nonce: {hello!r}")
        theirs = hello[2]
        if secret is None:
            credential = None
        proof = None
        if credential is not None:
            proof = _proof(secret, b"trellis connector proof", nonce, theirs, credential,
                           self.local)
        self._send([AUTH, credential, proof, list(self.local), os.getpid()])
        auth = self._read_message()
        if isinstance(auth, list) and len(auth) >= 3 and auth[0] == ERROR and auth[1] is None:
            self._ended = "refused"
            report = auth[2] if isinstance(auth[2], dict) else {}
            if report.get("kind") == "Unauthorized":
                raise Unauthorized("the actor refused the connection: not authorized")
            raise RemoteError(report)
        if not isinstance(auth, list) or len(auth) < 5 or auth[0] != AUTH:
            raise ProtocolError(f"expected Auth, got {auth!r}")
        actor, pid = auth[3], auth[4]
        if auth[1] != credential:
            self._refuse()
        if credential is not None:
            expected = _proof(secret, b"trellis acceptor proof", nonce, theirs, credential,
                              self.local, actor[:2])
            if not isinstance(auth[2], bytes) or not hmac.compare_digest(auth[2], expected):
                self._refuse()
        self.remote = {"name": actor[0], "uid": actor[1], "pid": pid, "version": tuple(version[:2]),
                       "credential": credential}

    def _refuse(self):
        """The actor did not prove what it had to: say so and close (section 4)."""
        self._send([ERROR, None, _report(("", ""), "Unauthorized", "not authorized")])
        self._sock.close()
        self._sock = None
        raise Unauthorized("the actor did not prove the secret")

    @classmethod
    def connect(cls, addr, name="python-peer", timeout=30.0, secret=None, credential=TREE):
        """Connects to ``addr``. The secret, unless given: the file ``TRELLIS_SECRET_FILE``
        names, else ``TRELLIS_SECRET``, else (for a ``unix:`` address) the ``secret`` file
        next to the socket; with none found, the peer presents no credential."""
        family, where = parse_addr(addr)
        if secret is None:
            secret = find_secret(where if family == socket.AF_UNIX else None)
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(where)
            if family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return cls(sock, name, secret, credential)
        except BaseException:
            sock.close()
            raise

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        """Says Goodbye (section 6) and closes the socket."""
        if self._sock is None:
            return
        try:
            if self._ended is None:
                self._send([GOODBYE])
        except OSError:
            pass
        self._sock.close()
        self._sock = None

    # --- calls ---------------------------------------------------------------------------

    def call(self, function, *args):
        """A run call: the function's result, or RemoteError / CallCancelled."""
        cid = self._start(function, RUN, list(args))
        self._expect_ack(cid)
        return self._terminal(cid, self._next(cid))

    def stream(self, function, *args, window=64):
        """A stream call: iterate over the items; ``.result`` holds the result afterwards."""
        cid = self._start(function, STREAM, list(args), window)
        self._expect_ack(cid)
        return Stream(self, cid, window)

    def context(self, function, *args, window=64):
        """A context call: ``.first`` is the callee's Started value; then items both ways."""
        cid = self._start(function, CONTEXT, list(args), window)
        self._expect_ack(cid)
        message = self._next(cid)
        if message[0] != STARTED:
            self._terminal(cid, message)
            raise ProtocolError(f"a context call ended before Started: {message!r}")
        return Context(self, cid, window, message[2])

    def cancel(self, cid, reason=None):
        """Asks the callee to cancel call ``cid`` on behalf of this peer; ``reason``, a text,
        goes with it (protocol 2.1) and comes back in the CancelAck."""
        if reason is None:
            self._send([CANCEL, cid, list(self.local)])
        else:
            self._send([CANCEL, cid, list(self.local), ["explicit", reason, None]])

    # --- internals -----------------------------------------------------------------------

    def _start(self, function, kind, args, window=None):
        cid = self._next_cid
        self._next_cid += 2
        self._pending[cid] = collections.deque()
        self._send([START, cid, function, kind, args])
        if window is not None:
            # The first grant goes right after Start (section 6, flow control).
            self._send([CREDIT, cid, window])
        return cid

    def _expect_ack(self, cid):
        message = self._next(cid)
        if message[0] == START_ACK:
            return
        self._terminal(cid, message)  # raises for Error, CancelAck, anything else
        raise ProtocolError(f"expected StartAck or Error, got {message!r}")

    def _terminal(self, cid, message):
        """The value of a terminal message, or its error raised; the call is over."""
        kind = message[0]
        if kind == RETURN:
            self._pending.pop(cid, None)
            return message[2]
        if kind == ERROR:
            self._pending.pop(cid, None)
            raise RemoteError(message[2])
        if kind == CANCEL_ACK:
            self._pending.pop(cid, None)
            raise CallCancelled(tuple(message[2][:2]), _reason(message, 3))
        self._abandon(cid)
        raise ProtocolError(f"unexpected message for call {cid}: {message!r}")

    def _abandon(self, cid):
        """The callee broke call ``cid``'s rules: that call fails, the connection goes on
        (section 6.5). Cancels it and drops what else comes for it until its end."""
        if self._pending.pop(cid, None) is not None:
            self._abandoned.add(cid)
            self._send([CANCEL, cid, list(self.local)])

    def _next(self, cid):
        """The next message for call ``cid``, reading the connection as needed."""
        queue = self._pending[cid]
        while not queue:
            self._pump()
        return queue.popleft()

    def _pump(self):
        """Reads one message and routes it."""
        message = self._read_message()
        if not isinstance(message, list) or not message or not isinstance(message[0], int):
            raise ProtocolError(f"not a message: {message!r}")
        kind = message[0]
        if kind == GOODBYE:
            self._end("the actor said goodbye")
        if kind == ERROR and len(message) >= 3 and message[1] is None:
            self._end(f"the actor closed the connection: {RemoteError(message[2])}")
        if kind == START:
            # A call from the actor: this peer serves no functions (section 6 allows refusing).
            self._send([ERROR, message[1], _report(self.local, "UnknownFunction",
                                                    f"a Python peer serves no `{message[2]}`")])
            return
        if len(message) >= 2 and message[1] in self._abandoned:
            if kind in (RETURN, ERROR, CANCEL_ACK):
                self._abandoned.discard(message[1])
            return
        if len(message) < 2 or message[1] not in self._pending:
            # A crossing Credit or Stop for a call that is over; anything else is a bug.
            if kind in (CREDIT, STOP, YIELD):
                return
            raise ProtocolError(f"message for an unknown call: {message!r}")
        self._pending[message[1]].append(message)

    def _end(self, why):
        self._ended = why
        raise ConnectionLost(why)

    def _send(self, message):
        body = msgpack.packb(message, use_bin_type=True)
        self._sock.sendall(struct.pack(">I", len(body)) + body)

    def _read_message(self):
        if self._ended is not None:
            raise ConnectionLost(self._ended)
        while len(self._buf) < 4:
            self._fill()
        (length,) = struct.unpack(">I", self._buf[:4])
        if length == 0 or length > MAX_FRAME:
            self._ended = f"bad frame length {length}"
            raise ProtocolError(self._ended)
        while len(self._buf) < 4 + length:
            self._fill()
        body = bytes(self._buf[4:4 + length])
        del self._buf[:4 + length]
        try:
            return msgpack.unpackb(body, raw=False, strict_map_key=False)
        except Exception as e:  # msgpack raises several types for bad bytes
            raise ProtocolError(f"undecodable frame: {e}") from None

    def _fill(self):
        chunk = self._sock.recv(65536)
        if not chunk:
            self._ended = "the connection ended without Goodbye"
            raise ConnectionLost(self._ended)
        self._buf += chunk


class Stream:
    """The items of a stream call, in order; ``result`` is set once it ends."""

    def __init__(self, peer, cid, window):
        self._peer = peer
        self.cid = cid
        self._window = window
        self._unacked = 0
        self.result = None
        self.done = False

    def __iter__(self):
        return self

    def __next__(self):
        if self.done:
            raise StopIteration
        while True:
            message = self._peer._next(self.cid)
            kind = message[0]
            if kind == YIELD:
                self._consumed()
                return message[2]
            if kind == STOP:
                continue  # the callee's last item came; its result follows
            self.done = True
            self.result = self._peer._terminal(self.cid, message)
            raise StopIteration

    def _consumed(self):
        # Re-grant as items are read, a quarter window at a time.
        self._unacked += 1
        if self._unacked >= max(1, self._window // 4):
            self._peer._send([CREDIT, self.cid, self._unacked])
            self._unacked = 0

    def cancel(self, reason=None):
        """Cancels the call, saying why if ``reason``; iterating then ends with CallCancelled
        (or the result, if first)."""
        self._peer.cancel(self.cid, reason)

    def close(self):
        """Takes no more items: sends Stop and the unlimited grant, and drains to the end."""
        if self.done:
            return self.result
        self._peer._send([STOP, self.cid])
        self._peer._send([CREDIT, self.cid, UNLIMITED])
        for _ in self:
            pass
        return self.result


class Context(Stream):
    """A context call: ``first`` is the Started value; ``send``/``recv`` carry items both ways."""

    def __init__(self, peer, cid, window, first):
        super().__init__(peer, cid, window)
        self.first = first
        self._credit = 0  # items the callee lets us send (it grants after Started)
        self._inbox = collections.deque()  # messages read while waiting for credit
        self._stopped = False

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.finish()
        elif not self.done:
            self.cancel()
            try:
                self.finish()
            except PeerError:
                pass

    def _pull(self):
        """The next message of this call that is not a grant (grants are counted)."""
        while True:
            message = self._inbox.popleft() if self._inbox else self._peer._next(self.cid)
            if message[0] != CREDIT:
                return message
            self._credit = UNLIMITED if message[2] == UNLIMITED else self._credit + message[2]

    def send(self, item):
        """Sends one item, waiting for credit first (section 6: never more than granted)."""
        if self._stopped:
            raise PeerError("send after stop()")
        while self._credit == 0:
            message = self._peer._next(self.cid)
            if message[0] == CREDIT:
                self._credit = UNLIMITED if message[2] == UNLIMITED else message[2]
                continue
            if message[0] in (RETURN, ERROR, CANCEL_ACK):
                self.done = True
                self.result = self._peer._terminal(self.cid, message)
                raise PeerError("the context ended while this side waited to send")
            self._inbox.append(message)
        if self._credit != UNLIMITED:
            self._credit -= 1
        self._peer._send([YIELD, self.cid, item])

    def recv(self):
        """The next item from the callee, or ``None`` once its side of the stream ended."""
        while not self.done:
            message = self._pull()
            kind = message[0]
            if kind == YIELD:
                self._consumed()
                return message[2]
            if kind == STOP:
                return None
            self.done = True
            self.result = self._peer._terminal(self.cid, message)
        return None

    def stop(self):
        """Ends our side of the stream (Stop): the callee's recv sees the end."""
        if not self._stopped:
            self._stopped = True
            self._peer._send([STOP, self.cid])

    def finish(self):
        """Stops our side and waits for the result, discarding items still arriving."""
        self.stop()
        while not self.done:
            message = self._pull()
            if message[0] in (YIELD, STOP):
                continue
            self.done = True
            self.result = self._peer._terminal(self.cid, message)
        return self.result


def read_secret(path):
    """The secret in the file ``path``, which only its owner may access."""
    mode = os.stat(path).st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PeerError(f"the secret file {path} is accessible to other users")
    with open(path, "rb") as f:
        secret = f.read()
    return secret[:-1] if secret.endswith(b"\n") else secret


def find_secret(socket_path=None):
    """The tree secret the environment names, or the one next to an actor's Unix socket."""
    if os.environ.get("TRELLIS_SECRET_FILE"):
        return read_secret(os.environ["TRELLIS_SECRET_FILE"])
    if os.environ.get("TRELLIS_SECRET"):
        return os.environb[b"TRELLIS_SECRET"]
    if socket_path is not None:
        beside = os.path.join(os.path.dirname(socket_path), "secret")
        if os.path.exists(beside):
            return read_secret(beside)
    return None


def _proof(secret, label, nonce_connector, nonce_acceptor, credential, connector, acceptor=None):
    """HMAC-SHA256 over the transcript of section 4: each field preceded by its length as a
    big-endian u32."""
    fields = [label, nonce_connector, nonce_acceptor, credential.encode(),
              connector[0].encode(), connector[1].encode()]
    if acceptor is not None:
        fields += [acceptor[0].encode(), acceptor[1].encode()]
    transcript = b"".join(struct.pack(">I", len(f)) + f for f in fields)
    return hmac.new(secret, transcript, hashlib.sha256).digest()


def _report(actor, kind, message):
    return {
        "actor": {"name": actor[0], "uid": actor[1]},
        "kind": kind,
        "type_name": "python",
        "message": message,
    }
