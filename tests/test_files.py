"""wsgi.file_wrapper end to end: the sendfile fast path, its fallbacks and its failures.

Real sockets and real clients (curl, http.client, httpx) against an
in-process server, so the tests read the server's counters: a fast-path
response must show up in `file_transfers` and `bytes_sendfile`, a fallback
must leave `bytes_sendfile` alone.  A file of at most INLINE_FILE_BYTES is
read by the worker and sent with its head: no file transfer, no sendfile.
"""
from __future__ import annotations

import hashlib
import http.client
import io
import os
import socket
import subprocess
import threading
import time

import httpx
import pytest

from apps import raw_files
from support import read_response, recv_until_closed, response_reader, wait_until
from ktlswsgi.filewrapper import INLINE_FILE_BYTES, FileWrapper, file_range

KiB = 1024
MiB = 1024 * 1024
WORKER_PREFIX = "ktlswsgi-worker-"


# -- helpers ------------------------------------------------------------------------
def make_file(directory, size: int, name: str = "payload.bin"):
    """A file of `size` random bytes; returns (path, sha256 hex)."""
    path = os.path.join(str(directory), name)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, MiB))
            f.write(block)
            h.update(block)
            left -= len(block)
    return path, h.hexdigest()


def assert_fast_path(srv, before: dict, size: int) -> None:
    """One file transfer of exactly `size` bytes went out through sendfile;
    for a file of at most INLINE_FILE_BYTES, none: it went with its head."""
    c = srv.counters
    if size <= INLINE_FILE_BYTES:
        assert_no_fast_path(srv, before, size)
        return
    # The reactor adds to the counter just after sendfile returns: the client
    # may have the bytes a moment before.
    # For an empty file the whole response (head, Content-Length: 0) can reach
    # the client before the reactor takes the empty file range off the queue.
    wait_until(lambda: c.bytes_sendfile - before["bytes_sendfile"] >= size
             and c.file_transfers > before["file_transfers"], timeout=5)
    assert c.file_transfers - before["file_transfers"] == 1
    assert c.bytes_sendfile - before["bytes_sendfile"] == size


def assert_no_fast_path(srv, before: dict, size: int) -> None:
    c = srv.counters
    wait_until(lambda: c.bytes_send - before["bytes_send"] >= size, timeout=5)
    assert c.bytes_sendfile == before["bytes_sendfile"]
    assert c.file_transfers == before["file_transfers"]
    assert c.bytes_send - before["bytes_send"] >= size


def fetch_curl(url: str, tmp_path):
    out = os.path.join(str(tmp_path), "curl.out")
    r = subprocess.run(["curl", "-sS", "--max-time", "60", "-o", out, "-D", "-", url],
                       capture_output=True, text=True, timeout=90)
    assert r.returncode == 0, r.stderr
    status = int(r.stdout.split()[1])
    headers = {}
    for line in r.stdout.splitlines()[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    h = hashlib.sha256()
    size = 0
    with open(out, "rb") as f:
        for block in iter(lambda: f.read(MiB), b""):
            h.update(block)
            size += len(block)
    os.unlink(out)
    return status, headers, size, h.hexdigest()


def fetch_http_client(srv, target: str):
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=60)
    try:
        conn.request("GET", target)
        resp = conn.getresponse()
        h = hashlib.sha256()
        size = 0
        for _ in range(100_000):
            block = resp.read(256 * KiB)
            if not block:
                break
            h.update(block)
            size += len(block)
        headers = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, headers, size, h.hexdigest()
    finally:
        conn.close()


def fetch_httpx(srv, target: str):
    h = hashlib.sha256()
    size = 0
    with httpx.Client(timeout=60) as client:
        with client.stream("GET", srv.url + target) as resp:
            for block in resp.iter_raw():
                h.update(block)
                size += len(block)
            return resp.status_code, {k.lower(): v for k, v in resp.headers.items()}, size, h.hexdigest()


def fetch(client: str, srv, target: str, tmp_path):
    if client == "curl":
        return fetch_curl(srv.url + target, tmp_path)
    if client == "http.client":
        return fetch_http_client(srv, target)
    return fetch_httpx(srv, target)


def vm_rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def read_head(sock: socket.socket, limit: int = 64 * KiB):
    """Read up to the end of the response head; returns (head bytes, body bytes after it)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(4096)
        assert data, f"connection closed before the end of the head: {buf!r}"
        buf += data
        assert len(buf) < limit, "response head too long"
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


def head_fields(head: bytes) -> dict:
    lines = head.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        fields[name.strip().lower()] = value.strip()
    return fields


def slow_client(srv, rcvbuf: int = 4096) -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.settimeout(10)
    s.connect((srv.host, srv.port))
    return s


# -- Flask send_file and Django FileResponse through the fast path -----------------------
SIZES = [
    pytest.param(0, "curl", id="0B-curl"),
    pytest.param(1, "http.client", id="1B-http.client"),
    pytest.param(16 * KiB, "httpx", id="16KiB-httpx"),
    pytest.param(64 * KiB, "curl", id="64KiB-curl"),
    pytest.param(MiB + 7, "http.client", id="1MiB+7-http.client"),
]


def flask_app():
    from apps.flask_files import app
    return app


def django_app():
    from apps.django_files import application
    return application


FRAMEWORKS = {"flask": flask_app, "django": django_app}


@pytest.mark.parametrize("framework,size,client", [
    *[pytest.param("flask", *p.values, id=f"flask-{p.id}") for p in SIZES],
    pytest.param("flask", 50 * MiB, "curl", id="flask-50MiB-curl"),
    *[pytest.param("django", *p.values, id=f"django-{p.id}") for p in SIZES],
    pytest.param("django", 50 * MiB, "httpx", id="django-50MiB-httpx"),
])
def test_framework_file_response_takes_the_sendfile_path_with_identical_body(
        serve, tmp_path, framework, size, client):
    """Flask send_file and Django FileResponse both reach the server's file path:
    sendfile, or for a small file one write with the head."""
    srv = serve(FRAMEWORKS[framework]())
    path, digest = make_file(tmp_path, size)
    before = srv.counters.snapshot()
    status, headers, got, got_digest = fetch(client, srv, f"/file?path={path}", tmp_path)
    assert status == 200
    assert int(headers["content-length"]) == size
    assert got == size
    assert got_digest == digest
    assert_fast_path(srv, before, size)


# -- a raw app: position, Content-Length, framing ---------------------------------------
def test_file_wrapper_sends_from_the_files_current_position(serve, tmp_path):
    path, _ = make_file(tmp_path, 300 * KiB)
    data = open(path, "rb").read()
    srv = serve(raw_files.file_app(path, seek=100))
    before = srv.counters.snapshot()
    status, headers, got, digest = fetch_http_client(srv, "/")
    assert status == 200
    assert int(headers["content-length"]) == len(data) - 100
    assert got == len(data) - 100
    assert digest == hashlib.sha256(data[100:]).hexdigest()
    assert_fast_path(srv, before, len(data) - 100)


@pytest.mark.parametrize("length", [1000, INLINE_FILE_BYTES + 1000], ids=["inline", "range"])
def test_file_wrapper_sends_exactly_content_length_bytes_when_smaller_than_the_file(
        serve, tmp_path, length):
    path, _ = make_file(tmp_path, 300 * KiB)
    data = open(path, "rb").read()
    srv = serve(raw_files.file_app(path, seek=100, content_length=length))
    before = srv.counters.snapshot()
    # Two requests on one keep-alive connection: any byte beyond Content-Length
    # would be parsed as the start of the second response.
    with srv.connect() as s:
        reader = response_reader(s)
        for _ in range(2):
            s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            status, headers, body = read_response(reader)
            assert status == 200
            assert headers["content-length"] == str(length)
            assert "transfer-encoding" not in headers
            assert body == data[100:100 + length]
    if length <= INLINE_FILE_BYTES:
        assert_no_fast_path(srv, before, 2 * length)
        return
    wait_until(lambda: srv.counters.bytes_sendfile - before["bytes_sendfile"] >= 2 * length)
    assert srv.counters.file_transfers - before["file_transfers"] == 2
    assert srv.counters.bytes_sendfile - before["bytes_sendfile"] == 2 * length


def test_file_wrapper_without_content_length_is_chunked_on_http11(serve, tmp_path):
    path, _ = make_file(tmp_path, 200 * KiB + 3)
    data = open(path, "rb").read()
    srv = serve(raw_files.file_app(path, content_length=None))
    before = srv.counters.snapshot()
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(s)
        fields = head_fields(head)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert fields.get("transfer-encoding") == "chunked"
        assert "content-length" not in fields
        # Decode the chunked framing by hand, strictly.
        buf = bytearray(rest)
        body = bytearray()
        for _ in range(100_000):
            while b"\r\n" not in buf:
                more = s.recv(65536)
                assert more, "connection closed inside the chunked body"
                buf += more
            line, _, tail = bytes(buf).partition(b"\r\n")
            n = int(line.split(b";")[0], 16)
            buf = bytearray(tail)
            while len(buf) < n + 2:
                more = s.recv(65536)
                assert more, "connection closed inside a chunk"
                buf += more
            assert buf[n:n + 2] == b"\r\n", "chunk not followed by CRLF"
            body += buf[:n]
            del buf[:n + 2]
            if n == 0:
                break
        assert bytes(body) == data
        assert not buf, "bytes after the last chunk"
        # The connection is still usable.
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        status, headers, body2 = read_response(response_reader(s))
        assert status == 200 and body2 == data
    wait_until(lambda: srv.counters.bytes_sendfile - before["bytes_sendfile"] >= 2 * len(data))
    assert srv.counters.file_transfers - before["file_transfers"] == 2
    assert srv.counters.bytes_sendfile - before["bytes_sendfile"] == 2 * len(data)


def test_file_wrapper_without_content_length_is_close_delimited_on_http10(serve, tmp_path):
    path, _ = make_file(tmp_path, 200 * KiB + 3)
    data = open(path, "rb").read()
    srv = serve(raw_files.file_app(path, content_length=None))
    before = srv.counters.snapshot()
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.0\r\n\r\n")
        raw = recv_until_closed(s)
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, raw[:200]
    assert head.split(b" ")[1] == b"200"
    fields = head_fields(head)
    assert "content-length" not in fields
    assert "chunked" not in fields.get("transfer-encoding", "")
    assert body == data
    assert_fast_path(srv, before, len(data))


@pytest.mark.parametrize("size", [1000, 100 * KiB], ids=["inline", "range"])
def test_file_shorter_than_content_length_aborts_instead_of_desynchronising(serve, tmp_path, size):
    path, _ = make_file(tmp_path, size)
    data = open(path, "rb").read()
    srv = serve(raw_files.file_app(path, content_length=len(data) + 100))
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, rest = read_head(s)
        assert int(head_fields(head)["content-length"]) == len(data) + 100
        body = rest + recv_until_closed(s)  # must end (EOF or reset), not wait for 100 more bytes
    assert body == data
    assert srv.counters.aborted_connections >= 1


def test_flask_range_request_gets_the_right_bytes(serve, tmp_path):
    path, _ = make_file(tmp_path, 300 * KiB)
    data = open(path, "rb").read()
    srv = serve(flask_app())
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=30)
    try:
        conn.request("GET", f"/file?path={path}", headers={"Range": "bytes=100-199999"})
        resp = conn.getresponse()
        assert resp.status == 206
        assert resp.getheader("Content-Range") == f"bytes 100-199999/{len(data)}"
        assert resp.read() == data[100:200000]
        # Same connection, whole file: nothing of the partial response is left over.
        conn.request("GET", f"/file?path={path}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == data
    finally:
        conn.close()


# -- fallbacks: not a regular file ----------------------------------------------------------
def test_file_wrapper_over_bytesio_falls_back_to_iteration(serve):
    data = os.urandom(300 * KiB + 5)
    app = raw_files.filelike_app(lambda: io.BytesIO(data), content_length=len(data))
    srv = serve(app)
    before = srv.counters.snapshot()
    status, headers, got, digest = fetch_httpx(srv, "/")
    assert status == 200
    assert got == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert_no_fast_path(srv, before, len(data))
    assert wait_until(lambda: len(app.closes) == 1)


def test_file_wrapper_over_a_pipe_falls_back_to_iteration(serve):
    data = os.urandom(256 * KiB + 9)
    writers = []

    def pipe_reader():
        r, w = os.pipe()

        def write():
            with os.fdopen(w, "wb") as f:
                f.write(data)
        t = threading.Thread(target=write, daemon=True)
        t.start()
        writers.append(t)
        return os.fdopen(r, "rb")

    app = raw_files.filelike_app(pipe_reader)  # no Content-Length: chunked
    srv = serve(app)
    before = srv.counters.snapshot()
    status, headers, got, digest = fetch_http_client(srv, "/")
    assert status == 200
    assert headers.get("transfer-encoding") == "chunked"
    assert got == len(data)
    assert digest == hashlib.sha256(data).hexdigest()
    assert_no_fast_path(srv, before, len(data))
    for t in writers:
        t.join(5)
        assert not t.is_alive()


# -- FileWrapper itself ------------------------------------------------------------------
def test_filewrapper_iterates_in_blocks_of_blksize():
    data = bytes(range(256)) * 3 + b"tail"
    w = FileWrapper(io.BytesIO(data), blksize=100)
    chunks = list(w)
    assert b"".join(chunks) == data
    assert [len(c) for c in chunks] == [100] * 7 + [len(data) - 700]
    assert list(w) == []  # exhausted


def test_filewrapper_supports_the_old_getitem_protocol():
    w = FileWrapper(io.BytesIO(b"abcdefg"), blksize=3)
    assert w[0] == b"abc" and w[1] == b"def" and w[2] == b"g"
    with pytest.raises(IndexError):
        w[3]


def test_filewrapper_close_closes_the_filelike_and_is_optional():
    f = io.BytesIO(b"x")
    w = FileWrapper(f)
    w.close()
    assert f.closed

    class NoClose:
        def read(self, n):
            return b""
    assert not hasattr(FileWrapper(NoClose()), "close")


def test_filewrapper_file_range_only_for_regular_files(tmp_path):
    path, _ = make_file(tmp_path, 5000)
    with open(path, "rb") as f:
        f.seek(123)
        fd, offset, left = file_range(FileWrapper(f))
        assert fd == f.fileno() and offset == 123 and left == 5000 - 123
    closed = open(path, "rb")
    closed.close()
    assert file_range(FileWrapper(closed)) is None
    assert file_range(FileWrapper(io.BytesIO(b"abc"))) is None
    r, w = os.pipe()
    with os.fdopen(r, "rb") as rf, os.fdopen(w, "wb"):
        assert file_range(FileWrapper(rf)) is None


def test_middleware_iterating_the_wrapper_gets_the_whole_file(serve, tmp_path):
    path, digest = make_file(tmp_path, MiB + 7)
    inner = raw_files.file_app(path)
    srv = serve(raw_files.iterating_middleware(inner))
    before = srv.counters.snapshot()
    status, headers, got, got_digest = fetch_curl(srv.url + "/", tmp_path)
    assert status == 200
    assert int(headers["content-length"]) == MiB + 7
    assert got == MiB + 7 and got_digest == digest
    assert_no_fast_path(srv, before, MiB + 7)
    assert wait_until(lambda: len(inner.closes) == 1)
    srv.wait_idle()   # no clean-up left that could close it again
    assert len(inner.closes) == 1


# -- close(): exactly once, on a pool thread ---------------------------------------------------
def test_file_wrapper_close_runs_once_on_a_worker_thread_after_the_transfer(serve, tmp_path):
    path, digest = make_file(tmp_path, MiB)
    app = raw_files.file_app(path)
    srv = serve(app)
    before = srv.counters.snapshot()
    status, _, got, got_digest = fetch_http_client(srv, "/")
    assert status == 200 and got_digest == digest
    assert_fast_path(srv, before, MiB)
    assert wait_until(lambda: len(app.closes) >= 1), "close() never called"
    srv.wait_idle()   # clean-ups included: nothing left that could close it again
    assert len(app.closes) == 1, app.closes
    assert app.closes[0].startswith(WORKER_PREFIX), app.closes
    assert app.closes[0] != srv.thread.name  # not the reactor


def test_a_plain_open_file_is_closed_by_the_reactor_without_a_worker(serve, tmp_path):
    """open()'s own file in our wrapper: closing it is close(2), no app code, so
    the reactor does it at the end of the transfer instead of queueing a job for
    the pool.  Proof: the only worker is busy when the transfer ends."""
    size = 32 * MiB   # more than the socket buffers hold: the transfer ends after /block
    path, digest = make_file(tmp_path, size)
    opened, busy, release = [], threading.Event(), threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            busy.set()
            release.wait(10)
            start_response("200 OK", [("Content-Length", "0")])
            return [b""]
        f = open(path, "rb")
        opened.append(f)
        start_response("200 OK", [("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f)

    srv = serve(app, threads=1)
    try:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        conn.request("GET", "/file")
        resp = conn.getresponse()
        assert resp.status == 200
        blocker = threading.Thread(target=fetch_http_client, args=(srv, "/block"))
        blocker.start()
        assert busy.wait(5)   # the pool's only thread is taken now
        body = resp.read()
        assert hashlib.sha256(body).hexdigest() == digest
        assert wait_until(lambda: opened and opened[0].closed), "the file was not closed"
    finally:
        release.set()
    blocker.join(10)
    conn.close()


def test_django_request_finished_fires_once_on_a_worker_thread(serve, tmp_path):
    from django.core.signals import request_finished
    application = django_app()
    fired = []

    def on_finished(sender, **kwargs):
        fired.append(threading.current_thread().name)

    request_finished.connect(on_finished, weak=False, dispatch_uid="ktlswsgi-test-files")
    try:
        srv = serve(application)
        path, digest = make_file(tmp_path, 2 * MiB)
        before = srv.counters.snapshot()
        status, _, got, got_digest = fetch_curl(f"{srv.url}/file?path={path}", tmp_path)
        assert status == 200 and got_digest == digest
        assert_fast_path(srv, before, 2 * MiB)
        assert wait_until(lambda: len(fired) >= 1), "request_finished never fired"
        srv.wait_idle()   # clean-ups included
        assert len(fired) == 1, fired
        assert fired[0].startswith(WORKER_PREFIX), fired
    finally:
        request_finished.disconnect(dispatch_uid="ktlswsgi-test-files")


# -- a client that stops reading -----------------------------------------------------------------
def _stop_reading_mid_response(srv, app, size: int):
    """Read the head, stop reading; return what the server did, measured."""
    baseline = vm_rss_bytes()
    before = srv.counters.snapshot()
    s = slow_client(srv)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, _ = read_head(s)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert int(head_fields(head)["content-length"]) == size
        stopped = time.monotonic()
        peak = baseline
        closed_at = None
        deadline = stopped + 15
        while time.monotonic() < deadline:
            peak = max(peak, vm_rss_bytes())
            if not srv.server.connections:
                closed_at = time.monotonic()
                break
            time.sleep(0.02)
        assert closed_at is not None, "server never closed the stalled connection"
        waited = closed_at - stopped
        # The connection ends through the write timeout (1.5 s), not before.
        assert 1.2 <= waited <= 6, waited
        assert srv.counters.aborted_connections - before["aborted_connections"] == 1
        srv.wait_idle()
        assert wait_until(lambda: len(app.closes) >= 1), "the iterable's close() was not called"
        srv.wait_idle()   # clean-ups included: nothing left that could close it again
        assert len(app.closes) == 1, app.closes
        assert app.closes[0].startswith(WORKER_PREFIX), app.closes
        assert peak - baseline < 20 * MiB, f"RSS grew by {(peak - baseline) / MiB:.1f} MiB"
        # What is left in the socket buffers ends short of the body, then EOF/reset.
        rest = recv_until_closed(s, timeout=10)
        assert len(rest) < size
    finally:
        s.close()


def test_stalled_client_on_a_50mib_file_is_timed_out_with_bounded_memory(serve, tmp_path):
    path, digest = make_file(tmp_path, 50 * MiB)
    app = raw_files.file_app(path, blksize=64 * KiB)
    srv = serve(app, write_timeout_s=1.5)
    _stop_reading_mid_response(srv, app, 50 * MiB)
    # The server still serves the file whole to the next client.
    status, _, got, got_digest = fetch_curl(srv.url + "/", tmp_path)
    assert status == 200 and got_digest == digest


def test_stalled_client_on_a_50mib_generator_is_timed_out_with_bounded_memory(serve, tmp_path):
    app = raw_files.generator_app(50 * MiB, 64 * KiB)
    srv = serve(app, write_timeout_s=1.5)
    _stop_reading_mid_response(srv, app, 50 * MiB)
    # The producer stopped near the high-water mark instead of running to the end.
    assert app.produced[0] < 20 * MiB, app.produced[0]
    status, _, got, _ = fetch_http_client(srv, "/")
    assert status == 200 and got == 50 * MiB


# -- a file that shrinks while it is sent ------------------------------------------------------------
def test_file_truncated_during_transfer_aborts_the_connection(serve, tmp_path):
    size = 32 * MiB
    path, _ = make_file(tmp_path, size)
    app = raw_files.file_app(path, blksize=64 * KiB)
    srv = serve(app)
    before = srv.counters.snapshot()
    s = slow_client(srv, rcvbuf=16 * KiB)
    try:
        s.sendall(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
        head, got_first = read_head(s)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert int(head_fields(head)["content-length"]) == size
        received = len(got_first)
        if received == 0:
            received = len(s.recv(16 * KiB))
        assert received > 0
        os.truncate(path, 0)
        # Read slowly to the end: what was in flight, then EOF or reset.
        ended = False
        deadline = time.monotonic() + 60
        s.settimeout(10)
        while time.monotonic() < deadline:
            try:
                data = s.recv(64 * KiB)
            except ConnectionResetError:
                ended = True
                break
            if not data:
                ended = True
                break
            received += len(data)
            time.sleep(0.001)
        assert ended, "the connection neither ended nor reset"
        assert received < size, "the whole original size arrived despite the truncation"
    finally:
        s.close()
    assert wait_until(lambda: srv.counters.aborted_connections > before["aborted_connections"])
    assert wait_until(lambda: len(app.closes) == 1), app.closes
    assert app.closes[0].startswith(WORKER_PREFIX)
    srv.wait_idle()
    # The server keeps serving: a new connection gets the (now empty) file.
    status, headers, got, _ = fetch_http_client(srv, "/")
    assert status == 200 and headers["content-length"] == "0" and got == 0
