"""The app for the graceful-GOAWAY test of tests/test_http2_limits.py, run by `python -m ktlswsgi`.

`/hold`: creates the file named by $KTLSWSGI_H2_STARTED (so the test knows
the request is inside the app), then waits (at most 20 s) until the file
named by $KTLSWSGI_H2_RELEASE exists, then answers 200 with `HOLD_BODY_BYTES`
bytes.  Anything else: a short 200.
"""
from __future__ import annotations

import os
import time

HOLD_BODY_BYTES = 40000
HOLD_MAX_S = 20.0


def _body() -> bytes:
    return bytes(i % 251 for i in range(HOLD_BODY_BYTES))


def app(environ, start_response):
    if environ["PATH_INFO"] == "/hold":
        with open(os.environ["KTLSWSGI_H2_STARTED"], "w"):
            pass
        release = os.environ["KTLSWSGI_H2_RELEASE"]
        deadline = time.monotonic() + HOLD_MAX_S
        while not os.path.exists(release) and time.monotonic() < deadline:
            time.sleep(0.01)
        body = _body()
    else:
        body = b"ok\n"
    start_response("200 OK", [("Content-Type", "application/octet-stream"),
                              ("Content-Length", str(len(body)))])
    return [body]
