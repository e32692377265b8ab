"""Shared fixtures: a real server on an ephemeral loopback port.

`serve(app, **config)` runs ktlswsgi in this process (reactor on its own
thread) so tests can read its counters; `ktlswsgi_cli(...)` runs the real
command line as a subprocess; `serve_tls` serves HTTPS.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys

import pytest

from support import Running, free_port, running_server, wait_port


@pytest.fixture
def serve():
    stack = contextlib.ExitStack()

    def start(app, **overrides) -> Running:
        return stack.enter_context(running_server(app, **overrides))

    with stack:
        yield start


@pytest.fixture
def ktlswsgi_cli(tmp_path):
    procs = []

    def start(*args, cwd=None, env=None, wait=True, preexec_fn=None):
        port = free_port()
        e = dict(os.environ, PYTHONPATH=os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if env:
            e.update(env)
        proc = subprocess.Popen([sys.executable, "-m", "ktlswsgi", "-b", f"127.0.0.1:{port}", *args],
                                cwd=cwd or tmp_path, env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, preexec_fn=preexec_fn)
        procs.append(proc)
        proc.port = port
        if wait:
            wait_port(port, proc=proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@pytest.fixture(scope="session")
def cert_pair(tmp_path_factory):
    """(certfile, keyfile): a self-signed pair for localhost/127.0.0.1, made by our binding."""
    from ktlswsgi.tls.selfsigned import ensure_selfsigned
    return ensure_selfsigned(str(tmp_path_factory.mktemp("certs")))


@pytest.fixture
def serve_tls(serve, cert_pair):
    """serve_tls(app, transport="memory"|"socket", **config) -> Running over HTTPS."""
    def start(app, transport="memory", **overrides):
        return serve(app, tls=True, certfile=cert_pair[0], keyfile=cert_pair[1],
                     tls_transport=transport, **overrides)
    return start

