"""HTTP/1.1 and PEP 3333 behaviour over real sockets, with each HTTP/1 parser."""
from __future__ import annotations

import http.client
import logging
import socket
import subprocess
import threading
import time
from wsgiref.validate import validator

import pytest

from support import read_response, recv_until_closed, response_reader, wait_until


@pytest.fixture(params=["httptools", "h11"])
def serve(serve, request):
    """conftest's `serve`, run once with each `--http` parser."""
    def start(app, **overrides):
        overrides.setdefault("http", request.param)
        return serve(app, **overrides)
    return start


def echo_app(environ, start_response):
    length = environ.get("CONTENT_LENGTH")
    inp = environ["wsgi.input"]
    body = inp.read(int(length)) if length else inp.read(-1)
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]


def hello_app(environ, start_response):
    body = f"hello {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def environ_app(environ, start_response):
    keys = ["PATH_INFO", "QUERY_STRING", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
            "HTTP_COOKIE", "HTTP_X_FORWARDED_FOR", "HTTP_ACCEPT", "SCRIPT_NAME",
            "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_PROTOCOL", "wsgi.url_scheme"]
    lines = [f"{k}={environ.get(k, '<absent>')!s}" for k in keys]
    lines.append(f"multithread={environ['wsgi.multithread']} run_once={environ['wsgi.run_once']} "
                 f"input_terminated={environ['wsgi.input_terminated']} "
                 f"file_wrapper={'wsgi.file_wrapper' in environ}")
    body = "\n".join(lines).encode("latin-1")
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def parse_lines(body: bytes) -> dict:
    out = {}
    for line in body.decode("latin-1").splitlines():
        k, _, v = line.partition("=")
        out[k] = v
    return out


# -- PEP 3333 ------------------------------------------------------------------

@pytest.mark.parametrize("method,body", [("GET", None), ("POST", b"x" * 100000), ("HEAD", None)], ids=["GET", "POST", "HEAD"])
def test_wsgiref_validator_passes(serve, method, body):
    srv = serve(validator(echo_app))
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request(method, "/v", body=body)
    resp = conn.getresponse()
    data = resp.read()
    assert resp.status == 200, data
    assert data == (body or b"") if method != "HEAD" else data == b""


def test_validator_with_write_callable_and_file_wrapper(serve, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(b"0123456789" * 1000)

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/write":
            write = start_response("200 OK", [("Content-Type", "text/plain")])
            write(b"written ")
            return [b"and returned"]
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", "10000")])
        return environ["wsgi.file_wrapper"](open(path, "rb"))

    srv = serve(validator(app))
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("GET", "/write")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"written and returned")
    conn.request("GET", "/file")
    r = conn.getresponse()
    assert (r.status, r.read()) == (200, b"0123456789" * 1000)


def test_environ_keys(serve):
    srv = serve(environ_app)
    s = srv.connect()
    s.sendall(b"GET /a%20b/%C3%A9?x=%20y&z HTTP/1.1\r\nHost: example.com:8443\r\n"
              b"Cookie: a=1\r\nCookie: b=2\r\nAccept: text/html\r\nAccept: */*\r\n"
              b"X_Forwarded_For: 6.6.6.6\r\n\r\n")
    status, _, body = read_response(response_reader(s))
    env = parse_lines(body)
    assert status == 200
    assert env["PATH_INFO"] == "/a b/\xc3\xa9"  # percent-decoded, bytes as latin-1
    assert env["QUERY_STRING"] == "x=%20y&z"
    assert env["SERVER_NAME"] == "example.com" and env["SERVER_PORT"] == "8443"
    assert env["REMOTE_ADDR"] == "127.0.0.1"
    assert env["HTTP_COOKIE"] == "a=1; b=2"
    assert env["HTTP_ACCEPT"] == "text/html, */*"
    assert env["HTTP_X_FORWARDED_FOR"] == "<absent>"  # underscore header dropped
    assert env["SCRIPT_NAME"] == ""
    assert env["SERVER_PROTOCOL"] == "HTTP/1.1"
    assert env["wsgi.url_scheme"] == "http"
    assert env["multithread"].startswith("True run_once=False input_terminated=True file_wrapper=True")


def test_wsgi_input_readline_readlines_iteration(serve):
    def app(environ, start_response):
        inp = environ["wsgi.input"]
        first = inp.readline()
        limited = inp.readline(3)
        rest_lines = inp.readlines()
        out = b"|".join([first, limited] + rest_lines)
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    srv = serve(app)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("POST", "/", body=b"line1\nabcdef\nline3\nlast")
    assert conn.getresponse().read() == b"line1\n|abc|def\n|line3\n|last"

    def iter_app(environ, start_response):
        lines = list(environ["wsgi.input"])
        out = str(len(lines)).encode()
        start_response("200 OK", [("Content-Length", str(len(out)))])
        return [out]

    srv2 = serve(iter_app)
    conn = http.client.HTTPConnection(srv2.host, srv2.port, timeout=10)
    conn.request("POST", "/", body=b"a\n" * 5000)
    assert conn.getresponse().read() == b"5000"


# -- keep-alive, pipelining, framing ------------------------------------------------

def test_pipelined_requests_answered_in_order(serve):
    srv = serve(hello_app)
    s = srv.connect()
    s.sendall(b"".join(b"GET /%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(20)))
    reader = response_reader(s)
    bodies = [read_response(reader)[2] for _ in range(20)]
    assert bodies == [b"hello /%d" % i for i in range(20)]


def test_pipelined_posts_with_bodies(serve):
    srv = serve(echo_app)
    s = srv.connect()
    reqs = b""
    for i in range(5):
        body = bytes([65 + i]) * (1000 * (i + 1))
        reqs += b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n" % len(body) + body
    s.sendall(reqs)
    reader = response_reader(s)
    for i in range(5):
        assert read_response(reader)[2] == bytes([65 + i]) * (1000 * (i + 1))


def test_chunked_upload(serve):
    srv = serve(echo_app)
    s = srv.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
              b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    assert read_response(response_reader(s))[2] == b"hello world"


def test_large_chunked_upload_streams_through_bounded_buffer(serve):
    received = []

    def app(environ, start_response):
        total = 0
        while True:
            chunk = environ["wsgi.input"].read(10000)
            if not chunk:
                break
            total += len(chunk)
            time.sleep(0.0005)
        received.append(total)
        start_response("200 OK", [("Content-Length", str(len(str(total))))])
        return [str(total).encode()]

    srv = serve(app, body_buffer_bytes=64 * 1024)
    payload = (b"z" * 65536 for _ in range(160))  # 10 MiB, chunked by httpx

    import httpx
    r = httpx.post(srv.url + "/", content=payload, timeout=30)
    assert r.status_code == 200 and r.text == str(160 * 65536)


def test_expect_100_continue_sent_when_app_reads(serve):
    srv = serve(echo_app)
    s = srv.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
    s.settimeout(5)
    interim = s.recv(1024)
    assert interim.startswith(b"HTTP/1.1 100 ")
    s.sendall(b"hello")
    assert read_response(response_reader(s))[2] == b"hello"


def test_expect_100_continue_not_sent_when_app_ignores_body(serve):
    srv = serve(hello_app)
    s = srv.connect()
    s.sendall(b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\nExpect: 100-continue\r\n\r\n")
    status, headers, body = read_response(response_reader(s))
    assert status == 200 and body == b"hello /x"
    assert headers.get("connection") == "close"  # the body it announced was never read
    assert recv_until_closed(s) == b""


def test_head_has_headers_but_no_body(serve):
    srv = serve(hello_app)
    s = srv.connect()
    s.sendall(b"HEAD /h HTTP/1.1\r\nHost: x\r\n\r\nGET /g HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = response_reader(s)
    status, headers, body = read_response(reader, method="HEAD")
    assert status == 200 and headers["content-length"] == "8" and body == b""
    assert read_response(reader)[2] == b"hello /g"


def test_chunked_response_without_content_length(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return (part for part in [b"one ", b"", b"two ", b"three"])

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    status, headers, body = read_response(response_reader(s))
    assert headers["transfer-encoding"] == "chunked" and body == b"one two three"


def test_http10_client_gets_close_delimited_response(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [b"ten body!!"]

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.0\r\n\r\n")
    raw = recv_until_closed(s)
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding" not in head.lower()
    assert body == b"ten body!!"


def test_connection_close_request_closes_after_response(serve):
    srv = serve(hello_app)
    s = srv.connect()
    s.sendall(b"GET /c HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\nGET /never HTTP/1.1\r\n\r\n")
    raw = recv_until_closed(s)
    assert raw.count(b"HTTP/1.1 200") == 1 and raw.endswith(b"hello /c")


def test_curl_keep_alive_reuses_one_connection(serve):
    srv = serve(hello_app)
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null",
                          "-w", "%{http_code} %{num_connects}\n",
                          srv.url + "/1", srv.url + "/2", srv.url + "/3"],
                         capture_output=True, text=True, timeout=20).stdout.split()
    assert out == ["200", "1", "200", "0", "200", "0"]


# -- limits -------------------------------------------------------------------------------

def _status_then_closed(srv, raw: bytes) -> tuple[int, bytes]:
    s = srv.connect()
    s.sendall(raw)
    data = recv_until_closed(s)
    return int(data.split(b" ", 2)[1]), data


def test_request_line_too_long_414(serve, caplog):
    srv = serve(hello_app, limit_request_line=100)
    status, _ = _status_then_closed(srv, b"GET /" + b"a" * 200 + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 414
    # also when the line has not ended yet
    status, _ = _status_then_closed(srv, b"GET /" + b"a" * 300)
    assert status == 414


def test_too_many_headers_431(serve):
    srv = serve(hello_app, limit_request_fields=10)
    headers = b"".join(b"X-H%d: v\r\n" % i for i in range(11))
    status, _ = _status_then_closed(srv, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431


def test_header_field_too_long_431(serve):
    srv = serve(hello_app, limit_request_field_size=100)
    status, _ = _status_then_closed(srv, b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 200 + b"\r\n\r\n")
    assert status == 431


def test_request_head_too_large_431(serve):
    srv = serve(hello_app, limit_request_headers_bytes=4096)
    headers = b"".join(b"X-H%d: %s\r\n" % (i, b"v" * 50) for i in range(90))
    status, _ = _status_then_closed(srv, b"GET / HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n")
    assert status == 431


def test_malformed_request_400_and_server_keeps_serving(serve):
    srv = serve(hello_app)
    status, body = _status_then_closed(srv, b"GARBAGE\r\n\r\n")
    assert status == 400
    status, _ = _status_then_closed(srv, b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
    assert status == 400
    assert srv.counters.bad_requests == 2
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("GET", "/ok")
    assert conn.getresponse().read() == b"hello /ok"


def test_early_413_then_good_request_on_same_connection(serve):
    called = []

    def app(environ, start_response):
        called.append(environ["PATH_INFO"])
        return hello_app(environ, start_response)

    srv = serve(app, max_body_bytes=1000)
    s = srv.connect()
    s.sendall(b"POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"b" * 5000)
    reader = response_reader(s)
    status, headers, _ = read_response(reader)
    assert status == 413 and headers.get("connection") != "close"
    s.sendall(b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(reader)[2] == b"hello /after"
    assert called == ["/after"]  # the app never saw the oversized request


def test_oversized_chunked_body_413(serve):
    srv = serve(echo_app, max_body_bytes=10000)
    s = srv.connect()
    chunk = b"%x\r\n%s\r\n" % (4000, b"c" * 4000)
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk * 5 + b"0\r\n\r\n")
    status = int(recv_until_closed(s).split(b" ", 2)[1])
    assert status == 413


# -- timeouts -------------------------------------------------------------------------------

def test_slowloris_header_timeout_408(serve):
    srv = serve(hello_app, header_timeout_s=0.5)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    for _ in range(3):  # trickle bytes: the deadline is for the whole head
        time.sleep(0.2)
        try:
            s.sendall(b"X-A: b\r\n")
        except OSError:
            break
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 408 ")
    assert 0.4 < time.monotonic() - t0 < 3


def test_idle_keep_alive_closes_quietly(serve):
    srv = serve(hello_app, keep_alive_s=0.5)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = response_reader(s)
    assert read_response(reader)[0] == 200
    t0 = time.monotonic()
    assert reader.read() == b""  # closed, no 408 on an idle keep-alive connection
    assert 0.3 < time.monotonic() - t0 < 3


def test_body_stall_read_timeout_408(serve):
    srv = serve(echo_app, read_timeout_s=0.5)
    s = srv.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\npartial")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 408 ")
    srv.wait_idle()


@pytest.mark.parametrize("chunk, status", [
    # 17 hex digits: a 64-bit proxy in front may read this size as 3 (smuggling).
    (b"10000000000000003\r\nabc\r\n0\r\n\r\n", b"400"),
    (b"5;ext=a\x01b\r\nhello\r\n0\r\n\r\n", b"400"),    # a control character
    (b"5;ext=a\rb\r\nhello\r\n0\r\n\r\n", b"400"),      # a bare CR
    (b"5;ext=a\x00b\r\nhello\r\n0\r\n\r\n", b"400"),    # NUL
    (b"100001\r\n", b"413"),                                   # one chunk over --max-body
], ids=["17-digits", "ctl-in-ext", "cr-in-ext", "nul-in-ext", "over-max-body"])
def test_bad_chunk_header_is_answered_at_once(serve, chunk, status):
    srv = serve(echo_app, max_body_bytes=1024 * 1024, read_timeout_s=30)
    s = srv.connect()
    started = time.monotonic()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk)
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 " + status + b" "), data[:80]
    assert time.monotonic() - started < 2.0
    srv.wait_idle()


def test_chunk_extensions_and_16_digit_sizes_are_still_accepted(serve):
    srv = serve(echo_app)
    s = srv.connect()
    s.sendall(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
              b"0000000000000005;name=\"quoted value\";x\r\nhello\r\n0\r\n\r\n")
    data = recv_until_closed(s)
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"hello"), data


# -- pool -------------------------------------------------------------------------------------

def test_503_when_pool_queue_full_then_connection_still_usable(serve):
    release = threading.Event()
    started = threading.Event()

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/block":
            started.set()
            release.wait(10)
        return hello_app(environ, start_response)

    srv = serve(app, threads=1, queue_size=1)
    blocker = srv.connect()
    blocker.sendall(b"GET /block HTTP/1.1\r\nHost: x\r\n\r\n")
    assert started.wait(5)
    queued = srv.connect()
    queued.sendall(b"GET /queued HTTP/1.1\r\nHost: x\r\n\r\n")
    wait_until(lambda: srv.server.pool.queued == 1, 5, "the second request queued")
    third = srv.connect()
    third.sendall(b"POST /third HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789")
    reader = response_reader(third)
    status, headers, _ = read_response(reader)
    assert status == 503 and headers["retry-after"] == "1"
    release.set()
    assert read_response(response_reader(blocker))[2] == b"hello /block"
    assert read_response(response_reader(queued))[2] == b"hello /queued"
    third.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
    assert read_response(reader)[2] == b"hello /again"
    assert srv.counters.responses_503 == 1


# -- app errors, close(), Content-Length ---------------------------------------------------------

def test_app_error_before_start_response_is_500_and_logged(serve, caplog):
    def app(environ, start_response):
        raise RuntimeError("boom before headers")

    srv = serve(app)
    with caplog.at_level(logging.ERROR, logger="ktlswsgi.error"):
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        conn.request("GET", "/")
        r = conn.getresponse()
        assert r.status == 500 and b"boom" not in r.read()  # no traceback to the client
        srv.wait_idle()
    assert "boom before headers" in caplog.text and "Traceback" in caplog.text


def test_app_error_after_headers_aborts_connection(serve):
    closed = []

    class Body:
        def __iter__(self):
            yield b"first part "
            raise RuntimeError("boom after headers")

        def close(self):
            closed.append(threading.current_thread().name)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "1000")])
        return Body()

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = recv_until_closed(s)
    assert raw.startswith(b"HTTP/1.1 200") and raw.endswith(b"first part ")
    srv.wait_idle()
    assert len(closed) == 1 and closed[0].startswith("ktlswsgi-worker")


def test_start_response_exc_info_replaces_headers_before_body(serve):
    def app(environ, start_response):
        start_response("200 OK", [("X-First", "1")])
        try:
            raise ValueError("late problem")
        except ValueError:
            import sys
            start_response("502 Bad Gateway", [("Content-Length", "3")], sys.exc_info())
        return [b"bad"]

    srv = serve(app)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("GET", "/")
    r = conn.getresponse()
    assert r.status == 502 and r.getheader("X-First") is None and r.read() == b"bad"


def test_start_response_twice_without_exc_info_is_an_error(serve):
    def app(environ, start_response):
        start_response("200 OK", [])
        start_response("200 OK", [])
        return [b"x"]

    srv = serve(app)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 500


def test_body_longer_than_content_length_is_truncated_and_keepalive_survives(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "5")])
        return [b"12345", b"EXTRA"]

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    reader = response_reader(s)
    assert read_response(reader)[2] == b"12345"
    assert read_response(reader)[2] == b"12345"


def test_short_body_aborts_connection(serve):
    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", "100")])
        return [b"only ten!!"]

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n")
    raw = recv_until_closed(s)
    assert raw.endswith(b"only ten!!") and raw.count(b"HTTP/1.1") == 1


def test_close_called_once_when_client_disconnects_mid_stream(serve):
    closed = []
    produced = []

    class Slow:
        def __iter__(self):
            for i in range(200):
                produced.append(i)
                yield b"x" * 65536
                time.sleep(0.01)

        def close(self):
            closed.append(threading.current_thread().name)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return Slow()

    srv = serve(app)
    s = srv.connect()
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(1000)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()  # RST
    srv.wait_idle(10)
    assert len(closed) == 1 and closed[0].startswith("ktlswsgi-worker")
    assert len(produced) < 200


def test_no_lost_wake_up_after_a_burst(serve):
    """After concurrent load, a lone client's responses are not left waiting for a timer."""
    srv = serve(hello_app)

    def hammer():
        conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        for _ in range(150):
            conn.request("GET", "/b")
            conn.getresponse().read()

    threads = [threading.Thread(target=hammer) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    slowest = 0.0
    for _ in range(30):
        t0 = time.monotonic()
        conn.request("GET", "/lone")
        assert conn.getresponse().read() == b"hello /lone"
        slowest = max(slowest, time.monotonic() - t0)
    assert slowest < 0.5, f"a lone request took {slowest:.2f}s (the reactor missed a wake-up)"


@pytest.mark.parametrize("request_bytes", [
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
], ids=["connection-close", "http-1.0", "options-close"])
def test_a_response_that_ends_the_connection_closes_it_at_once(serve, request_bytes):
    """No lingering (linger_s, 2 s) when the request was complete: the client
    that asked to close sees EOF right after the response."""
    srv = serve(hello_app)
    with srv.connect() as s:
        start = time.monotonic()
        s.sendall(request_bytes)
        reply = recv_until_closed(s)
        took = time.monotonic() - start
    assert reply.startswith((b"HTTP/1.1 200 ", b"HTTP/1.0 200 ")), reply
    assert b"\r\nConnection: close\r\n" in reply
    assert took < 1.0, took


# -- responses are framed as h11 frames them ------------------------------------------------------
_REQUESTS = {
    "get-1.1": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "get-1.1-close": b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    "get-1.0": b"GET / HTTP/1.0\r\n\r\n",
    "head-1.1": b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
}
_RESPONSES = {
    "length": (200, [(b"Content-Type", b"text/plain"), (b"Content-Length", b"5")], [b"hello"]),
    "no-length": (200, [(b"Content-Type", b"text/plain")], [b"hel", b"lo"]),
    "204": (204, [(b"X-A", b"1")], []),
    "304-length": (304, [(b"ETag", b'"v"'), (b"Content-Length", b"99")], []),
    "app-close": (200, [(b"Content-Length", b"2"), (b"Connection", b"close")], [b"ok"]),
    "app-keep-alive": (200, [(b"Content-Length", b"2"), (b"Connection", b"keep-alive")], [b"ok"]),
    "two-connection-fields": (200, [(b"Connection", b"x-a"), (b"Content-Length", b"2"),
                                    (b"Connection", b"keep-alive, close")], [b"ok"]),
}


@pytest.mark.parametrize("req", sorted(_REQUESTS))
@pytest.mark.parametrize("resp", sorted(_RESPONSES))
@pytest.mark.parametrize("close", [False, True])
@pytest.mark.parametrize("whole", [False, True, "one-buffer"],
                         ids=["by-chunk", "body_to_end", "whole_response"])
def test_response_bytes_and_keep_alive_match_h11(req, resp, close, whole):
    import h11
    from ktlswsgi import http1
    status, headers, chunks = _RESPONSES[resp]
    if req.startswith("head"):
        chunks = []
    if whole == "one-buffer":
        chunks = [b"".join(chunks)] if chunks else []
    ours = http1.Http1(4094, 100, 8190, 65536)
    ours.receive(_REQUESTS[req])
    assert isinstance(ours.next_event(), http1.Request)
    ref = h11.Connection(h11.SERVER)
    ref.receive_data(_REQUESTS[req])
    ref.next_event()
    ref.next_event()
    ref_headers = list(headers)
    if close:
        ref_headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
        ref_headers.append((b"connection", b"close"))
    want = ref.send(h11.Response(status_code=status, headers=ref_headers,
                                 reason=http1.REASONS.get(status, b"")))
    if whole == "one-buffer":
        got = ours.whole_response(status, list(headers), b"", close, b"".join(chunks))
    else:
        got = ours.response_head(status, list(headers), close=close)
    for c in chunks:
        want += b"".join(ref.send_with_data_passthrough(h11.Data(data=c)))
        if not whole:
            got += b"".join(ours.body(c))
    want += ref.send(h11.EndOfMessage())
    if whole is True:
        got += b"".join(ours.body_to_end(list(chunks), sum(map(len, chunks))))
    elif not whole:
        got += ours.end()
    # h11 writes the Connection header it adds in title case, and so do we.
    assert got == want
    ours.next_event()  # EndOfBody
    assert ours.keep_alive == (ref.our_state is h11.DONE and ref.their_state is h11.DONE)


@pytest.mark.parametrize("body", [[b"abc"], [b"a", b"bcd"], [], [b"ab", b""]])
def test_body_to_end_refuses_a_body_that_is_not_its_content_length(body):
    from ktlswsgi import http1
    h = http1.Http1(4094, 100, 8190, 65536)
    h.receive(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert isinstance(h.next_event(), http1.Request)
    h.response_head(200, [(b"content-length", b"3")])
    n = sum(map(len, body))
    if n == 3:
        assert h.body_to_end(body, n) == body and h.response_complete
        return
    with pytest.raises(http1.ResponseError, match="more body" if n > 3 else "less body"):
        h.body_to_end(body, n)
