"""The connection, both sessions, the HTTP/2 driver and the exchange, driven
without sockets, threads or wall time (tests/sansio.py): deadlines are exact
(the clock moves when the test says), and every point of a stream's life can
be reached on purpose.

- HTTP/1: keep-alive and pipelining, the head and body deadlines and the
  minimum body rate to the microsecond, 100 Continue only when the app reads,
  the graceful drain of an idle keep-alive connection.
- HTTP/2, an h2 client against H2Session: request/response sequences, a reset
  at every point of a stream's life (before its job runs, after its head,
  mid-body, after its end), flow-control windows, and the graceful shutdown's
  GOAWAY sequence (behind the last END_STREAM; GOAWAY(2^31-1) + PING when no
  gap comes; the final GOAWAY at the PING's ACK).
- Http2 on its own: which resets count as Rapid Reset, which frames as control
  frames.
- Exchange on its own: a job cancelled before it runs never calls the app.
"""
from __future__ import annotations

import h2.config
import h2.connection
import h2.events
import h2.settings
import threading

import pytest
from hyperframe.frame import Frame, PingFrame, RstStreamFrame

from ktlswsgi import http1, http2
from sansio import FakePool, Harness
from support import wait_until

KiB = 1024
BIG = 2 ** 30


def hello(environ, start_response):
    body = b"hello " + environ["PATH_INFO"].encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]


def reader(environ, start_response):
    body = environ["wsgi.input"].read()
    out = b"read %d" % len(body)
    start_response("200 OK", [("Content-Length", str(len(out)))])
    return [out]


# -- HTTP/1 -------------------------------------------------------------------------------
def test_h1_keep_alive_and_pipelining(monkeypatch):
    h = Harness(hello, monkeypatch, tls=False)
    h.deliver(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    out = h.output()
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.index(b"hello /a") < out.index(b"hello /b")
    assert h.conn.session.state == "idle" and h.state == "open"
    h.deliver(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    h.run_jobs()
    assert b"hello /c" in h.output() and h.state == "closing" and h.transport.shut


@pytest.mark.skipif(http1.native is None, reason="the C parser is not built")
def test_h1_a_plain_keep_alive_request_takes_the_whole_event_path(monkeypatch):
    """Each keep-alive GET is one whole_request and its response one framed
    buffer sent without the pump (the two fast paths); the pipelined pair
    takes the event path."""
    from ktlswsgi import h1session
    taken = []
    whole_request, send_whole = http1.Http1.whole_request, h1session.H1Session.send_whole

    def spy_request(self, data):
        req = whole_request(self, data)
        taken.append(("request", req is not None))
        return req

    def spy_send(self):
        done = send_whole(self)
        taken.append(("response", done))
        return done

    monkeypatch.setattr(http1.Http1, "whole_request", spy_request)
    monkeypatch.setattr(h1session.H1Session, "send_whole", spy_send)
    h = Harness(hello, monkeypatch, tls=False)
    for path in (b"/a", b"/b"):
        h.deliver(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
        h.run_jobs()
        assert h.output().endswith(b"hello " + path)
    assert taken == [("request", True), ("response", True)] * 2
    taken.clear()
    h.deliver(b"GET /c HTTP/1.1\r\nHost: x\r\n\r\nGET /d HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    assert h.output().count(b"HTTP/1.1 200 OK") == 2
    assert taken[0] == ("request", False)


@pytest.mark.parametrize("room", [0, 1, 40])
def test_h1_a_whole_response_the_socket_cannot_take_goes_out_through_the_pump(room, monkeypatch):
    """The whole-response step hands what the transport did not take to the
    pump: nothing lost or doubled, the next request waits for the end, the
    write timeout runs, and the exchange ends once the rest is written."""
    from ktlswsgi import h1session
    taken = []
    send_whole = h1session.H1Session.send_whole

    def spy_send(self):
        done = send_whole(self)
        taken.append(done)
        return done

    monkeypatch.setattr(h1session.H1Session, "send_whole", spy_send)
    h = Harness(hello, monkeypatch, tls=False)
    h.transport.room = room
    h.deliver(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    assert taken == [True]
    sent = h.transport.take_output()
    assert len(sent) == room and h.conn.session.state == "active"
    assert h.conn.pump.wire and h.conn.pump.write_on
    h.deliver(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")   # waits for /a's end
    h.run_jobs()
    assert h.transport.take_output() == b""
    h.transport.room = None
    h.writable()
    h.run_jobs()
    out = sent + h.output()
    assert out.count(b"HTTP/1.1 200 OK") == 2 and out.index(b"hello /a") < out.index(b"hello /b")
    assert out.endswith(b"hello /b") and h.conn.session.state == "idle"


@pytest.mark.parametrize("path", ["whole-step", "pump"])
def test_h1_a_response_that_cannot_be_framed_aborts_and_logs_no_value(path, monkeypatch,
                                                                       caplog):
    """A framing bug (whole-response step or the pump's whole framing):
    the connection is aborted, the log line names the error's type, never
    its message (it may quote a header value)."""
    secret = "Set-Cookie: sid=SECRET"

    def broken(self, *args):
        raise ValueError(secret)

    from ktlswsgi import h1session
    if path == "whole-step":
        monkeypatch.setattr(http1.Http1, "whole_response", broken)
    else:   # the step declines (a busy wire): H1Session._frame_whole frames it
        monkeypatch.setattr(h1session.H1Session, "send_whole", lambda self: False)
        monkeypatch.setattr(http1.Http1, "body_to_end", broken)
    h = Harness(hello, monkeypatch, tls=False)
    with caplog.at_level("ERROR", logger="ktlswsgi.connection"):
        h.deliver(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
        h.run_jobs()
    assert h.state == "closed" and h.transport.closed and h.output() == b""
    assert "cannot frame the response (ValueError)" in caplog.text
    assert "SECRET" not in caplog.text


def test_h1_iteration_stops_at_the_content_length_and_close_is_called(monkeypatch):
    """PEP 3333: the server stops iterating once the Content-Length is sent;
    the iterable's close() still runs, and a first chunk that is the whole
    body goes out with its head in the whole-response step."""
    from ktlswsgi import h1session
    pulled, closed, taken = [], [], []
    send_whole = h1session.H1Session.send_whole

    def spy_send(self):
        done = send_whole(self)
        taken.append(done)
        return done

    class Body:
        def __init__(self, chunks):
            self.chunks = chunks

        def __iter__(self):
            for c in self.chunks:
                pulled.append(c)
                yield c

        def close(self):
            closed.append(True)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")])
        if environ["PATH_INFO"] == "/one":
            return Body([b"12345", b"never"])
        return Body([b"12", b"345", b"never"])

    monkeypatch.setattr(h1session.H1Session, "send_whole", spy_send)
    h = Harness(app, monkeypatch, tls=False)
    h.deliver(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    assert h.output().endswith(b"\r\n\r\n12345")
    assert pulled == [b"12345"] and closed == [True] and taken == [True]
    pulled.clear()
    h.deliver(b"GET /two HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    assert h.output().endswith(b"\r\n\r\n12345") and h.conn.session.state == "idle"
    assert pulled == [b"12", b"345"] and closed == [True, True]


def test_h1_header_timeout_is_exact(monkeypatch):
    h = Harness(hello, monkeypatch, tls=False, header_timeout_s=10)
    h.deliver(b"GET / HTTP/1.1\r\n")
    h.advance(9.999)
    assert h.output() == b"" and h.state == "open"
    h.advance(0.002)
    assert h.output().startswith(b"HTTP/1.1 408 ") and h.state == "closing"


def test_h1_body_below_the_minimum_rate_is_408_at_the_computed_moment(monkeypatch):
    # prebuffer 1 KiB: the app starts; then 1 byte per 0.5 s (never a stall).
    h = Harness(reader, monkeypatch, tls=False, read_timeout_s=2, body_min_rate=512,
                body_prebuffer_bytes=1024)
    h.deliver(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1024)
    assert len(h.pool.jobs) == 1          # dispatched: 1 KiB is in
    # The deadline: 2 s of grace + 1024 B / 512 B/s = 4 s after the head, plus
    # 1 s for each 512 bytes more: with 1 byte per 0.5 s it is never reached
    # by arrival, so at 4 s + what the trickle bought (8 bytes: 1/64 s).
    for _ in range(8):
        h.advance(0.5)
        h.deliver(b"y")
    assert h.state == "open"
    h.advance(4.02 - 4.0)
    h.run_jobs()
    assert h.output().startswith(b"HTTP/1.1 408 ")


def test_h1_small_body_waits_for_the_whole_body_before_the_app(monkeypatch):
    h = Harness(reader, monkeypatch, tls=False)
    h.deliver(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    assert not h.pool.jobs
    h.deliver(b"56789")
    assert len(h.pool.jobs) == 1
    h.run_jobs()
    assert h.output().endswith(b"read 10")


def test_h1_no_100_continue_for_an_app_that_never_reads(monkeypatch):
    h = Harness(hello, monkeypatch, tls=False)
    h.deliver(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    assert len(h.pool.jobs) == 1 and h.output() == b""   # dispatched, nothing sent yet
    h.run_jobs()
    out = h.output()
    assert out.startswith(b"HTTP/1.1 200 OK") and b"100 Continue" not in out


def test_h1_100_continue_is_sent_when_the_app_first_reads(monkeypatch):
    # The app runs on its own thread (as in the pool): its first read asks the
    # reactor for the 100, then waits for the body the client sends after it.
    h = Harness(reader, monkeypatch, tls=False)
    h.deliver(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
    job = h.pool.jobs.popleft()
    worker = threading.Thread(target=job, daemon=True)
    worker.start()
    wait_until(lambda: h.reactor.calls, 10, "the first read's call to the reactor")
    h.reactor.run()
    assert h.output() == b"HTTP/1.1 100 Continue\r\n\r\n"
    h.deliver(b"abcd")
    worker.join(10)
    assert not worker.is_alive()
    h.run_jobs()
    assert h.output().endswith(b"read 4")


def test_h1_draining_closes_an_idle_keep_alive_connection_after_a_second(monkeypatch):
    h = Harness(hello, monkeypatch, tls=False, keep_alive_s=5)
    h.deliver(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    h.output()
    h.conn.close_gracefully()
    h.advance(0.9)
    assert h.state == "open"
    h.advance(0.2)
    assert h.state == "closed"


# -- HTTP/2 -------------------------------------------------------------------------------
class Client:
    """The h2 library as a client, its bytes carried by the harness."""

    def __init__(self, h: Harness, window: int = BIG):
        self.h = h
        self.c = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        self.c.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.c.initiate_connection()
        if window > 65535:
            self.c.increment_flow_control_window(BIG)
        self.events: list = []
        self.frames: list = []        # (type name, stream id, flags, extra) as framed
        self._raw = bytearray()
        self.send()

    def send(self) -> None:
        self.h.deliver(self.c.data_to_send())
        self.read()

    def read(self, ack: bool = True) -> list:
        out = self.h.output()
        self._raw += out
        while len(self._raw) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._raw[:9]))
            if len(self._raw) < 9 + length:
                break
            frame.parse_body(memoryview(self._raw[9:9 + length]))
            del self._raw[:9 + length]
            extra = getattr(frame, "last_stream_id", getattr(frame, "opaque_data", None))
            self.frames.append((type(frame).__name__, frame.stream_id, set(frame.flags), extra))
        if not out or self.goaway_seen():
            return []
        evs = self.c.receive_data(out)
        self.events.extend(evs)
        if ack:
            for ev in evs:
                if isinstance(ev, h2.events.DataReceived):
                    self.c.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
        data = self.c.data_to_send()
        if data:
            self.h.deliver(data)
        return evs

    def goaway_seen(self) -> bool:
        return any(name == "GoAwayFrame" for name, *_ in self.frames)

    def get(self, path: str, end: bool = True, body: bytes | None = None) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(b":method", b"POST" if body is not None else b"GET"),
                                  (b":path", path.encode()), (b":scheme", b"https"),
                                  (b":authority", b"x")],
                            end_stream=end and body is None)
        if body is not None:
            self.c.send_data(sid, body, end_stream=end)
        self.send()
        return sid

    def reset(self, sid: int) -> None:
        self.c.reset_stream(sid)
        self.send()

    def responses(self) -> dict:
        out: dict = {}
        for ev in self.events:
            if isinstance(ev, h2.events.ResponseReceived):
                out.setdefault(ev.stream_id, [None, b""])[0] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                out.setdefault(ev.stream_id, [None, b""])[1] += ev.data
        return {sid: tuple(v) for sid, v in out.items()}


def h2_harness(app, monkeypatch, **config):
    return Harness(app, monkeypatch, alpn="h2", **config)


def test_h2_requests_and_responses_in_order(monkeypatch):
    h = h2_harness(hello, monkeypatch)
    c = Client(h)
    sids = [c.get(f"/{i}") for i in range(5)]
    h.run_jobs()
    c.read()
    assert c.responses() == {sid: (200, b"hello /%d" % i) for i, sid in enumerate(sids)}
    assert h.counters.h2_streams == 5 and h.state == "open"


def test_h2_trailers_end_the_request_body(monkeypatch):
    def echo(environ, start_response):
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]
    h = h2_harness(echo, monkeypatch)
    c = Client(h)
    sid = c.get("/", end=False, body=b"abc")
    c.c.send_headers(sid, [(b"x-checksum", b"1")], end_stream=True)   # trailers
    c.send()
    h.run_jobs()
    c.read()
    assert c.responses() == {sid: (200, b"abc")}


@pytest.mark.parametrize("fields", [[(b":path", b"/")], [(b"X-Up", b"1")], [(b"te", b"gzip")]])
def test_h2_malformed_trailers_end_the_connection(monkeypatch, fields):
    h = h2_harness(hello, monkeypatch)
    c = Client(h)
    sid = c.get("/", end=False, body=b"abc")
    # Sent as raw frames: the client's own h2 would refuse to send them.
    from hyperframe.frame import HeadersFrame
    from hyperframe.frame import Frame, GoAwayFrame
    block = c.c.encoder.encode(fields)
    h.deliver(HeadersFrame(sid, data=block, flags=["END_HEADERS", "END_STREAM"]).serialize())
    raw, codes = h.output(), []
    while len(raw) >= 9:
        frame, length = Frame.parse_frame_header(memoryview(raw[:9]))
        frame.parse_body(memoryview(raw[9:9 + length]))
        raw = raw[9 + length:]
        if isinstance(frame, GoAwayFrame):
            codes.append(frame.error_code)
    assert codes == [1]                  # PROTOCOL_ERROR
    assert h.state in ("closing", "closed")


@pytest.mark.parametrize("point", ["before-job", "after-head", "mid-body", "after-end"])
def test_h2_a_reset_at_every_point_of_a_stream(monkeypatch, point):
    ran = []

    def app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        start_response("200 OK", [("Content-Length", str(64 * KiB))])
        return (b"x" * (16 * KiB) for _ in range(4))

    h = h2_harness(app, monkeypatch)
    c = Client(h)
    if point == "before-job":
        sid = c.get("/r")
        c.reset(sid)
        h.run_jobs()
        assert ran == []                      # cancelled before it ran
    else:
        h.transport.room = 0 if point != "after-end" else None
        sid = c.get("/r")
        h.run_jobs()
        if point == "mid-body":
            h.transport.room = 20 * KiB
            h.writable()
            c.read()
        elif point == "after-head":
            h.transport.room = 200
            h.writable()
            c.read()
        else:
            c.read()
            assert c.responses()[sid] == (200, b"x" * 64 * KiB)
        if point == "after-end":            # h2 refuses to reset a closed stream: raw
            h.deliver(RstStreamFrame(sid, error_code=8).serialize())
        else:
            c.reset(sid)
        h.transport.room = None
        h.writable()
        c.read()
        assert ran == ["/r"]
    # The connection carries on: another request is answered.
    sid2 = c.get("/after")
    h.run_jobs()
    c.read()
    assert c.responses()[sid2][0] == 200
    assert h.state == "open" and not h.conn.session.streams


def _sized(environ, start_response):
    """/<status>/<body bytes>: that status and that many bytes of body."""
    _, status, size = environ["PATH_INFO"].split("/")
    n = int(size)
    start_response(f"{status} X", [("Content-Length", str(n))])
    return [b"b" * n]


@pytest.mark.parametrize("method, path, whole, frames", [
    ("GET", "/200/5", True, [("HeadersFrame", {"END_HEADERS"}), ("DataFrame", {"END_STREAM"})]),
    ("HEAD", "/200/5", True, [("HeadersFrame", {"END_HEADERS", "END_STREAM"})]),
    ("GET", "/200/0", True, [("HeadersFrame", {"END_HEADERS", "END_STREAM"})]),
    ("GET", "/204/0", True, [("HeadersFrame", {"END_HEADERS", "END_STREAM"})]),
    ("GET", "/200/5000", True, [("HeadersFrame", {"END_HEADERS"}),
                                ("DataFrame", {"END_STREAM"})]),
    # Over SETTINGS_MAX_FRAME_SIZE (16384): the item-by-item path, two DATA frames.
    ("GET", "/200/20000", False, [("HeadersFrame", {"END_HEADERS"}), ("DataFrame", set()),
                                  ("DataFrame", {"END_STREAM"})]),
])
def test_h2_a_whole_response_is_framed_at_once(method, path, whole, frames, monkeypatch):
    from ktlswsgi import h2session
    taken = []
    real = h2session.H2Session._frame_whole
    monkeypatch.setattr(h2session.H2Session, "_frame_whole",
                        lambda self, *a: taken.append(real(self, *a)) or taken[-1])
    h = h2_harness(_sized, monkeypatch)
    c = Client(h)
    sid = c.c.get_next_available_stream_id()
    c.c.send_headers(sid, [(b":method", method.encode()), (b":path", path.encode()),
                           (b":scheme", b"https"), (b":authority", b"x")], end_stream=True)
    c.send()
    h.run_jobs()
    c.read()
    status, size = (int(x) for x in path.split("/")[1:])
    body = b"" if method == "HEAD" or status == 204 else b"b" * size
    assert c.responses()[sid] == (status, body)
    assert [(name, flags) for name, stream, flags, _ in c.frames if stream == sid] == frames
    assert bool(taken[0]) is whole
    (ended,) = [ev for ev in c.events if isinstance(ev, h2.events.StreamEnded)]
    assert ended.stream_id == sid and not h.conn.session.streams


def test_h2_one_pump_run_for_the_streams_that_finished_together(monkeypatch):
    h = h2_harness(hello, monkeypatch)
    c = Client(h)
    for i in range(5):
        sid = c.c.get_next_available_stream_id()
        c.c.send_headers(sid, [(b":method", b"GET"), (b":path", b"/%d" % i),
                               (b":scheme", b"https"), (b":authority", b"x")], end_stream=True)
    h.deliver(c.c.data_to_send())
    h.pool.run_jobs()              # all five answer before the reactor runs
    assert len(h.reactor.calls) == 1
    h.reactor.run()
    c.read()
    assert sorted(v for v in c.responses().values()) == sorted(
        (200, b"hello /%d" % i) for i in range(5))
    sid = c.get("/again")          # and the next worker's output wakes it again
    h.pool.run_jobs()
    assert len(h.reactor.calls) == 1
    h.reactor.run()
    c.read()
    assert c.responses()[sid] == (200, b"hello /again")


@pytest.mark.parametrize("body", ["bytes", "file"])
def test_h2_no_data_frame_is_cut_to_a_window_crumb(body, monkeypatch, tmp_path):
    """A client that keeps a 50,000-byte stream window and acknowledges what it
    reads: three 16 KiB frames fill 49,152 of it, and the 848 bytes left wait
    for its next update instead of going out as a frame of their own (whose
    acknowledgement, a WINDOW_UPDATE under 1 KiB, counts toward the flood
    limit: a client downloading files one after another was cut off)."""
    size = 300 * KiB + 5
    path = tmp_path / "f.bin"
    path.write_bytes(b"f" * size)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(size))])
        if body == "bytes":
            return [b"f" * size]
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    h = h2_harness(app, monkeypatch)
    c = Client(h, window=50000)
    sid = c.get("/f")
    h.run_jobs()
    for _ in range(200):
        c.read()
        if c.responses().get(sid, (0, b""))[1] == b"f" * size:
            break
    assert c.responses()[sid] == (200, b"f" * size)
    sizes = [len(ev.data) for ev in c.events
             if isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid]
    assert min(sizes[:-1]) >= http2.SMALL_WINDOW_INCREMENT, sizes
    assert h.state == "open"


def _frames_end(raw: bytes) -> dict:
    """{stream id: the offset in `raw` just past its END_STREAM frame}."""
    ends, pos = {}, 0
    while pos + 9 <= len(raw):
        frame, length = Frame.parse_frame_header(memoryview(raw[pos:pos + 9]))
        pos += 9 + length
        if "END_STREAM" in frame.flags:
            ends[frame.stream_id] = pos
    return ends


@pytest.mark.parametrize("cut", [1, 9, 40, 41, 60, 97, 150, 200, 10 ** 6])
def test_h2_streams_that_end_together_share_a_write_and_end_only_once_sent(cut, monkeypatch):
    """Three streams' whole responses go out as one write; cut at any byte (a
    socket that takes `cut` bytes, then blocks), each stream ends (its
    exchange completes, its log line) only once its last frame is written,
    in order, and every byte arrives once."""
    from ktlswsgi import h2session
    h = h2_harness(hello, monkeypatch)
    c = Client(h)
    ended = []      # (stream id, bytes written when its end was handled)
    real = h2session.H2Session.written
    monkeypatch.setattr(h2session.H2Session, "written", lambda self, done: (
        ended.append((done.stream.sid, len(h.transport.out))), real(self, done))[1])
    sends = []
    real_send = h.transport.send
    h.transport.send = lambda view: sends.append(len(view)) or real_send(view)
    sids = []
    for i in range(3):
        sid = c.c.get_next_available_stream_id()
        c.c.send_headers(sid, [(b":method", b"GET"), (b":path", b"/%d" % i),
                               (b":scheme", b"https"), (b":authority", b"x")], end_stream=True)
        sids.append(sid)
    h.deliver(c.c.data_to_send())
    assert h.output() == b"" and not sends
    h.transport.room = cut
    h.pool.run_jobs()
    h.reactor.run()
    h.transport.room = None
    h.writable()
    raw = bytes(h.transport.out)
    assert sends[0] == len(raw)          # all three responses offered in one write
    ends = _frames_end(raw)
    assert [sid for sid, _ in ended] == sids
    for sid, at in ended:
        assert at >= ends[sid], (sid, at, ends)
    c.read()
    assert c.responses() == {sid: (200, b"hello /%d" % i) for i, sid in enumerate(sids)}
    assert not h.conn.session.streams and h.state == "open"


def test_h2_flow_control_small_client_window(monkeypatch):
    def big(environ, start_response):
        start_response("200 OK", [("Content-Length", str(100 * KiB))])
        return [b"z" * 100 * KiB]

    h = h2_harness(big, monkeypatch)
    c = Client(h, window=1000)
    sid = c.get("/big")
    h.run_jobs()
    c.read(ack=False)
    got = sum(len(ev.data) for ev in c.events if isinstance(ev, h2.events.DataReceived))
    assert got == 1000                      # the stream window, no more
    for _ in range(200):                    # the client opens it as it reads
        if c.responses().get(sid, (0, b""))[1] == b"z" * 100 * KiB:
            break
        c.c.increment_flow_control_window(1000, stream_id=sid)
        c.send()
    assert c.responses()[sid] == (200, b"z" * 100 * KiB)


def test_h2_graceful_goaway_rides_behind_the_last_end_stream(monkeypatch):
    h = h2_harness(hello, monkeypatch)
    c = Client(h)
    h.transport.room = 0
    sid = c.get("/last")
    h.run_jobs()
    h.conn.close_gracefully()                # drain: one stream open
    h.transport.room = None
    h.writable()
    c.read()
    names = [(name, s) for name, s, flags, _ in c.frames if name in ("DataFrame", "GoAwayFrame")]
    assert names[-2:] == [("DataFrame", sid), ("GoAwayFrame", 0)]
    assert c.frames[-1][3] == sid           # the final GOAWAY names it
    assert h.state == "closing"


@pytest.mark.parametrize("client_acks", [True, False])
def test_h2_no_gap_means_goaway_max_and_a_ping_then_the_final_goaway(monkeypatch, client_acks):
    # A stream the client's 1000-byte window keeps open: no END_STREAM comes.
    def slow(environ, start_response):
        start_response("200 OK", [])
        return (b"y" * 1024 for _ in range(4))

    h = h2_harness(slow, monkeypatch)
    c = Client(h, window=1000)
    sid = c.get("/stream")
    h.run_jobs()
    c.read(ack=False)
    h.conn.close_gracefully()
    h.advance(0.99)
    c.read(ack=False)
    assert not c.goaway_seen()               # within 1 s an END_STREAM could still come
    h.advance(0.02)
    c.read(ack=False)
    goaways = [f for f in c.frames if f[0] == "GoAwayFrame"]
    pings = [f for f in c.frames if f[0] == "PingFrame" and "ACK" not in f[2]]
    assert [g[3] for g in goaways] == [2 ** 31 - 1] and len(pings) == 1
    if client_acks:
        h.deliver(PingFrame(0, opaque_data=pings[0][3], flags=["ACK"]).serialize())
    else:
        h.advance(0.99)
        c.read(ack=False)
        assert len([f for f in c.frames if f[0] == "GoAwayFrame"]) == 1
        h.advance(0.02)                      # no ACK within 1 s: final anyway
    c.read(ack=False)
    goaways = [f for f in c.frames if f[0] == "GoAwayFrame"]
    assert [g[3] for g in goaways] == [2 ** 31 - 1, sid]
    # The stream named in the final GOAWAY still completes as the window opens.
    assert h.state == "open" and sid in h.conn.session.streams


# -- the driver on its own ------------------------------------------------------------------
def _driver_and_client(**limits):
    d = http2.Http2(http2.Limits(**limits))
    c = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True,
                                                             header_encoding=None))
    c.initiate_connection()
    d.receive(c.data_to_send(), 0.0)
    c.receive_data(d.data_to_send())
    d.receive(c.data_to_send(), 0.0)
    return d, c


def _open(c, sid, end=True):
    c.send_headers(sid, [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
                         (b":authority", b"x")], end_stream=end)


def test_driver_counts_rapid_reset_only_for_streams_that_owe_a_response():
    d, c = _driver_and_client(max_resets=3)
    # Four streams answered and closed, then reset by the client: routine.
    heads = b""
    for sid in (1, 3, 5, 7):
        _open(c, sid)
        d.receive(c.data_to_send(), 0.0)
        heads += d.data_to_send() + d.head_frames(sid, 200, [], end_stream=True)
    c.receive_data(heads + d.data_to_send())
    raw = b""
    for sid in (1, 3, 5, 7):
        raw += RstStreamFrame(sid, error_code=8).serialize()
    events = d.receive(raw, 0.0)
    assert not any(isinstance(e, http2.Failed) for e in events)
    # Four streams opened and reset in one read: Rapid Reset.
    raw = b""
    for sid in (9, 11, 13, 15):
        _open(c, sid)
        raw += c.data_to_send() + RstStreamFrame(sid, error_code=8).serialize()
    events = d.receive(raw, 0.0)
    assert any(isinstance(e, http2.Failed) and "Rapid Reset" in e.reason for e in events)


def test_driver_counts_tiny_window_updates_as_control_frames():
    from hyperframe.frame import WindowUpdateFrame
    d, c = _driver_and_client(max_control=10)
    _open(c, 1)
    d.receive(c.data_to_send(), 0.0)
    raw = b"".join(WindowUpdateFrame(1, window_increment=1).serialize() for _ in range(11))
    events = d.receive(raw, 0.0)
    assert any(isinstance(e, http2.Failed) for e in events)
    d2, c2 = _driver_and_client(max_control=10)
    raw = b"".join(WindowUpdateFrame(0, window_increment=64 * KiB).serialize() for _ in range(5))
    assert not any(isinstance(e, http2.Failed) for e in d2.receive(raw, 0.0))


# -- the exchange on its own ----------------------------------------------------------------
def test_exchange_job_cancelled_before_it_runs_never_calls_the_app(monkeypatch):
    ran = []

    def app(environ, start_response):
        ran.append(1)
        start_response("200 OK", [])
        return [b""]

    h = Harness(app, monkeypatch, tls=False)
    h.transport.room = 0
    h.deliver(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    ex = h.conn.session.ex
    assert ex.dispatched and len(h.pool.jobs) == 1
    assert ex.stop_job() is False           # queued, not running: cancelled
    h.run_jobs()
    assert ran == []


def test_exchange_reports_a_running_job_and_calls_back_when_it_ends(monkeypatch):
    seen = {}
    h = None

    def app(environ, start_response):
        seen["running"] = h.conn.session.ex.stop_job(on_end=lambda: seen.setdefault("ended", 1))
        start_response("200 OK", [])
        return [b""]

    h = Harness(app, monkeypatch, tls=False)
    h.deliver(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    assert seen == {"running": True, "ended": 1}


def test_fake_pool_refuses_past_its_queue():
    pool = FakePool(queue_size=1)
    assert pool.submit(lambda: None) and not pool.submit(lambda: None)


# -- the interface -------------------------------------------------------------------
@pytest.mark.parametrize("alpn", ["http/1.1", "h2"])
def test_each_session_implements_the_whole_interface(alpn, monkeypatch):
    """Both sessions give the connection every member of session.Session,
    with the same parameters."""
    import inspect

    from ktlswsgi.session import Session

    h = Harness(hello, monkeypatch, alpn=alpn)
    session = h.conn.session
    assert type(session).__name__ == ("H2Session" if alpn == "h2" else "H1Session")
    members = [n for n in vars(Session) if not n.startswith("_")]
    assert len(members) == 11
    for name in members:
        want = vars(Session)[name]
        got = getattr(type(session), name)
        if isinstance(want, property):
            assert isinstance(got, property), name
            continue
        assert list(inspect.signature(got).parameters) == list(
            inspect.signature(want).parameters), name
