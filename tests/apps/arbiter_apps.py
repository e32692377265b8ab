"""The app for the process-model tests (tests/test_arbiter.py), run by `python -m ktlswsgi`.

`/pid`: the worker's PID (which process answered); `/uid`: its uid and the
master's (parent's) uid; `/download`: the file named by
$KTLSWSGI_TEST_DOWNLOAD through `wsgi.file_wrapper`; `/spin`: catastrophic
regex backtracking, which holds the GIL inside C for far longer than any
test (the worker's reactor stops; only --timeout ends it); `/slow?MS`:
sleeps in the worker thread.  Anything else: a short body.
"""
from __future__ import annotations

import os
import re
import time


def _short(start_response, body: bytes):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _short(start_response, str(os.getpid()).encode())
    if path == "/uid":
        return _short(start_response, f"{os.getuid()} {os.getppid()}".encode())
    if path == "/download":
        f = open(os.environ["KTLSWSGI_TEST_DOWNLOAD"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f, 256 * 1024)
    if path == "/spin":
        re.match(r"(a+)+$", "a" * 40 + "b")   # ~2**40 steps, the GIL held throughout
        return _short(start_response, b"unreachable\n")
    if path == "/slow":
        time.sleep(int(environ.get("QUERY_STRING") or 0) / 1000)
        return _short(start_response, b"slow\n")
    return _short(start_response, b"pong " + path.encode("latin-1") + b"\n")
