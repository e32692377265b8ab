"""The HTTP/1 parsers (`--http h11`, `--http c` and `--http httptools`) give the same answers.

The fast paths (our C parser, _csrc/h1parse.c; llhttp, h1head.py) parse
request heads without a body and hand everything else to h11, so on any
input each fast driver must produce the same events: the same requests
(method, target, version, headers, 100-continue), the same body bytes, the
same keep-alive decisions across pipelined requests, and the same rejection
(status and reason).  Each input is fed whole, one byte
at a time and in seeded random pieces.  The corpus: every request in the
request-rule and HTTP/1 tests, a hand-written list of edge cases, and seeded
mutations of those (bytes inserted, deleted, doubled, case flipped).
"""
from __future__ import annotations

import random

import pytest

from ktlswsgi import h1head, http1
from ktlswsgi.native import native
from test_request_rules import ACCEPTED, REJECTED

# "c-whole": the C parser, each piece offered first to `Http1.whole_request`
# (what H1Session does on an idle cycle) and to `receive` only if refused.
FAST = [p for p, ok in (("c", native is not None), ("c-whole", native is not None),
                        ("httptools", h1head.AVAILABLE)) if ok]
pytestmark = pytest.mark.skipif(not FAST, reason="no fast parser: neither built nor installed")

LIMITS = (4094, 100, 8190, 64 * 1024)
H = b"Host: x\r\n"


def _values(params) -> list[bytes]:
    return [p.values[0] for p in params]


EDGE = [
    # methods, llhttp's list and beyond it
    b"GET / HTTP/1.1\r\n" + H + b"\r\n",
    b"HEAD / HTTP/1.1\r\n" + H + b"\r\n",
    b"DELETE /a HTTP/1.1\r\n" + H + b"\r\n",
    b"PURGE /a HTTP/1.1\r\n" + H + b"\r\n",
    b"FOO /a HTTP/1.1\r\n" + H + b"\r\n",
    b"get / HTTP/1.1\r\n" + H + b"\r\n",
    b"G\xe9T / HTTP/1.1\r\n" + H + b"\r\n",
    # versions
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.0\r\n" + H + b"\r\n",
    b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
    b"GET / HTTP/3.0\r\n" + H + b"\r\n",
    b"GET / HTTP/1.10\r\n" + H + b"\r\n",
    b"GET / http/1.1\r\n" + H + b"\r\n",
    b"GET / HTTP/1.1 \r\n" + H + b"\r\n",
    b"GET /\r\n\r\n",
    # targets
    b"GET /a/b?c=d&e=%20f HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a#frag HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a|b{}^`\\ HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /caf\xe9 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a\x7f HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /a\tb HTTP/1.1\r\n" + H + b"\r\n",
    b"GET //double HTTP/1.1\r\n" + H + b"\r\n",
    b"GET ?q HTTP/1.1\r\n" + H + b"\r\n",
    b"GET HTTP://X/P HTTP/1.1\r\n" + H + b"\r\n",
    b"OPTIONS http://x HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /" + b"a" * 4093 + b" HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /" + b"a" * 4094 + b" HTTP/1.1\r\n" + H + b"\r\n",
    # header syntax
    b"GET / HTTP/1.1\r\nHost:x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost:\tx\t\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A:\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a  b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: \xff\xfe\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-\xe9: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX(A): a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n X-A: a\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\nX-A: b\r\n\r\n",
    b"GET / HTTP/1.1\r\nHOST: X\r\nCOOKIE: a=b; c=d\r\nAccept: */*\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x:8000\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n\n",
    b"GET / HTTP/1.1\rHost: x\r\r",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(99)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: v\r\n" % i for i in range(100)) + b"\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 8185 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nX-A: " + b"v" * 8186 + b"\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\n" + b"X-A: " + b"v" * 8000 + b"\r\n" * 1 + b"".join(
        b"X-%d: %s\r\n" % (i, b"v" * 8000) for i in range(8)) + b"\r\n",
    # connection management
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, CLOSE\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: foo\r\nConnection: close\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: h2c\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    b"GET / HTTP/1.0\r\nHost: x\r\nExpect: 100-continue\r\n\r\n",
    # bodies (h11's, on both paths)
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
    b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"POST / HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc",
    # pipelines
    (b"GET /1 HTTP/1.1\r\n" + H + b"\r\n") * 3,
    b"GET /1 HTTP/1.1\r\n" + H + b"\r\n\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
    b"POST /1 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab\r\n"
    b"GET /2 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /1 HTTP/1.1\r\n" + H + b"\r\nPOST /2 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nab"
    b"GET /3 HTTP/1.1\r\n" + H + b"\r\nGET /4 HTTP/1.1\r\n\r\n",
    b"GET /1 HTTP/1.1\r\n" + H + b"Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /1 HTTP/1.0\r\n\r\nGET /2 HTTP/1.1\r\n" + H + b"\r\n",
    b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /2 HTTP/1.1\r\nHost: a b\r\n\r\n",
    b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGARBAGE\r\n\r\n",
    b"GET /1 HTTP/1.1\r\n" + H + b"\r\nGET /" + b"a" * 5000,
    # incomplete and oversized heads
    b"GET / HTTP/1.1\r\nHost: x\r\n",
    b"GET /" + b"a" * 5000,
    b"GET / HTTP/1.1\r\n" + b"X-A: " + b"v" * 70000,
]


def transcript(parser: str, data: bytes, pieces: list[int], eof: bool = False,
               limits: tuple = LIMITS) -> list:
    """What a driver makes of `data` fed in `pieces`, answering each request
    with an empty 200 and starting the next cycle when it keeps the connection."""
    whole = parser == "c-whole"
    h = http1.Http1(*limits, parser="c" if whole else parser)
    out = []
    body = bytearray()

    def request(ev):
        out.append(("request", ev.method, ev.target, ev.http_version,
                    tuple(ev.headers), ev.expects_continue))

    def respond() -> bool:
        out.append(("body", bytes(body)))
        body.clear()
        h.response_head(200, [(b"content-length", b"0")])
        h.end()
        out.append(("keep-alive", h.keep_alive, h.request_complete))
        if not h.keep_alive:
            return False
        h.start_next_cycle()
        return True

    def drain():
        while True:
            ev = h.next_event()
            if ev is http1.NEED_DATA or ev is http1.PAUSED:
                return True
            kind = type(ev)
            if kind is http1.Request:
                request(ev)
            elif kind is http1.Body:
                body.extend(ev.data)
            elif kind is http1.EndOfBody:
                if not respond():
                    return False
            elif kind is http1.BadRequest:
                out.append(("rejected", ev.status, ev.reason))
                return False
            elif kind is http1.PeerClosed:
                out.append(("closed",))
                return False

    at = 0
    for n in pieces:
        piece = data[at:at + n]
        at += n
        ev = h.whole_request(piece) if whole and h.awaiting_request else None
        if ev is None:
            h.receive(piece)
        else:   # the request, and its cycle as after EndOfBody
            request(ev)
            if not respond():
                return out
        if not drain():
            return out
        out.append(("partial", h.has_partial_request(), h.awaiting_request))
    if eof:
        h.receive(b"")
        drain()
    # Only the state after the last piece is compared: the two parsers may
    # see a partial head at different moments.
    partial = [e for e in out if e[0] == "partial"]
    out = [e for e in out if e[0] != "partial"] + partial[-1:]
    if body:
        out.append(("body so far", bytes(body)))
    return out


def splits(data: bytes, rng: random.Random) -> list[list[int]]:
    n = len(data) or 1
    ways = [[n]]
    if n <= 300:
        ways.append([1] * n)
    cuts = sorted(rng.sample(range(1, n), min(4, n - 1))) if n > 1 else []
    ways.append([b - a for a, b in zip([0] + cuts, cuts + [n])])
    return ways


def assert_same(data: bytes, rng: random.Random, eof: bool = False) -> None:
    for pieces in splits(data, rng):
        ref = transcript("h11", data, pieces, eof)
        for parser in FAST:
            fast = transcript(parser, data, pieces, eof)
            assert fast == ref, (parser, data[:200], pieces[:8])


CORPUS = _values(REJECTED) + _values(ACCEPTED) + EDGE


@pytest.mark.parametrize("data", CORPUS, ids=range(len(CORPUS)))
def test_same_events_on_the_corpus(data):
    assert_same(data, random.Random(len(data)))


def test_same_events_at_eof():
    rng = random.Random(7)
    for data in CORPUS:
        assert_same(data, rng, eof=True)


_INTERESTING = b" \t\r\n:\x00\x7f\xe9/;,=\"HTTP1.0"


def _mutate(data: bytes, rng: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not b:
            break
        i = rng.randrange(len(b))
        op = rng.randrange(4)
        if op == 0:
            b.insert(i, rng.choice(_INTERESTING))
        elif op == 1:
            del b[i]
        elif op == 2:
            b[i:i] = b[i:i + rng.randint(1, 8)]
        else:
            b[i:i + 1] = bytes(b[i:i + 1]).swapcase()
    return bytes(b)


@pytest.mark.parametrize("seed", range(8))
def test_same_events_on_mutations(seed):
    rng = random.Random(seed)
    small = [d for d in CORPUS if len(d) < 2000]
    for _ in range(300):
        assert_same(_mutate(rng.choice(small), rng), rng)


def limits_from(a: int, b: int) -> tuple:
    """(request line, fields, field size, head bytes) from two bytes, small
    enough that each limit is hit (the C parser applies them itself)."""
    return (4 + a % 64, 1 + b % 12, 8 + (a >> 2), 32 + b * 4)


@pytest.mark.parametrize("seed", range(4))
def test_same_events_under_small_limits(seed):
    rng = random.Random(100 + seed)
    small = [d for d in CORPUS if len(d) < 2000]
    for _ in range(300):
        data = rng.choice(small)
        if rng.random() < 0.5:
            data = _mutate(data, rng)
        limits = limits_from(rng.randrange(256), rng.randrange(256))
        ref = transcript("h11", data, [len(data)], limits=limits)
        for parser in FAST:
            assert transcript(parser, data, [len(data)], limits=limits) == ref, \
                (parser, data[:200], limits)


@pytest.mark.parametrize("parser", [p for p in FAST if p != "c-whole"])
def test_the_fast_path_is_taken_for_a_plain_get(parser):
    """Guards the speed this exists for: a GET without a body never reaches h11,
    and with the C parser it is one `whole_request` call."""
    h = http1.Http1(*LIMITS, parser=parser)
    head = b"GET / HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n"
    for _ in range(3):
        if parser == "c":
            req = h.whole_request(head)
            assert (req.method, req.target, req.headers) == (
                b"GET", b"/", [(b"host", b"x"), (b"accept", b"*/*")])
            assert h.request_complete
        else:
            h.receive(head)
            assert type(h.next_event()) is http1.Request
            assert type(h.next_event()) is http1.EndOfBody
        assert h._h11 is None
        h.response_head(200, [(b"content-length", b"0")])
        h.end()
        h.start_next_cycle()


def test_parser_choice():
    assert http1.parser_name("auto") == ("c" if native else "httptools")
    assert http1.parser_name("h11") == "h11"
    with pytest.raises(ValueError):
        http1.parser_name("llhttp")
