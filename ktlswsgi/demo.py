"""A small demo app: a dynamic page, an upload echo and a file download.

`ktlswsgi ktlswsgi.demo:app` serves it.  `/download` streams a 4 MiB file made
at first use (removed at exit) through `wsgi.file_wrapper`, so it takes the server's file path
(sendfile, SSL_sendfile or pread + SSL_write).
"""
from __future__ import annotations

import atexit
import html
import os
import tempfile
import threading

_FILE_SIZE = 4 * 1024 * 1024
_file_path = None
_file_lock = threading.Lock()


def _demo_file() -> str:
    global _file_path
    with _file_lock:
        if _file_path is None or not os.path.exists(_file_path):
            fd, path = tempfile.mkstemp(prefix="ktlswsgi-demo-", suffix=".bin")
            with os.fdopen(fd, "wb") as f:
                block = bytes(range(256)) * 4096
                for _ in range(_FILE_SIZE // len(block)):
                    f.write(block)
            atexit.register(_remove, path)
            _file_path = path
        return _file_path


def _remove(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass


def app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/download":
        f = open(_demo_file(), "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size)),
                                  ("Content-Disposition", 'attachment; filename="demo.bin"')])
        return environ["wsgi.file_wrapper"](f, 64 * 1024)
    if path == "/echo":
        body = environ["wsgi.input"].read()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path == "/":
        rows = "".join(
            f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(environ[k]))}</td></tr>"
            for k in sorted(environ) if k.isupper())
        page = (f"<!doctype html><title>ktlswsgi demo</title><h1>Hello from ktlswsgi</h1>"
                f"<p>Scheme: {html.escape(environ['wsgi.url_scheme'])}. "
                f"<a href='/download'>Download 4 MiB</a> through wsgi.file_wrapper.</p>"
                f"<table>{rows}</table>").encode()
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"),
                                  ("Content-Length", str(len(page)))])
        return [page]
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "10")])
    return [b"not found\n"]
