"""Handshake failures are a TransportError with a short reason, never a
crash: plaintext HTTP, garbage, a truncated ClientHello, old versions."""
import socket
import ssl
import time

import pytest

from ktlswsgi.transport import WANT_READ, TransportError
from ktlswsgi.tls.context import ServerContext
from ktlswsgi.tls.transports import MemoryTransport, SocketTransport, TLSTransportError

from _tlskit import OneConnectionServer, client_context, connect_tls

TRANSPORTS = [SocketTransport, MemoryTransport]
IDS = ["socket", "memory"]


def client_hello(**kw) -> bytes:
    ctx = client_context(**kw)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return outgoing.read()


def raw_exchange(address, data: bytes, close_write=True) -> bytes:
    with socket.create_connection(address, timeout=5) as s:
        try:   # the server may already have answered with an alert and closed
            if data:
                s.sendall(data)
            if close_write:
                s.shutdown(socket.SHUT_WR)
        except OSError:
            return b""
        out = b""
        try:
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                out += chunk
        except ConnectionResetError:
            pass
        return out


def handshake_error(srv) -> TLSTransportError:
    srv.join()
    assert isinstance(srv.error, TransportError), repr(srv.error)
    assert srv.error.phase == "handshake"
    text = str(srv.error)
    print(text)
    assert "\n" not in text and len(text) < 200
    return srv.error


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_plaintext_http_on_the_tls_port(server_context, transport_cls):
    srv = OneConnectionServer(server_context, transport_cls)
    raw_exchange(srv.address, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    err = handshake_error(srv)
    assert err.reason == "http request"
    assert "plaintext HTTP" in str(err)


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_garbage_on_the_tls_port(server_context, transport_cls):
    srv = OneConnectionServer(server_context, transport_cls)
    raw_exchange(srv.address, bytes(range(256)) * 4)
    err = handshake_error(srv)
    assert err.reason   # e.g. "wrong version number"


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_truncated_client_hello_then_close(server_context, transport_cls):
    hello = client_hello()
    srv = OneConnectionServer(server_context, transport_cls)
    raw_exchange(srv.address, hello[: len(hello) // 2])
    err = handshake_error(srv)
    assert "closed" in str(err) or err.reason


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_connect_and_close_without_a_byte(server_context, transport_cls):
    srv = OneConnectionServer(server_context, transport_cls)
    raw_exchange(srv.address, b"")
    err = handshake_error(srv)
    assert "peer closed the connection during the handshake" in str(err)


@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_half_client_hello_waits_for_more(server_context, transport_cls):
    """A slow client: the handshake says WANT_READ (the caller's timeout
    handles it), it neither blocks nor fails."""
    hello = client_hello()
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    with socket.create_connection(listener.getsockname(), timeout=5) as c:
        server_sock, _ = listener.accept()
        t = transport_cls(server_context, server_sock)
        try:
            c.sendall(hello[:40])
            time.sleep(0.05)
            for _ in range(3):
                assert t.handshake() is WANT_READ
            c.sendall(b"\x00" * 3)   # still not a whole ClientHello
            time.sleep(0.05)
            assert t.handshake() is WANT_READ
        finally:
            t.close()
            listener.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_old_protocol_version_refused(server_context, transport_cls):
    srv = OneConnectionServer(server_context, transport_cls)
    ctx = client_context(minimum=ssl.TLSVersion.TLSv1, maximum=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect_tls(srv.address, ctx)
    err = handshake_error(srv)
    assert err.reason == "unsupported protocol"


def test_min_version_13_refuses_tls12(certs):
    ctx13 = ServerContext(certs.cert, certs.key, min_version="1.3")
    srv = OneConnectionServer(ctx13, SocketTransport)
    client = client_context(maximum=ssl.TLSVersion.TLSv1_2)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        connect_tls(srv.address, client)
    assert handshake_error(srv).reason == "unsupported protocol"
    srv = OneConnectionServer(ctx13, SocketTransport)
    with connect_tls(srv.address, client_context()) as c:
        assert c.version() == "TLSv1.3"
    srv.join()
    assert srv.error is None


def test_a_failed_handshake_leaves_the_context_usable(server_context, certs):
    srv = OneConnectionServer(server_context, SocketTransport)
    raw_exchange(srv.address, b"\x16\x03\x01\x00\x05hello")
    handshake_error(srv)
    srv = OneConnectionServer(server_context, SocketTransport)
    with connect_tls(srv.address, client_context(certs.cert)) as c:
        assert c.version()
    srv.join()
    assert srv.error is None
