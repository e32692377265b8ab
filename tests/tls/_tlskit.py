"""Test kit for the TLS layer: a one-connection server thread driving a
transport with select (like the reactor will, but minimal), a TCP relay that
records the bytes on the wire, and a TLS record parser.  Every wait is
bounded by a deadline."""
from __future__ import annotations

import hashlib
import select
import socket
import ssl
import struct
import threading
import time

from ktlswsgi.transport import WANT_READ, WANT_WRITE

TIMEOUT_S = 10.0


class Deadline:
    def __init__(self, seconds: float = TIMEOUT_S):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        left = self.end - time.monotonic()
        if left <= 0:
            raise TimeoutError("test deadline passed")
        return left


def wait_for(fd: int, want: str, deadline: Deadline) -> None:
    r, w = ([fd], []) if want == WANT_READ else ([], [fd])
    select.select(r, w, [], min(deadline.left(), 1.0))


def drive(transport, call, deadline: Deadline):
    """Repeat ``call()`` until it returns something other than a WANT."""
    while True:
        result = call()
        if result is WANT_READ or result is WANT_WRITE or result in (WANT_READ, WANT_WRITE):
            wait_for(transport.fd, result, deadline)
            continue
        return result


def flush_all(transport, deadline: Deadline) -> None:
    while not transport.flush():
        wait_for(transport.fd, WANT_WRITE, deadline)


def send_all(transport, data: bytes, deadline: Deadline) -> None:
    view = memoryview(data)
    while view:
        n = drive(transport, lambda: transport.send(view), deadline)
        assert isinstance(n, int) and n > 0, n
        view = view[n:]
    flush_all(transport, deadline)


def send_file_all(transport, fd: int, size: int, deadline: Deadline) -> int:
    offset = 0
    while offset < size:
        n = drive(transport, lambda: transport.send_file(fd, offset, size - offset), deadline)
        assert isinstance(n, int), n
        if n == 0:
            break
        offset += n
    flush_all(transport, deadline)
    return offset


def recv_until_eof(transport, deadline: Deadline, limit: int = 64 << 20) -> bytes:
    out = bytearray()
    while True:
        chunk = drive(transport, lambda: transport.recv(65536), deadline)
        if chunk == b"":
            return bytes(out)
        out += chunk
        assert len(out) <= limit


def shutdown_all(transport, deadline: Deadline) -> None:
    drive(transport, transport.shutdown, deadline)


class OneConnectionServer:
    """Accept one connection, wrap it in ``transport_cls(context, sock)``,
    handshake, then run ``scenario(transport, deadline)`` in a thread.
    ``result`` / ``error`` / ``info`` are set when the thread ends."""

    def __init__(self, context, transport_cls, scenario=None, timeout_s: float = TIMEOUT_S,
                 family=socket.AF_INET, host="127.0.0.1"):
        self.listener = socket.socket(family, socket.SOCK_STREAM)
        self.listener.bind((host, 0))
        self.listener.listen(8)
        self.port = self.listener.getsockname()[1]
        self.address = (host, self.port)
        self.context = context
        self.transport_cls = transport_cls
        self.scenario = scenario
        self.timeout_s = timeout_s
        self.result = None
        self.error = None
        self.info = None
        self.transport = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = Deadline(self.timeout_s)
        transport = None
        try:
            select.select([self.listener], [], [], deadline.left())
            sock, _ = self.listener.accept()
            transport = self.transport_cls(self.context, sock)
            self.transport = transport
            drive(transport, transport.handshake, deadline)
            self.info = transport.info()
            if self.scenario is not None:
                self.result = self.scenario(transport, deadline)
        except BaseException as exc:  # reported to the test through .error
            self.error = exc
        finally:
            if transport is not None:
                transport.close()
            self.listener.close()

    def join(self, timeout_s: float = TIMEOUT_S):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "server thread did not finish"
        return self


def client_context(cafile=None, minimum=None, maximum=None, alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if cafile:
        ctx.load_verify_locations(cafile)
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minimum:
        ctx.minimum_version = minimum
    if maximum:
        ctx.maximum_version = maximum
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def connect_tls(address, ctx, server_hostname="localhost", timeout_s=TIMEOUT_S):
    raw = socket.create_connection(address, timeout=timeout_s)
    # No Nagle: small writes leave at once (tests time what arrives together).
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def recv_all_blocking(sock, limit: int = 64 << 20) -> bytes:
    out = bytearray()
    while True:
        try:
            chunk = sock.recv(1 << 20)
        except ssl.SSLZeroReturnError:
            break
        if not chunk:
            break
        out += chunk
        assert len(out) <= limit
    return bytes(out)


def read_after_stall(srv, cafile, release, rcvbuf: int = 32 * 1024) -> bytes:
    """A client with a small receive buffer that reads nothing until the
    server sets `release` (it has blocked), then everything until EOF; the
    server thread is joined."""
    raw = socket.create_connection(srv.address, timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    with client_context(cafile).wrap_socket(raw, server_hostname="localhost") as c:
        assert release.wait(10), "the server never blocked"
        got = recv_all_blocking(c)
    srv.join()
    return got


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Relay:
    """TCP relay client <-> server that records both directions."""

    def __init__(self, target, timeout_s: float = TIMEOUT_S):
        self.target = target
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(1)
        self.address = self.listener.getsockname()
        self.to_client = bytearray()
        self.to_server = bytearray()
        self.timeout_s = timeout_s
        self.error = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        deadline = Deadline(self.timeout_s)
        try:
            select.select([self.listener], [], [], deadline.left())
            client, _ = self.listener.accept()
            server = socket.create_connection(self.target, timeout=deadline.left())
            pairs = {client: (server, self.to_server), server: (client, self.to_client)}
            open_ends = {client, server}
            while open_ends:
                readable, _, _ = select.select(list(open_ends), [], [], min(deadline.left(), 1.0))
                for s in readable:
                    peer, record = pairs[s]
                    try:
                        data = s.recv(1 << 20)
                    except ConnectionError:
                        data = b""
                    if data:
                        record += data
                        peer.settimeout(deadline.left())
                        peer.sendall(data)
                    else:
                        open_ends.discard(s)
                        try:
                            peer.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
            client.close()
            server.close()
        except BaseException as exc:
            self.error = exc
        finally:
            self.listener.close()

    def join(self, timeout_s: float = TIMEOUT_S):
        self.thread.join(timeout_s)
        assert not self.thread.is_alive(), "relay did not finish"
        assert self.error is None, self.error
        return self


CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23


def parse_records(wire: bytes):
    """-> [(content_type, version, payload_length)]; fails on anything that
    is not a well-formed sequence of TLS records."""
    records = []
    pos = 0
    while pos < len(wire):
        assert len(wire) - pos >= 5, "truncated record header at %d" % pos
        ctype, version, length = struct.unpack_from("!BHH", wire, pos)
        assert ctype in (CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA), (
            "byte %d is not a TLS record (type %d)" % (pos, ctype))
        assert version in (0x0301, 0x0303), "bad record version %#x at %d" % (version, pos)
        assert length <= 16384 + 2048, "record too long at %d" % pos
        assert pos + 5 + length <= len(wire), "truncated record at %d" % pos
        records.append((ctype, version, length))
        pos += 5 + length
    return records


def recv_exact(transport, n: int, deadline: Deadline) -> bytes:
    out = bytearray()
    while len(out) < n:
        chunk = drive(transport, lambda: transport.recv(min(65536, n - len(out))), deadline)
        assert chunk, "EOF after %d of %d bytes" % (len(out), n)
        out += chunk
    return bytes(out)


def echo_reversed(n: int):
    """Scenario: read n bytes, answer them reversed, then wait for the
    client's end (close_notify or EOF) and close with close_notify."""
    def scenario(transport, deadline):
        data = recv_exact(transport, n, deadline)
        send_all(transport, data[::-1], deadline)
        tail = drive(transport, lambda: transport.recv(65536), deadline)
        shutdown_all(transport, deadline)
        return data, tail
    return scenario


def expected_ktls(transport_cls, context, tls_version: str):
    """The kTLS engagement a connection must show (as the set of acceptable
    ``info()["ktls"]`` values), per docs/ktls-facts.md's measured matrix: TLS 1.2
    AES-GCM TX+RX; TLS 1.3 TX only with OpenSSL 3.0 (RX from 3.2); nothing
    for the memory transport, a context without the option, or a host whose
    probe says unavailable (this development host)."""
    from ktlswsgi.tls.ktls import probe
    from ktlswsgi.tls.transports import SocketTransport

    if not issubclass(transport_cls, SocketTransport) or not context.ktls or not probe().available:
        return {"off"}
    if tls_version == "TLSv1.2":
        return {"tx,rx"}
    return {"tx", "tx,rx"}
