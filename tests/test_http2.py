"""HTTP/2 over TLS end to end, with real clients, on both TLS transports.

curl --http2, nghttp's h2load, httpx (http2=True) and the `h2` library driven
by hand over an `ssl` socket (where a test needs frame-level control or
wants to see every event) against an in-process server (so the tests read
its counters), and the CLI where a real process is needed (access log,
SIGTERM).  On this host kTLS never engages, so file bodies take the
pread + SSL_write path (`bytes_pread_ssl_write`).

Hostile peers and the limits (rapid reset, floods, CONTINUATION, max
streams) are in tests/test_http2_limits.py.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import re
import signal
import socket
import ssl
import struct
import subprocess
import threading
import time

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
import httpx
import pytest

from apps import h2_apps
from support import tls_client_context, wait_until

TRANSPORTS = ["memory", "socket"]
KiB = 1024
MiB = 1024 * 1024
CLIENT_TIMEOUT = 20.0

pytestmark = pytest.mark.parametrize("transport", TRANSPORTS)


# -- helpers -------------------------------------------------------------------------------
def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(MiB), b""):
            h.update(chunk)
    return h.hexdigest()


def make_file(directory, name: str, size: int) -> str:
    path = os.path.join(str(directory), name)
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            f.write(block)
            left -= len(block)
    return path


def curl_h2(cert_pair, url: str, *args, timeout: float = 30.0) -> subprocess.CompletedProcess:
    """curl --http2 (ALPN h2 over TLS); fails the test if curl fails."""
    r = subprocess.run(["curl", "-sS", "--http2", "--cacert", cert_pair[0],
                        "--max-time", str(int(timeout)), *args, url],
                       capture_output=True, timeout=timeout + 10)
    assert r.returncode == 0, r.stderr
    return r


def httpx_ctx(cert_pair):
    return tls_client_context(cert_pair)


def frames_of(data: bytes):
    """Split a server->client HTTP/2 byte stream into (type, flags, stream id, length)."""
    out, i = [], 0
    while i + 9 <= len(data):
        hi, lo, ftype, flags, sid = struct.unpack_from(">HBBBI", data, i)
        length = (hi << 8) | lo
        out.append((ftype, flags, sid & 0x7FFFFFFF, length))
        i += 9 + length
    return out


FRAME_DATA = 0x0


class Stream:
    def __init__(self):
        self.informational: list = []    # header lists of 1xx responses
        self.headers: list | None = None
        self.headers_ended_stream = False
        self.data = bytearray()
        self.data_events: list = []      # (payload length, ended the stream)
        self.ended = False
        self.reset: int | None = None


class H2Client:
    """The `h2` library as a client over an `ssl` socket, driven by hand.

    `auto_ack`: reopen the windows as soon as DATA arrives (else the test
    calls `ack`).  Every decrypted byte the server sent is kept in `raw`.
    """

    def __init__(self, port: int, cert_pair, settings: dict | None = None, auto_ack=True,
                 timeout: float = CLIENT_TIMEOUT):
        ctx = tls_client_context(cert_pair)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # as real clients do
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.port = port
        self.timeout = timeout
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.conn = h2.connection.H2Connection(config=config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
            # h2 applies its inbound frame limit when settings are acknowledged; these
            # are sent in the preface as already in force.
            self.conn.max_inbound_frame_size = self.conn.local_settings.max_frame_size
            self.conn.incoming_buffer.max_frame_size = self.conn.local_settings.max_frame_size
        self.conn.initiate_connection()
        self.auto_ack = auto_ack
        self.streams: dict[int, Stream] = {}
        self.events: list = []
        self.raw = bytearray()
        self.closed = False
        self.goaway = None
        self.unacked: list = []          # (stream id, flow length) not yet acknowledged
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(self, method: str, path: str, headers=(), body: bytes | None = None,
                end_stream: bool = True) -> int:
        sid = self.conn.get_next_available_stream_id()
        self.streams[sid] = Stream()
        fields = [(b":method", method.encode()), (b":scheme", b"https"),
                  (b":authority", b"localhost:%d" % self.port), (b":path", path.encode())]
        fields += [(n.encode() if isinstance(n, str) else n, v.encode() if isinstance(v, str) else v)
                   for n, v in headers]
        self.conn.send_headers(sid, fields, end_stream=end_stream and body is None)
        self.flush()
        if body is not None:
            self.send_body(sid, body, end_stream=end_stream)
        return sid

    def send_body(self, sid: int, body: bytes, end_stream: bool = True) -> None:
        """Send within the server's windows, reading (and so seeing updates) while blocked."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.pump()
                continue
            n = min(window, len(view))
            self.conn.send_data(sid, bytes(view[:n]))
            self.flush()
            view = view[n:]
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()

    def ack(self, sid: int, nbytes: int) -> None:
        self.conn.acknowledge_received_data(nbytes, sid)
        self.flush()

    def pump(self, timeout: float | None = None) -> None:
        """Read once (up to `timeout`) and process what came."""
        self.sock.settimeout(self.timeout if timeout is None else timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return
        except (ConnectionResetError, ssl.SSLError):
            data = b""
        if not data:
            self.closed = True
            return
        self.raw += data
        if self.goaway is not None:
            return   # h2 takes no frame after a GOAWAY; the bytes stay in `raw`
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError:
            # A frame after a GOAWAY in the same read (our graceful shutdown's
            # PING): h2 refuses it and loses the GOAWAY's event with it.
            if b"\x00\x00\x08\x07" not in data and b"\x07\x00\x00\x00\x00\x00" not in data:
                raise
            self.goaway = "a GOAWAY, then a frame h2 refused"
            return
        for ev in events:
            self.events.append(ev)
            self._on(ev)
        self.flush()

    def _on(self, ev) -> None:
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid) if sid else None
        if isinstance(ev, h2.events.InformationalResponseReceived):
            st.informational.append(ev.headers)
        elif isinstance(ev, h2.events.ResponseReceived):
            st.headers = ev.headers
            st.headers_ended_stream = ev.stream_ended is not None
        elif isinstance(ev, h2.events.DataReceived):
            st.data += ev.data
            st.data_events.append((len(ev.data), ev.stream_ended is not None))
            if ev.flow_controlled_length:
                if self.auto_ack:
                    self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
                else:
                    self.unacked.append((sid, ev.flow_controlled_length))
        elif isinstance(ev, h2.events.StreamEnded):
            st.ended = True
        elif isinstance(ev, h2.events.StreamReset):
            if st is not None:
                st.reset = ev.error_code
        elif isinstance(ev, h2.events.ConnectionTerminated):
            self.goaway = ev

    def run_until(self, predicate, timeout: float = CLIENT_TIMEOUT, step: float = 0.5) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("timed out waiting on the server")
            if self.closed:
                raise AssertionError("the server closed the connection")
            self.pump(min(step, left))

    def response(self, sid: int, timeout: float = CLIENT_TIMEOUT) -> Stream:
        st = self.streams[sid]
        self.run_until(lambda: st.ended or st.reset is not None, timeout)
        return st

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self.flush()
        except Exception:
            pass
        self.sock.close()


def status_of(st: Stream) -> int:
    return int(dict(st.headers)[b":status"])


@pytest.fixture
def h2client(cert_pair):
    clients = []

    def connect(port, **kw):
        c = H2Client(port, cert_pair, **kw)
        clients.append(c)
        return c
    yield connect
    for c in clients:
        c.close()


# -- 1. curl: the environ ----------------------------------------------------------------------
def test_curl_get_and_environ(serve_tls, cert_pair, transport):
    srv = serve_tls(h2_apps.app, transport=transport)
    r = curl_h2(cert_pair, f"https://localhost:{srv.port}/environ?a=1&b=two", "-i",
                "-H", "Cookie: a=1", "-H", "Cookie: b=2", "-H", "X-Test: yes")
    head, _, body = r.stdout.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/2 200"), head
    env = json.loads(body)
    assert env == {
        "SERVER_PROTOCOL": "HTTP/2", "REQUEST_METHOD": "GET", "PATH_INFO": "/environ",
        "QUERY_STRING": "a=1&b=two", "HTTP_HOST": f"localhost:{srv.port}",
        "SERVER_NAME": "localhost", "SERVER_PORT": str(srv.port), "wsgi.url_scheme": "https",
        "HTTPS": "on", "HTTP_COOKIE": "a=1; b=2", "CONTENT_LENGTH": "", "CONTENT_TYPE": "",
        "HTTP_USER_AGENT": env["HTTP_USER_AGENT"], "HTTP_X_TEST": "yes"}
    assert env["HTTP_USER_AGENT"].startswith("curl/")
    # the plain route too, and the counters say it was HTTP/2
    r = curl_h2(cert_pair, f"https://localhost:{srv.port}/", "-w", "%{http_version}")
    assert r.stdout == b"hello over h2\n2"
    assert srv.counters.h2_connections == 2 and srv.counters.h2_streams == 2


def test_cookie_fields_joined_and_authority_is_host(serve_tls, cert_pair, transport, h2client):
    """Several `cookie` fields (RFC 9113 8.2.3 crumbs) are one HTTP_COOKIE; the
    Host the app sees is :authority."""
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port)
    sid = c.request("GET", "/environ?x", headers=[
        ("cookie", "a=1"), ("cookie", "b=2; c=3"), ("cookie", "d=4")])
    st = c.response(sid)
    assert status_of(st) == 200
    env = json.loads(bytes(st.data))
    assert env["HTTP_COOKIE"] == "a=1; b=2; c=3; d=4"
    assert env["HTTP_HOST"] == f"localhost:{srv.port}"
    assert env["SERVER_NAME"] == "localhost" and env["SERVER_PORT"] == str(srv.port)
    assert env["QUERY_STRING"] == "x" and env["PATH_INFO"] == "/environ"


# -- 2. httpx: many concurrent streams on one connection --------------------------------------
def test_httpx_50_concurrent_requests_one_connection(serve_tls, cert_pair, transport):
    srv = serve_tls(h2_apps.app, transport=transport)
    base = f"https://localhost:{srv.port}"

    async def main():
        async with httpx.AsyncClient(http2=True, verify=httpx_ctx(cert_pair),
                                     timeout=CLIENT_TIMEOUT) as client:
            first = await client.get(f"{base}/bytes?n=10")   # the connection, settled on h2
            assert first.http_version == "HTTP/2"
            return [first] + await asyncio.gather(
                *(client.get(f"{base}/bytes?n={1000 + i * 997}") for i in range(49)))

    responses = asyncio.run(main())
    assert [r.status_code for r in responses] == [200] * 50
    assert {r.http_version for r in responses} == {"HTTP/2"}
    assert responses[0].content == h2_apps.pattern(10)
    for i, r in enumerate(responses[1:]):
        assert r.content == h2_apps.pattern(1000 + i * 997), i
    c = srv.counters
    assert c.h2_connections == 1 and c.connections == 1
    assert c.h2_streams == 50


# -- 3. uploads larger than the windows --------------------------------------------------------
def test_upload_bigger_than_the_stream_window(serve_tls, cert_pair, transport):
    srv = serve_tls(h2_apps.app, transport=transport)
    payload = os.urandom(3 * MiB + 5)
    with httpx.Client(http2=True, verify=httpx_ctx(cert_pair), timeout=CLIENT_TIMEOUT) as client:
        r = client.post(f"https://localhost:{srv.port}/sha256", content=payload)
        assert r.http_version == "HTTP/2" and r.status_code == 200
        assert r.json() == {"length": len(payload), "sha256": sha256(payload)}
        # a slow reader (small reads, a pause after each) gets all of it too
        payload = os.urandom(MiB + 3)
        t0 = time.monotonic()
        r = client.post(f"https://localhost:{srv.port}/sha256?chunk=32768&delay=0.01",
                        content=payload)
        assert r.status_code == 200
        assert r.json() == {"length": len(payload), "sha256": sha256(payload)}
        assert time.monotonic() - t0 >= 32 * 0.01
    assert srv.counters.h2_connections == 1 and srv.counters.h2_streams == 2


def test_upload_windows_open_only_as_the_app_reads(serve_tls, cert_pair, transport, h2client):
    """With a 96 KiB body buffer the server never lets more than that wait unread,
    and the windows reopen as the app reads: a 1 MiB body still arrives intact."""
    gate = threading.Event()
    result = {}

    def app(environ, start_response):
        gate.wait(CLIENT_TIMEOUT)
        data = environ["wsgi.input"].read()
        result["n"] = len(data)
        body = sha256(data).encode()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    srv = serve_tls(app, transport=transport, body_buffer_bytes=96 * KiB)
    c = h2client(srv.port)
    payload = os.urandom(MiB)
    sid = c.request("POST", "/", headers=[("content-length", str(len(payload)))],
                    end_stream=False)
    # The app does not read yet: the client can send the initial window and no more.
    c.run_until(lambda: c.conn.remote_settings.initial_window_size == 96 * KiB)
    assert c.conn.local_flow_control_window(sid) == 96 * KiB
    for off in range(0, 96 * KiB, 16 * KiB):
        c.conn.send_data(sid, payload[off:off + 16 * KiB])
    c.conn.ping(b"k" * 8)   # answered after the DATA is taken (frames are read in order)
    c.flush()
    c.run_until(lambda: any(isinstance(e, h2.events.PingAckReceived) for e in c.events))
    # nothing was acknowledged on receipt: the app has read nothing yet
    assert c.conn.local_flow_control_window(sid) == 0
    assert not any(isinstance(e, h2.events.WindowUpdated) and e.stream_id == sid
                   for e in c.events)
    gate.set()
    c.send_body(sid, payload[96 * KiB:])
    st = c.response(sid)
    assert status_of(st) == 200 and bytes(st.data) == sha256(payload).encode()
    assert result["n"] == len(payload)


# -- 4. files --------------------------------------------------------------------------------
def test_file_wrapper_downloads_with_curl(serve_tls, cert_pair, tmp_path, transport):
    sizes = {"big.bin": 5 * MiB + 7, "empty.bin": 0, "one.bin": 1}
    files = {name: make_file(tmp_path, name, size) for name, size in sizes.items()}
    out = tmp_path / "out"
    out.mkdir()
    srv = serve_tls(h2_apps.file_app(str(tmp_path)), transport=transport)
    args = []
    for name in sizes:
        args += ["-o", str(out / name), f"https://localhost:{srv.port}/{name}"]
    # one curl, one connection, three streams in turn
    r = subprocess.run(["curl", "-sS", "--http2", "--cacert", cert_pair[0], "--max-time", "30",
                        "-w", "%{http_version} %{http_code} %{size_download}\n", *args],
                       capture_output=True, text=True, timeout=40)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"2 200 {size}" for size in sizes.values()]
    for name, path in files.items():
        assert sha256_file(out / name) == sha256_file(path), name
    c = srv.counters
    # HTTP/2 sends even the smallest files by the file path (connection.inline_file_bytes)
    total = sum(sizes.values())
    assert wait_until(lambda: c.file_transfers == 3 and c.bytes_pread_ssl_write == total, 5), (
        c.file_transfers, c.bytes_pread_ssl_write)
    assert c.bytes_ssl_sendfile == 0 and c.bytes_sendfile == 0
    assert c.h2_connections == 1 and c.h2_streams == 3


def test_file_wrapper_downloads_with_h2load(serve_tls, tmp_path, transport):
    size = MiB + 13
    make_file(tmp_path, "f.bin", size)
    srv = serve_tls(h2_apps.file_app(str(tmp_path)), transport=transport)
    r = subprocess.run(["h2load", "-n", "20", "-c", "2", "-m", "4", "-T", "30", "-N", "30",
                        f"https://localhost:{srv.port}/f.bin"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Application protocol: h2" in r.stdout, r.stdout
    assert re.search(r"requests: 20 total, 20 started, 20 done, 20 succeeded, 0 failed, "
                     r"0 errored", r.stdout), r.stdout
    assert "status codes: 20 2xx" in r.stdout, r.stdout
    c = srv.counters
    assert wait_until(lambda: c.bytes_pread_ssl_write == 20 * size, 5), c.bytes_pread_ssl_write
    assert c.file_transfers == 20
    assert c.h2_connections == 2 and c.h2_streams == 20


def test_file_wrapper_digest_with_h2_client(serve_tls, cert_pair, tmp_path, transport, h2client):
    """Two file streams at once on one connection: each one's bytes intact."""
    a = make_file(tmp_path, "a.bin", 2 * MiB + 1)
    b = make_file(tmp_path, "b.bin", 3 * MiB + 2)
    srv = serve_tls(h2_apps.file_app(str(tmp_path)), transport=transport)
    c = h2client(srv.port, settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1 << 20})
    c.conn.increment_flow_control_window(8 << 20)
    sa = c.request("GET", "/a.bin")
    sb = c.request("GET", "/b.bin")
    ra, rb = c.response(sa), c.response(sb)
    assert status_of(ra) == status_of(rb) == 200
    assert sha256(bytes(ra.data)) == sha256_file(a)
    assert sha256(bytes(rb.data)) == sha256_file(b)
    assert dict(rb.headers)[b"content-length"] == str(3 * MiB + 2).encode()
    max_frame = c.conn.local_settings.max_frame_size
    assert all(n <= max_frame for t, _, _, n in frames_of(bytes(c.raw)) if t == FRAME_DATA)


# -- 5. no content: HEAD, 204, 304 ------------------------------------------------------------
@pytest.mark.parametrize("method, path, status", [
    ("HEAD", "/head", 200), ("HEAD", "/bytes?n=300000", 200),
    ("GET", "/204", 204), ("GET", "/304", 304)])
def test_no_data_payload_for_head_204_304(serve_tls, cert_pair, transport, h2client, method,
                                          path, status):
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port)
    sid = c.request(method, path)
    st = c.response(sid)
    assert st.reset is None and st.ended
    assert status_of(st) == status
    assert st.data == b""
    assert all(n == 0 for n, _ in st.data_events), st.data_events
    # END_STREAM came on the HEADERS or on an empty DATA frame
    assert st.headers_ended_stream or st.data_events == [(0, True)]
    data_frames = [n for t, _, s, n in frames_of(bytes(c.raw)) if t == FRAME_DATA and s == sid]
    assert all(n == 0 for n in data_frames), data_frames
    headers = dict(st.headers)
    if method == "HEAD":
        expected = 1234 if path == "/head" else 300000
        assert headers[b"content-length"] == str(expected).encode()
    if status == 304:
        assert headers[b"etag"] == b'"v1"'
    # the connection goes on
    sid = c.request("GET", "/bytes?n=5")
    assert bytes(c.response(sid).data) == h2_apps.pattern(5)


def test_304_with_content_length_ends_cleanly(serve_tls, cert_pair, transport, h2client):
    """A 304 may carry the Content-Length a 200 would have (RFC 9110 8.6), but the
    h2 library (httpx's) then expects that many DATA bytes: the server drops it."""
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port)
    sid = c.request("GET", "/304-with-length", headers=[("if-none-match", '"v1"')])
    st = c.response(sid)
    assert status_of(st) == 304 and b"content-length" not in dict(st.headers)
    assert dict(st.headers)[b"etag"] == b'"v1"'
    assert st.reset is None and st.ended and st.data == b""


# -- 6. connection-specific headers ----------------------------------------------------------
def test_connection_specific_headers_never_sent(serve_tls, cert_pair, transport, h2client):
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port)   # h2 validates inbound headers: it would raise ProtocolError
    sid = c.request("GET", "/hop-by-hop")
    st = c.response(sid)
    names = [n for n, _ in st.headers]
    for bad in (b"connection", b"keep-alive", b"transfer-encoding", b"upgrade",
                b"proxy-connection"):
        assert bad not in names, st.headers
    assert (b"x-kept", b"yes") in st.headers
    assert bytes(st.data) == b"hop\n"
    # and curl and httpx are happy with the response too
    r = curl_h2(cert_pair, f"https://localhost:{srv.port}/hop-by-hop", "-i")
    assert r.stdout.startswith(b"HTTP/2 200") and b"x-kept: yes" in r.stdout.lower()
    assert b"connection:" not in r.stdout.lower()


# -- 7. a slow stream does not hold up the others ------------------------------------------------
def test_slow_stream_does_not_block_others(serve_tls, cert_pair, transport, h2client):
    gate = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/slow":
            start_response("200 OK", [("Content-Length", str(2 * 256 * KiB))])

            def body():
                yield h2_apps.pattern(256 * KiB)
                gate.wait(CLIENT_TIMEOUT)   # held until the fast stream is done
                yield h2_apps.pattern(256 * KiB)
            return body()
        return h2_apps.app(environ, start_response)

    srv = serve_tls(app, transport=transport)
    c = h2client(srv.port)
    slow = c.request("GET", "/slow")
    st_slow = c.streams[slow]
    c.run_until(lambda: len(st_slow.data) >= 64 * KiB)
    fast = c.request("GET", "/bytes?n=100000")
    st_fast = c.response(fast, timeout=10)
    assert bytes(st_fast.data) == h2_apps.pattern(100000)
    assert not st_slow.ended
    gate.set()
    st_slow = c.response(slow)
    assert bytes(st_slow.data) == h2_apps.pattern(256 * KiB) * 2


def test_stream_without_window_does_not_block_others(serve_tls, cert_pair, transport, h2client):
    """The client never reopens stream 1's window (only the connection's): stream 3
    is answered in full meanwhile, then stream 1 completes when its window opens."""
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port, auto_ack=False)
    big = c.request("GET", "/bytes?n=500000")
    st_big = c.streams[big]
    c.run_until(lambda: len(st_big.data) == 65535)   # the default stream window, used up
    small = c.request("GET", "/bytes?n=200000")
    st_small = c.streams[small]

    def ack_connection_and_small():
        for sid, n in c.unacked:
            if sid == small:
                c.conn.acknowledge_received_data(n, sid)
            else:
                c.conn.increment_flow_control_window(n)  # connection only
        c.unacked.clear()
        c.flush()
        return st_small.ended
    c.run_until(ack_connection_and_small, timeout=10)
    assert bytes(st_small.data) == h2_apps.pattern(200000)
    assert len(st_big.data) == 65535 and not st_big.ended
    c.auto_ack = True
    c.conn.increment_flow_control_window(500000, stream_id=big)
    c.flush()
    st_big = c.response(big)
    assert bytes(st_big.data) == h2_apps.pattern(500000)


# -- 8. flow control from the client ------------------------------------------------------------
def test_small_client_window_slow_acks(serve_tls, cert_pair, transport, h2client):
    srv = serve_tls(h2_apps.app, transport=transport)
    c = h2client(srv.port, auto_ack=False,
                 settings={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 1000})
    size = 200 * KiB
    sid = c.request("GET", f"/bytes?n={size}")
    st = c.streams[sid]
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while not st.ended:
        assert time.monotonic() < deadline, len(st.data)
        c.pump(0.5)
        if c.unacked:
            time.sleep(0.002)     # a slow reader: the window stays shut a little longer
            for s, n in c.unacked:
                c.conn.acknowledge_received_data(n, s)
            c.unacked.clear()
            c.flush()
    assert bytes(st.data) == h2_apps.pattern(size)
    data = [n for t, _, s, n in frames_of(bytes(c.raw)) if t == FRAME_DATA and s == sid]
    assert sum(data) == size
    assert max(data) <= 1000     # never over the stream window (h2 would have raised too)
    assert len(data) >= size // 1000


def test_frames_never_exceed_peer_max_frame_size(serve_tls, cert_pair, tmp_path, transport,
                                                 h2client):
    """A client that allows bigger frames (64 KiB) gets frames up to that size, never
    more; the default client (16 KiB) never gets more than 16384."""
    make_file(tmp_path, "f.bin", MiB)
    files = h2_apps.file_app(str(tmp_path))

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/f.bin":
            return files(environ, start_response)
        return h2_apps.app(environ, start_response)

    srv = serve_tls(app, transport=transport)
    for max_frame in (16384, 65536):
        c = h2client(srv.port, settings={
            h2.settings.SettingCodes.MAX_FRAME_SIZE: max_frame,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 4 * MiB})
        c.conn.increment_flow_control_window(16 * MiB)
        c.flush()
        s1 = c.request("GET", "/bytes?n=700000")
        s2 = c.request("GET", "/f.bin")
        assert bytes(c.response(s1).data) == h2_apps.pattern(700000)
        assert len(c.response(s2).data) == MiB
        sizes = [n for t, _, _, n in frames_of(bytes(c.raw)) if t == FRAME_DATA]
        assert sum(sizes) == 700000 + MiB
        assert max(sizes) <= max_frame


# -- 9. Expect: 100-continue ---------------------------------------------------------------------
def test_expect_100_continue(serve_tls, cert_pair, transport, h2client):
    entered, go = threading.Event(), threading.Event()

    def router(environ, start_response):
        if environ["PATH_INFO"] == "/gated":
            entered.set()
            go.wait(CLIENT_TIMEOUT)   # the app starts; it reads the body only after `go`
            environ["PATH_INFO"] = "/sha256"
        return h2_apps.app(environ, start_response)

    srv = serve_tls(router, transport=transport)
    c = h2client(srv.port)
    body = os.urandom(100 * KiB)
    expect = [("content-length", str(len(body))), ("expect", "100-continue")]
    # The app reads the body: 100 comes once it starts reading, not before.
    sid = c.request("POST", "/gated", headers=expect, end_stream=False)
    st = c.streams[sid]
    assert entered.wait(10)
    c.pump(0.3)
    assert st.informational == [] and st.headers is None
    go.set()
    c.run_until(lambda: st.informational)
    assert st.informational == [[(b":status", b"100")]]
    assert st.headers is None
    c.send_body(sid, body)
    st = c.response(sid)
    assert status_of(st) == 200
    assert json.loads(bytes(st.data)) == {"length": len(body), "sha256": sha256(body)}
    # The app never reads: no 100, the final response straight away.
    sid = c.request("POST", "/no-read", headers=expect, end_stream=False)
    st = c.response(sid)
    assert st.informational == [] and status_of(st) == 200
    assert bytes(st.data) == b"body not read\n"
    # The stream's request side is closed by the server (RST_STREAM NO_ERROR) or left;
    # the connection is still good.
    sid = c.request("GET", "/bytes?n=3")
    assert bytes(c.response(sid).data) == h2_apps.pattern(3)


# -- 10. access log and graceful shutdown through the CLI -------------------------------------------
def test_cli_access_log_line_says_http2(ktlswsgi_cli, cert_pair, transport):
    proc = ktlswsgi_cli("apps.h2_apps:app", "--certfile", cert_pair[0], "--keyfile",
                        cert_pair[1], "--tls-transport", transport, "--access-logfile", "-")
    curl_h2(cert_pair, f"https://localhost:{proc.port}/bytes?n=4321", "-o", "/dev/null")
    curl_h2(cert_pair, f"https://localhost:{proc.port}/sha256", "--data-binary", "hello")
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    log = out + err
    assert re.search(r'"GET /bytes\?n=4321 HTTP/2" 200 4321 ', log), log
    n = len(json.dumps({"length": 5, "sha256": sha256(b"hello")}))
    assert re.search(rf'"POST /sha256 HTTP/2" 200 {n} ', log), log


def test_cli_sigterm_lets_h2_streams_finish(ktlswsgi_cli, cert_pair, transport):
    """SIGTERM mid-response: GOAWAY NO_ERROR naming the open stream, which then
    completes.  (nghttp, not the h2 library: h2 takes no frame after a GOAWAY.)"""
    proc = ktlswsgi_cli("apps.h2_apps:app", "--certfile", cert_pair[0], "--keyfile",
                        cert_pair[1], "--tls-transport", transport, "--access-logfile", "-")
    client = subprocess.Popen(["nghttp", "-nv", "-t", "30",
                               f"https://localhost:{proc.port}/slow?n=8&size=4096&delay=0.15"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list = []
    reader = threading.Thread(target=lambda: lines.extend(client.stdout), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: any("recv DATA frame" in line for line in lines), 15), lines
        proc.send_signal(signal.SIGTERM)
        client.wait(30)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    reader.join(5)
    text = "".join(lines)
    assert client.returncode == 0, text
    sid = int(re.search(r"send HEADERS frame <[^>]*stream_id=(\d+)>", text).group(1))
    goaways = list(re.finditer(
        r"recv GOAWAY frame .*\n\s*\(last_stream_id=(\d+), error_code=(\w+)", text))
    assert goaways, text
    # RFC 9113 6.8: with the stream still open, GOAWAY(2^31-1) and a PING
    # first, then the final GOAWAY naming the stream; at a moment with no
    # stream open, the final one alone.
    assert [g.group(2) for g in goaways] == ["NO_ERROR"] * len(goaways)
    assert int(goaways[-1].group(1)) == sid, text
    if len(goaways) == 2:
        assert int(goaways[0].group(1)) == 2 ** 31 - 1, text
        assert re.search(r"recv PING frame", text[goaways[0].end():]), text
    goaway = goaways[0]
    after = text[goaway.end():]
    assert re.search(rf"recv DATA frame <[^>]*stream_id={sid}>\s*; END_STREAM", after), text
    data = re.findall(rf"recv DATA frame <length=(\d+), flags=0x0\d, stream_id={sid}>", text)
    assert sum(map(int, data)) == 8 * 4096
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    line = re.search(r'.*"GET /slow\?n=8&size=4096&delay=0.15 HTTP/2" 200 32768 .*', out + err)
    assert line and not line.group().endswith("aborted"), out + err
    assert "aborted_connections=0" in err


def test_shutdown_survives_an_h2_peer_that_just_reset(serve_tls, cert_pair, transport, h2client,
                                                      caplog):
    """Shutdown begins in the instant between a client's RST and the reactor seeing it
    (forced here by running the shutdown on the reactor thread right after the RST):
    the GOAWAY (or close_notify) write to that peer fails.  The other connection, with
    a stream that outlives --graceful-timeout 1s, must still be cut within the bound.
    (Regression: the error escaped Server._begin_shutdown, so the connections after it
    got no GOAWAY and the force-close timer was never armed.)"""
    release = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/hang":
            start_response("200 OK", [("Content-Length", "2")])

            def body():
                yield b"a"
                release.wait(8)
                yield b"b"
            return body()
        return h2_apps.app(environ, start_response)

    srv = serve_tls(app, transport=transport, graceful_timeout_s=1.0)
    busy = h2client(srv.port)
    sid = busy.request("GET", "/hang")
    busy.run_until(lambda: busy.streams[sid].data == b"a")
    idle = h2client(srv.port)
    s2 = idle.request("GET", "/")
    idle.response(s2)
    inside, peer_gone = threading.Event(), threading.Event()

    def shutdown_before_seeing_the_reset():
        inside.set()
        peer_gone.wait(5)
        srv.server._begin_shutdown()   # what Server.stop() / SIGTERM runs

    try:
        with caplog.at_level(logging.ERROR, logger="ktlswsgi.reactor"):
            srv.server.reactor.call_soon_threadsafe(shutdown_before_seeing_the_reset)
            assert inside.wait(5)
            idle.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            idle.sock.close()            # RST
            peer_gone.set()
            t0 = time.monotonic()
            # graceful timeout 1 s: the busy connection is cut well before the app lets go
            busy.run_until(lambda: busy.closed or busy.streams[sid].ended
                           or busy.streams[sid].reset is not None, timeout=3.5)
            assert time.monotonic() - t0 < 3
            assert not srv.thread.join(5) and not srv.thread.is_alive()
        assert not [r for r in caplog.records if "unhandled error" in r.getMessage()]
    finally:
        release.set()


# -- 11. http2 turned off -------------------------------------------------------------------------
def test_http2_off_curl_falls_back_to_http11(serve_tls, cert_pair, transport):
    srv = serve_tls(h2_apps.app, transport=transport, http2=False)
    r = curl_h2(cert_pair, f"https://localhost:{srv.port}/environ", "-w", "\n%{http_version}")
    body, _, version = r.stdout.rpartition(b"\n")
    assert version == b"1.1"
    assert json.loads(body)["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert srv.counters.h2_connections == 0 and srv.counters.h2_streams == 0
    with httpx.Client(http2=True, verify=httpx_ctx(cert_pair), timeout=CLIENT_TIMEOUT) as client:
        assert client.get(f"https://localhost:{srv.port}/").http_version == "HTTP/1.1"


def test_cli_no_http2_flag(ktlswsgi_cli, cert_pair, transport):
    proc = ktlswsgi_cli("apps.h2_apps:app", "--certfile", cert_pair[0], "--keyfile",
                        cert_pair[1], "--tls-transport", transport, "--no-http2")
    r = curl_h2(cert_pair, f"https://localhost:{proc.port}/", "-w", "%{http_version}")
    assert r.stdout == b"hello over h2\n1.1"


# -- 12. Flask ----------------------------------------------------------------------------------------
def test_flask_send_file_over_h2(serve_tls, cert_pair, tmp_path, transport):
    flask = pytest.importorskip("flask")
    size = 3 * MiB + 11
    path = make_file(tmp_path, "flask.bin", size)
    app = flask.Flask(__name__)

    @app.route("/f")
    def f():
        return flask.send_file(path)

    @app.route("/echo", methods=["POST"])
    def echo():
        return {"sha256": sha256(flask.request.get_data()),
                "protocol": flask.request.environ["SERVER_PROTOCOL"]}

    srv = serve_tls(app, transport=transport)
    got = tmp_path / "got"
    r = curl_h2(cert_pair, f"https://localhost:{srv.port}/f", "-o", str(got),
                "-w", "%{http_version} %{http_code}")
    assert r.stdout == b"2 200"
    assert sha256_file(got) == sha256_file(path)
    c = srv.counters
    assert wait_until(lambda: c.bytes_pread_ssl_write == size, 5), c.bytes_pread_ssl_write
    assert c.file_transfers == 1
    payload = os.urandom(600 * KiB)
    with httpx.Client(http2=True, verify=httpx_ctx(cert_pair), timeout=CLIENT_TIMEOUT) as client:
        r = client.post(f"https://localhost:{srv.port}/echo", content=payload)
        assert r.http_version == "HTTP/2"
        assert r.json() == {"sha256": sha256(payload), "protocol": "HTTP/2"}
        # send_file's ETag: a conditional GET is a 304 without content, the stream clean
        etag = client.get(f"https://localhost:{srv.port}/f").headers["etag"]
        r = client.get(f"https://localhost:{srv.port}/f", headers={"If-None-Match": etag})
        assert r.http_version == "HTTP/2" and r.status_code == 304 and r.content == b""
    assert c.h2_connections == 2
