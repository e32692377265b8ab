"""HTTP/1.1 driver over h11: bytes in, request events out; response parts to bytes.

Owns: the HTTP/1 wire rules h11 leaves to the server — the request-line limit
(414, checked before h11 sees a whole line), header count and per-field limits
(431), the head-size limit (h11's `max_incomplete_event_size`, 431), keep-alive
and 100-continue decisions.  Sans-I/O: no sockets, no clocks, no threads; it is
used by the reactor thread only.

Response bodies go through `send_with_data_passthrough`, so file ranges and
large chunks are framed without being copied: a `FileBody` placeholder stands
for a file range and is replaced by the transport's file pump.
"""
from __future__ import annotations

from dataclasses import dataclass

import h11

NEED_DATA = h11.NEED_DATA
PAUSED = h11.PAUSED

REASONS = {
    100: b"Continue", 200: b"OK", 400: b"Bad Request", 404: b"Not Found",
    408: b"Request Timeout", 413: b"Content Too Large", 414: b"URI Too Long",
    431: b"Request Header Fields Too Large", 500: b"Internal Server Error",
    501: b"Not Implemented", 503: b"Service Unavailable", 505: b"HTTP Version Not Supported",
}


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


class Http1:
    def __init__(self, limit_request_line: int, limit_request_fields: int,
                 limit_request_field_size: int, limit_request_headers_bytes: int):
        self._limit_line = limit_request_line
        self._limit_fields = limit_request_fields
        self._limit_field = limit_request_field_size
        self._limit_head = limit_request_headers_bytes
        self._h11 = h11.Connection(
            h11.SERVER, max_incomplete_event_size=limit_request_headers_bytes)
        self._failed = False

    # -- input -------------------------------------------------------------
    def receive(self, data: bytes) -> None:
        """Feed bytes from the peer; b"" means the peer closed its side."""
        self._h11.receive_data(data)

    @property
    def awaiting_request(self) -> bool:
        """True between requests: no byte of the next request parsed yet."""
        return self._h11.their_state is h11.IDLE and self._h11.our_state is h11.IDLE

    def has_partial_request(self) -> bool:
        """Some bytes of the next request head have arrived."""
        return bool(self._h11.trailing_data[0].strip(b"\r\n"))

    def next_event(self):
        """One of Request, Body, EndOfBody, PeerClosed, BadRequest, NEED_DATA, PAUSED."""
        if self._failed:
            return PAUSED
        conn = self._h11
        try:
            event = conn.next_event()
        except h11.RemoteProtocolError as exc:
            self._failed = True
            status = exc.error_status_hint
            if status == 400 and conn.their_state is h11.IDLE and self._line_too_long():
                return BadRequest(414, f"request line over {self._limit_line} bytes")
            reason = str(exc) or "malformed request"
            if status == 431:
                reason = "request head too large"
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
            return self._request(event)
        if kind is h11.ConnectionClosed:
            return PeerClosed()
        return NEED_DATA

    def _line_too_long(self) -> bool:
        pending = self._h11.trailing_data[0].lstrip(b"\r\n")
        eol = pending.find(b"\n", 0, self._limit_line + 2)
        if eol < 0:
            return len(pending) > self._limit_line + 1
        return len(pending[:eol].rstrip(b"\r")) > self._limit_line

    def _request(self, event: h11.Request):
        if len(event.target) > self._limit_line:
            self._failed = True
            return BadRequest(414, f"request target over {self._limit_line} bytes")
        headers = list(event.headers)
        # h11 checks its size limit only while a head is incomplete.
        head_bytes = len(event.method) + len(event.target) + 12 + sum(
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
                return BadRequest(431, f"header {name.decode('latin-1')!r} over "
                                       f"{self._limit_field} bytes")
        return Request(event.method, event.target, event.http_version, headers,
                       self._h11.they_are_waiting_for_100_continue)

    # -- output ------------------------------------------------------------
    @property
    def they_are_waiting_for_100_continue(self) -> bool:
        return self._h11.they_are_waiting_for_100_continue

    def continue_100(self) -> bytes:
        return self._h11.send(h11.InformationalResponse(status_code=100, headers=[]))

    def response_head(self, status: int, headers: list, reason: bytes = b"",
                      close: bool = False) -> bytes:
        """Serialize the status line and headers; `close` adds Connection: close."""
        if close:
            headers = [(n, v) for n, v in headers if n.lower() != b"connection"]
            headers.append((b"connection", b"close"))
        return self._h11.send(h11.Response(
            status_code=status, headers=headers, reason=reason or REASONS.get(status, b"")))

    def body(self, data) -> list:
        """Framing pieces plus `data` itself (not copied)."""
        return self._h11.send_with_data_passthrough(h11.Data(data=data))

    def end(self) -> bytes:
        return self._h11.send(h11.EndOfMessage())

    def simple_response(self, status: int, text: str, close: bool = True,
                        extra_headers: list = ()) -> bytes:
        """A complete short text response (errors, 503)."""
        body = (text + "\n").encode()
        headers = [(b"content-type", b"text/plain; charset=utf-8"),
                   (b"content-length", str(len(body)).encode())]
        headers.extend(extra_headers)
        out = self.response_head(status, headers, close=close)
        out += b"".join(self.body(body))
        return out + self.end()

    def can_respond(self) -> bool:
        return self._h11.our_state in (h11.IDLE, h11.SEND_RESPONSE)

    @property
    def response_complete(self) -> bool:
        return self._h11.our_state is h11.DONE

    @property
    def request_complete(self) -> bool:
        return self._h11.their_state is h11.DONE

    @property
    def keep_alive(self) -> bool:
        return (self._h11.our_state is h11.DONE and self._h11.their_state is h11.DONE
                and not self._failed)

    def start_next_cycle(self) -> None:
        self._h11.start_next_cycle()
