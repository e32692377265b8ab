"""The app for the log tests (tests/test_logs.py), run by `python -m ktlswsgi`.

Every response is 200 with an empty body and says, in headers, what the
access log line should hold that the client cannot know otherwise: the
worker's PID (`%(p)s`) and whether kTLS engaged (`%(ktls)s`).  `/errors?TEXT`
writes TEXT to wsgi.errors in two pieces, then a newline (a line the error
log must show whole).
"""
from __future__ import annotations

import os


def app(environ, start_response):
    if environ["PATH_INFO"] == "/errors":
        text = environ["QUERY_STRING"]
        errors = environ["wsgi.errors"]
        errors.write(text[:3])
        errors.write(text[3:] + "\n")
        errors.flush()
    start_response("200 OK", [("Content-Length", "0"),
                              ("X-Pid", str(os.getpid())),
                              ("X-Ktls", environ.get("ktlswsgi.ktls", "-"))])
    return [b""]
