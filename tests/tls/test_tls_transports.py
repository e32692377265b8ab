"""Both TLS transports over real loopback sockets with Python's ssl client:
handshake, ALPN, SNI, echo, clean EOF, send_file (pread fallback), and the
write-retry contract under a stalled reader."""
import fcntl
import os
import socket
import struct
import termios
import ssl
import threading
import time

import pytest

from ktlswsgi.transport import WANT_READ, WANT_WRITE, TransportError
from ktlswsgi.tls.context import ServerContext
from ktlswsgi.tls.transports import MemoryTransport, SocketTransport, TLSTransportError

from _tlskit import (Deadline, OneConnectionServer, client_context, connect_tls, drive,
                     echo_reversed, expected_ktls, flush_all, recv_all_blocking, recv_exact, send_file_all,
                     read_after_stall, sha256, shutdown_all, wait_for)



class CffiMemoryTransport(MemoryTransport):
    """The memory transport with every step a cffi call, as without
    ktlswsgi._native (whose gate.c the TLS transports use when built)."""
    _gate = None


class CffiSocketTransport(SocketTransport):
    """The socket transport with SSL_read / SSL_write as cffi calls."""
    _gate = None


TRANSPORTS = [SocketTransport, MemoryTransport, CffiMemoryTransport, CffiSocketTransport]
IDS = ["socket", "memory", "memory-cffi", "socket-cffi"]
VERSIONS = [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3]
VERSION_NAMES = {ssl.TLSVersion.TLSv1_2: "TLSv1.2", ssl.TLSVersion.TLSv1_3: "TLSv1.3"}


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
@pytest.mark.parametrize("version", VERSIONS, ids=["tls12", "tls13"])
def test_handshake_echo_and_close_notify(server_context, certs, transport_cls, version):
    payload = os.urandom(200_003)
    srv = OneConnectionServer(server_context, transport_cls, echo_reversed(len(payload)))
    ctx = client_context(certs.cert, minimum=version, maximum=version, alpn=["h2", "http/1.1"])
    with connect_tls(srv.address, ctx) as c:
        assert c.version() == VERSION_NAMES[version]
        assert c.selected_alpn_protocol() == "http/1.1"
        c.sendall(payload)
        got = bytearray()
        while len(got) < len(payload):
            chunk = c.recv(65536)
            assert chunk
            got += chunk
        assert bytes(got) == payload[::-1]
        c.unwrap()   # close_notify both ways
    srv.join()
    assert srv.error is None, srv.error
    data, tail = srv.result
    assert data == payload and tail == b""     # peer close_notify -> clean EOF
    info = srv.info
    assert info["tls_version"] == VERSION_NAMES[version]
    assert "GCM" in info["cipher"]            # server preference: AES-GCM first
    assert info["alpn"] == "http/1.1"
    assert info["sni"] == "localhost"
    assert info["ktls"] in expected_ktls(transport_cls, server_context, info["tls_version"])


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_eof_without_close_notify_is_clean(server_context, certs, transport_cls):
    srv = OneConnectionServer(server_context, transport_cls, echo_reversed(5))
    c = connect_tls(srv.address, client_context(certs.cert))
    c.sendall(b"hello")
    assert recv_exact_blocking(c, 5) == b"olleh"
    c.close()    # no close_notify: a bare FIN
    srv.join()
    assert srv.error is None, srv.error
    assert srv.result[1] == b""


def recv_exact_blocking(sock, n):
    out = b""
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        assert chunk
        out += chunk
    return out


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_alpn_h2_kept_possible(certs, transport_cls):
    ctx = ServerContext(certs.cert, certs.key, alpn=["h2", "http/1.1"])
    srv = OneConnectionServer(ctx, transport_cls)
    with connect_tls(srv.address, client_context(certs.cert, alpn=["http/1.1", "h2"])) as c:
        assert c.selected_alpn_protocol() == "h2"   # the server's order wins
    srv.join()
    assert srv.info["alpn"] == "h2"


def test_client_without_alpn_gets_none(server_context, certs):
    srv = OneConnectionServer(server_context, SocketTransport)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        assert c.selected_alpn_protocol() is None
    srv.join()
    assert srv.error is None and srv.info["alpn"] is None


def test_alpn_without_overlap_is_a_handshake_failure(server_context, certs):
    srv = OneConnectionServer(server_context, SocketTransport)
    with pytest.raises(ssl.SSLError, match="NO_APPLICATION_PROTOCOL|no application protocol"):
        connect_tls(srv.address, client_context(certs.cert, alpn=["h2"]))
    srv.join()
    assert isinstance(srv.error, TLSTransportError)
    assert srv.error.phase == "handshake"


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_attributes_before_and_after_handshake(server_context, certs, transport_cls):
    seen = {}

    def scenario(t, deadline):
        seen.update(kind=t.kind, send=t.send_method, file=t.file_method,
                    tx=t.ktls_tx, rx=t.ktls_rx, fd=t.fd, version=t.info()["tls_version"])
        shutdown_all(t, deadline)

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        recv_all_blocking(c)
    srv.join()
    assert srv.error is None, srv.error
    assert seen["kind"] == ("tls-socket" if issubclass(transport_cls, SocketTransport)
                            else "tls-memory")
    assert seen["send"] == "ssl_write"
    expected = expected_ktls(transport_cls, server_context, seen["version"])
    shown = ",".join(p for p, on in (("tx", seen["tx"]), ("rx", seen["rx"])) if on) or "off"
    assert shown in expected
    # SSL_sendfile exactly when OpenSSL says kTLS TX is on; else pread + SSL_write.
    assert seen["file"] == ("ssl_sendfile" if seen["tx"] else "pread_ssl_write")


def test_recv_before_handshake_is_an_error(server_context):
    a, b = socket.socketpair()
    t = SocketTransport(server_context, a)
    try:
        with pytest.raises(TransportError):
            t.recv(100)
        with pytest.raises(TransportError):
            t.send(b"x")
        assert t.shutdown() is None   # nothing to close-notify yet
        assert t.flush() is True
    finally:
        t.close()
        t.close()   # idempotent: the SSL object is freed exactly once
        b.close()


FILE_CASES = [(SocketTransport, "plain_context"), (MemoryTransport, "server_context"),
              (SocketTransport, "server_context")]
FILE_IDS = ["socket-context-without-ktls", "memory", "socket-ktls-context"]


@pytest.mark.parametrize("transport_cls,context_name", FILE_CASES, ids=FILE_IDS)
@pytest.mark.parametrize("size", [0, 1, 64 * 1024 + 3, 5 * 1024 * 1024 + 7],
                         ids=["0B", "1B", "64KiB+3", "5MiB+7"])
def test_send_file_is_sha256_identical(request, certs, tmp_path, transport_cls,
                                       context_name, size):
    """pread + SSL_write wherever kTLS TX is off (always on this host), and
    SSL_sendfile where it engaged (the socket transport on a kTLS host)."""
    context = request.getfixturevalue(context_name)
    path = tmp_path / "payload.bin"
    payload = os.urandom(size)
    path.write_bytes(payload)
    state = {}

    def scenario(t, deadline):
        with open(path, "rb") as f:
            sent = send_file_all(t, f.fileno(), size, deadline)
        state["buffer_released"] = t._file_buf is None
        state["pread"] = t.bytes_pread
        state["ssl_sendfile"] = t.bytes_ssl_sendfile
        state["tx"] = t.ktls_tx
        shutdown_all(t, deadline)
        return sent

    srv = OneConnectionServer(context, transport_cls, scenario)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        got = recv_all_blocking(c)
    srv.join()
    assert srv.error is None, srv.error
    assert srv.result == size
    assert sha256(got) == sha256(payload)
    assert state["buffer_released"]           # released when the transfer ended
    if state["tx"]:
        assert (state["ssl_sendfile"], state["pread"]) == (size, 0)
    else:
        assert (state["ssl_sendfile"], state["pread"]) == (0, size)   # each byte read once


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_send_file_of_a_shrunk_file_returns_zero(server_context, certs, tmp_path, transport_cls):
    path = tmp_path / "short.bin"
    path.write_bytes(b"x" * 1000)

    def scenario(t, deadline):
        with open(path, "rb") as f:
            first = drive(t, lambda: t.send_file(f.fileno(), 0, 5000), deadline)
            second = drive(t, lambda: t.send_file(f.fileno(), first, 5000 - first), deadline)
        flush_all(t, deadline)
        shutdown_all(t, deadline)
        return first, second

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        got = recv_all_blocking(c)
    srv.join()
    assert srv.error is None, srv.error
    assert srv.result == (1000, 0)
    assert got == b"x" * 1000


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_stalled_reader_caller_may_reuse_its_buffer(server_context, certs, transport_cls):
    """send() returns what it took; what OpenSSL holds for retry is the
    transport's own copy, so the caller may overwrite its buffer at once,
    and flush() finishes the held record when the socket drains."""
    total = 6 * 1024 * 1024
    expected = bytearray()
    stats = {"wants": 0, "unflushed": 0}
    release = threading.Event()

    def scenario(t, deadline):
        t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        buf = bytearray(256 * 1024)
        sent = 0
        while sent < total:
            buf[:] = os.urandom(len(buf))          # the caller reuses its buffer
            view = memoryview(buf)[:min(len(buf), total - sent)]
            n = t.send(view)
            if n is WANT_WRITE or n is WANT_READ:
                stats["wants"] += 1
                release.set()
                drive(t, lambda: WANT_WRITE if not t.flush() else True, deadline)
                continue
            expected.extend(view[:n])
            sent += n
            if not t.flush():
                stats["unflushed"] += 1
                release.set()
        flush_all(t, deadline)
        shutdown_all(t, deadline)
        return sent

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    got = read_after_stall(srv, certs.cert, release)
    assert srv.error is None, srv.error
    assert srv.result == total
    assert stats["wants"] + stats["unflushed"] > 0
    assert sha256(got) == sha256(bytes(expected))


def test_memory_transport_batches_records_per_send(server_context, certs, tmp_path):
    size = 8 * 1024 * 1024
    path = tmp_path / "big.bin"
    path.write_bytes(os.urandom(size))
    stats = {}

    def scenario(t, deadline):
        with open(path, "rb") as f:
            send_file_all(t, f.fileno(), size, deadline)
        stats["sends"] = t.socket_sends
        shutdown_all(t, deadline)

    srv = OneConnectionServer(server_context, MemoryTransport, scenario)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        got = recv_all_blocking(c)
    srv.join()
    assert srv.error is None, srv.error
    assert len(got) == size
    records = size // 16384
    # One send syscall per record would be `records`; the BIO pair batches.
    assert stats["sends"] < records / 2, stats


def _socket_bytes_waiting(fd: int) -> int:
    return struct.unpack("i", fcntl.ioctl(fd, termios.FIONREAD, b"\0\0\0\0"))[0]


def _ciphertext_waiting(t) -> int:
    """Bytes not yet seen by OpenSSL: in the socket, plus (memory transport)
    in the BIO pair, where the handshake may already have moved them."""
    from ktlswsgi.tls.binding import lib
    return _socket_bytes_waiting(t.fd) + lib.BIO_ctrl_pending(lib.SSL_get_rbio(t._ssl))


@pytest.mark.parametrize("transport_cls,first_read", [(SocketTransport, 10), (MemoryTransport, 10),
                                                     (MemoryTransport, 1000), (SocketTransport, 1000)],
                         ids=["socket-partial-record", "memory-partial-record",
                              "memory-record-in-bio", "socket-record-read-ahead"])
def test_has_pending_reports_buffered_input(server_context, certs, transport_cls, first_read):
    """Two records arrive together.  Reading part of the first leaves the
    rest decrypted in OpenSSL, which epoll cannot see: has_pending() must say
    so.  With the memory transport, after the whole first record the second
    is in the BIO pair (has_pending() must say so) or still in the socket
    (epoll announces it), depending on how much the first fill took."""
    arrived = threading.Event()

    def scenario(t, deadline):
        assert arrived.wait(5)
        # Both records must be in the socket buffer before the first read (a
        # slow machine, such as the TCG VM, may still be delivering them).
        while _ciphertext_waiting(t) < 2 * 1000:
            deadline.left()  # raises once the test's deadline passes
            time.sleep(0.01)
        first = drive(t, lambda: t.recv(first_read), deadline)
        pending = t.has_pending()
        announced = _socket_bytes_waiting(t.fd) > 0  # epoll will report these
        rest = recv_exact(t, 2 * 1000 - len(first), deadline)
        shutdown_all(t, deadline)
        return first, pending, announced, rest, t.ktls_rx

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        c.sendall(b"a" * 1000)
        c.sendall(b"b" * 1000)
        time.sleep(0.2)   # both records are in the server's socket buffer
        arrived.set()
        recv_all_blocking(c)
    srv.join()
    assert srv.error is None, srv.error
    first, pending, announced, rest, ktls_rx = srv.result
    assert first == b"a" * first_read
    if first_read < 1000:
        assert pending is True  # the rest of the first record is decrypted inside OpenSSL
    elif transport_cls is SocketTransport and not ktls_rx:
        # Read-ahead: the read that took the first record took the second
        # with it (one read per record without it: header, then body).
        assert (pending, announced) == (True, False)
    else:
        # The second record is either in the BIO pair (has_pending must say so)
        # or still in the socket, where epoll announces it: never in neither.
        assert pending or announced
    assert first + rest == b"a" * 1000 + b"b" * 1000


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_send_file_through_a_stalled_reader(server_context, certs, tmp_path, transport_cls):
    """A file sent while the client does not read: the transport blocks in the
    middle of a chunk (the memory transport inside its C pread + SSL_write
    step; in the kTLS VM the socket transport inside SSL_sendfile), holds the
    rest, and still sends every byte once, in order."""
    size = 6 * 1024 * 1024 + 5
    path = tmp_path / "payload.bin"
    payload = os.urandom(size)
    path.write_bytes(payload)
    stats = {"blocked": 0}
    release = threading.Event()

    def scenario(t, deadline):
        t.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)
        offset = 0
        with open(path, "rb") as f:
            while offset < size:
                n = t.send_file(f.fileno(), offset, size - offset)
                if n is WANT_WRITE or n is WANT_READ:
                    stats["blocked"] += 1
                    release.set()
                    wait_for(t.fd, n, deadline)
                    continue
                assert n > 0
                offset += n
                if t._retry is not None or t._held is not None or not t.flush():
                    stats["blocked"] += 1
                    release.set()
        flush_all(t, deadline)
        shutdown_all(t, deadline)
        return offset, (t.bytes_ssl_sendfile if t.ktls_tx else t.bytes_pread)

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    got = read_after_stall(srv, certs.cert, release)
    assert srv.error is None, srv.error
    # every byte read from the file once (SSL_sendfile's bytes where kTLS TX engaged)
    assert srv.result == (size, size)
    assert stats["blocked"] > 0
    assert sha256(got) == sha256(payload)
