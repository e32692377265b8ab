"""Apps for the HTTP/2 tests (tests/test_http2.py), in-process and through the CLI.

`app` routes by PATH_INFO; `file_app(directory)` serves files of a directory
through wsgi.file_wrapper.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from urllib.parse import parse_qs

ENVIRON_KEYS = ("SERVER_PROTOCOL", "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "HTTP_HOST",
                "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme", "HTTPS", "HTTP_COOKIE",
                "CONTENT_LENGTH", "CONTENT_TYPE", "HTTP_USER_AGENT", "HTTP_X_TEST")


def pattern(n: int) -> bytes:
    """`n` bytes that are not one repeated byte (a misplaced frame shows in the digest)."""
    block = bytes(range(256)) * 64 + b"ktlswsgi"  # 16392: not a multiple of any frame size
    return (block * (n // len(block) + 1))[:n]


def _query(environ) -> dict:
    return {k: v[0] for k, v in parse_qs(environ.get("QUERY_STRING", "")).items()}


def _reply(start_response, body: bytes, status: str = "200 OK", ctype="text/plain", extra=()):
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            *extra])
    return [body]


def app(environ, start_response):
    path = environ["PATH_INFO"]
    q = _query(environ)
    if path == "/environ":
        seen = {k: environ.get(k) for k in ENVIRON_KEYS}
        return _reply(start_response, json.dumps(seen).encode(), ctype="application/json")
    if path == "/sha256":
        # Reads the body in `chunk`-byte reads, sleeping `delay` s between them.
        chunk = int(q.get("chunk", 65536))
        delay = float(q.get("delay", 0))
        h = hashlib.sha256()
        n = 0
        stream = environ["wsgi.input"]
        while True:
            data = stream.read(chunk)
            if not data:
                break
            h.update(data)
            n += len(data)
            if delay:
                time.sleep(delay)
        body = json.dumps({"length": n, "sha256": h.hexdigest()}).encode()
        return _reply(start_response, body, ctype="application/json")
    if path == "/no-read":
        return _reply(start_response, b"body not read\n")
    if path == "/bytes":
        n = int(q.get("n", 1024))
        return _reply(start_response, pattern(n), ctype="application/octet-stream")
    if path == "/head":
        return _reply(start_response, pattern(1234), ctype="application/octet-stream")
    if path == "/204":
        start_response("204 No Content", [])
        return [b"a 204 has no content"]   # the server must not frame it
    if path == "/304":
        start_response("304 Not Modified", [("ETag", '"v1"')])
        return [b"a 304 has no content"]
    if path == "/304-with-length":
        # RFC 9110 8.6: a 304 may carry the Content-Length a 200 would have had.
        start_response("304 Not Modified", [("ETag", '"v1"'), ("Content-Length", "1234")])
        return []
    if path == "/hop-by-hop":
        return _reply(start_response, b"hop\n", extra=[
            ("Connection", "close"), ("Keep-Alive", "timeout=5"),
            ("Transfer-Encoding", "chunked"), ("Upgrade", "h2c"),
            ("Proxy-Connection", "keep-alive"), ("X-Kept", "yes")])
    if path == "/slow":
        # `n` chunks of `size` bytes, `delay` s apart (a response that takes its time).
        n, size, delay = int(q.get("n", 10)), int(q.get("size", 4096)), float(q.get("delay", 0.1))
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(n * size))])

        def body():
            for i in range(n):
                if i:
                    time.sleep(delay)
                yield pattern(size)
        return body()
    return _reply(start_response, b"hello over h2\n")


def file_app(directory: str):
    def serve_file(environ, start_response):
        path = os.path.join(directory, environ["PATH_INFO"].lstrip("/"))
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 65536)
    return serve_file
