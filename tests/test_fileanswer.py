"""fileanswer: RFC 9110's conditional requests and one byte range, sans-I/O."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from ktlswsgi import fileanswer

SIZE = 10000
MTIME = 1_700_000_000


def st(size=SIZE, mtime=MTIME):
    """The stat fields the answer reads."""
    return SimpleNamespace(st_size=size, st_mtime=mtime + 0.25,
                           st_mtime_ns=mtime * 10**9 + 250_000_000)


def ask(**headers):
    environ = {"REQUEST_METHOD": headers.pop("method", "GET")}
    environ.update({"HTTP_" + k.upper(): v for k, v in headers.items()})
    a = fileanswer.answer(environ, st())
    return a, dict(a.headers)


TAG = fileanswer.etag(st())
DATE = fileanswer.http_date(MTIME)
EARLIER = fileanswer.http_date(MTIME - 10)


def test_full():
    a, h = ask()
    assert (a.status, a.offset, a.count) == ("200 OK", 0, SIZE)
    assert h["Content-Length"] == str(SIZE) and h["ETag"] == TAG and h["Last-Modified"] == DATE
    assert h["Accept-Ranges"] == "bytes"


@pytest.mark.parametrize("header,offset,count", [
    ("bytes=0-0", 0, 1), ("bytes=100-199", 100, 100), ("bytes=9000-", 9000, 1000),
    ("bytes=-300", SIZE - 300, 300), ("bytes=-20000", 0, SIZE), ("bytes=9990-20000", 9990, 10),
])
def test_ranges(header, offset, count):
    a, h = ask(range=header)
    assert (a.status, a.offset, a.count) == ("206 Partial Content", offset, count)
    assert h["Content-Range"] == f"bytes {offset}-{offset + count - 1}/{SIZE}"
    assert h["Content-Length"] == str(count)


@pytest.mark.parametrize("header", ["bytes=10000-", "bytes=20000-30000", "bytes=-0"])
def test_unsatisfiable(header):
    a, h = ask(range=header)
    assert a.status.startswith("416") and a.count == 0
    assert h["Content-Range"] == f"bytes */{SIZE}"


@pytest.mark.parametrize("header", ["bytes=5-1", "items=0-1", "bytes=0-1,5-6", "bytes=-", "bytes=a-b"])
def test_ignored_ranges_send_it_whole(header):
    a, _ = ask(range=header)
    assert a.status == "200 OK" and a.count == SIZE


def test_range_only_for_get():
    a, _ = ask(method="HEAD", range="bytes=0-9")
    assert a.status == "200 OK"


def test_if_range():
    assert ask(range="bytes=0-9", if_range=TAG)[0].status.startswith("206")
    assert ask(range="bytes=0-9", if_range='"other"')[0].status == "200 OK"
    assert ask(range="bytes=0-9", if_range="W/" + TAG)[0].status == "200 OK"  # strong only
    assert ask(range="bytes=0-9", if_range=DATE)[0].status.startswith("206")
    assert ask(range="bytes=0-9", if_range=EARLIER)[0].status == "200 OK"


def test_conditionals_in_rfc_order():
    assert ask(if_none_match=TAG)[0].status.startswith("304")
    assert ask(if_none_match=f'"x", W/{TAG}')[0].status.startswith("304")   # weak compare
    assert ask(if_none_match="*")[0].status.startswith("304")
    assert ask(if_none_match='"x"')[0].status == "200 OK"
    assert ask(if_modified_since=DATE)[0].status.startswith("304")
    assert ask(if_modified_since=EARLIER)[0].status == "200 OK"
    # If-None-Match wins over If-Modified-Since.
    assert ask(if_none_match='"x"', if_modified_since=DATE)[0].status == "200 OK"
    assert ask(if_match='"x"')[0].status.startswith("412")
    assert ask(if_match=TAG, range="bytes=0-0")[0].status.startswith("206")
    assert ask(if_unmodified_since=EARLIER)[0].status.startswith("412")
    assert ask(if_unmodified_since=DATE)[0].status == "200 OK"
    assert ask(if_modified_since="not a date")[0].status == "200 OK"
    a, h = ask(if_none_match=TAG)
    assert a.count == 0 and h["ETag"] == TAG and "Content-Length" not in h


def test_etag_changes_with_the_file():
    assert fileanswer.etag(st(mtime=MTIME + 1)) != TAG and fileanswer.etag(st(size=1)) != TAG


def test_content_type():
    assert fileanswer.content_type("a.css") == "text/css; charset=utf-8"
    assert fileanswer.content_type("a.png") == "image/png"
    assert fileanswer.content_type("noext") == "application/octet-stream"
