"""HTTP/1.1 driver: bytes in, request events out; response parts to bytes.

Owns: the HTTP/1 wire rules h11 leaves to the server — the request-line limit
(414, checked before h11 sees a whole line), header count and per-field limits
(431), the head-size limit (h11's `max_incomplete_event_size`, 431), the
request-smuggling and framing rules of RFC 9112 that h11 is lenient about
(`_head_verdict`, `_framing_verdict`; the table is in docs/http.md), keep-alive
and 100-continue decisions.  Sans-I/O: no sockets, no clocks, no threads; it is
used by the reactor thread only.

Reasons given with `BadRequest` never contain request bytes: they are logged,
and a header line may carry a cookie or a credential.

h11 parses requests, or a fast parser parses a request head without a body
and h11 takes any other request cycle, so h11 gives every rejection and
frames every request body: `--http c` (the default) is our own C parser
(_csrc/h1parse.c, which also applies the limits and request rules), `--http
httptools` is llhttp (h1head.py).  Responses are framed
here, as h11 would frame them (same status line, header order and framing: Content-Length, else chunked
for HTTP/1.1 clients, else close-delimited; `Connection: close` whenever the
connection will not be kept), without h11's per-event validation: the app's
header names and values were checked in wsgi.py.  A fresh h11 connection
parses each request (2 us) instead of h11.start_next_cycle, which needs h11
to have sent the response.  Body pieces are returned as they are, never
copied: a `FileBody` placeholder stands for a file range and is replaced by
the transport's file pump.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import h11

from . import h1head
from .native import native
from .responses import body_forbidden, text_answer

NEED_DATA = h11.NEED_DATA
PAUSED = h11.PAUSED

REASONS = {
    100: b"Continue", 200: b"OK", 400: b"Bad Request", 404: b"Not Found",
    408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 503: b"Service Unavailable", 505: b"HTTP Version Not Supported",
}

# In a request head: a line that starts with SP/HTAB (obs-fold, RFC 9112 5.2),
# or a control character other than HTAB, CR and LF (RFC 9110 5.5).  h11
# unfolds the first and accepts most of the second.
_BAD_HEAD = re.compile(rb"\n[ \t]|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
# The blank line that ends a head, as h11 finds it (bare LF line ends allowed).
_HEAD_END = re.compile(rb"\n\r?\n")
# RFC 9112 3.2 / RFC 3986 3.2.2: uri-host [ ":" port ]; empty is allowed.
_HOST = re.compile(rb"(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9\-._~%!$&'()*+,;=]*)(?::[0-9]*)?")
# A head that frames its body as chunked (h11 refuses any other coding).
_CHUNKED_HEAD = re.compile(rb"\ntransfer-encoding[ \t]*:[^\n]*chunked", re.I)
# A chunk-size line (RFC 9112 7.1): hex digits, then extensions.  In what
# follows the digits: no control character but HTAB (CR only as the line end).
_CHUNK_DIGITS = re.compile(rb"[0-9A-Fa-f]+")
_CHUNK_EXT_BAD = re.compile(rb"[\x00-\x08\x0a-\x1f\x7f]")
CHUNK_SIZE_MAX_DIGITS = 16          # 64 bits: a longer size means something else to a proxy
CHUNK_LINE_MAX_BYTES = 4096
# h11 puts the offending bytes (or a name) in some messages, quoted: cut the
# message at the first quote, before logging.
_RAW_IN_REASON = re.compile(r""":? *(?:bytearray\(|b'|b"|'|").*$""", re.S)

# Response framing (what h11's writers do), and the response's progress.
_NONE, _LENGTH, _CHUNKED, _TO_CLOSE = range(4)
_R_IDLE, _R_BODY, _R_DONE = range(3)
_REQUEST_IN = (h11.DONE, h11.MUST_CLOSE)
# A request cycle on the llhttp path: no head yet; head given (EndOfBody
# next); whole request given.  _TO_H11 means: give this cycle to h11.
_F_IDLE, _F_HEAD, _F_DONE = range(3)
_TO_H11 = object()

PARSERS = ("auto", "c", "httptools", "h11")


def parser_name(choice: str) -> str:
    """`--http`: auto is c when the extension is built, else httptools, else h11."""
    if choice not in PARSERS:
        raise ValueError(f"--http must be one of {', '.join(PARSERS)}")
    if choice == "auto":
        if native is not None:
            return "c"
        return "httptools" if h1head.AVAILABLE else "h11"
    if choice == "httptools" and not h1head.AVAILABLE:
        raise ValueError("--http httptools: the httptools package is not installed")
    if choice == "c" and native is None:
        raise ValueError("--http c: ktlswsgi._native is not built (pip install . compiles it)")
    return choice


class ResponseError(Exception):
    """A response that cannot be framed (more or less body than its
    Content-Length, a body where none may be): a server or app bug."""


def safe_reason(message: str) -> str:
    """h11's error text without the request bytes it may quote."""
    return _RAW_IN_REASON.sub("", message).strip() or "malformed request"


@dataclass
class Request:
    method: bytes
    target: bytes
    http_version: bytes
    headers: list  # [(lower-case name bytes, value bytes)], in order
    expects_continue: bool = False


@dataclass
class Body:
    data: bytes


class EndOfBody:
    pass


@dataclass
class PeerClosed:
    pass


@dataclass
class BadRequest:
    status: int
    reason: str


class FileBody:
    """Stands for `length` bytes of a file in h11's data passthrough."""

    __slots__ = ("length", "segment")

    def __init__(self, length: int, segment=None):
        self.length = length
        self.segment = segment

    def __len__(self) -> int:
        return self.length


class ChunkCheck:
    """The chunk-size lines of one chunked request body, checked as the raw
    bytes arrive, before h11 reads them (h11 takes up to 20 hex digits, which
    a 64-bit proxy in front may read differently: request smuggling; and it
    lets control characters through in extensions).  `feed` returns a
    BadRequest at the first bad line: over CHUNK_SIZE_MAX_DIGITS digits (400),
    a control character after the size (400), a line over
    CHUNK_LINE_MAX_BYTES (400), a chunk, or the chunks so far, over
    `max_body_bytes` (413).  It stops at the last chunk: trailers are h11's.
    Everything else about the framing (the CRLF after the data, the hex
    syntax) stays h11's to judge."""

    __slots__ = ("_max_body", "_line", "_skip", "_total", "done")

    def __init__(self, max_body_bytes: int | None):
        self._max_body = max_body_bytes
        self._line = bytearray()   # a size line arriving in pieces
        self._skip = 0             # chunk data + its CRLF still to pass over
        self._total = 0
        self.done = False

    def feed(self, data) -> "BadRequest | None":
        pos, n = 0, len(data)
        while pos < n and not self.done:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            eol = data.find(b"\n", pos)
            if eol < 0:
                self._line += data[pos:]
                if len(self._line) > CHUNK_LINE_MAX_BYTES:
                    return BadRequest(400, "chunk header line too long")
                return None
            line = bytes(self._line) + bytes(data[pos:eol]) if self._line else bytes(data[pos:eol])
            self._line = bytearray()
            pos = eol + 1
            verdict = self._size_line(line)
            if verdict is not None:
                return verdict
        return None

    def _size_line(self, line: bytes) -> "BadRequest | None":
        if len(line) > CHUNK_LINE_MAX_BYTES:
            return BadRequest(400, "chunk header line too long")
        if line.endswith(b"\r"):
            line = line[:-1]
        m = _CHUNK_DIGITS.match(line)
        if m is None:
            self.done = True        # not a size at all: h11 rejects it
            return None
        digits = m.group()
        if len(digits) > CHUNK_SIZE_MAX_DIGITS:
            return BadRequest(400, f"chunk size over {CHUNK_SIZE_MAX_DIGITS} hex digits")
        if _CHUNK_EXT_BAD.search(line, m.end()):
            return BadRequest(400, "control character in a chunk extension")
        size = int(digits, 16)
        self._total += size
        if self._max_body is not None and self._total > self._max_body:
            return BadRequest(413, "chunked request body over --max-body")
        if size == 0:
            self.done = True
        else:
            self._skip = size + 2
        return None


class Http1:
    """One HTTP/1 connection's requests and responses.

    `parser` "h11": h11 parses every request.  "c" / "httptools": a request
    head without a body is parsed by the C parser (_csrc/h1parse.c) / llhttp
    (h1head.py); anything else, and every head the fast parser refuses, goes
    to h11 for that request cycle, so rejections and bodies are always h11's.
    """

    def __init__(self, limit_request_line: int, limit_request_fields: int,
                 limit_request_field_size: int, limit_request_headers_bytes: int,
                 parser: str = "auto", max_body_bytes: int | None = None):
        self._max_body = max_body_bytes
        self._chunks: ChunkCheck | None = None   # the chunked body being received
        self._body_error: BadRequest | None = None
        self._limit_line = limit_request_line
        self._limit_fields = limit_request_fields
        self._limit_field = limit_request_field_size
        self._limit_head = limit_request_headers_bytes
        name = parser_name(parser)
        self._fast = name != "h11"
        # --http c: the C parser applies the limits and request rules itself.
        self._c_limits = ((limit_request_line, limit_request_fields, limit_request_field_size,
                           limit_request_headers_bytes) if name == "c" else None)
        # On the llhttp path h11 is None until a cycle is handed to it; the
        # bytes not parsed yet wait in _pending.
        self._h11 = None if self._fast else self._new_h11()
        self._pending = b""
        self._eof = False
        self._fstate = _F_IDLE
        self._failed = False
        # the response (ours to frame)
        self._resp = _R_IDLE
        self._framing = _NONE
        self._left = 0                # Content-Length bytes still to send
        self._closing = False         # the connection ends after this response
        self._sent_100 = False
        # the request it answers
        self._req_method = None
        self._req_version = None
        self._req_keep_alive = False
        # The raw bytes of the request head being received, kept until its
        # end is seen, for the checks h11 cannot make on parsed headers.
        self._scanning = True
        self._head_buf = bytearray()
        self._head = b""              # the last complete raw head
        self._head_error: BadRequest | None = None
        self._checks_due = False      # --http c: _head_checks wait for h11 to take the cycle
        self._whole_cycle = False     # this cycle began in whole_request

    # -- input -------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        if self._scanning and data:
            if not self._head_buf:
                # RFC 9112 2.2: empty lines before a request line are ignored
                # (h11 would answer them with 400).
                data = data.lstrip(b"\r\n")
                if not data:
                    return
            self._scan(data)
        elif self._chunks is not None and data:
            self._check_chunks(data)
        if self._h11 is not None:
            self._h11.receive_data(data)
        elif data:
            pending = self._pending
            if not pending:
                self._pending = data
            elif type(pending) is bytearray:
                pending += data      # a head arriving in pieces: no quadratic copying
            else:
                self._pending = bytearray(pending) + data
        else:
            self._eof = True

    def _scan(self, data: bytes) -> None:
        buf = self._head_buf
        if buf:
            start = max(0, len(buf) - 3)
            buf += data
            data = buf
        else:
            start = 0   # the usual case: a whole head in one read, no copy
        if data[:1] in (b"\r", b"\n"):   # empty lines before a pipelined request
            stripped = bytes(data).lstrip(b"\r\n")
            start = max(0, start - (len(data) - len(stripped)))
            data = stripped
        m = _HEAD_END.search(data, start)
        if m is None:
            if not buf:
                self._head_buf = bytearray(data)
            elif len(buf) > self._limit_head + self._limit_line:
                self._scanning = False   # h11 answers 431/414 on its own
                self._head_buf = bytearray()
            return
        end = m.end()
        self._head = bytes(data[:end])
        self._scanning = False
        if buf:
            self._head_buf = bytearray()
        if self._c_limits is not None and self._h11 is None:
            # The C parser refuses every head these checks catch; they run
            # only if h11 takes the cycle (_head_checks_for_h11).
            self._checks_due = True
            return
        self._head_checks(data, end)

    def _head_checks(self, data, end: int) -> None:
        """The raw head's verdict, and the chunked body's check from `end` on."""
        self._head_error = _head_verdict(self._head)
        if self._head_error is None and _CHUNKED_HEAD.search(self._head):
            self._chunks = ChunkCheck(self._max_body)
            if end < len(data):
                self._check_chunks(data[end:])

    def _head_checks_for_h11(self) -> None:
        self._checks_due = False
        rest = self._pending.lstrip(b"\r\n")   # the head and what has followed it
        at = rest.find(self._head)
        if at < 0:
            at, rest = 0, self._head
        self._head_checks(rest, at + len(self._head))

    def _check_chunks(self, data) -> None:
        chunks = self._chunks
        verdict = chunks.feed(data)
        if verdict is not None and self._body_error is None:
            self._body_error = verdict
        if chunks.done or verdict is not None:
            self._chunks = None

    def _new_h11(self):
        return h11.Connection(h11.SERVER, max_incomplete_event_size=self._limit_head)

    def _unparsed(self) -> bytes:
        return self._pending if self._h11 is None else self._h11.trailing_data[0]

    @property
    def awaiting_request(self) -> bool:
        """True between requests: no byte of the next request parsed yet."""
        if self._h11 is None:
            return self._fstate == _F_IDLE and self._resp == _R_IDLE
        return self._h11.their_state is h11.IDLE and self._resp == _R_IDLE

    def has_partial_request(self) -> bool:
        """Some bytes of the next request head have arrived."""
        return bool(self._unparsed().strip(b"\r\n"))

    def next_event(self):
        """One of Request, Body, EndOfBody, PeerClosed, BadRequest, NEED_DATA, PAUSED."""
        if self._failed:
            return PAUSED
        if self._h11 is None:
            event = self._fast_event()
            if event is not _TO_H11:
                return event
            if self._checks_due:
                self._head_checks_for_h11()
            self._h11 = conn = self._new_h11()
            if self._pending:
                conn.receive_data(self._pending)
                self._pending = b""
            if self._eof:
                conn.receive_data(b"")
        conn = self._h11
        if self._head_error is not None and conn.their_state is h11.IDLE:
            self._failed = True
            return self._head_error
        if self._body_error is not None and conn.their_state is not h11.IDLE:
            self._failed = True
            return self._body_error
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._failed = True
            status = exc.error_status_hint
            if status == 400 and conn.their_state is h11.IDLE and self._line_too_long():
                return BadRequest(414, f"request line over {self._limit_line} bytes")
            reason = safe_reason(str(exc))
            if status == 431:
                reason = "request head too large"
            elif status == 501 and self._head:
                # h11 refuses every Transfer-Encoding but "chunked" with 501;
                # RFC 9112 6.3 wants 400 when the final coding is not chunked.
                return _framing_verdict(self._head) or BadRequest(501, reason)
            return BadRequest(status, reason)
        if event is NEED_DATA:
            if conn.their_state is h11.IDLE and self._line_too_long():
                self._failed = True
                return BadRequest(414, f"request line over {self._limit_line} bytes")
            return NEED_DATA
        if event is PAUSED:
            return PAUSED
        kind = type(event)
        if kind is h11.Data:
            return Body(event.data)
        if kind is h11.EndOfMessage:
            return EndOfBody()
        if kind is h11.Request:
            return self._request(event.method, event.target, event.http_version,
                                 list(event.headers), conn.they_are_waiting_for_100_continue)
        if kind is h11.ConnectionClosed:
            return PeerClosed()
        return NEED_DATA

    def _fast_event(self):
        """The next event on the llhttp path, or _TO_H11."""
        state = self._fstate
        if state == _F_HEAD:
            self._fstate = _F_DONE
            return EndOfBody()
        if state == _F_DONE:   # as h11 in DONE
            if self._pending:
                return PAUSED
            return PeerClosed() if self._eof else NEED_DATA
        if self._head_error is not None:
            self._failed = True
            return self._head_error
        head = self._head
        if not head:
            # No whole head yet.  Past a limit, at the peer's close, or at a
            # first byte no request line starts with, h11 gives its answer.
            pending = self._pending
            if self._eof or len(pending) > self._limit_head or (
                    pending and (pending[0] < 0x21 or self._line_too_long())):
                return _TO_H11
            return NEED_DATA
        rest = self._pending.lstrip(b"\r\n")
        if not rest.startswith(head):
            return _TO_H11
        limits = self._c_limits
        if limits is not None:
            parsed = native.parse_head(head, *limits)
            if parsed is None:
                return _TO_H11
            method, target, version, headers, self._req_keep_alive = parsed
            self._pending = rest[len(head):]
            self._fstate = _F_HEAD
            self._req_method = method
            self._req_version = version
            return Request(method, target, version, headers, False)
        parsed = h1head.parse(head)
        if parsed is None:
            return _TO_H11
        self._pending = rest[len(head):]
        self._fstate = _F_HEAD
        return self._request(*parsed, False)

    def whole_request(self, data):
        """The usual request in one step: on an idle cycle of the C parser,
        `data` is exactly one head without a body that the parser accepts.
        Returns its Request, the cycle then standing as after its EndOfBody;
        else None and nothing changed (`receive(data)` takes it as usual)."""
        limits = self._c_limits
        if (limits is None or self._h11 is not None or self._fstate != _F_IDLE
                or self._pending or self._eof or self._head_buf or not self._scanning):
            return None
        # parse_head refuses anything but exactly one head: CRLF lines only,
        # the first blank line ending `data` (no pipelined bytes after it).
        parsed = native.parse_head(data, *limits)
        if parsed is None:
            return None
        method, target, version, headers, self._req_keep_alive = parsed
        self._head = data
        self._scanning = False
        self._fstate = _F_DONE
        self._whole_cycle = True
        self._req_method = method
        self._req_version = version
        return Request(method, target, version, headers, False)

    def _line_too_long(self) -> bool:
        # Empty lines before a request are stripped as they arrive, so the
        # line starts near the front: look no further than the limit needs.
        pending = self._unparsed()[:self._limit_line + 512].lstrip(b"\r\n")
        eol = pending.find(b"\n", 0, self._limit_line + 2)
        if eol < 0:
            return len(pending) > self._limit_line + 1
        return len(pending[:eol].rstrip(b"\r")) > self._limit_line

    def _request(self, method: bytes, target: bytes, version: bytes, headers: list,
                 expects_continue: bool):
        if len(target) > self._limit_line:
            self._failed = True
            return BadRequest(414, f"request target over {self._limit_line} bytes")
        bad = _request_verdict(method, target, version, headers)
        if bad is not None:
            self._failed = True
            return bad
        # h11 checks its size limit only while a head is incomplete.
        head_bytes = len(method) + len(target) + 12 + sum(
            len(n) + len(v) + 4 for n, v in headers)
        if head_bytes > self._limit_head:
            self._failed = True
            return BadRequest(431, f"request head over {self._limit_head} bytes")
        if len(headers) > self._limit_fields:
            self._failed = True
            return BadRequest(431, f"{len(headers)} header fields, limit {self._limit_fields}")
        for name, value in headers:
            if len(name) + len(value) + 2 > self._limit_field:
                self._failed = True
                return BadRequest(431, f"a header field over {self._limit_field} bytes")
        self._req_method = method
        self._req_version = version
        # h11's rule: HTTP/1.0, or "close" among the Connection tokens.
        self._req_keep_alive = (version >= b"1.1"
                                and b"close" not in _connection_tokens(headers))
        return Request(method, target, version, headers, expects_continue)

    # -- output ------------------------------------------------------------
    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        # On the llhttp path an Expect header sends the cycle to h11.
        return (self._h11 is not None and self._h11.they_are_waiting_for_100_continue
                and not self._sent_100 and self._resp == _R_IDLE)

    def continue_100(self) -> bytes:
        self._sent_100 = True
        return b"HTTP/1.1 100 Continue\r\n\r\n"

    def response_head(self, status: int, headers: list, reason: bytes = b"",
                      close: bool = False) -> bytes:
        """The status line and headers, with the framing headers h11 would add;
        `close` (or a client or app that asked for it) adds Connection: close."""
        if self._resp != _R_IDLE:
            raise ResponseError("a second response head")
        length = False if native is None else native.scan_response_headers(headers)
        tokens = None
        if length is False:
            length, tokens = _scan_response_headers(headers)
        if close:
            headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
            headers.append((b"connection", b"close"))
            tokens = {b"close"}
        method = self._req_method
        if body_forbidden(status, method):
            framing = _NONE
            if method == b"HEAD" and length is None and not body_forbidden(status):
                # As h11: the headers a GET would have had (here: chunked).
                headers = headers + [(b"Transfer-Encoding", b"chunked")] \
                    if self._chunked_ok() else headers
        elif length is not None:
            framing = _LENGTH
        elif self._chunked_ok():
            framing = _CHUNKED
            headers = headers + [(b"Transfer-Encoding", b"chunked")]
        else:
            framing = _TO_CLOSE   # an HTTP/1.0 client: the end of the body is the close
        if framing == _TO_CLOSE or not self._req_keep_alive:
            # As h11: its own Connection fields, the app's tokens less keep-alive.
            kept = sorted((tokens or set()) - {b"keep-alive"} | {b"close"})
            headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
            headers.extend((b"Connection", token) for token in kept)
            closing = True
        else:
            closing = tokens is not None and b"close" in tokens
        self._framing = framing
        self._left = length or 0
        self._closing = closing
        self._resp = _R_BODY
        reason = reason or REASONS.get(status, b"")
        if native is not None:
            head = native.serialize_head(status, reason, headers)
            if head is not None:
                return head
        return serialize_head(status, reason, headers)

    def whole_response(self, status: int, headers: list, reason: bytes, close: bool,
                       data: bytes) -> bytes:
        """`response_head()` then `body_to_end()` of one bytes body, as one
        buffer: in one C step (framing.c's frame_whole) for the usual
        response, a body of its Content-Length to a request kept alive."""
        if (native is not None and self._resp == _R_IDLE and self._req_keep_alive
                and self._req_method != b"HEAD" and status >= 200 and status != 204
                and status != 304):
            framed = native.frame_whole(status, reason or REASONS.get(status, b""), headers,
                                        data, close)
            if framed is not None:
                self._framing = _LENGTH
                self._left = 0
                self._closing = close
                self._resp = _R_DONE
                return framed
        n = len(data)
        return b"".join([self.response_head(status, headers, reason, close),
                         *self.body_to_end([data] if n else [], n)])

    def _chunked_ok(self) -> bool:
        return self._req_version is not None and self._req_version >= b"1.1"

    def body(self, data) -> list:
        """Framing pieces plus `data` itself (not copied)."""
        n = len(data)
        framing = self._framing
        if self._resp != _R_BODY:
            raise ResponseError("body outside a response")
        if framing == _LENGTH:
            if n > self._left:
                raise ResponseError("more body than its Content-Length")
            self._left -= n
            return [data]
        if framing == _CHUNKED:
            return [b"%x\r\n" % n, data, b"\r\n"] if n else []
        if framing == _TO_CLOSE:
            return [data]
        if n:
            raise ResponseError("a body where the response has none")
        return []

    def body_to_end(self, datas: list, n: int) -> list:
        """`body()` of each of `datas` (`n` bytes in all), then `end()`: the
        pieces of a response's whole body, in one call."""
        if self._framing == _LENGTH and self._resp == _R_BODY:
            if n > self._left:
                raise ResponseError("more body than its Content-Length")
            if n < self._left:
                raise ResponseError("less body than its Content-Length")
            self._left = 0
            self._resp = _R_DONE
            return datas
        parts = []
        for data in datas:
            parts += self.body(data)
        parts.append(self.end())
        return parts

    def end(self) -> bytes:
        if self._resp != _R_BODY:
            raise ResponseError("end outside a response")
        if self._framing == _LENGTH and self._left:
            raise ResponseError("less body than its Content-Length")
        self._resp = _R_DONE
        return b"0\r\n\r\n" if self._framing == _CHUNKED else b""

    def simple_response(self, status: int, text: str, close: bool = True,
                        extra_headers: list = ()) -> bytes:
        """The server's own complete answer (responses.text_answer)."""
        headers, body = text_answer(text, extra_headers)
        out = self.response_head(status, headers, close=close)
        out += b"".join(self.body(body))
        return out + self.end()

    def can_respond(self) -> bool:
        return self._resp == _R_IDLE

    @property
    def response_complete(self) -> bool:
        return self._resp == _R_DONE

    @property
    def request_complete(self) -> bool:
        """The whole request is in (MUST_CLOSE: in, and the client asked to close)."""
        if self._h11 is None:
            return self._fstate == _F_DONE
        return self._h11.their_state in _REQUEST_IN

    @property
    def keep_alive(self) -> bool:
        if self._resp != _R_DONE or self._closing or self._failed:
            return False
        if self._h11 is None:   # h11's DONE (not MUST_CLOSE) is this rule
            return self._fstate == _F_DONE and self._req_keep_alive
        return self._h11.their_state is h11.DONE

    def start_next_cycle(self) -> bool:
        """The next request cycle begins; True when input is already waiting
        for it (pipelined bytes, or the peer's close)."""
        if not self.keep_alive:
            raise ResponseError("the connection is not kept alive")
        if self._whole_cycle:
            self._whole_cycle = False
            if not self._pending and not self._eof:
                # Nothing arrived since whole_request: only what that cycle
                # changed goes back (the rest is as the last reset left it).
                self._fstate = _F_IDLE
                self._resp = _R_IDLE
                self._framing = _NONE
                self._left = 0
                self._closing = False
                self._req_method = self._req_version = None
                self._req_keep_alive = False
                self._scanning = True
                self._head = b""
                return False
        if self._h11 is None:
            pipelined, closed = self._pending, self._eof
        else:
            pipelined, closed = self._h11.trailing_data
        # RFC 9112 2.2: empty lines before a request line are ignored.
        pipelined = bytes(pipelined).lstrip(b"\r\n")
        if self._fast:
            self._h11 = None
            self._pending = pipelined
            self._eof = closed
            self._fstate = _F_IDLE
        else:
            self._h11 = conn = self._new_h11()
            if pipelined:
                conn.receive_data(pipelined)
            if closed:
                conn.receive_data(b"")
        self._resp = _R_IDLE
        self._framing = _NONE
        self._left = 0
        self._closing = False
        self._sent_100 = False
        self._req_method = self._req_version = None
        self._req_keep_alive = False
        self._scanning = True
        self._head = b""
        self._head_error = None
        self._checks_due = False
        self._head_buf = bytearray()
        self._chunks = None
        self._body_error = None
        if pipelined:
            self._scan(pipelined)
        return bool(pipelined) or closed


def _scan_response_headers(headers) -> tuple:
    """(Content-Length or None, the Connection tokens or None) of a response's
    headers; _csrc/framing.c's scan_response_headers is tested against it."""
    length = None
    tokens = None
    for name, value in headers:
        lower = name.lower()
        if lower == b"content-length":
            if not value.isdigit() or (length is not None and int(value) != length):
                raise ResponseError("invalid Content-Length")
            length = int(value)
        elif lower == b"connection":
            tokens = (tokens or set()) | _connection_tokens(((lower, value),))
    return length, tokens


def serialize_head(status: int, reason: bytes, headers) -> bytes:
    """A response head's bytes; _csrc/framing.c's serialize_head is tested against it."""
    parts = [b"HTTP/1.1 %d %s\r\n" % (status, reason)]
    parts.extend(b"%s: %s\r\n" % (n, v) for n, v in headers)
    parts.append(b"\r\n")
    return b"".join(parts)


def _connection_tokens(headers) -> set:
    """The lower-cased tokens of every Connection field (h11's get_comma_header)."""
    tokens = set()
    for name, value in headers:
        if name.lower() == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token:
                    tokens.add(token)
    return tokens


def _head_verdict(head: bytes) -> BadRequest | None:
    """Checks on the raw head that parsed headers no longer show."""
    m = _BAD_HEAD.search(head)
    if m is None:
        return None
    if m.group()[:1] == b"\n":
        return BadRequest(400, "obsolete line folding in the request head")
    return BadRequest(400, "control character in the request head")


def _framing_verdict(head: bytes) -> BadRequest | None:
    """RFC 9112 6.1/6.3 for a Transfer-Encoding h11 refused."""
    codings = []
    for line in head.split(b"\n")[1:]:
        name, colon, value = line.partition(b":")
        if colon and name.strip().lower() == b"transfer-encoding":
            codings.extend(c.strip().lower() for c in value.split(b","))
    codings = [c for c in codings if c]
    if not codings:
        return None
    if codings[-1] != b"chunked":
        return BadRequest(400, "Transfer-Encoding whose final coding is not chunked")
    if codings.count(b"chunked") > 1:
        return BadRequest(400, "chunked applied more than once")
    return BadRequest(501, "unsupported transfer coding")


def _request_verdict(method: bytes, target: bytes, version: bytes,
                     headers: list) -> BadRequest | None:
    """RFC 9112 rules on a parsed request that h11 does not enforce."""
    if version[:1] != b"1":
        return BadRequest(505, "HTTP version not supported")
    has_te = has_cl = False
    host = None
    for name, value in headers:
        if name == b"transfer-encoding":
            has_te = True
        elif name == b"content-length":
            has_cl = True
        elif name == b"host":
            host = value
    if has_te:
        if has_cl:
            # 6.3: a proxy in front may have framed it by Content-Length.
            return BadRequest(400, "both Transfer-Encoding and Content-Length")
        if version == b"1.0":
            return BadRequest(400, "Transfer-Encoding in an HTTP/1.0 request")
    if host is not None and not _HOST.fullmatch(host):
        return BadRequest(400, "invalid Host header")
    if method == b"CONNECT":
        return BadRequest(501, "CONNECT is not supported")
    if target[:1] != b"/":
        if target == b"*":
            if method != b"OPTIONS":
                return BadRequest(400, "asterisk-form target outside OPTIONS")
        elif not target.lower().startswith((b"http://", b"https://")):
            return BadRequest(400, "request target is not origin-form or absolute-form")
    return None
