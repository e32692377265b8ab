"""ktlswsgi._native (ktlswsgi/_csrc/) on its own.

parse_head (h1parse.c, `--http c`): what it accepts and returns, what it
hands back to h11 (None), its limits at the boundary; tests/test_http1_parsers.py
holds it to h11 inside the driver.  environ_headers (environ.c): the same
environ as wsgi.environ_headers, its Python reference, on a corpus and on
seeded random header lists.  scan_response_headers, serialize_head and
frame_whole (framing.c): Http1.response_head and Http1.whole_response give
the same bytes, framing and errors with them as with their Python path, on
seeded random responses.
response_headers and response_start (respheaders.c): the same checked
headers (and status) as wsgi._response_headers (and start_response's Python
path), or False wherever that one raises or logs.  The sources compile
cleanly with warnings as errors.  tests/fuzz/fuzz_native.py fuzzes them
against their references."""
from __future__ import annotations

import os
import random
import shutil
import subprocess
import sysconfig

import pytest

from ktlswsgi import http1, wsgi
from ktlswsgi.native import native

pytestmark = pytest.mark.skipif(native is None, reason="ktlswsgi._native not built")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CSRC = os.path.join(ROOT, "ktlswsgi", "_csrc")
LIMITS = (4094, 100, 8190, 64 * 1024)
H = b"Host: x\r\n"


def parse(head: bytes, limits=LIMITS):
    return native.parse_head(head, *limits)


def test_a_plain_get():
    head = (b"GET /a?b=c HTTP/1.1\r\nHost: example.com:8443\r\nUser-Agent: h2load\r\n"
            b"Accept: */*\r\nX-Empty:\r\nX-Pad: \t v a \t\r\n\r\n")
    assert parse(head) == (b"GET", b"/a?b=c", b"1.1", [
        (b"host", b"example.com:8443"), (b"user-agent", b"h2load"), (b"accept", b"*/*"),
        (b"x-empty", b""), (b"x-pad", b"v a")], True)


def test_any_buffer_is_accepted():
    head = b"GET / HTTP/1.1\r\n" + H + b"\r\n"
    assert parse(bytearray(head)) == parse(memoryview(head)) == parse(head)
    with pytest.raises(TypeError):
        native.parse_head("GET / HTTP/1.1\r\n\r\n", *LIMITS)


@pytest.mark.parametrize("head, keep_alive", [
    (b"GET / HTTP/1.1\r\n" + H + b"\r\n", True),
    (b"GET / HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\n" + H + b"Connection: Keep-Alive , CLOSE\r\n\r\n", False),
    (b"GET / HTTP/1.1\r\n" + H + b"Connection: closed\r\n\r\n", True),
    (b"GET / HTTP/1.1\r\n" + H + b"Connection: te\r\nConnection: ,close,\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\n\r\n", False),
    (b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", False),
])
def test_keep_alive_is_h11s_rule(head, keep_alive):
    assert parse(head)[4] is keep_alive


@pytest.mark.parametrize("head", [
    b"OPTIONS * HTTP/1.1\r\n" + H + b"\r\n",
    b"GET http://x/p HTTP/1.1\r\n" + H + b"\r\n",
    b"GET HTTPS://x/p HTTP/1.1\r\n" + H + b"\r\n",
    b"PURGE /a HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /caf%C3%A9 HTTP/1.1\r\nHost: [::1]:8443\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x:\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-Obs: caf\xe9\r\n\r\n",
])
def test_accepted(head):
    assert parse(head) is not None


@pytest.mark.parametrize("head", [
    b"GET / HTTP/1.1\r\n\r\n",                              # no Host in 1.1
    b"GET / HTTP/1.1\r\n" + H + H + b"\r\n",                 # two
    b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",                  # not uri-host
    b"GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: []\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x:8a\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Content-Length: 0\r\n\r\n",  # bodies and special exchanges
    b"GET / HTTP/1.1\r\n" + H + b"transfer-encoding: chunked\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Expect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"Upgrade: websocket\r\n\r\n",
    b"CONNECT x:443 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET * HTTP/1.1\r\n" + H + b"\r\n",                     # target forms
    b"GET ftp://x/ HTTP/1.1\r\n" + H + b"\r\n",
    b"GET x HTTP/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/2.0\r\n" + H + b"\r\n",                     # versions
    b"GET / HTTP/1.10\r\n" + H + b"\r\n",
    b"GET / http/1.1\r\n" + H + b"\r\n",
    b"GET  / HTTP/1.1\r\n" + H + b"\r\n",                    # spacing, line ends
    b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
    b"GET / HTTP/1.1\n" + H + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"\n",
    b"GET / HTTP/1.1\r\n" + H + b"\r\nGET",                  # bytes after the head
    b"GET / HTTP/1.1\r\n" + H,                               # no blank line
    b"GET / HTTP/1.1\r\n" + H + b"X-A : v\r\n\r\n",          # names and values
    b"GET / HTTP/1.1\r\n" + H + b" X-A: v\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: v\r\n folded\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x00b\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: a\x7fb\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X-A: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\n" + H + b"X\xe9: v\r\n\r\n",
    b"GET /a\x7f HTTP/1.1\r\n" + H + b"\r\n",
    b"G\xe9T / HTTP/1.1\r\n" + H + b"\r\n",
    b"", b"\r\n", b"GET", b"GET / HTTP/1.1", b"GET / HTTP/1.",
])
def test_handed_back_to_h11(head):
    assert parse(head) is None


def _count_bytes(head: bytes) -> int:
    """http1.Http1._request's measure of a head."""
    method, target, _, headers, _ = parse(head)
    return len(method) + len(target) + 12 + sum(len(n) + len(v) + 4 for n, v in headers)


def test_each_limit_at_its_boundary():
    head = b"GET /abcd HTTP/1.1\r\n" + H + b"X-Long: " + b"v" * 20 + b"\r\n\r\n"
    size = _count_bytes(head)
    line, fields, field, whole = 5, 2, len(b"x-long") + 20 + 2, size
    assert parse(head, (line, fields, field, whole)) is not None
    assert parse(head, (line - 1, fields, field, whole)) is None
    assert parse(head, (line, fields - 1, field, whole)) is None
    assert parse(head, (line, fields, field - 1, whole)) is None
    assert parse(head, (line, fields, field, whole - 1)) is None


def test_the_head_limit_holds_for_a_head_without_header_lines():
    """Found by the fuzz run: an HTTP/1.0 head with no header lines and a long
    method was over --limit-request-headers-bytes and still accepted (the
    limit was checked only as each header line was added)."""
    head = b"v" * 2000 + b"GET / HTTP/1.0\r\n\r\n"
    size = _count_bytes(head)
    assert parse(head, (67, 4, 71, size)) is not None
    assert parse(head, (67, 4, 71, size - 1)) is None


# -- environ_headers -----------------------------------------------------------------
def both_environs(headers, start=None):
    """(result, environ items) from the C and from the Python reference."""
    out = []
    for fn in (native.environ_headers, wsgi.environ_headers):
        environ = dict(start or {"REQUEST_METHOD": "GET", "SCRIPT_NAME": ""})
        result = fn(environ, headers)
        out.append((result, list(environ.items())))
    return out


ENVIRON_CASES = [
    [],
    [(b"host", b"example.com:8443"), (b"user-agent", b"curl/8"), (b"accept", b"*/*")],
    [(b"cookie", b"a=1"), (b"x-a", b"1"), (b"cookie", b"b=2"), (b"x-a", b"2"), (b"host", b"h")],
    [(b"content-type", b"text/plain"), (b"content-length", b"3"), (b"Content-Type", b"x")],
    [(b"x_forwarded_for", b"1.2.3.4"), (b"x-forwarded-for", b"5.6.7.8")],
    [(b"host", b""), (b"host", b"second")],
    [(b"x-latin", b"caf\xe9 \xff"), (b"x-empty", b"")],
    [(b"HoSt", b"MiXeD"), (b"ACCEPT", b"a"), (b"accept", b"b")],
]


@pytest.mark.parametrize("headers", ENVIRON_CASES, ids=range(len(ENVIRON_CASES)))
def test_environ_headers_match_the_python_path(headers):
    c, py = both_environs(headers)
    assert c == py


def test_environ_headers_leave_other_names_to_python():
    environ = {"A": "1"}
    for headers in ([(b"x-caf\xe9", b"v")], [("x-a", "v")], [(b"x-a", b"v", b"3")],
                    [(b"x-a", bytearray(b"v"))]):
        assert native.environ_headers(environ, headers) is False
        assert environ == {"A": "1"}   # untouched
    with pytest.raises(TypeError):
        native.environ_headers([], [])


@pytest.mark.parametrize("seed", range(4))
def test_environ_headers_on_random_header_lists(seed):
    rng = random.Random(seed)
    names = [b"host", b"cookie", b"content-type", b"content-length", b"x-a", b"X-A", b"x_a",
             b"accept", b"a-b-c", b"-", b"h", b"x-caf\xe9"]
    values = [b"", b"v", b"a, b", b"caf\xe9", b"\xff\x80", b" sp ", b"k=v; k2=v2"]
    for _ in range(500):
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(8))]
        c, py = both_environs(headers)
        if c[0] is False:   # a non-ASCII name: the Python path's
            assert any(b"\xe9" in n for n, _ in headers)
            continue
        assert c == py, headers


def test_build_environ_is_the_same_with_and_without_the_c(monkeypatch):
    from ktlswsgi.http1 import Request
    req = Request(b"GET", b"/a%20b?x=1", b"1.1", ENVIRON_CASES[2] + ENVIRON_CASES[3])
    kw = dict(scheme="https", server_addr=("127.0.0.1", 8443), peer_addr=("10.0.0.1", 5),
              body=None, multiprocess=False)
    with_c = wsgi.build_environ(req, **kw)
    monkeypatch.setattr(wsgi, "native", None)
    without = wsgi.build_environ(req, **kw)
    for env in (with_c, without):
        del env["wsgi.input"]
    assert list(with_c.items()) == list(without.items())
    assert with_c["SERVER_NAME"] == "h" and with_c["HTTP_COOKIE"] == "a=1; b=2"


def both_built_environs(monkeypatch, req, **kw):
    """build_environ's environ with the C and with the Python path (every
    key, in order; wsgi.input compared by type), and whether the C built it."""
    built = native.build_environ(wsgi._ENVIRON_BASE, req.method, req.target, req.http_version,
                                 req.headers, kw["scheme"], kw["server_addr"], kw["peer_addr"])
    out = []
    for module in (native, None):
        monkeypatch.setattr(wsgi, "native", module)
        env = wsgi.build_environ(req, body=None, multiprocess=True, **kw)
        assert type(env.pop("wsgi.input")) is wsgi.WsgiInput
        out.append(list(env.items()))
    return out, built is not False


@pytest.mark.parametrize("seed", range(4))
def test_build_environ_on_random_requests(monkeypatch, seed):
    """The whole environ: targets (origin- and absolute-form, escapes valid
    and not, queries), Host fields (names, ports, IPv6, empty), listening
    and peer addresses (IPv4, IPv6, a unix socket's), both schemes."""
    from ktlswsgi.http1 import Request
    rng = random.Random(seed)
    paths = [b"/", b"/a%20b", b"/%zz%2", b"/%41%4a%4A%", b"/caf%E9/\xff", b"/a?", b"/?q=%20",
             b"/p?x=1&y=%41", b"http://h:1/x?y", b"https://h", b"http://a/b/c%2Fd", b"*", b"/%",
             b"/%%41"]
    hosts = [None, b"example.com", b"example.com:8443", b"[::1]", b"[::1]:99", b"[::1]x7",
             b"[abc", b":80", b"", b"h:", b"caf\xe9:1"]
    servers = [("127.0.0.1", 8443), ("::1", 443, 0, 0), "/run/app.sock"]
    peers = [("10.0.0.1", 5), ("::1", 6, 0, 0), "", None]
    decided = 0
    for _ in range(400):
        headers = [(b"accept", b"*/*")]
        host = rng.choice(hosts)
        if host is not None:
            headers.insert(rng.randrange(2), (b"host", host))
        if rng.random() < 0.2:
            headers.append((b"x-caf\xe9", b"1"))    # a name the C leaves to Python
        req = Request(rng.choice([b"GET", b"POST", b"OPTIONS"]), rng.choice(paths),
                      rng.choice([b"1.0", b"1.1", b"2"]), headers)
        kw = dict(scheme=rng.choice(["http", "https"]), server_addr=rng.choice(servers),
                  peer_addr=rng.choice(peers))
        (c, py), built = both_built_environs(monkeypatch, req, **kw)
        assert c == py, (req, kw)
        decided += built
    assert decided > 250   # the C builds the usual request, not nothing


# -- framing ---------------------------------------------------------------------------
REQUESTS = [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.0\r\n\r\n", b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]


def framed(request: bytes, status, headers, reason=b"", close=False):
    """What Http1.response_head makes of a response: its bytes (or its error)
    and the framing it decided."""
    h = http1.Http1(*LIMITS)
    h.receive(request)
    assert type(h.next_event()) is http1.Request
    try:
        head = h.response_head(status, headers, reason, close)
    except http1.ResponseError as exc:
        return ("error", str(exc))
    return (head, h._framing, h._left, h._closing)


def both(monkeypatch, fn, *args):
    """fn(*args) with http1's C, then with its Python path."""
    with_c = fn(*args)
    with monkeypatch.context() as m:
        m.setattr(http1, "native", None)
        without = fn(*args)
    return with_c, without


def test_serialize_head_bytes():
    assert native.serialize_head(200, b"OK", [(b"a", b"b"), (b"C", b"")]) == \
        b"HTTP/1.1 200 OK\r\na: b\r\nC: \r\n\r\n"
    assert native.serialize_head(599, b"", []) == b"HTTP/1.1 599 \r\n\r\n"
    assert native.serialize_head(200, b"OK", [("a", "b")]) is None   # not bytes: Python's
    assert native.scan_response_headers([(b"Content-Length", b"12")]) == 12
    assert native.scan_response_headers([(b"content-length", b"1"), (b"CONTENT-LENGTH", b"1")]) == 1
    for odd in ([(b"content-length", b"")], [(b"content-length", b"+1")], [(b"content-length", b"1" * 19)],
                [(b"content-length", b"1"), (b"content-length", b"2")], [(b"Connection", b"x")],
                [(b"a", b"b", b"c")]):
        assert native.scan_response_headers(odd) is False


@pytest.mark.parametrize("seed", range(4))
def test_response_heads_match_the_python_path(monkeypatch, seed):
    rng = random.Random(seed)
    names = [b"Content-Type", b"Content-Length", b"content-length", b"Connection", b"X-A",
             b"Set-Cookie", b"Transfer-Encoding"]
    values = [b"0", b"12", b"012", b"x", b"", b"close", b"keep-alive, Upgrade", b"1" * 20, b"caf\xe9"]
    for _ in range(400):
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(6))]
        status = rng.choice([100, 101, 200, 204, 206, 304, 404, 500])
        with_c, without = both(monkeypatch, framed, rng.choice(REQUESTS), status, headers,
                               rng.choice([b"", b"Fine"]), rng.random() < 0.2)
        assert with_c == without, (status, headers)


def whole(request: bytes, status, headers, reason, close, body):
    """What Http1.whole_response makes of a whole response: its bytes (or its
    error) and the state it leaves."""
    h = http1.Http1(*LIMITS)
    h.receive(request)
    assert type(h.next_event()) is http1.Request
    try:
        out = h.whole_response(status, headers, reason, close, body)
    except http1.ResponseError as exc:
        return ("error", str(exc))
    return (out, h._framing, h._left, h._closing, h.response_complete)


@pytest.mark.parametrize("seed", range(4))
def test_whole_responses_match_the_python_path(monkeypatch, seed):
    """frame_whole (framing.c) against response_head + body_to_end in Python,
    bytes and state; most cases are the usual one the C takes."""
    rng = random.Random(seed)
    names = [b"Content-Type", b"Content-Length", b"content-length", b"Connection", b"X-A"]
    values = [b"0", b"2", b"5", b"05", b"x", b"", b"close", b"1" * 20]
    took = 0
    for _ in range(400):
        body = rng.choice([b"", b"ok", b"hello"])
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(4))]
        if rng.random() < 0.6:
            headers.append((b"Content-Length", b"%d" % len(body)))
        status = rng.choice([101, 200, 200, 204, 304, 404])
        args = (rng.choice(REQUESTS), status, headers, rng.choice([b"", b"Fine"]),
                rng.random() < 0.2, body)
        took += native.frame_whole(status, b"", headers, body, False) is not None
        with_c, without = both(monkeypatch, whole, *args)
        assert with_c == without, args
    assert took > 100


def test_frame_whole_bytes():
    assert native.frame_whole(200, b"OK", [(b"Content-Length", b"2")], b"ok", True) == \
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nconnection: close\r\n\r\nok"
    for odd in ([], [(b"Content-Length", b"3")], [(b"Content-Length", b"2"), (b"Connection", b"x")],
                [(b"Content-Length", b"2"), (b"content-length", b"3")], [("Content-Length", "2")]):
        assert native.frame_whole(200, b"OK", odd, b"ok", False) is None


# -- response_headers -------------------------------------------------------------------
def checked_both(headers):
    """(C, Python) of an app's headers: a result, or the Python path's error."""
    c = native.response_headers(headers)
    try:
        py = wsgi._response_headers(list(headers) if isinstance(headers, list) else headers)
    except wsgi.HeaderError as exc:
        py = ("error", str(exc))
    return c, py


def test_response_headers_plain():
    c, py = checked_both([("Content-Type", " text/plain\t"), ("Content-Length", "0012"),
                          ("X-Latin", "caf\xe9"), ("Date", "d"), ("server", "s")])
    assert c == py == ([(b"Content-Type", b"text/plain"), (b"Content-Length", b"0012"),
                        (b"X-Latin", b"caf\xe9"), (b"Date", b"d"), (b"server", b"s")], 12, True, True)


@pytest.mark.parametrize("headers", [
    [("Keep-Alive", "1")], [("TE", "x")], [("a b", "v")], [("", "v")], [("caf\xe9", "v")],
    [("a", "v\r\nX: y")], [("a", "\x7f")], [("a", "\u20ac")], [(b"a", "v")], [("a", b"v")],
    [("a", "v", "w")], [["a", "v"]], [("Content-Length", "-1")], [("Content-Length", "+1")],
    [("Content-Length", "1_0")], [("Content-Length", "")], [("Content-Length", "1" * 19)],
])
def test_response_headers_leave_the_rest_to_python(headers):
    c, py = checked_both(headers)
    assert c is False   # the Python path decides: an error, a drop, or a value it parses
    assert py  # and it does


@pytest.mark.parametrize("seed", range(4))
def test_response_headers_match_the_python_path(seed):
    rng = random.Random(seed)
    names = ["Content-Type", "Content-Length", "content-length", "Date", "SERVER", "X-A",
             "Set-Cookie", "Keep-Alive", "a b", "caf\xe9", "x~!"]
    values = ["", "0", "12", " 7 ", "1_0", "text/html; charset=utf-8", "caf\xe9", "a\tb", "\t",
              "a\nb", "\x00", "\u20ac", "-3"]
    decided = 0
    for _ in range(500):
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(6))]
        c, py = checked_both(headers)
        if c is not False:
            decided += 1
            assert c == py, headers
    assert decided > 100   # the C decides the plain case, not nothing


def started_both(monkeypatch, status, headers):
    """(C, Python) of start_response(status, headers): the Responder's
    status, reason, headers and Content-Length, or the error it raised."""
    results = []
    for c in (True, False):
        with monkeypatch.context() as m:
            if not c:
                m.setattr(wsgi, "native", None)
            m.setattr(wsgi, "date_value", lambda: b"D")
            r = wsgi.Responder(None, head_only=False, close_after=False, peer="p")
            try:
                r.start_response(status, list(headers) if isinstance(headers, list) else headers)
                # The C path dates the response itself: the same stand-in as Python's.
                sent = [(n, b"D" if n == b"Date" and v.endswith(b" GMT") else v)
                        for n, v in r._headers]
                results.append((r.status_code, r._status_reason, sent, r._content_length))
            except (TypeError, wsgi.HeaderError) as exc:
                results.append((type(exc).__name__, str(exc)))
    return results


@pytest.mark.parametrize("seed", range(3))
def test_response_start_matches_the_python_path(monkeypatch, seed):
    """response_start (respheaders.c) gives start_response's results, or
    leaves the case (and its error) to the Python path."""
    rng = random.Random(seed)
    statuses = ["200 OK", "404 Not Found", "200  two spaces", "599 x", "100 Continue",
                "200", "200 ", "20 OK", "099 Low", "000 Zero", "2x0 OK", "200 O\nK",
                "200 caf\xe9", "200 caf\u20ac", "\u0662\u0660\u0660 Arabic digits", b"200 OK",
                "200 tab\there"]
    names = ["Content-Type", "Content-Length", "Date", "SERVER", "X-A", "Keep-Alive", "a b"]
    values = ["", "0", "12", " 7 ", "1_0", "caf\xe9", "a\nb", "\u20ac"]
    decided = 0
    for _ in range(400):
        headers = [(rng.choice(names), rng.choice(values)) for _ in range(rng.randrange(5))]
        if rng.random() < 0.05:
            headers = tuple(headers)
        status = rng.choice(statuses)
        c, py = started_both(monkeypatch, status, headers)
        decided += native.response_start(status, headers, b"D", b"S") is not False
        assert c == py, (status, headers)
    assert decided > 50


def test_response_start_dates_the_response_as_date_value():
    """Without a date given, response_start adds this second's IMF-fixdate,
    byte for byte httpdate.date_value()'s (a second boundary between the two
    calls is retried)."""
    from ktlswsgi.httpdate import date_value
    for _ in range(3):
        before = date_value()
        headers = native.response_start("200 OK", [], None, b"S")[2]
        if before == date_value():
            break
    assert headers == [(b"Date", before), (b"Server", b"S")]
    assert native.response_start("200 OK", [("date", "x")], None, b"S")[2] == [
        (b"date", b"x"), (b"Server", b"S")]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
@pytest.mark.parametrize("name", sorted(f for f in os.listdir(CSRC) if f.endswith(".c")))
@pytest.mark.parametrize("nghttp2", [False, True], ids=["plain", "nghttp2"])
def test_the_sources_compile_with_warnings_as_errors(tmp_path, name, nghttp2):
    if nghttp2 and not os.path.exists("/usr/include/nghttp2/nghttp2.h"):
        pytest.skip("nghttp2's headers are not installed (libnghttp2-dev)")
    cmd = ["gcc", "-std=gnu11", "-O2", "-c", "-fPIC", "-Werror", "-Wall", "-Wextra", "-Wshadow",
           "-Wstrict-prototypes", "-Wformat=2", "-I", sysconfig.get_paths()["include"],
           *(["-DKTLSWSGI_NGHTTP2"] if nghttp2 else []),
           "-I", CSRC, "-I", os.path.join(CSRC, "..", "tls", "_csrc"),
           os.path.join(CSRC, name), "-o", str(tmp_path / "x.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


def test_without_the_build_auto_falls_back_and_c_is_refused_at_start(monkeypatch):
    from ktlswsgi.config import Config, ConfigError
    monkeypatch.setattr(http1, "native", None)
    assert http1.parser_name("auto") in ("httptools", "h11")
    with pytest.raises(ConfigError, match="--http c: ktlswsgi._native is not built"):
        Config(http="c").validate()
    assert Config(http="auto").validate().http == "auto"


class Recording:
    """A stand-in for ktlswsgi._native: calls through, and records which of
    its functions were called, in order."""

    def __init__(self):
        self.called = []

    def __getattr__(self, name):
        fn = getattr(native, name)

        def record(*args):
            self.called.append(name)
            return fn(*args)
        return record


def hello_app(environ, start_response):
    start_response("200 OK", [("Content-Length", "5")])
    return [b"hello"]


def test_the_server_paths_call_the_c(monkeypatch):
    """The comparisons above would pass with the C never called: here each
    caller must reach its C function (a recording stand-in for the module)."""
    stand_in = Recording()
    called = stand_in.called

    monkeypatch.setattr(http1, "native", stand_in)
    monkeypatch.setattr(wsgi, "native", stand_in)
    framed(REQUESTS[0], 200, [(b"Content-Length", b"0")])      # parse_head, then the framing
    whole(REQUESTS[0], 200, [(b"Content-Length", b"0")], b"", False, b"")
    wsgi.build_environ(http1.Request(b"GET", b"/", b"1.1", [(b"host", b"x")]), scheme="http",
                       server_addr=("127.0.0.1", 80), peer_addr=("127.0.0.1", 5), body=None,
                       multiprocess=False)
    wsgi.Responder(None, head_only=False, close_after=False, peer="p").start_response(
        "200 OK", [("Content-Length", "0")])
    assert called == ["parse_head", "scan_response_headers", "serialize_head",
                      "parse_head", "frame_whole", "build_environ", "response_start"]


@pytest.mark.parametrize("kind", ["memory", "socket"])
def test_the_tls_transport_steps_go_through_the_gate(monkeypatch, kind):
    """gate.c is bound at import, and a real server's TLS transport reads
    and writes through it (tests/tls runs each transport with and without
    it: "memory" / "memory-cffi", "socket" / "socket-cffi")."""
    import ssl
    import urllib.request

    from ktlswsgi.tls import transports
    from support import running_server

    cls = transports.MemoryTransport if kind == "memory" else transports.SocketTransport
    assert cls._gate is native
    stand_in = Recording()
    monkeypatch.setattr(cls, "_gate", stand_in)
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    with running_server(hello_app, tls=True, tls_transport=kind) as srv:
        with urllib.request.urlopen(srv.url + "/", context=ctx, timeout=10) as resp:
            assert resp.read() == b"hello"
    want = ({"mem_read", "mem_write", "mem_flush", "has_pending"} if kind == "memory"
            else {"ssl_read", "ssl_write", "has_pending"})
    assert want <= set(stand_in.called), stand_in.called


def test_the_gate_refuses_bad_arguments():
    with pytest.raises(TypeError):
        native.mem_read(1, 2, 3)
    with pytest.raises(ValueError, match="NULL"):
        native.mem_flush(0, 0, 5)
    with pytest.raises(ValueError, match="file descriptor"):
        native.mem_flush(1, 1, -1)
    with pytest.raises(ValueError, match="positive"):
        native.mem_read(1, 1, 1, 0, 0)


def test_the_socket_gate_reads_and_writes_a_socket():
    import socket
    a, b = socket.socketpair()
    try:
        a.setblocking(False)
        assert native.sock_recv(a.fileno(), 100) is None          # nothing there yet
        b.sendall(b"ping")
        assert native.sock_recv(a.fileno(), 100) == b"ping"
        assert native.sock_send(a.fileno(), memoryview(b"pong")) == 4
        assert b.recv(100) == b"pong"
        big = b"x" * (1 << 20)
        sent = 0
        while (n := native.sock_send(a.fileno(), big)) > 0:        # until the socket is full
            sent += n
        assert n == -1 and sent > 0
        b.sendall(b"y" * 70000)
        assert len(native.sock_recv(a.fileno(), 70000)) > 0      # over the scratch buffer
        b.close()   # with bytes it never read: a reset
        with pytest.raises(OSError):
            for _ in range(1000):
                native.sock_recv(a.fileno(), 100000)
                native.sock_send(a.fileno(), big)
    finally:
        a.close()
        b.close()
    c, d = socket.socketpair()
    d.close()
    assert native.sock_recv(c.fileno(), 10) == b""                 # a clean EOF
    c.close()
    with pytest.raises(ValueError, match="file descriptor"):
        native.sock_recv(-1, 10)


def test_plain_tcp_reads_and_writes_through_the_gate(monkeypatch):
    import urllib.request

    from ktlswsgi import transport
    from support import running_server

    assert transport.PlainTransport._gate is native
    stand_in = Recording()
    monkeypatch.setattr(transport.PlainTransport, "_gate", stand_in)
    with running_server(hello_app) as srv:
        with urllib.request.urlopen(srv.url + "/", timeout=10) as resp:
            assert resp.read() == b"hello"
    assert {"sock_recv", "sock_send"} <= set(stand_in.called), stand_in.called


# -- h2_request, h2_trailers -------------------------------------------------------------
_H2_NAMES = [b":method", b":scheme", b":authority", b":path", b":status", b":protocol",
             b":foo", b":", b"host", b"accept", b"cookie", b"te", b"connection", b"upgrade",
             b"keep-alive", b"transfer-encoding", b"proxy-connection", b"expect", b"x-a",
             b"content-length", b"Host", b"a b", b"a:b", b"", b"\x7f", b"caf\xc3\xa9", b"x_y"]
_H2_VALUES = [b"", b"x", b" x", b"x\t", b"a\x00b", b"a\rb", b"a\nb", b"trailers", b"Trailers",
              b"gzip", b"GET", b"CONNECT", b"POST", b"/", b"/p?q", b"h", b"h:1", b"https",
              b"100-continue", b"100-CONTINUE", b"websocket", b"caf\xc3\xa9", b"a b"]


def _h2_block(rng) -> list:
    """A request block: often a valid one, then a few random edits."""
    method = rng.choice([b"GET", b"GET", b"POST", b"CONNECT"])
    block = [(b":method", method), (b":scheme", b"https"), (b":path", b"/x"),
             (b":authority", b"h")]
    if method == b"CONNECT" and rng.random() < 0.5:
        block = [(b":method", method), (b":authority", b"h:443")]
    rng.shuffle(block) if rng.random() < 0.1 else None
    block += [(b"accept", b"*/*"), (b"cookie", b"a=1"), (b"cookie", b"b=2")][:rng.randrange(4)]
    if rng.random() < 0.3:
        block.append((b"host", rng.choice([b"h", b"h:443", b"other"])))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 3])):
        field = (rng.choice(_H2_NAMES), rng.choice(_H2_VALUES))
        op = rng.randrange(3)
        at = rng.randrange(len(block) + 1)
        if op == 0 or not block:
            block.insert(at, field)
        elif op == 1:
            block[min(at, len(block) - 1)] = field
        else:
            del block[min(at, len(block) - 1)]
    return block


def _h2_accepts(block, trailer: bool) -> bool:
    from h2.exceptions import ProtocolError
    from h2.utilities import HeaderValidationFlags, validate_headers
    flags = HeaderValidationFlags(is_client=False, is_trailer=trailer,
                                  is_response_header=False, is_push_promise=False)
    try:
        list(validate_headers(block, flags))
    except ProtocolError:
        return False
    return True


@pytest.mark.parametrize("seed", range(4))
def test_h2_request_blocks_are_judged_as_h2_judges_them(seed):
    import types

    from ktlswsgi import http2
    rng = random.Random(seed)
    accepted = refused = 0
    for _ in range(1500):
        block = _h2_block(rng)
        got = native.h2_request(block)
        ok = _h2_accepts(block, trailer=False)
        assert (type(got) is not str) == ok, (block, got)
        if ok:
            accepted += 1
            ev = types.SimpleNamespace(headers=block, stream_id=1, stream_ended=None)
            ref = http2.Http2._request_py(types.SimpleNamespace(highest_stream_id=0), ev)
            assert got == (ref.method, ref.target, ref.headers, ref.expects_continue), block
        else:
            refused += 1
            assert got.isascii() and b"\x00" not in got.encode()   # a fixed reason
        trailers = [f for f in block if rng.random() < 0.5]
        assert (native.h2_trailers(trailers) is None) == _h2_accepts(trailers, trailer=True), \
            trailers
    assert accepted > 300 and refused > 300     # both outcomes exercised


def test_h2_blocks_of_other_shapes_are_refused_loudly():
    for bad in ([("a", "b")], [(b"a",)], [b"ab"], None):
        with pytest.raises(TypeError):
            native.h2_request(bad)
    from hpack import HeaderTuple
    got = native.h2_request([HeaderTuple(b":method", b"GET"), HeaderTuple(b":scheme", b"https"),
                             HeaderTuple(b":path", b"/"), HeaderTuple(b":authority", b"h"),
                             HeaderTuple(b"x-a", b"1")])
    assert got == (b"GET", b"/", [(b"host", b"h"), (b"x-a", b"1")], False)
    assert all(type(f) is tuple for f in got[2])
