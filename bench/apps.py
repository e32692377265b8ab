"""The benchmark's apps: one raw WSGI app and one Flask app with the same routes.

Routes (both apps):
  /tiny          b"ok" (dynamic)
  /16k           16 KiB made per request (dynamic)
  /range/<name>  (Flask only) send_file with conditional requests on: a Range
                 request gets a 206 (bench/files.py's range rows)
  /file/<name>   a static file from $BENCH_STATIC_DIR with Content-Length:
                 raw app through environ['wsgi.file_wrapper'] (501 with a reason
                 when the server offers none: that case is then "unsupported"),
                 Flask through send_file (which itself uses wsgi.file_wrapper when
                 the server has one, else iterates the file).
  /page          (Flask only, for locust) a small rendered HTML page
  /api/items     (Flask only, for locust) a JSON document

Every server under test loads `bench.apps:raw_app` or `bench.apps:flask_app`.
"""
from __future__ import annotations

import os
import random

STATIC_DIR = os.environ.get("BENCH_STATIC_DIR", "/tmp/ktlswsgi-bench-static")

# Static files made by bench.__main__ (name -> size).
STATIC_FILES = {"1b": 1, "16k": 16 * 1024, "64k": 64 * 1024, "1m": 1024 * 1024,
                "64m": 64 * 1024 * 1024}

_16K = 16 * 1024


def make_static_files(directory: str) -> dict:
    """Write the static files (incompressible bytes) into directory; -> name: path."""
    os.makedirs(directory, exist_ok=True)
    rnd = random.Random(1234)
    out = {}
    for name, size in STATIC_FILES.items():
        path = os.path.join(directory, name)
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as f:
                f.write(rnd.randbytes(size))
        out[name] = path
    return out


def _dynamic_16k() -> bytes:
    # Built per request so it is dynamic work, not a cached constant.
    return b"".join([b"%08x" % i for i in range(_16K // 8)])


def raw_app(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/tiny":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]
    if path == "/16k":
        body = _dynamic_16k()
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    if path.startswith("/file/"):
        name = path[len("/file/"):]
        if name not in STATIC_FILES:
            start_response("404 Not Found", [("Content-Type", "text/plain"),
                                             ("Content-Length", "9")])
            return [b"not found"]
        wrapper = environ.get("wsgi.file_wrapper")
        if wrapper is None:
            msg = b"no wsgi.file_wrapper in environ"
            start_response("501 Not Implemented", [("Content-Type", "text/plain"),
                                                   ("Content-Length", str(len(msg)))])
            return [msg]
        f = open(os.path.join(STATIC_DIR, name), "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return wrapper(f, 64 * 1024)
    start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "9")])
    return [b"not found"]


def _make_flask_app():
    try:
        from flask import Flask, Response, abort, jsonify, render_template_string, send_file
    except ImportError:  # the raw app still works without Flask
        return None

    app = Flask("bench")
    page_tpl = (
        "<!doctype html><html><head><title>{{ title }}</title></head><body>"
        "<h1>{{ title }}</h1><ul>{% for it in items %}<li><a href='/file/{{ it.file }}'>"
        "{{ it.name }}</a> {{ it.price }}</li>{% endfor %}</ul></body></html>")

    @app.route("/tiny")
    def tiny():
        return Response(b"ok", mimetype="text/plain")

    @app.route("/16k")
    def sixteen_k():
        return Response(_dynamic_16k(), mimetype="application/octet-stream")

    @app.route("/file/<name>")
    def file(name):
        if name not in STATIC_FILES:
            abort(404)
        return send_file(os.path.join(STATIC_DIR, name), mimetype="application/octet-stream",
                         conditional=False, etag=False, max_age=0)

    @app.route("/range/<name>")
    def ranged(name):
        if name not in STATIC_FILES:
            abort(404)
        return send_file(os.path.join(STATIC_DIR, name), mimetype="application/octet-stream",
                         conditional=True, etag=False, max_age=0)

    @app.route("/page")
    def page():
        items = [{"name": "item %d" % i, "price": "%d.%02d" % (i, i % 100),
                  "file": ("16k", "64k", "1m")[i % 3]} for i in range(40)]
        return render_template_string(page_tpl, title="Catalogue", items=items)

    @app.route("/api/items")
    def api_items():
        return jsonify([{"id": i, "name": "item %d" % i, "stock": i * 7 % 13}
                        for i in range(50)])

    return app


flask_app = _make_flask_app()
