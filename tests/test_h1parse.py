"""The C request-head parser (ktlswsgi/_csrc/h1parse.c, `--http c`) on its own:
what it accepts and returns, what it hands back to h11 (None), its limits at
the boundary, and its source compiling cleanly with warnings as errors.
tests/test_http1_parsers.py holds it to h11 inside the driver;
tests/fuzz/fuzz_h1parse.py fuzzes it."""
from __future__ import annotations

import os
import shutil
import subprocess
import sysconfig

import pytest

from ktlswsgi import http1

_h1parse = http1._h1parse
pytestmark = pytest.mark.skipif(_h1parse is None, reason="ktlswsgi._h1parse not built")

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCE = os.path.join(ROOT, "ktlswsgi", "_csrc", "h1parse.c")
LIMITS = (4094, 100, 8190, 64 * 1024)
H = b"Host: x\r\n"


def parse(head: bytes, limits=LIMITS):
    return _h1parse.parse(head, *limits)


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
        _h1parse.parse("GET / HTTP/1.1\r\n\r\n", *LIMITS)


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


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_source_compiles_with_warnings_as_errors(tmp_path):
    cmd = ["gcc", "-std=gnu11", "-O2", "-c", "-fPIC", "-Werror", "-Wall", "-Wextra", "-Wshadow",
           "-Wstrict-prototypes", "-Wformat=2", "-I", sysconfig.get_paths()["include"],
           SOURCE, "-o", str(tmp_path / "h1parse.o")]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
