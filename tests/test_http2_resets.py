"""HTTP/2 streams that end early, on real sockets with a raw frame client
(`H2Wire` from test_http2_limits): what a reset, an unread body or a cancel
must and must not cost.

- A client that resets a file download mid-transfer, while another client
  keeps opening another file, only ever receives its own file's bytes, and its
  connection carries on (the zero-copy framing forced on over userspace TLS:
  the same descriptor lifetime as on a kTLS host).
"""
from __future__ import annotations

import hashlib
import os
import threading
import time

import pytest
from hyperframe.frame import RstStreamFrame, WindowUpdateFrame

from ktlswsgi import h2session as streams
from test_http2_limits import H2Wire, assert_still_serves, h2  # noqa: F401 (fixture)

MiB = 1 << 20
CANCEL = 8
INITIAL_WINDOW_SIZE = 4
MAX_WINDOW = 2 ** 31 - 1


def wide_open(h2, port: int) -> H2Wire:
    """A connection whose windows never stop the server: only the socket does."""
    c = h2(port, settings={INITIAL_WINDOW_SIZE: MAX_WINDOW}, auto_window=False)
    c.send_frames(WindowUpdateFrame(0, window_increment=MAX_WINDOW - 65535))
    c.settle()
    return c


def make_file(directory, name: str, size: int, seed: int) -> str:
    path = os.path.join(str(directory), name)
    block = hashlib.sha256(b"%d" % seed).digest() * 2048   # 64 KiB, distinct per seed
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    return path


def files_app(directory):
    def app(environ, start_response):
        path = environ["PATH_INFO"]
        if path == "/":
            start_response("200 OK", [("Content-Length", "3")])
            return [b"ok\n"]
        f = open(os.path.join(directory, path.lstrip("/")), "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f)
    return app


@pytest.fixture
def zero_copy_frames(monkeypatch):
    """File DATA frames as header + file range on every connection (as under kTLS TX)."""
    monkeypatch.setattr(streams, "zero_copy_frames", lambda transport: True)


def reset_mid_file_rounds(srv, h2, cert_pair, tmp_path, rounds: int = 5) -> None:  # noqa: F811
    """Rounds of: download a big file, stop reading, reset it mid-transfer, read on,
    while another connection keeps opening another file.  Asserts that every
    byte the resetting client received for the file is the file's own, and
    that its connection carries on."""
    a_path = make_file(tmp_path, "a.bin", 24 * MiB, seed=1)
    make_file(tmp_path, "b.bin", 2 * MiB, seed=2)
    with open(a_path, "rb") as f:
        a = f.read()
    stop = threading.Event()
    other_errors: list = []

    def other_client():
        # Another connection keeps opening the second file, so that a
        # descriptor closed too early is reused at once.
        try:
            c = H2Wire(srv.port, cert_pair, timeout=30)
            sid = 1
            while not stop.is_set():
                r = c.get(sid, "/b.bin")
                assert r.status == 200 and len(r.body) == 2 * MiB
                sid += 2
            c.close()
        except Exception as exc:   # reported below
            other_errors.append(exc)

    t = threading.Thread(target=other_client, daemon=True)
    t.start()
    try:
        for round_ in range(rounds):
            c = wide_open(h2, srv.port)
            c.request(1, "/a.bin")
            c.wait(lambda: len(c.stream(1).body) >= 256 * 1024, "the first 256 KiB", timeout=30)
            time.sleep(0.2)   # the client stops reading: frames queue in the server
            c.send_frames(RstStreamFrame(1, error_code=CANCEL))
            # Read on: what was already on its way for stream 1 arrives.
            c.request(3, "/")
            r = c.response(3, timeout=30)
            assert r.status == 200 and bytes(r.body) == b"ok\n", c.summary()
            got = bytes(c.stream(1).body)
            assert got == a[:len(got)], f"round {round_}: stream 1 received bytes not of its file"
            assert not c.closed and c.goaway is None, c.summary()
            c.close()
    finally:
        stop.set()
        t.join(60)
    assert not other_errors, other_errors
    assert_still_serves(h2, srv.port)


def test_reset_mid_file_receives_only_its_own_file(serve_tls, h2, cert_pair,  # noqa: F811
                                                   tmp_path, zero_copy_frames):
    srv = serve_tls(files_app(str(tmp_path)))
    reset_mid_file_rounds(srv, h2, cert_pair, tmp_path)


def test_unread_request_bodies_are_credited_to_the_connection_window(serve_tls, h2):  # noqa: F811
    """24 sequential 200 KB POSTs to a route that never reads its body, on one
    connection (the connection window is 1 MiB): each is answered, and then an
    upload that is read still gets through at once."""
    from test_http2_limits import app
    from hyperframe.frame import DataFrame
    srv = serve_tls(app)
    c = h2(srv.port)
    c.settle()
    body = b"u" * 200_000

    def post(sid: int, path: str):
        c.request(sid, path, method="POST", end_stream=False,
                  extra=[("content-length", str(len(body)))])
        frames = [DataFrame(sid, data=body[i:i + 16384]) for i in range(0, len(body), 16384)]
        frames[-1].flags.add("END_STREAM")
        c.send_frames(*frames)
        return c.response(sid)

    for i in range(24):
        r = post(1 + 2 * i, "/")
        assert r.status == 200 and bytes(r.body) == b"ok\n", (i, c.summary())
    assert c.goaway is None and not c.closed, c.summary()
    r = post(49, "/read")
    assert r.status == 200 and bytes(r.body) == b"read 200000\n", c.summary()


class CountingApp:
    """Counts the requests that reached the app; /slow holds a worker 0.3 s."""

    def __init__(self):
        self.runs = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self.lock:
            self.runs += 1
        if environ["PATH_INFO"] == "/slow":
            time.sleep(0.3)
        start_response("200 OK", [("Content-Length", "3")])
        return [b"ok\n"]


def test_streams_reset_before_their_job_starts_never_run_the_app(serve_tls, h2):  # noqa: F811
    """HEADERS + RST_STREAM pairs (under the Rapid Reset cap): none of them may
    cost an app run, and a fresh request is served at once."""
    counting = CountingApp()
    srv = serve_tls(counting, threads=4, h2_max_concurrent_streams=10)
    c = h2(srv.port)
    c.settle()
    pairs = []
    for i in range(150):
        sid = 1 + 2 * i
        pairs.append(c.headers_frame(sid, c.block("/slow")).serialize())
        pairs.append(RstStreamFrame(sid, error_code=CANCEL).serialize())
    c.send(b"".join(pairs))
    c.request(301, "/")
    r = c.response(301)
    assert r.status == 200, c.summary()
    # What was reset before its job started never ran; what raced into a worker
    # counted against the 10 concurrent streams.
    assert counting.runs <= 1 + 10, counting.runs
    started = time.monotonic()
    assert_still_serves(h2, srv.port)
    assert time.monotonic() - started < 1.0


def test_streams_the_server_resets_never_run_the_app(serve_tls, h2):  # noqa: F811
    """DATA after END_STREAM: the server resets the stream (STREAM_CLOSED) and
    its request must not reach the app."""
    from hyperframe.frame import DataFrame
    counting = CountingApp()
    srv = serve_tls(counting)
    c = h2(srv.port)
    c.settle()
    frames = []
    for i in range(20):
        sid = 1 + 2 * i
        frames.append(c.headers_frame(sid, c.block("/slow")).serialize())
        frames.append(DataFrame(sid, data=b"late").serialize())
    c.send(b"".join(frames))
    c.wait(lambda: all(c.stream(1 + 2 * i).reset is not None or c.stream(1 + 2 * i).ended
                       for i in range(20)), "every stream answered or reset")
    resets = sum(1 for i in range(20) if c.stream(1 + 2 * i).reset is not None)
    assert resets == 20, c.summary()
    assert counting.runs == 0
    assert_still_serves(h2, srv.port)


# -- cancels are normal traffic; work without output is abuse -----------------------------------

ENHANCE_YOUR_CALM = 11


def test_resets_answering_data_of_a_cancelled_stream_are_not_rapid_reset(serve_tls, h2,  # noqa: F811
                                                                         tmp_path):
    """python-h2 (under httpx) answers every DATA frame that arrives on a stream it
    reset with a RST_STREAM of its own: one cancelled download sends hundreds.
    They reset a stream that is already over, so they are not Rapid Reset:
    no GOAWAY, and the other stream in flight completes."""
    make_file(tmp_path, "a.bin", 24 * MiB, seed=1)
    make_file(tmp_path, "b.bin", 4 * MiB, seed=2)
    srv = serve_tls(files_app(str(tmp_path)), h2_max_reset_streams=20)
    c = wide_open(h2, srv.port)
    c.request(1, "/a.bin")
    c.request(3, "/b.bin")
    c.wait(lambda: len(c.stream(1).body) >= 256 * 1024, "the first 256 KiB")
    c.send_frames(RstStreamFrame(1, error_code=CANCEL))
    seen = len(c.frames)
    answered = 0
    deadline = time.monotonic() + 20
    while not (c.stream(3).ended or c.closed) and time.monotonic() < deadline:
        c.read_some(0.5)
        late = [f for f in c.frames[seen:] if f.stream_id == 1 and type(f).__name__ == "DataFrame"]
        seen = len(c.frames)
        if late:
            c.send_frames(*[RstStreamFrame(1, error_code=5) for _ in late])  # STREAM_CLOSED
            answered += len(late)
    assert c.stream(3).ended and len(c.stream(3).body) == 4 * MiB
    assert answered > 20, answered   # more than the cap: the test means something
    r = c.get(5, "/")                # the server has read every one of those resets
    assert r.status == 200, c.summary()
    assert c.goaway is None and not c.closed, c.summary()
    assert srv.counters.bad_requests == 0


def test_httpx_cancelled_download_does_not_cost_the_other_stream(serve_tls, cert_pair, tmp_path):
    import httpx
    from support import tls_client_context
    # Both files fit in httpcore's 16 MiB connection window: httpcore never
    # credits what it had buffered for a stream it then closes, so a bigger
    # cancelled download can shut its own connection window (a client defect).
    make_file(tmp_path, "a.bin", 8 * MiB, seed=1)
    make_file(tmp_path, "b.bin", 4 * MiB, seed=2)
    srv = serve_tls(files_app(str(tmp_path)), h2_max_reset_streams=20)
    url = f"https://localhost:{srv.port}"
    with httpx.Client(http2=True, verify=tls_client_context(cert_pair), timeout=30) as client:
        other: dict = {}

        def fetch_other():
            try:
                r = client.get(url + "/b.bin")
                other["len"] = len(r.content)
                other["version"] = r.http_version
            except Exception as exc:
                other["error"] = exc

        with client.stream("GET", url + "/a.bin") as r:
            assert r.http_version == "HTTP/2"
            t = threading.Thread(target=fetch_other)
            t.start()
            got = 0
            for chunk in r.iter_bytes():
                got += len(chunk)
                if got > 1 * MiB:
                    break          # leaving the block cancels the stream
        t.join(60)
        assert other.get("len") == 4 * MiB, other
        r = client.get(url + "/")
        assert r.status_code == 200 and r.text == "ok\n"
    assert srv.counters.h2_connections == 1, "GOAWAY made httpx open another connection"
    assert srv.counters.bad_requests == 0


def test_data_flood_on_a_reset_stream_is_goaway_enhance_your_calm(serve_tls, h2):  # noqa: F811
    """Each DATA frame on a stream the client itself reset makes h2 send a
    RST_STREAM: a flood of them counts as control frames."""
    from hyperframe.frame import DataFrame
    from test_http2_limits import app
    srv = serve_tls(app, h2_max_control_frames=100)
    c = h2(srv.port)
    c.settle()
    c.request(1, "/read", method="POST", end_stream=False)
    c.send_frames(RstStreamFrame(1, error_code=CANCEL))
    c.send(b"".join(DataFrame(1, data=b"x").serialize() for _ in range(500)))
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM
    rsts = sum(1 for f in c.frames if isinstance(f, RstStreamFrame))
    assert rsts <= 110, rsts
    assert_still_serves(h2, srv.port)


def test_stream_fed_one_byte_windows_is_reset_after_write_timeout(serve_tls, h2,  # noqa: F811
                                                                   tmp_path):
    """1-byte WINDOW_UPDATEs now and then do not keep a response (its file, its
    worker) alive: less than 16 KiB of window in --write-timeout resets the
    stream; the connection carries on."""
    make_file(tmp_path, "a.bin", 4 * MiB, seed=1)
    srv = serve_tls(files_app(str(tmp_path)), write_timeout_s=1)
    c = h2(srv.port, settings={INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    c.settle()
    c.request(1, "/a.bin")
    started = time.monotonic()
    next_update = started
    while c.stream(1).reset is None and time.monotonic() - started < 6:
        if time.monotonic() >= next_update:   # one byte of window every 0.2 s
            c.send_frames(WindowUpdateFrame(1, window_increment=1))
            next_update += 0.2
        c.read_some(max(0.01, next_update - time.monotonic()))
    assert c.stream(1).reset == CANCEL, c.summary()
    assert 0.9 < time.monotonic() - started < 4
    assert not c.closed and c.goaway is None
    c.send_frames(WindowUpdateFrame(0, window_increment=10 * MiB))
    c.request(3, "/")
    c.send_frames(WindowUpdateFrame(3, window_increment=1024))
    r = c.response(3)
    assert r.status == 200 and bytes(r.body) == b"ok\n", c.summary()


def test_tiny_window_update_flood_is_goaway_enhance_your_calm(serve_tls, h2, tmp_path):  # noqa: F811
    make_file(tmp_path, "a.bin", 4 * MiB, seed=1)
    srv = serve_tls(files_app(str(tmp_path)), h2_max_control_frames=200)
    c = h2(srv.port, settings={INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    c.settle()
    c.send_frames(WindowUpdateFrame(0, window_increment=10 * MiB))
    c.request(1, "/a.bin")
    c.wait(lambda: c.stream(1).headers is not None, "the response head")
    # One byte of window at a time, each answered by a 1-byte DATA frame.
    for _ in range(1000):
        if c.closed or c.goaway is not None:
            break
        have = len(c.stream(1).body)
        c._reply(WindowUpdateFrame(1, window_increment=1))
        c.wait(lambda: len(c.stream(1).body) > have or c.goaway is not None or c.closed,
               "one more byte")
    goaway = c.expect_goaway_and_close()
    assert goaway.error_code == ENHANCE_YOUR_CALM
    assert len(c.stream(1).body) <= 250
    assert_still_serves(h2, srv.port)


def test_one_connection_holds_at_most_the_active_streams_cap(serve_tls, h2, tmp_path):  # noqa: F811
    """40 streams of a big file with shut windows: only --h2-max-active-streams
    of them reach the app (and open the file); the rest wait their turn."""
    make_file(tmp_path, "a.bin", 4 * MiB, seed=1)
    opened = []
    files = files_app(str(tmp_path))

    def counting(environ, start_response):
        opened.append(environ["PATH_INFO"])
        return files(environ, start_response)

    srv = serve_tls(counting, h2_max_active_streams=8, write_timeout_s=30)
    c = h2(srv.port, settings={INITIAL_WINDOW_SIZE: 0}, auto_window=False)
    c.settle()
    for i in range(40):
        c.request(1 + 2 * i, "/a.bin")
    c.wait(lambda: sum(1 for i in range(40) if c.stream(1 + 2 * i).headers) >= 8,
           "8 response heads")
    c.read_some(0.5)
    assert len(opened) == 8, (len(opened), c.summary())
    started = time.monotonic()
    assert_still_serves(h2, srv.port)
    assert time.monotonic() - started < 5.0   # not the 30 s --write-timeout
    # Shutting one down lets the next in.
    # (assert_still_serves' own request on another connection is in `opened`
    # too: count this connection's file streams.)
    c.send_frames(RstStreamFrame(1, error_code=CANCEL))
    c.wait(lambda: opened.count("/a.bin") >= 9, "the ninth stream to start")
    c.read_some(0.2)
    assert opened.count("/a.bin") == 9, c.summary()   # one reset lets exactly one in
