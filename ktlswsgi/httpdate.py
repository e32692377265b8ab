"""The headers every response carries: `Date` (RFC 9110 6.6.1) and `Server`.

Owns: the Date value, formatted at most once per second (an IMF-fixdate
string per response would cost more than the rest of the head), and the
Server value.  Safe from any thread: the cache is one tuple, replaced whole.
"""
from __future__ import annotations

import time
from email.utils import formatdate

SERVER = b"ktlswsgi"

_cache = (0, b"")


def date_value() -> bytes:
    """The current time as an IMF-fixdate, e.g. b"Thu, 03 Dec 2026 04:20:15 GMT"."""
    global _cache
    now = int(time.time())
    second, value = _cache
    if second != now:
        value = formatdate(now, usegmt=True).encode("ascii")
        _cache = (now, value)
    return value


def standard_headers() -> list:
    """[(b"Date", ...), (b"Server", ...)] for a response the server writes itself."""
    return [(b"Date", date_value()), (b"Server", SERVER)]
