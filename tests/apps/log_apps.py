"""The app for the log tests (tests/test_logs.py), run by `python -m ktlswsgi`.

Every response is 200 with an empty body and says, in headers, what the
access log line should hold that the client cannot know otherwise: the
worker's PID (`%(p)s`) and whether kTLS engaged (`%(ktls)s`).
"""
from __future__ import annotations

import os


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "0"),
                              ("X-Pid", str(os.getpid())),
                              ("X-Ktls", environ.get("ktlswsgi.ktls", "-"))])
    return [b""]
