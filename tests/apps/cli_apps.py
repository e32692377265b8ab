"""Apps for the command-line tests: good, missing, not callable, factories."""
from __future__ import annotations


def app(environ, start_response):
    body = b"hello from apps.cli_apps\n"
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def make_app():
    def factory_made(environ, start_response):
        body = b"made by a factory\n"
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]
    return factory_made


def broken_factory():
    raise RuntimeError("factory cannot build the app")


not_callable = 42
