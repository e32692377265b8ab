"""Helpers for the tests: an in-process server, raw-socket HTTP readers, ports.

Imported by test modules as `from support import ...` (a name no other
test directory uses, unlike `conftest`).
"""
from __future__ import annotations

import contextlib
import socket
import threading
import time

from ktlswsgi.config import Config
from ktlswsgi.server import Server
from ktlswsgi.tls import tls_transport_factory


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
        """Wait until the pool has nothing running or queued (clean-ups included)."""
        pool = self.server.pool
        wait_until(lambda: pool.busy == 0 and pool.pending == 0, timeout, "an idle pool")


@contextlib.contextmanager
def running_server(app, **overrides):
    """A server in this process; `tls=True` (+ certfile/keyfile) serves HTTPS."""
    cfg = Config(bind=["127.0.0.1:0"], **overrides).validate()
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


def wait_until(predicate, timeout: float = 10.0, what: str = "the condition",
               step: float = 0.01):
    """Poll `predicate()` until it returns something true, and return that;
    after `timeout` seconds, AssertionError naming `what`.  The socket tests'
    one polling helper: they wait on a condition, never on a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(step)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, proc=None) -> None:
    def listening():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"server exited early: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return True
        except OSError:
            return False
    wait_until(listening, timeout, f"a listener on {port}", step=0.05)


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


def tls_client_context(cert_pair, version=None):
    import ssl
    ctx = ssl.create_default_context(cafile=cert_pair[0])
    if version == "1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    elif version == "1.3":
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    return ctx

