"""The app for the process-model tests (tests/test_arbiter.py), run by `python -m ktlswsgi`.

`/pid`: the worker's PID (which process answered); `/uid`: its uid and the
master's (parent's) uid; `/download`: the file named by
$KTLSWSGI_TEST_DOWNLOAD through `wsgi.file_wrapper`; `/spin`: catastrophic
regex backtracking, which holds the GIL inside C for far longer than any
test (the worker's reactor stops; only --timeout ends it); `/slow?MS`:
sleeps in the worker thread; `/read`: reads the whole request body (a slow
client keeps the worker thread waiting).  Anything else: a short body.
"""
from __future__ import annotations

import os
import re

from apps.signal_apps import _short, app as signal_app


def app(environ, start_response):
    """The process-model routes; the rest (/download, /slow, pong) are signal_apps'."""
    path = environ["PATH_INFO"]
    if path == "/pid":
        return _short(start_response, str(os.getpid()).encode())
    if path == "/uid":
        return _short(start_response, f"{os.getuid()} {os.getppid()}".encode())
    if path == "/read":
        body = environ["wsgi.input"].read()
        return _short(start_response, b"%d" % len(body))
    if path == "/spin":
        re.match(r"(a+)+$", "a" * 40 + "b")   # ~2**40 steps, the GIL held throughout
        return _short(start_response, b"unreachable\n")
    return signal_app(environ, start_response)
