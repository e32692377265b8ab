"""HTTP/2 under attack: hand-built frames against the limits of http2.py and streams.py.

Each test sends what a hostile (or broken) client sends and asserts the
RFC 9113 outcome (GOAWAY and its code, RST_STREAM and its code, a close),
then that the server still serves: a fresh connection gets 200.  Where the
server logs the reason, the line must not quote a header value.

The client is raw: `H2Wire` writes frames built with hyperframe and an hpack
encoder (so that it can send what the h2 library refuses to), reads and
decodes the server's frames, acknowledges its SETTINGS and, unless told not
to, opens the flow-control windows as DATA arrives.  Normal client behaviour
is tests/test_http2.py.
"""
from __future__ import annotations

import logging
import os
import select
import signal
import socket
import ssl
import threading
import time

import hpack
import pytest
from hyperframe.frame import (ContinuationFrame, DataFrame, Frame, GoAwayFrame, HeadersFrame,
                              PingFrame, PriorityFrame, RstStreamFrame, SettingsFrame,
                              WindowUpdateFrame)

from support import tls_client_context

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
NO_ERROR, PROTOCOL_ERROR, REFUSED_STREAM, CANCEL, ENHANCE_YOUR_CALM = 0, 1, 7, 8, 11
MAX_CONCURRENT_STREAMS, INITIAL_WINDOW_SIZE, MAX_HEADER_LIST_SIZE = 3, 4, 6
SECRET = "hdr-secret-7f3a91"      # a header value no log line may contain
BIG_BODY_BYTES = 1024 * 1024
WAIT_S = 5.0


# -- the app --------------------------------------------------------------------------------
class Gate:
    """/block requests wait here until the test opens it."""

    def __init__(self):
        self.entered = threading.Semaphore(0)
        self.release = threading.Event()


GATE = Gate()


@pytest.fixture
def gate():
    global GATE
    GATE = Gate()
    yield GATE
    GATE.release.set()


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/big":
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(BIG_BODY_BYTES))])
        return (b"x" * 65536 for _ in range(BIG_BODY_BYTES // 65536))
    if path == "/read":
        body = environ["wsgi.input"].read()
        out = b"read %d\n" % len(body)
    elif path == "/block":
        gate = GATE
        gate.entered.release()
        gate.release.wait(15)
        out = b"released\n"
    else:
        out = b"ok\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


# -- the client -----------------------------------------------------------------------------
class Stream:
    def __init__(self):
        self.headers: list | None = None
        self.body = bytearray()
        self.ended = False
        self.reset: int | None = None
        self._block = b""

    @property
    def status(self) -> int | None:
        if self.headers is None:
            return None
        return int(dict(self.headers)[b":status"])


class H2Wire:
    """A TLS connection speaking raw HTTP/2 frames (see the module docstring)."""

    def __init__(self, port: int, cert_pair, settings: dict | None = None,
                 auto_window: bool = True, timeout: float = WAIT_S, ping_ack: bool = True):
        ctx = tls_client_context(cert_pair)
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.decoder.max_header_list_size = 1 << 24
        self.auto_window = auto_window
        self.ping_ack = ping_ack           # answer the server's PINGs (else: pings_received)
        self.pings_received: list = []
        self.goaways: list = []
        self.buf = b""
        self.frames: list = []
        self.streams: dict[int, Stream] = {}
        self.server_settings: dict | None = None
        self.pings: list[bytes] = []
        self.settings_acks = 0
        self.goaway: GoAwayFrame | None = None
        self.closed = False
        self.send(PREFACE + SettingsFrame(0, settings=settings or {}).serialize())

    # sending
    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_frames(self, *frames) -> None:
        self.send(b"".join(f.serialize() for f in frames))

    def block(self, path: str = "/", method: str = "GET", extra=()) -> bytes:
        """An hpack header block for a request (with this connection's encoder)."""
        return self.encode([(":method", method), (":scheme", "https"),
                            (":authority", "localhost"), (":path", path), *extra])

    def encode(self, headers) -> bytes:
        return self.encoder.encode(headers, huffman=False)

    def headers_frame(self, sid: int, block: bytes, end_stream: bool = True,
                      end_headers: bool = True) -> HeadersFrame:
        flags = (["END_STREAM"] if end_stream else []) + (["END_HEADERS"] if end_headers else [])
        return HeadersFrame(sid, data=block, flags=flags)

    def request(self, sid: int, path: str = "/", method: str = "GET", extra=(),
                end_stream: bool = True) -> None:
        self.send_frames(self.headers_frame(sid, self.block(path, method, extra), end_stream))

    # receiving
    def stream(self, sid: int) -> Stream:
        return self.streams.setdefault(sid, Stream())

    def _feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self.buf[:9]))
            if len(self.buf) < 9 + length:
                return
            frame.parse_body(memoryview(self.buf[9:9 + length]))
            self.buf = self.buf[9 + length:]
            self.frames.append(frame)
            self._handle(frame)

    def _handle(self, frame) -> None:
        kind = type(frame)
        if kind is SettingsFrame:
            if "ACK" in frame.flags:
                self.settings_acks += 1
            else:
                if self.server_settings is None:
                    self.server_settings = dict(frame.settings)
                self._reply(SettingsFrame(0, flags=["ACK"]))
        elif kind is PingFrame and "ACK" in frame.flags:
            self.pings.append(frame.opaque_data)
        elif kind is PingFrame:
            self.pings_received.append(frame.opaque_data)
            if self.ping_ack:
                self._reply(PingFrame(0, opaque_data=frame.opaque_data, flags=["ACK"]))
        elif kind is GoAwayFrame:
            self.goaway = frame
            self.goaways.append(frame)
        elif kind is RstStreamFrame:
            self.stream(frame.stream_id).reset = frame.error_code
        elif kind is HeadersFrame or kind is ContinuationFrame:
            st = self.stream(frame.stream_id)
            st._block += frame.data
            if kind is HeadersFrame and "END_STREAM" in frame.flags:
                st.ended = True
            if "END_HEADERS" in frame.flags:
                headers = self.decoder.decode(st._block, raw=True)
                st._block = b""
                if st.headers is None or st.headers[0][1].startswith(b"1"):
                    st.headers = headers  # a 1xx is replaced by the final head
        elif kind is DataFrame:
            st = self.stream(frame.stream_id)
            st.body += frame.data
            if "END_STREAM" in frame.flags:
                st.ended = True
            if self.auto_window and frame.flow_controlled_length:
                n = frame.flow_controlled_length
                updates = [WindowUpdateFrame(0, window_increment=n)]
                if not st.ended:
                    updates.append(WindowUpdateFrame(frame.stream_id, window_increment=n))
                self._reply(*updates)

    def _reply(self, *frames) -> None:
        try:
            self.send_frames(*frames)
        except OSError:
            pass  # the server may already have closed

    def read_some(self, timeout: float) -> None:
        """One recv (waiting up to `timeout`); EOF or a reset marks the connection closed."""
        if self.closed:
            return
        self.sock.settimeout(max(timeout, 0.001))
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, TimeoutError):
            return
        except (ConnectionError, ssl.SSLError, OSError):
            data = b""
        if not data:
            self.closed = True
            return
        self._feed(data)

    def wait(self, cond, what: str, timeout: float = WAIT_S):
        deadline = time.monotonic() + timeout
        while True:
            got = cond()
            if got:
                return got
            left = deadline - time.monotonic()
            if self.closed or left <= 0:
                raise AssertionError(
                    f"{'connection closed' if self.closed else 'timed out'} waiting for {what}; "
                    f"received: {self.summary()}")
            self.read_some(left)

    def summary(self) -> str:
        return ", ".join(_describe(f) for f in self.frames[-30:]) or "no frames"

    def settle(self) -> None:
        """Wait for the server's SETTINGS (acknowledged on receipt) and its ACK of ours:
        afterwards no frame of ours goes out unasked (one inside a header block
        would be a PROTOCOL_ERROR of this client)."""
        self.wait(lambda: self.server_settings is not None and self.settings_acks,
                  "the SETTINGS exchange")

    def wait_closed(self, timeout: float = WAIT_S) -> None:
        self.wait(lambda: self.closed, "the server to close", timeout)

    def expect_goaway_and_close(self, timeout: float = WAIT_S) -> GoAwayFrame:
        self.wait(lambda: self.goaway is not None or self.closed, "GOAWAY", timeout)
        assert self.goaway is not None, f"closed without GOAWAY; received: {self.summary()}"
        self.wait_closed(timeout)
        return self.goaway

    def response(self, sid: int, timeout: float = WAIT_S) -> Stream:
        self.wait(lambda: self.stream(sid).ended or self.stream(sid).reset is not None,
                  f"the end of stream {sid}", timeout)
        return self.stream(sid)

    def get(self, sid: int, path: str = "/") -> Stream:
        self.request(sid, path)
        return self.response(sid)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


def _describe(frame) -> str:
    name = type(frame).__name__.replace("Frame", "")
    if isinstance(frame, GoAwayFrame):
        return f"GOAWAY(code={frame.error_code}, last={frame.last_stream_id})"
    if isinstance(frame, RstStreamFrame):
        return f"RST_STREAM({frame.stream_id}, code={frame.error_code})"
    return f"{name}({frame.stream_id}{', ' + ','.join(sorted(frame.flags)) if frame.flags else ''})"


@pytest.fixture
def h2(cert_pair):
    """h2(port, **kw) -> an H2Wire, closed at the end of the test."""
    conns = []

    def connect(port, **kw) -> H2Wire:
        c = H2Wire(port, cert_pair, **kw)
        conns.append(c)
        return c

    yield connect
    for c in conns:
        c.close()


def assert_still_serves(h2, port: int) -> None:
    c = h2(port)
    r = c.get(1, "/")
    assert r.status == 200 and bytes(r.body) == b"ok\n", c.summary()
    c.close()


def connection_log(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "ktlswsgi.connection"]


def assert_logged_error(caplog, code: int) -> str:
    """The one-line connection-error log with `code`; no header value in any line."""
    deadline = time.monotonic() + WAIT_S
    want = f"HTTP/2 connection error {code}:"
    while time.monotonic() < deadline:
        lines = [m for m in connection_log(caplog) if want in m]
        if lines:
            break
        time.sleep(0.01)
    else:
        raise AssertionError(f"no {want!r} log line in {connection_log(caplog)}")
    assert not [m for m in connection_log(caplog) if SECRET in m]
    assert SECRET not in caplog.text
    return lines[0]


@pytest.fixture
def logs(caplog):
    caplog.set_level(logging.INFO, logger="ktlswsgi.connection")
    return caplog


TRANSPORTS = pytest.mark.parametrize("transport", ["memory", "socket"])


# -- 1. Rapid Reset (CVE-2023-44487) ---------------------------------------------------------
@TRANSPORTS
def test_rapid_reset_below_the_cap_is_harmless(serve_tls, h2, transport):
    srv = serve_tls(app, transport=transport, h2_max_reset_streams=20)
    c = h2(srv.port)
    c.send(b"".join(
        c.headers_frame(sid, c.block("/")).serialize()
        + RstStreamFrame(sid, error_code=CANCEL).serialize()
        for sid in range(1, 41, 2)))  # 20 resets: the cap, not over it
    r = c.get(41, "/")
    assert r.status == 200, c.summary()
    assert c.goaway is None and not c.closed


@TRANSPORTS
def test_rapid_reset_over_the_cap_is_goaway_enhance_your_calm(serve_tls, h2, logs, transport):
    srv = serve_tls(app, transport=transport, h2_max_reset_streams=20)
    c = h2(srv.port)
    c.send(b"".join(
        c.headers_frame(sid, c.block("/", extra=[("x-token", SECRET)])).serialize()
        + RstStreamFrame(sid, error_code=CANCEL).serialize()
        for sid in range(1, 61, 2)))  # 30 resets
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM
    assert goaway.last_stream_id <= 59
    line = assert_logged_error(logs, ENHANCE_YOUR_CALM)
    assert "Rapid Reset" in line
    assert_still_serves(h2, srv.port)


def test_made_you_reset_over_the_cap_is_goaway_enhance_your_calm(serve_tls, h2):
    srv = serve_tls(app, h2_max_reset_streams=20)
    c = h2(srv.port)
    c.settle()
    # DATA on a stream the client already half-closed: the server must reset it
    # (STREAM_CLOSED, RFC 9113 5.1), and the request was already handed to the app.
    c.send(b"".join(
        c.headers_frame(sid, c.block("/")).serialize() + DataFrame(sid, data=b"x").serialize()
        for sid in range(1, 61, 2)))  # 30 streams reset by the server, no RST_STREAM sent
    c.send_frames(PingFrame(0, opaque_data=b"marker!!"))
    c.wait(lambda: c.pings or c.goaway is not None or c.closed, "PING ACK or GOAWAY")
    assert c.stream(1).reset == 5  # STREAM_CLOSED: the primitive works
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM, c.summary()


# -- 2. CONTINUATION flood (CVE-2024-27316 and kin) ------------------------------------------
HEADER_LIMIT = 8 * 1024


@TRANSPORTS
def test_header_block_in_continuations_below_the_limit_is_served(serve_tls, h2, transport):
    srv = serve_tls(app, transport=transport, limit_request_headers_bytes=HEADER_LIMIT)
    c = h2(srv.port)
    block = c.block("/", extra=[(f"x-h{i}", "v" * 500) for i in range(10)])  # ~5.3 KiB
    assert 5000 < len(block) < HEADER_LIMIT - 1000
    pieces = [block[i:i + 1000] for i in range(0, len(block), 1000)]
    frames = [c.headers_frame(1, pieces[0], end_headers=False)]
    frames += [ContinuationFrame(1, data=p) for p in pieces[1:-1]]
    frames.append(ContinuationFrame(1, data=pieces[-1], flags=["END_HEADERS"]))
    c.send_frames(*frames)
    r = c.response(1)
    assert r.status == 200, c.summary()


@TRANSPORTS
def test_continuation_flood_over_the_limit_is_goaway_at_the_limit(serve_tls, h2, logs, transport):
    srv = serve_tls(app, transport=transport, limit_request_headers_bytes=HEADER_LIMIT)
    c = h2(srv.port)
    first = c.block("/", extra=[("x-token", SECRET)])
    # HEADERS + CONTINUATIONs of 1 KiB: one byte over the limit in all, then
    # nothing more: the server must decide at the limit, not at END_HEADERS.
    frames = [c.headers_frame(1, first, end_headers=False)]
    sent = len(first)
    while sent <= HEADER_LIMIT:
        n = min(1024, HEADER_LIMIT + 1 - sent)
        frames.append(ContinuationFrame(1, data=b"\x00" * n))
        sent += n
    assert sent == HEADER_LIMIT + 1
    c.send_frames(*frames)
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM
    assert goaway.last_stream_id == 0  # the request was never taken
    line = assert_logged_error(logs, ENHANCE_YOUR_CALM)
    assert "header block" in line
    assert srv.counters.h2_streams == 0
    assert_still_serves(h2, srv.port)


def _flood_until_closed(c: H2Wire, frame_bytes: bytes, max_s: float = 5.0) -> int:
    """Send `frame_bytes` again and again until the server closes; the bytes sent."""
    sent = 0
    deadline = time.monotonic() + max_s
    batch = frame_bytes * max(1, 4096 // len(frame_bytes))
    while not c.closed and c.goaway is None:
        assert time.monotonic() < deadline, \
            f"server still reading after {sent} bytes: {c.summary()}"
        try:
            c.send(batch)
            sent += len(batch)
        except (OSError, ssl.SSLError):
            break  # closed under us
        readable, _, _ = select.select([c.sock], [], [], 0)
        if readable or c.sock.pending():
            c.read_some(0.05)
    return sent


@TRANSPORTS
@pytest.mark.parametrize("payload", [0, 1000], ids=["empty", "1000B"])
def test_endless_continuations_are_cut_off(serve_tls, h2, logs, transport, payload):
    srv = serve_tls(app, transport=transport, limit_request_headers_bytes=HEADER_LIMIT)
    c = h2(srv.port)
    c.settle()
    c.send_frames(c.headers_frame(1, c.block("/", extra=[("x-token", SECRET)]), end_headers=False))
    _flood_until_closed(c, ContinuationFrame(1, data=b"\x00" * payload).serialize())
    goaway = c.expect_goaway_and_close()
    # 1000-byte frames cross the block limit; empty ones hit h2's CONTINUATION
    # backlog bound (64 frames): a PROTOCOL_ERROR.
    assert goaway.error_code == (ENHANCE_YOUR_CALM if payload else PROTOCOL_ERROR), c.summary()
    assert_logged_error(logs, goaway.error_code)
    assert_still_serves(h2, srv.port)


# -- 3. HPACK bomb / oversized header list ---------------------------------------------------
def test_hpack_bomb_is_goaway_enhance_your_calm(serve_tls, h2, logs):
    srv = serve_tls(app, limit_request_headers_bytes=HEADER_LIMIT)
    c = h2(srv.port)
    big = SECRET + "b" * 3000
    # The first occurrence enters the dynamic table; the next 20 are 1-byte indexes.
    block = c.block("/", extra=[("x-bomb", big)] * 21)
    assert len(block) < 3200  # small on the wire, ~63 KiB decoded
    c.settle()
    assert c.server_settings.get(MAX_HEADER_LIST_SIZE) == HEADER_LIMIT
    c.send_frames(c.headers_frame(1, block))
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM, c.summary()
    line = assert_logged_error(logs, ENHANCE_YOUR_CALM)
    assert "header list" in line
    assert srv.counters.h2_streams == 0
    assert_still_serves(h2, srv.port)


def test_many_large_headers_are_goaway_enhance_your_calm(serve_tls, h2, logs):
    srv = serve_tls(app, limit_request_headers_bytes=HEADER_LIMIT)
    c = h2(srv.port)
    block = c.block("/", extra=[(f"x-h{i}", SECRET + "v" * 1000) for i in range(10)])
    assert len(block) > HEADER_LIMIT
    c.send_frames(c.headers_frame(1, block))  # one HEADERS frame under 16 KiB
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM, c.summary()
    assert_logged_error(logs, ENHANCE_YOUR_CALM)
    assert_still_serves(h2, srv.port)


# -- 4. control-frame floods -----------------------------------------------------------------
CONTROL_CAP = 50


def _control_frames(kind: str, n: int) -> list:
    if kind == "ping":
        return [PingFrame(0, opaque_data=b"%08d" % i) for i in range(n)]
    if kind == "settings":
        return [SettingsFrame(0) for _ in range(n)]
    if kind == "priority":
        return [PriorityFrame(2 * i + 101, depends_on=0, stream_weight=16) for i in range(n)]
    if kind == "empty-data":
        return [DataFrame(1, data=b"") for _ in range(n)]
    if kind == "window-update":
        return [WindowUpdateFrame(0, window_increment=1) for _ in range(n)]
    raise AssertionError(kind)


FLOODS = pytest.mark.parametrize("kind", ["ping", "settings", "priority", "empty-data",
                                          "window-update"])


@FLOODS
def test_control_frame_flood_is_goaway_enhance_your_calm(serve_tls, h2, logs, kind):
    srv = serve_tls(app, h2_max_control_frames=CONTROL_CAP)
    c = h2(srv.port)
    frames = _control_frames(kind, CONTROL_CAP + 10)
    if kind == "empty-data":  # a stream whose body the flood claims to be
        frames.insert(0, c.headers_frame(1, c.block("/read", "POST"), end_stream=False))
    c.send_frames(*frames)
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM, c.summary()
    line = assert_logged_error(logs, ENHANCE_YOUR_CALM)
    assert "control-frame flood" in line
    assert_still_serves(h2, srv.port)


@FLOODS
def test_control_frames_below_the_cap_are_served(serve_tls, h2, kind):
    srv = serve_tls(app, h2_max_control_frames=CONTROL_CAP)
    c = h2(srv.port)
    frames = _control_frames(kind, 10)
    if kind == "empty-data":
        frames.insert(0, c.headers_frame(1, c.block("/read", "POST"), end_stream=False))
        frames.append(DataFrame(1, data=b"hello", flags=["END_STREAM"]))
    c.send_frames(*frames)
    if kind == "empty-data":
        r = c.response(1)
        assert r.status == 200 and bytes(r.body) == b"read 5\n", c.summary()
    else:
        r = c.get(1, "/")
        assert r.status == 200, c.summary()
    if kind == "ping":
        c.wait(lambda: len(c.pings) >= 10, "10 PING ACKs")
        assert c.pings == [b"%08d" % i for i in range(10)]
    if kind == "settings":
        c.wait(lambda: c.settings_acks >= 11, "11 SETTINGS ACKs")  # ours from the preface too
    assert c.goaway is None and not c.closed


def test_window_update_flood_after_a_response_is_goaway_enhance_your_calm(serve_tls, h2):
    srv = serve_tls(app, h2_max_control_frames=CONTROL_CAP)
    c = h2(srv.port)
    r = c.get(1, "/")  # the server sends one DATA frame: two WINDOW_UPDATEs are fair
    assert r.status == 200
    c.send_frames(*_control_frames("window-update", 40 * CONTROL_CAP))
    c.send_frames(PingFrame(0, opaque_data=b"marker!!"))
    c.wait(lambda: c.pings or c.goaway is not None or c.closed, "PING ACK or GOAWAY")
    assert c.goaway is not None and c.goaway.error_code == ENHANCE_YOUR_CALM, c.summary()


# -- 5. MAX_CONCURRENT_STREAMS and a full worker pool ----------------------------------------
def test_full_pool_refuses_streams_with_refused_stream(serve_tls, h2, gate):
    srv = serve_tls(app, h2_max_concurrent_streams=5, threads=1, queue_size=1)
    c = h2(srv.port)
    c.wait(lambda: c.server_settings is not None, "the server's SETTINGS")
    assert c.server_settings.get(MAX_CONCURRENT_STREAMS) == 5
    c.request(1, "/block")
    assert gate.entered.acquire(timeout=WAIT_S), "stream 1 never reached the app"
    # The one thread runs stream 1; stream 3 takes the one queue slot; the rest are refused.
    for sid in (3, 5, 7, 9):
        c.request(sid, "/block")
    c.wait(lambda: all(c.stream(s).reset is not None for s in (5, 7, 9)),
           "RST_STREAM on streams 5, 7, 9")
    assert [c.stream(s).reset for s in (5, 7, 9)] == [REFUSED_STREAM] * 3
    assert c.stream(1).reset is None and c.stream(3).reset is None
    assert srv.counters.responses_503 == 3
    gate.release.set()
    for sid in (1, 3):
        r = c.response(sid)
        assert r.status == 200 and bytes(r.body) == b"released\n", c.summary()
        assert r.reset is None
    assert c.goaway is None and not c.closed
    r = c.get(11, "/")
    assert r.status == 200


def test_stream_over_max_concurrent_streams_is_a_stream_error(serve_tls, h2, gate):
    srv = serve_tls(app, h2_max_concurrent_streams=2, threads=4)
    c = h2(srv.port)
    c.request(1, "/block")
    c.request(3, "/block")
    for _ in range(2):
        assert gate.entered.acquire(timeout=WAIT_S)
    c.request(5, "/block")  # a third open stream: over the advertised 2
    c.wait(lambda: c.stream(5).reset is not None or c.goaway is not None or c.closed,
           "RST_STREAM on stream 5")
    # RFC 9113 5.1.2: "MUST treat this as a stream error of type PROTOCOL_ERROR or REFUSED_STREAM".
    assert c.goaway is None, c.summary()
    assert c.stream(5).reset in (PROTOCOL_ERROR, REFUSED_STREAM)
    gate.release.set()
    for sid in (1, 3):
        assert c.response(sid).status == 200
    assert srv.counters.h2_streams == 2


# -- 6. malformed requests -------------------------------------------------------------------
BASE = [(":method", "GET"), (":scheme", "https"), (":authority", "localhost"), (":path", "/")]
MALFORMED = {
    "missing-path": BASE[:3] + [("x-token", SECRET)],
    "duplicate-method": BASE + [(":method", "POST"), ("x-token", SECRET)],
    "upper-case-name": BASE + [("X-Token", SECRET)],
    "connection-header": BASE + [("connection", "keep-alive"), ("x-token", SECRET)],
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_request_is_goaway_protocol_error(serve_tls, h2, logs, case):
    srv = serve_tls(app)
    c = h2(srv.port)
    c.send_frames(c.headers_frame(1, c.encode(MALFORMED[case])))
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == PROTOCOL_ERROR, c.summary()
    assert_logged_error(logs, PROTOCOL_ERROR)
    assert srv.counters.h2_streams == 0
    assert_still_serves(h2, srv.port)


REFUSED_LIKE_HTTP1 = {
    "connect": ([(":method", "CONNECT"), (":authority", "example.com:443"),
                 ("x-token", SECRET)], 501),
    "path-not-origin-form": ([(":method", "GET"), (":scheme", "https"),
                              (":authority", "localhost"), (":path", "tiny"),
                              ("x-token", SECRET)], 400),
    "absolute-path": ([(":method", "GET"), (":scheme", "https"), (":authority", "localhost"),
                       (":path", "https://localhost/"), ("x-token", SECRET)], 400),
}


def h2_rejects_plain_connect() -> bool:
    """Whether the installed h2 refuses a CONNECT without :path on its own."""
    import h2.config
    import h2.connection
    import h2.exceptions
    server = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False))
    server.initiate_connection()
    enc = hpack.Encoder()
    data = (PREFACE + SettingsFrame(0).serialize() + HeadersFrame(1, data=enc.encode(
        [(":method", "CONNECT"), (":authority", "example.com:443")]),
        flags=["END_HEADERS"]).serialize())
    try:
        server.receive_data(data)
    except h2.exceptions.ProtocolError:
        return True
    return False


@pytest.mark.parametrize("case", sorted(REFUSED_LIKE_HTTP1))
def test_connect_and_non_origin_form_path_are_refused_without_the_app(serve_tls, h2, logs, case):
    """As HTTP/1.1 answers them: 501 for CONNECT, 400 for a :path that is
    not origin-form; a stream-level answer, the connection carries on."""
    ran = []

    def recording(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return app(environ, start_response)

    headers, status = REFUSED_LIKE_HTTP1[case]
    srv = serve_tls(recording)
    c = h2(srv.port)
    c.send_frames(c.headers_frame(1, c.encode(headers), end_stream=case != "connect"))
    if case == "connect" and h2_rejects_plain_connect():
        # h2 before 4.2 ends the connection on a CONNECT itself (PROTOCOL_ERROR).
        assert c.expect_goaway_and_close().error_code == PROTOCOL_ERROR and ran == []
        return
    r = c.response(1)
    assert r.status == status, c.summary()
    assert ran == []
    assert c.goaway is None and not c.closed
    r = c.get(3, "/")
    assert r.status == 200
    assert not any(SECRET in m for m in connection_log(logs))


def test_body_shorter_than_content_length_is_goaway_protocol_error(serve_tls, h2, logs):
    srv = serve_tls(app)
    c = h2(srv.port)
    block = c.block("/read", "POST", extra=[("content-length", "10"), ("x-token", SECRET)])
    c.send_frames(c.headers_frame(1, block, end_stream=False),
                  DataFrame(1, data=b"12345", flags=["END_STREAM"]))
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == PROTOCOL_ERROR, c.summary()
    line = assert_logged_error(logs, PROTOCOL_ERROR)
    assert "content-length" in line
    assert c.stream(1).status != 200
    assert_still_serves(h2, srv.port)


# -- 7. idle timeout -------------------------------------------------------------------------
def test_idle_connection_gets_goaway_no_error_and_is_closed(serve_tls, h2):
    srv = serve_tls(app, keep_alive_s=0.5)
    c = h2(srv.port)
    started = time.monotonic()
    goaway = c.expect_goaway_and_close(timeout=5)
    assert goaway.error_code == NO_ERROR
    assert goaway.last_stream_id == 0
    assert time.monotonic() - started < 4
    assert_still_serves(h2, srv.port)


def test_idle_after_a_request_names_the_last_stream(serve_tls, h2):
    srv = serve_tls(app, keep_alive_s=0.5)
    c = h2(srv.port)
    assert c.get(1, "/").status == 200
    goaway = c.expect_goaway_and_close(timeout=5)
    assert (goaway.error_code, goaway.last_stream_id) == (NO_ERROR, 1)


# -- 8. a reader that opens no flow-control window ---------------------------------------------
@pytest.mark.parametrize("settings", [{INITIAL_WINDOW_SIZE: 0}, {}], ids=["window-0", "no-update"])
def test_zero_window_stream_is_reset_and_zero_window_connection_closed(serve_tls, h2, logs, settings):
    srv = serve_tls(app, write_timeout_s=1, threads=1)
    c = h2(srv.port, settings=settings, auto_window=False)
    c.request(1, "/big")
    started = time.monotonic()
    if settings:
        # Only the stream's window is shut: that stream is reset, the
        # connection carries on.
        c.wait(lambda: c.stream(1).reset is not None, "RST_STREAM", timeout=6)
        assert c.stream(1).reset == CANCEL and not c.closed
    else:
        # The connection's window is shut too: the connection closes.
        c.wait_closed(timeout=6)
        assert srv.counters.aborted_connections >= 1
    assert time.monotonic() - started < 5
    st = c.stream(1)
    assert st.status == 200 and not st.ended
    assert len(st.body) == (0 if settings else 65535)
    assert any("flow-control window" in m for m in connection_log(logs))
    # The one worker thread is free again: a new connection is served.
    assert_still_serves(h2, srv.port)
    srv.wait_idle()


# -- 9. request body stall -------------------------------------------------------------------
def test_stalled_request_body_is_408(serve_tls, h2, logs):
    srv = serve_tls(app, read_timeout_s=1)
    c = h2(srv.port)
    block = c.block("/read", "POST", extra=[("content-length", "100")])
    c.send_frames(c.headers_frame(1, block, end_stream=False), DataFrame(1, data=b"x" * 10))
    started = time.monotonic()
    r = c.response(1, timeout=6)
    assert r.status == 408, c.summary()
    assert r.ended and r.reset is None
    assert 0.8 < time.monotonic() - started < 5
    assert any("stalled" in m and "408" in m for m in connection_log(logs))
    assert c.goaway is None and not c.closed  # only the stream ended
    assert c.get(3, "/").status == 200


# -- 10. graceful GOAWAY on SIGTERM ----------------------------------------------------------
class _Stderr:
    def __init__(self, proc):
        self.lines: list[str] = []
        self.thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self.thread.start()

    def _read(self, proc):
        for line in proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def text(self) -> str:
        return "\n".join(self.lines)


def _wait_path(path, proc, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert proc.poll() is None, "server exited"
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


def test_sigterm_sends_goaway_no_error_and_lets_the_stream_finish(ktlswsgi_cli, h2, cert_pair,
                                                                  tmp_path):
    from apps.h2_limit_apps import HOLD_BODY_BYTES, _body
    started, release = tmp_path / "started", tmp_path / "release"
    proc = ktlswsgi_cli("apps.h2_limit_apps:app", "--certfile", cert_pair[0],
                        "--keyfile", cert_pair[1], "--graceful-timeout", "10",
                        env={"KTLSWSGI_H2_STARTED": str(started),
                             "KTLSWSGI_H2_RELEASE": str(release)})
    err = _Stderr(proc)
    c = h2(proc.port, timeout=10, ping_ack=False)
    c.request(1, "/hold")
    _wait_path(started, proc)
    proc.send_signal(signal.SIGTERM)
    # RFC 9113 6.8, with stream 1 open: GOAWAY(2^31-1) and a PING first.
    c.wait(lambda: c.goaway is not None and c.pings_received, "GOAWAY and PING after SIGTERM",
           timeout=10)
    assert (c.goaway.error_code, c.goaway.last_stream_id) == (NO_ERROR, 2 ** 31 - 1)
    assert not c.closed
    # A stream the client opens before it answers the PING is still taken...
    c.request(3, "/")
    r3 = c.response(3)
    assert r3.status == 200 and r3.reset is None, c.summary()
    # ...then the PING's ACK: the final GOAWAY names the last stream taken.
    c.send_frames(PingFrame(0, opaque_data=c.pings_received[0], flags=["ACK"]))
    c.wait(lambda: len(c.goaways) == 2, "the final GOAWAY")
    assert (c.goaways[1].error_code, c.goaways[1].last_stream_id) == (NO_ERROR, 3)
    # A stream above it is not processed: ignored (RFC 9113 6.8).
    c.request(5, "/")
    release.touch()
    r = c.response(1, timeout=10)
    assert r.status == 200 and r.reset is None, c.summary()
    assert bytes(r.body) == _body() and len(r.body) == HOLD_BODY_BYTES
    c.wait_closed(timeout=10)
    assert c.stream(5).headers is None and c.stream(5).reset is None
    assert proc.wait(15) == 0, err.text()
