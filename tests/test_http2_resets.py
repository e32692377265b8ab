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

from ktlswsgi import streams
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
