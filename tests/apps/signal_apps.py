"""The app for the signal tests (tests/test_signals.py), run by `python -m ktlswsgi`.

`/download`: the file named by $KTLSWSGI_TEST_DOWNLOAD through
`wsgi.file_wrapper` (with Content-Length), so the reactor streams it.
`/slow`: sleeps ?<milliseconds> (default 0) in the worker, then a short body:
a request that stays inside the app.
Anything else: a short body, so that keep-alive clients make the workers
hand the reactor work (a wake-up) for every request.
"""
from __future__ import annotations

import os
import time


def _short(start_response, body: bytes):
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/download":
        f = open(os.environ["KTLSWSGI_TEST_DOWNLOAD"], "rb")
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f, 64 * 1024)
    if path == "/slow":
        time.sleep(int(environ.get("QUERY_STRING") or 0) / 1000)
        return _short(start_response, b"slow\n")
    return _short(start_response, b"pong " + path.encode("latin-1") + b"\n")
