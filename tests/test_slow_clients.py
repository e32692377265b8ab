"""Clients that cost the server while costing themselves almost nothing: slow
request bodies (HTTP/1.1 and HTTP/2).

A request body up to --body-prebuffer arrives completely before the app runs,
so a slow sender holds no worker thread; a larger one must keep up
--body-min-rate (over the whole body, after a grace of --read-timeout), else
408.  Each test shows a fresh client served within a second while the slow
ones are connected.
"""
from __future__ import annotations

import socket
import threading
import time

from support import recv_until_closed

THREADS = 4


def app(environ, start_response):
    body = environ["wsgi.input"].read()
    out = b"read %d\n" % len(body)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(out)))])
    return [out]


def timed_get(port: int) -> tuple[float, bytes]:
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = recv_until_closed(s)
    return time.monotonic() - started, reply


def test_slow_small_bodies_hold_no_worker_thread(serve):
    srv = serve(app, threads=THREADS, read_timeout_s=30)
    slow = []
    try:
        for _ in range(THREADS + 4):   # more slow senders than threads
            s = socket.create_connection((srv.host, srv.port), timeout=10)
            s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
            slow.append(s)
        deadline = time.monotonic() + 5
        while srv.counters.requests < THREADS + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert srv.counters.requests == THREADS + 4
        for _ in range(3):
            took, reply = timed_get(srv.port)
            assert reply.startswith(b"HTTP/1.1 200 "), reply[:60]
            assert took < 1.0, took
        srv.wait_idle(2.0)   # raises if a slow sender holds a worker thread
        # The slow bodies still complete and run normally.
        for s in slow:
            s.sendall(b"y" * 999)
        for s in slow:
            reply = s.recv(4096)
            assert reply.startswith(b"HTTP/1.1 200 ") and reply.endswith(b"read 1000\n"), reply
    finally:
        for s in slow:
            s.close()


def test_large_body_below_the_minimum_rate_is_408(serve):
    # A body past --body-prebuffer starts the app; then it must keep up the rate.
    srv = serve(app, read_timeout_s=1, body_prebuffer_bytes=1024, body_min_rate=500)
    with socket.create_connection((srv.host, srv.port), timeout=15) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1024)
        started = time.monotonic()
        s.settimeout(0.2)
        reply = b""
        # 10 bytes every 0.2 s: never a 1 s stall, but 50 bytes/s.
        while time.monotonic() - started < 12:
            try:
                s.sendall(b"y" * 10)
            except OSError:
                break
            try:
                data = s.recv(4096)
            except (socket.timeout, TimeoutError):
                continue
            if not data:
                break
            reply += data
        took = time.monotonic() - started
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    # 1 s of grace plus 1024 bytes at 500 B/s, a little more for what arrived since.
    assert 2.0 < took < 8.0, took


def test_small_body_that_stalls_is_408_without_the_app(serve):
    ran = []

    def counting_app(environ, start_response):
        ran.append(environ["PATH_INFO"])
        return app(environ, start_response)

    srv = serve(counting_app, read_timeout_s=1)
    with socket.create_connection((srv.host, srv.port), timeout=10) as s:
        s.sendall(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
        reply = recv_until_closed(s)
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:80]
    assert ran == []


def test_http2_slow_streams_hold_no_worker_thread(serve_tls, cert_pair):
    from hyperframe.frame import DataFrame
    from test_http2_limits import H2Wire
    srv = serve_tls(app, threads=THREADS, read_timeout_s=30)
    c = H2Wire(srv.port, cert_pair)
    try:
        c.settle()
        for i in range(THREADS + 4):   # one connection, more slow streams than threads
            sid = 1 + 2 * i
            c.request(sid, "/up", method="POST", end_stream=False,
                      extra=[("content-length", "1000")])
            c.send_frames(DataFrame(sid, data=b"x"))
        deadline = time.monotonic() + 5
        while srv.counters.h2_streams < THREADS + 4 and time.monotonic() < deadline:
            time.sleep(0.01)
        fresh = H2Wire(srv.port, cert_pair)
        try:
            started = time.monotonic()
            r = fresh.get(1, "/")
            assert r.status == 200 and time.monotonic() - started < 1.0
        finally:
            fresh.close()
        srv.wait_idle(2.0)   # raises if a slow stream holds a worker thread
        for i in range(THREADS + 4):
            sid = 1 + 2 * i
            c.send_frames(DataFrame(sid, data=b"y" * 999, flags=["END_STREAM"]))
        for i in range(THREADS + 4):
            r = c.response(1 + 2 * i)
            assert r.status == 200 and bytes(r.body) == b"read 1000\n", c.summary()
    finally:
        c.close()


class SilentHerd:
    """`n` TCP connections to a TLS port that never send a byte, each renewed
    every `renew_s` (inside the handshake timeout), from `source` (an address
    of the loopback network)."""

    def __init__(self, port: int, n: int, renew_s: float, source: str = "127.0.0.1"):
        self.port, self.n, self.renew_s, self.source = port, n, renew_s, source
        self.stop = threading.Event()
        self.opened = 0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _connect(self):
        s = socket.socket()
        s.bind((self.source, 0))
        s.settimeout(5)
        s.connect(("127.0.0.1", self.port))
        self.opened += 1
        return s

    def _run(self):
        socks = [(time.monotonic(), self._connect()) for _ in range(self.n)]
        try:
            while not self.stop.wait(0.05):
                now = time.monotonic()
                for i, (born, s) in enumerate(socks):
                    if now - born >= self.renew_s:
                        s.close()
                        socks[i] = (now, self._connect())
        finally:
            for _, s in socks:
                s.close()

    def close(self):
        self.stop.set()
        self.thread.join(10)


def timed_https_get(port: int, cert_pair) -> float:
    import http.client
    from support import tls_client_context
    started = time.monotonic()
    conn = http.client.HTTPSConnection("localhost", port, context=tls_client_context(cert_pair),
                                       timeout=10)
    try:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"read 0\n"
    finally:
        conn.close()
    return time.monotonic() - started


import pytest  # noqa: E402


@pytest.mark.parametrize("source", ["127.0.0.1", "127.0.0.2"])
def test_silent_connections_do_not_lock_out_new_clients(serve_tls, cert_pair, source):
    """More silent connections than handshake slots, renewed inside the
    handshake timeout (from the clients' own address, or another one):
    fresh clients are still served within a second throughout."""
    srv = serve_tls(app, max_handshakes=16, handshake_timeout_s=10.0)
    herd = SilentHerd(srv.port, 24, renew_s=3.0, source=source)
    try:
        deadline = time.monotonic() + 5
        while herd.opened < 24 and time.monotonic() < deadline:
            time.sleep(0.01)
        took = [timed_https_get(srv.port, cert_pair) for _ in range(8)]
        for _ in range(8):
            time.sleep(0.2)
            took.append(timed_https_get(srv.port, cert_pair))
    finally:
        herd.close()
    assert max(took) < 1.0, took
    assert srv.counters.handshakes_shed > 0


# -- floods of connections: logs stay readable --------------------------------------------------

def test_connection_limit_log_line_is_rate_limited(serve, caplog):
    import logging
    caplog.set_level(logging.INFO, logger="ktlswsgi")
    srv = serve(app, max_connections=4, keep_alive_s=0.05)
    stop = threading.Event()
    served = []

    def churn():
        while not stop.is_set():
            try:
                with socket.create_connection((srv.host, srv.port), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                    if s.recv(4096).startswith(b"HTTP/1.1 200"):
                        served.append(1)
            except OSError:
                pass

    threads = [threading.Thread(target=churn, daemon=True) for _ in range(12)]
    started = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(2.0)   # the flood runs for a fixed time; nothing is waited on
    stop.set()
    for t in threads:
        t.join(10)
    took = time.monotonic() - started
    lines = [r.getMessage() for r in caplog.records if "connection limit reached" in r.getMessage()]
    assert len(served) > 50, len(served)
    assert 1 <= len(lines) <= took + 1, (len(lines), lines[:3])
    assert any("more in the last" in m for m in lines[1:]) or len(lines) == 1


def test_descriptor_exhaustion_is_named_and_rate_limited(ktlswsgi_cli):
    import resource

    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    port_proc = ktlswsgi_cli("apps.log_apps:app", "--max-connections", "1000", wait=False,
                             preexec_fn=low_fd_limit)
    from support import wait_port
    wait_port(port_proc.port, proc=port_proc)
    clients = []
    try:
        for _ in range(120):
            try:
                clients.append(socket.create_connection(("127.0.0.1", port_proc.port), timeout=5))
            except OSError:
                break
        time.sleep(2.0)   # the server meets EMFILE for a fixed while
        for s in clients:
            s.close()
        clients = []
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port_proc.port), timeout=5) as s:
                    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                    if recv_until_closed(s).startswith(b"HTTP/1.1 "):
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "not serving after the descriptors came back"
            time.sleep(0.1)
    finally:
        for s in clients:
            s.close()
        port_proc.terminate()
        _, err = port_proc.communicate(timeout=20)
    emfile = [line for line in err.splitlines() if "accept failed" in line]
    assert emfile and all("EMFILE" in line for line in emfile), err[-2000:]
    assert len(emfile) <= 4, emfile
    assert "connection limit reached" not in err, err[-2000:]
