"""The answer to a request for a file the server sends itself: status, headers, range.

Owns: a file's validators (a strong ETag from its size and mtime, as nginx
makes them; Last-Modified), RFC 9110's conditional requests in their order
(13.2.2: If-Match, If-Unmodified-Since, If-None-Match, If-Modified-Since,
then Range with If-Range), one byte range (206, or 416 when unsatisfiable;
several ranges are answered whole, as the RFC allows) and the headers of the
answer.  Used by `--static` and X-Sendfile / X-Accel-Redirect
(staticfiles.py).  Sans-I/O: a stat result and the request's environ in, an
`Answer` out.
"""
from __future__ import annotations

import email.utils
import functools
import mimetypes
import re
from dataclasses import dataclass, field

_RANGE = re.compile(r"bytes=(\d*)-(\d*)")


@dataclass
class Answer:
    status: str                  # "200 OK", "206 Partial Content", ...
    headers: list = field(default_factory=list)
    offset: int = 0
    count: int = 0               # body bytes from `offset` (0: no body)


def etag(st) -> str:
    return '"%x-%x"' % (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=4096)
def http_date(seconds: int) -> str:
    return email.utils.formatdate(seconds, usegmt=True)


def content_type(name: str) -> str:
    return _type_of_suffix(name.rpartition(".")[2].lower() if "." in name else "")


@functools.lru_cache(maxsize=1024)
def _type_of_suffix(suffix: str) -> str:
    kind, _ = mimetypes.guess_type("x." + suffix if suffix else "x", strict=False)
    if kind is None:
        return "application/octet-stream"
    if kind.startswith("text/") or kind in ("application/javascript", "application/json"):
        return kind + "; charset=utf-8"
    return kind


def answer(environ: dict, st, headers=()) -> Answer:
    """What to send for a GET or HEAD of a file with stat result `st`;
    `headers` (name, value) go with every answer but a 412/416."""
    tag = etag(st)
    mtime = int(st.st_mtime)
    size = st.st_size
    validators = [("ETag", tag), ("Last-Modified", http_date(mtime))]
    common = validators + list(headers)
    method = environ.get("REQUEST_METHOD", "GET")

    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if not _tag_matches(if_match, tag, weak=False):
            return Answer("412 Precondition Failed", [("Content-Length", "0")])
    else:
        since = _date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        if since is not None and mtime > since:
            return Answer("412 Precondition Failed", [("Content-Length", "0")])
    if_none = environ.get("HTTP_IF_NONE_MATCH")
    if if_none is not None:
        if _tag_matches(if_none, tag, weak=True):
            return Answer("304 Not Modified", common)
    elif method in ("GET", "HEAD"):
        since = _date(environ.get("HTTP_IF_MODIFIED_SINCE"))
        if since is not None and mtime <= since:
            return Answer("304 Not Modified", common)

    common.append(("Accept-Ranges", "bytes"))
    wanted = _range(environ.get("HTTP_RANGE"), size) if method == "GET" else None
    if wanted is not None and not _if_range_holds(environ.get("HTTP_IF_RANGE"), tag, mtime):
        wanted = None
    if wanted is None:
        return Answer("200 OK", common + [("Content-Length", str(size))], 0, size)
    if wanted == "unsatisfiable":
        return Answer("416 Range Not Satisfiable",
                      [("Content-Range", f"bytes */{size}"), ("Content-Length", "0")])
    start, stop = wanted
    return Answer("206 Partial Content",
                  common + [("Content-Range", f"bytes {start}-{stop - 1}/{size}"),
                            ("Content-Length", str(stop - start))], start, stop - start)


def _range(header, size: int):
    """(start, stop) of one satisfiable range, "unsatisfiable", or None (no
    Range, a syntax it does not know, or several ranges: send it whole)."""
    if header is None:
        return None
    m = _RANGE.fullmatch(header.strip())
    if m is None:
        return None
    first, last = m.groups()
    if not first:
        if not last:
            return None
        suffix = int(last)
        if suffix == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - suffix), size
    start = int(first)
    if last and int(last) < start:
        return None   # invalid: ignored (RFC 9110 14.1.1)
    if start >= size:
        return "unsatisfiable"
    stop = size if not last else min(size, int(last) + 1)
    return start, stop


def _if_range_holds(value, tag: str, mtime: int) -> bool:
    if value is None:
        return True
    value = value.strip()
    if value.startswith('"'):
        return value == tag   # a strong comparison
    return _date(value) == mtime


def _tag_matches(header: str, tag: str, weak: bool) -> bool:
    for item in header.split(","):
        item = item.strip()
        if item == "*":
            return True
        if item.startswith("W/"):
            if weak and item[2:] == tag:
                return True
        elif item == tag:
            return True
    return False


def _date(value):
    if not value:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if parsed is None or parsed.tzinfo is None:
        return None
    return int(parsed.timestamp())
