"""Shared fixtures: a real server on an ephemeral loopback port.

`serve(app, **config)` runs ktlswsgi in this process (reactor on its own
thread) so tests can read its counters; `ktlswsgi_cli(...)` runs the real
command line as a subprocess.
"""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from ktlswsgi.config import Bind, Config
from ktlswsgi.server import Server, tls_transport_factory


class Running:
    def __init__(self, server: Server, thread: threading.Thread):
        self.server = server
        self.thread = thread
        addr = server.addresses[0]
        self.host, self.port = addr[0], addr[1]
        self.url = f"{'https' if server.config.tls else 'http'}://{self.host}:{self.port}"

    @property
    def counters(self):
        return self.server.counters

    def connect(self, timeout: float = 10.0) -> socket.socket:
        return socket.create_connection((self.host, self.port), timeout=timeout)

    def wait_idle(self, timeout: float = 5.0) -> None:
        """Wait until the pool has nothing running or queued."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.server.pool.busy == 0 and self.server.pool.queued == 0:
                return
            time.sleep(0.01)
        raise AssertionError("workers still busy")


@contextlib.contextmanager
def running_server(app, **overrides):
    """A server in this process; `tls=True` (+ certfile/keyfile) serves HTTPS."""
    cfg = Config(binds=[Bind.parse("127.0.0.1:0")], **overrides).validate()
    factory, scheme = None, "http"
    if cfg.tls:
        factory, scheme = tls_transport_factory(cfg), "https"
    server = Server(cfg, app, transport_factory=factory, scheme=scheme)
    thread = threading.Thread(target=server.run, kwargs={"install_signals": False}, daemon=True)
    thread.start()
    assert server.started.wait(5)
    try:
        yield Running(server, thread)
    finally:
        server.stop()
        thread.join(15)
        assert not thread.is_alive(), "server did not stop"


@pytest.fixture
def serve():
    stack = contextlib.ExitStack()

    def start(app, **overrides) -> Running:
        return stack.enter_context(running_server(app, **overrides))

    with stack:
        yield start


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {port}")


@pytest.fixture
def ktlswsgi_cli(tmp_path):
    procs = []

    def start(*args, cwd=None, env=None, wait=True):
        port = free_port()
        e = dict(os.environ, PYTHONPATH=os.path.dirname(__file__) + os.pathsep + os.environ.get("PYTHONPATH", ""))
        if env:
            e.update(env)
        proc = subprocess.Popen([sys.executable, "-m", "ktlswsgi", "-b", f"127.0.0.1:{port}", *args],
                                cwd=cwd or tmp_path, env=e, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
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


class _KeepOpen:
    """A buffered reader that survives HTTPResponse closing it (pipelining)."""

    def __init__(self, f):
        self._f = f

    def __getattr__(self, name):
        return getattr(self._f, name)

    def close(self):
        pass


class _FileSock:
    def __init__(self, f):
        self._f = f

    def makefile(self, *args, **kwargs):
        return self._f


def response_reader(sock: socket.socket):
    """A reader for successive responses on one raw socket (keep-alive, pipelining)."""
    return _KeepOpen(sock.makefile("rb"))


def read_response(reader, method: str = "GET"):
    """(status, headers with lower-case names, body) of the next response."""
    import http.client
    r = http.client.HTTPResponse(_FileSock(reader), method=method)
    r.begin()
    body = r.read()
    return r.status, {k.lower(): v for k, v in r.getheaders()}, body


def recv_until_closed(sock: socket.socket, timeout: float = 10.0) -> bytes:
    sock.settimeout(timeout)
    chunks = []
    while True:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            break
        if not data:
            break
        chunks.append(data)
    return b"".join(chunks)


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


def tls_client_context(cert_pair, version=None):
    import ssl
    ctx = ssl.create_default_context(cafile=cert_pair[0])
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx
