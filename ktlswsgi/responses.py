"""What every response follows on both protocols, and the server's own answers.

Owns: which responses carry no body (a HEAD request's, 1xx, 204, 304:
RFC 9110 9.3.2, 15.2, 15.3.5, 15.4.5) and the short plain-text answer the
server gives for itself (400s, 408, 413, 503, a failed app's 500): its body
and its headers.  Sans-I/O.
"""
from __future__ import annotations

from .httpdate import standard_headers

NO_BODY_STATUSES = frozenset((204, 304))


def body_forbidden(status: int, method: bytes | None = None) -> bool:
    """A response with this status (to a `method` request) carries no body."""
    return method == b"HEAD" or status < 200 or status in NO_BODY_STATUSES


def text_answer(text: str, extra_headers=()) -> tuple:
    """(headers, body) of the server's own answer: `text` and a newline as
    text/plain, with Content-Length, Date and Server."""
    body = (text + "\n").encode()
    headers = [(b"content-type", b"text/plain; charset=utf-8"),
               (b"content-length", b"%d" % len(body))] + standard_headers()
    headers.extend(extra_headers)
    return headers, body
