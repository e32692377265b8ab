"""RFC 9112 request rules: what the server rejects, with which status.

Two layers, as h11's own tests: the sans-I/O driver fed literal bytes (whole,
and one byte at a time), and the same requests on a real socket to a running
server, which must answer, close, and keep serving the next client.  Every
test runs with each HTTP/1 parser (`--http h11` and `--http httptools`).  The
smuggling cases prove the request hidden after the body is never answered.
"""
from __future__ import annotations

import pytest

from ktlswsgi import http1
from support import recv_until_closed


PARSERS = ["h11", "httptools"]


@pytest.fixture(params=PARSERS)
def parser(request):
    return request.param


def driver(parser: str) -> http1.Http1:
    return http1.Http1(4094, 100, 8190, 64 * 1024, parser=parser)


def first_event(parser: str, data: bytes, bytewise: bool = False):
    h = driver(parser)
    pieces = [data[i:i + 1] for i in range(len(data))] if bytewise else [data]
    for piece in pieces:
        h.receive(piece)
        ev = h.next_event()
        if ev is not http1.NEED_DATA:
            return ev
    return ev


SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

REJECTED = [
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE, 400, id="te-and-cl"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Content-Length: 5\r\n\r\n0\r\n\r\n" + SMUGGLE, 400, id="cl-after-te"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 400,
                 id="te-final-not-chunked"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 400,
                 id="te-chunked-then-gzip"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400, id="te-chunked-twice"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501,
                 id="te-unknown-coding-then-chunked"),
    pytest.param(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400,
                 id="te-in-http10"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n two\r\n\r\n", 400, id="obs-fold"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: one\r\n\ttwo\r\n\r\n", 400, id="obs-fold-tab"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400, id="control-char"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, id="nul"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n", 400, id="bare-cr"),
    pytest.param(b"GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400, id="space-before-colon"),
    pytest.param(b"GET / HTTP/1.1\r\n\r\n", 400, id="no-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400, id="two-hosts"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400, id="invalid-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400, id="host-with-slash"),
    pytest.param(b"GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505, id="http-2.0-line"),
    pytest.param(b"GET / HTTP/0.9\r\nHost: x\r\n\r\n", 505, id="http-0.9-line"),
    pytest.param(b"GET * HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="asterisk-outside-options"),
    pytest.param(b"GET x:80 HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="authority-form-get"),
    pytest.param(b"CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n", 501, id="connect"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 6\r\n\r\nhello", 400,
                 id="conflicting-content-length"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +5\r\n\r\nhello", 400,
                 id="signed-content-length"),
    pytest.param(b"GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400, id="double-space"),
]

ACCEPTED = [
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", id="plain"),
    pytest.param(b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n", id="leading-empty-lines"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n", id="ipv6-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost:\r\n\r\n", id="empty-host"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A:  padded\t \r\n\r\n", id="padded-value"),
    pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9\r\n\r\n", id="obs-text"),
    pytest.param(b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", id="options-asterisk"),
    pytest.param(b"GET http://x/p?q HTTP/1.1\r\nHost: x\r\n\r\n", id="absolute-form"),
    pytest.param(b"GET / HTTP/1.2\r\nHost: x\r\n\r\n", id="http-1.2-as-1.1"),
    pytest.param(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5\r\n\r\nhello",
                 id="repeated-equal-content-length"),
    pytest.param(b"GET / HTTP/1.1\nHost: x\n\n", id="bare-lf-line-ends"),
]


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("data,status", REJECTED)
def test_driver_rejects(parser, data, status, bytewise):
    ev = first_event(parser, data, bytewise)
    assert type(ev) is http1.BadRequest, ev
    assert ev.status == status, ev


@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
@pytest.mark.parametrize("data", ACCEPTED)
def test_driver_accepts(parser, data, bytewise):
    ev = first_event(parser, data, bytewise)
    assert type(ev) is http1.Request, ev


def test_driver_checks_a_pipelined_second_head_too(parser):
    h = driver(parser)
    h.receive(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\nX: 1\r\n 2\r\n\r\n")
    assert type(h.next_event()) is http1.Request
    assert type(h.next_event()) is http1.EndOfBody
    h.response_head(200, [(b"content-length", b"0")])
    h.end()
    h.start_next_cycle()
    ev = h.next_event()
    assert type(ev) is http1.BadRequest and ev.status == 400, ev


def test_driver_body_bytes_are_not_taken_for_a_head(parser):
    # A body that looks like a folded header line must not be rejected.
    h = driver(parser)
    h.receive(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 8\r\n\r\nA\r\n B\x01\r\n")
    assert type(h.next_event()) is http1.Request
    assert type(h.next_event()) is http1.Body


def test_bad_request_reasons_never_quote_request_bytes(parser):
    ev = first_event(parser, b"GET / HTTP/1.1\r\nHost: x\r\nCookie: SECRET-MARKER\x00\r\n\r\n")
    assert "SECRET-MARKER" not in ev.reason
    h = driver(parser)
    h.receive(b"GET / HTTP/1.1\r\nHost: x\r\nCookie SECRET-MARKER\r\n\r\n")
    ev = h.next_event()
    assert type(ev) is http1.BadRequest and "SECRET-MARKER" not in ev.reason, ev.reason
    assert ev.reason == "illegal header line"


# -- the same on a real socket ----------------------------------------------------------

CALLS = []


def hello_app(environ, start_response):
    CALLS.append(environ["PATH_INFO"])
    body = f"hello {environ['REQUEST_METHOD']} {environ['PATH_INFO']}".encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


@pytest.mark.parametrize("data,status", REJECTED)
def test_server_answers_rejects_closes_and_keeps_serving(serve, parser, data, status):
    srv = serve(hello_app, http=parser)
    CALLS.clear()
    with srv.connect() as s:
        s.sendall(data)
        reply = recv_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 %d " % status), reply[:200]
    assert b"connection: close" in reply.lower()
    assert b"/smuggled" not in reply and reply.count(b"HTTP/1.1 ") == 1, reply
    assert CALLS == [], "a rejected request reached the app"
    with srv.connect() as s:
        s.sendall(b"GET /next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert recv_until_closed(s).endswith(b"hello GET /next")


def test_options_asterisk_reaches_the_app(serve, parser):
    srv = serve(hello_app, http=parser)
    with srv.connect() as s:
        s.sendall(b"OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = recv_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"hello OPTIONS *"), reply
