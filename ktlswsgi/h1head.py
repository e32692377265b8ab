"""A complete HTTP/1 request head parsed by llhttp (httptools): the fast path.

Owns one question: does llhttp, in its strict mode, accept this head as a
request that carries no body and asks for nothing special?  If so it returns
the parsed parts; if not (any parse error, a method or version llhttp does
not know, a request line that is not exactly "method SP target SP version",
Content-Length, Transfer-Encoding, Expect, Upgrade, CONNECT, a Host header
missing or repeated) it returns None and http1.py gives the same bytes to
h11, the reference parser, whose answer then stands.  So a request either parses here to what h11 would
have produced (tests/test_http1_parsers.py holds the two to that), or h11
decides it: every rejection and every body is h11's.

Sans-I/O; used by the reactor thread only.
"""
from __future__ import annotations

try:
    import httptools
except ImportError:  # pragma: no cover - httptools is a dependency; h11 still works
    httptools = None

AVAILABLE = httptools is not None

# Headers that give a request a body or a special exchange: h11 takes those.
_TO_H11 = frozenset((b"content-length", b"transfer-encoding", b"expect", b"upgrade"))
_OWS = b" \t"


class _Head:
    __slots__ = ("target", "headers", "complete", "to_h11")

    def __init__(self):
        self.target = b""
        self.headers = []
        self.complete = False
        self.to_h11 = False

    def on_url(self, url: bytes) -> None:
        self.target += url

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in _TO_H11:
            self.to_h11 = True
        # llhttp drops the OWS before a value, not after it (RFC 9112 5: both go).
        self.headers.append((name, value.rstrip(_OWS)))

    def on_headers_complete(self) -> None:
        self.complete = True


if httptools is not None:
    _Parser = httptools.HttpRequestParser
    _Errors = (httptools.HttpParserError, httptools.HttpParserUpgrade)


def parse(head: bytes):
    """(method, target, http_version, [(lower-case name, value)]) or None."""
    h = _Head()
    parser = _Parser(h)
    try:
        parser.feed_data(head)
    except _Errors:
        return None
    if not h.complete or h.to_h11:
        return None
    method = parser.get_method()
    version = parser.get_http_version().encode()
    if method == b"CONNECT" or not head.startswith(
            b"%s %s HTTP/%s\r\n" % (method, h.target, version)):
        return None   # llhttp lets extra spaces through; h11 does not
    hosts = 0
    for name, _ in h.headers:
        if name == b"host":
            hosts += 1
    if hosts > 1 or (hosts == 0 and version == b"1.1"):
        return None   # h11 refuses it, in its words
    return method, h.target, version, h.headers
