"""Small raw WSGI apps around `wsgi.file_wrapper` and generators.

Each factory returns an app with a `closes` list: the name of the thread on
which the response iterable's close() ran, one entry per call.
"""
from __future__ import annotations

import threading


def _record_close(target, closes: list):
    """Make target.close() record the calling thread's name, then close."""
    inner = getattr(target, "close", None)

    def close():
        closes.append(threading.current_thread().name)
        if inner is not None:
            inner()
    target.close = close
    return target


def file_app(path: str, *, seek: int = 0, content_length: int | None | str = "size",
             blksize: int = 8192):
    """Serve `path` through wsgi.file_wrapper from position `seek`.

    content_length: "size" = bytes left from `seek` (as measured at request
    time), None = no Content-Length header, an int = that value.
    """
    closes: list = []

    def app(environ, start_response):
        f = open(path, "rb")
        f.seek(seek)
        headers = [("Content-Type", "application/octet-stream")]
        if content_length == "size":
            import os
            headers.append(("Content-Length", str(os.fstat(f.fileno()).st_size - seek)))
        elif content_length is not None:
            headers.append(("Content-Length", str(content_length)))
        start_response("200 OK", headers)
        return _record_close(environ["wsgi.file_wrapper"](f, blksize), closes)

    app.closes = closes
    return app


def filelike_app(make_filelike, content_length: int | None = None):
    """Serve whatever file-like `make_filelike()` returns, through wsgi.file_wrapper."""
    closes: list = []

    def app(environ, start_response):
        headers = [("Content-Type", "application/octet-stream")]
        if content_length is not None:
            headers.append(("Content-Length", str(content_length)))
        start_response("200 OK", headers)
        return _record_close(environ["wsgi.file_wrapper"](make_filelike(), 8192), closes)

    app.closes = closes
    return app


class _Iterable:
    """A body iterable with a close() that records its thread."""

    def __init__(self, chunks, closes: list):
        self._chunks = chunks
        self.closes = closes

    def __iter__(self):
        return iter(self._chunks)

    def close(self):
        self.closes.append(threading.current_thread().name)


def generator_app(total_bytes: int, chunk_bytes: int = 64 * 1024):
    """`total_bytes` in fresh `chunk_bytes` chunks (each a new bytes object)."""
    closes: list = []
    produced = [0]

    def chunks():
        for i in range(total_bytes // chunk_bytes):
            produced[0] += chunk_bytes
            yield i.to_bytes(8, "big") * (chunk_bytes // 8)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(total_bytes))])
        return _Iterable(chunks(), closes)

    app.closes = closes
    app.produced = produced
    return app


def iterating_middleware(inner):
    """Middleware that consumes the inner body itself (so no fast path) and closes it."""
    def app(environ, start_response):
        result = inner(environ, start_response)

        def body():
            try:
                for chunk in result:
                    yield chunk
            finally:
                if hasattr(result, "close"):
                    result.close()
        return body()
    return app
