"""Signals as operators and logrotate send them, to a real `python -m ktlswsgi` master.

HUP (reload), USR1, TTIN, TTOU and WINCH never cut a transfer in flight nor
stop the server; USR1 and HUP make the workers write the access log to a new
file at its path; TERM stops gracefully, INT and QUIT (and a second TERM)
stop at once, each with exit 0; and a storm of signals while threads wake
the worker's reactor constantly does not deadlock it (the handler once took
the lock the reactor held in _drain_wake).  USR2 and the process model:
tests/test_arbiter.py.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

from ktlswsgi.reactor import Reactor

DOWNLOAD_MIN_BYTES = 5 * 1024 * 1024
CLIENT_RCVBUF_BYTES = 64 * 1024
FIRST_READ_BYTES = 64 * 1024


class ServerProc:
    """A server subprocess whose stderr a thread collects, line by line."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.port = proc.port
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()

    def stderr(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def wait_log(self, text: str, start: int = 0, timeout: float = 10.0) -> int:
        """Index of the first stderr line from `start` on that contains `text`."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for i in range(start, len(self.lines)):
                    if text in self.lines[i]:
                        return i
                left = deadline - time.monotonic()
                if left <= 0 or self.proc.poll() is not None:
                    raise AssertionError(f"no stderr line with {text!r} (exit code "
                                         f"{self.proc.poll()}); stderr:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def send(self, sig: int, expect: str) -> str:
        """Send `sig`, wait for the stderr line that says it was handled, return it."""
        with self._cond:
            start = len(self.lines)
        self.proc.send_signal(sig)
        i = self.wait_log(expect, start)
        with self._cond:
            return self.lines[i]

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0):
        """Send `sig` (None: just wait); return (exit code, seconds to exit)."""
        started = time.monotonic()
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"no exit {timeout}s after {sig!r}; stderr:\n{self.stderr()}")
        took = time.monotonic() - started
        self._reader.join(5)
        return code, took


def download_file(tmp_path) -> tuple[str, str]:
    """(path, sha256) of a file too big to fit in the server's socket buffer.

    5 MiB, or more where the kernel lets a socket buffer hold that much: the
    server must still hold part of the body when the client stops reading.
    """
    with open("/proc/sys/net/ipv4/tcp_wmem") as f:
        wmem_max_bytes = int(f.read().split()[2])
    size = max(DOWNLOAD_MIN_BYTES, wmem_max_bytes + 2 * 1024 * 1024)
    data = os.urandom(size)
    path = tmp_path / "download.bin"
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def start(ktlswsgi_cli, tmp_path, *args, download: str | None = None) -> ServerProc:
    env = {"KTLSWSGI_TEST_DOWNLOAD": download} if download else None
    srv = ServerProc(ktlswsgi_cli("apps.signal_apps:app", *args, env=env))
    # The port answers as soon as the master binds it; the handlers are
    # installed before "master ...", and a worker is serving after "ready".
    srv.wait_log("master ")
    return srv


def get(port: int, path: str, timeout: float = 10.0) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        assert r.status == 200
        return r.read()
    finally:
        conn.close()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks, got = [], 0
    while got < n:
        data = sock.recv(min(n - got, 256 * 1024))
        if not data:
            raise ConnectionError(f"closed after {got} of {n} bytes")
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def open_download(port: int):
    """Start GET /download with a small receive buffer; read the head and 64 KiB.

    Returns (socket, content length, body bytes read so far).  The client then
    stops reading, so the server holds the rest of the body.
    """
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF_BYTES)
    sock.settimeout(20)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        assert data, "closed before the response head"
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    if len(body) < FIRST_READ_BYTES:
        body += recv_exactly(sock, FIRST_READ_BYTES - len(body))
    return sock, length, body


def access_lines(path) -> list[str]:
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def wait_access_line(path, text: str, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        lines = access_lines(path)
        if any(text in line for line in lines):
            return lines
        assert time.monotonic() < deadline, f"no access log line with {text!r} in {path}: {lines}"
        time.sleep(0.02)


# -- the harmless signals, in the middle of a download --------------------------------------------
HARMLESS = [
    pytest.param(signal.SIGHUP, "SIGHUP: reloading", id="HUP"),
    pytest.param(signal.SIGUSR1, "SIGUSR1: reopened log files", id="USR1"),
    pytest.param(signal.SIGTTIN, "SIGTTIN: 2 workers", id="TTIN"),
    pytest.param(signal.SIGTTOU, "SIGTTOU: 1 worker", id="TTOU"),
    pytest.param(signal.SIGWINCH, "SIGWINCH ignored", id="WINCH"),
]


@pytest.mark.parametrize("sig,handled", HARMLESS)
def test_signal_during_a_download_neither_cuts_it_nor_stops_the_server(
        ktlswsgi_cli, tmp_path, sig, handled):
    path, digest = download_file(tmp_path)
    access_log = tmp_path / "access.log"
    srv = start(ktlswsgi_cli, tmp_path, "--access-logfile", str(access_log),
                "--log-level", "debug", download=path)
    sock, length, body = open_download(srv.port)
    with sock:
        srv.send(sig, expect=handled)
        # The response is logged when it completes: it has not yet.
        assert not any("/download" in line for line in access_lines(access_log))
        body += recv_exactly(sock, length - len(body))
    assert len(body) == os.path.getsize(path)
    assert hashlib.sha256(body).hexdigest() == digest
    wait_access_line(access_log, "/download")
    assert get(srv.port, "/after") == b"pong /after\n"
    code, _ = srv.stop()
    assert code == 0, srv.stderr()


def test_sighup_during_a_tls_download_neither_cuts_it_nor_stops_the_server(
        ktlswsgi_cli, tmp_path, cert_pair):
    import ssl
    path, digest = download_file(tmp_path)
    srv = start(ktlswsgi_cli, tmp_path, "--certfile", cert_pair[0], "--keyfile", cert_pair[1],
                download=path)
    ctx = ssl.create_default_context(cafile=cert_pair[0])
    raw = socket.socket()
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, CLIENT_RCVBUF_BYTES)
    raw.settimeout(20)
    raw.connect(("127.0.0.1", srv.port))
    with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        tls.sendall(b"GET /download HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        first = tls.recv(FIRST_READ_BYTES)
        assert first.startswith(b"HTTP/1.1 200"), first[:100]
        srv.send(signal.SIGHUP, expect="SIGHUP: reloading")
        chunks = [first]
        while True:
            try:
                data = tls.recv(256 * 1024)
            except ssl.SSLZeroReturnError:
                break
            if not data:
                break
            chunks.append(data)
    _, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert len(body) == os.path.getsize(path)
    assert hashlib.sha256(body).hexdigest() == digest
    code, _ = srv.stop()
    assert code == 0, srv.stderr()


# -- log files ------------------------------------------------------------------------------------
@pytest.mark.parametrize("sig,handled", [
    pytest.param(signal.SIGUSR1, "SIGUSR1: reopened log files", id="USR1"),
    pytest.param(signal.SIGHUP, "SIGHUP: reloading", id="HUP"),
])
def test_signal_after_logrotate_renames_the_access_log_opens_a_new_file(
        ktlswsgi_cli, tmp_path, sig, handled):
    access_log = tmp_path / "access.log"
    srv = start(ktlswsgi_cli, tmp_path, "--access-logfile", str(access_log))
    assert get(srv.port, "/before") == b"pong /before\n"
    wait_access_line(access_log, "/before")
    rotated = tmp_path / "access.log.1"
    os.rename(access_log, rotated)

    assert str(access_log) in srv.send(sig, expect=handled)
    assert get(srv.port, "/after") == b"pong /after\n"
    new = wait_access_line(access_log, "/after")
    assert len(new) == 1 and "/before" not in new[0], new
    old = access_lines(rotated)
    assert len(old) == 1 and "/before" in old[0], old
    code, _ = srv.stop()
    assert code == 0, srv.stderr()


def test_usr1_without_a_log_file_says_so_and_keeps_serving(ktlswsgi_cli, tmp_path):
    srv = start(ktlswsgi_cli, tmp_path, "--access-logfile", "-")
    srv.send(signal.SIGUSR1, expect="SIGUSR1: reopened log files: none (stderr is not reopened)")
    assert get(srv.port, "/x") == b"pong /x\n"
    code, _ = srv.stop()
    assert code == 0, srv.stderr()


# -- stopping -------------------------------------------------------------------------------------
def test_term_lets_a_download_in_flight_finish_then_exits_0(ktlswsgi_cli, tmp_path):
    path, digest = download_file(tmp_path)
    srv = start(ktlswsgi_cli, tmp_path, download=path)
    sock, length, body = open_download(srv.port)
    with sock:
        srv.send(signal.SIGTERM, expect="shutting down: 1 connections open")
        body += recv_exactly(sock, length - len(body))
    assert hashlib.sha256(body).hexdigest() == digest
    code, _ = srv.stop(None)
    assert code == 0, srv.stderr()


@pytest.mark.parametrize("signals", [
    pytest.param([signal.SIGINT], id="INT"),
    pytest.param([signal.SIGQUIT], id="QUIT"),
    pytest.param([signal.SIGTERM, signal.SIGTERM], id="TERM-TERM"),
    pytest.param([signal.SIGTERM, signal.SIGINT], id="TERM-INT"),
])
def test_quick_stop_aborts_a_stalled_download_and_exits_0_at_once(ktlswsgi_cli, tmp_path, signals):
    path, _ = download_file(tmp_path)
    # A graceful stop would wait 60 s for this client, which reads nothing more.
    srv = start(ktlswsgi_cli, tmp_path, "--graceful-timeout", "60", download=path)
    sock, length, body = open_download(srv.port)
    with sock:
        *first, last = signals
        for sig in first:
            srv.send(sig, expect="shutting down: 1 connections open")
            assert srv.proc.poll() is None
        code, took = srv.stop(last)
        assert code == 0, srv.stderr()
        assert took < 5, took
        assert "quick stop: aborting 1 connections" in srv.stderr()
        with pytest.raises((ConnectionError, OSError)):
            recv_exactly(sock, length - len(body))


# -- the deadlock: signals while workers wake the reactor -----------------------------------------
def test_signal_storm_while_workers_wake_the_reactor_does_not_deadlock(ktlswsgi_cli, tmp_path):
    srv = start(ktlswsgi_cli, tmp_path, "--threads", "4")
    stop = threading.Event()
    done = [0] * 4
    errors: list = []

    def client(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=10)
        try:
            while not stop.is_set():
                conn.request("GET", f"/c{i}")   # keep-alive: one connection per client
                assert conn.getresponse().read() == f"pong /c{i}\n".encode()
                done[i] += 1
        except Exception as exc:
            errors.append(f"client {i}: {exc!r}")
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    # USR1 goes on from the master to the worker, whose reactor handles it.
    storm = [signal.SIGWINCH, signal.SIGUSR1]
    try:
        for n in range(300):
            srv.proc.send_signal(storm[n % len(storm)])
            time.sleep(0.02)   # pacing, not synchronisation
            assert srv.proc.poll() is None, f"died after {n + 1} signals:\n{srv.stderr()}"
            assert not errors, f"the server stopped answering after {n + 1} signals: {errors}"
    finally:
        stop.set()
        for t in threads:
            t.join(15)
    assert not errors, f"the server stopped answering: {errors}"
    assert not any(t.is_alive() for t in threads), "a client is stuck: the reactor hangs"
    assert min(done) > 0, done

    # Still answering promptly, still handling signals.
    t0 = time.monotonic()
    assert get(srv.port, "/last", timeout=5) == b"pong /last\n"
    assert time.monotonic() - t0 < 2
    srv.send(signal.SIGUSR1, expect="SIGUSR1: reopened log files")
    code, took = srv.stop()
    assert code == 0, srv.stderr()
    assert took < 5, took


# -- the reactor's signal entry point, in this process ---------------------------------------------
def test_reactor_runs_the_signal_callback_on_its_thread_and_close_restores_the_handler():
    previous = signal.getsignal(signal.SIGUSR2)
    reactor = Reactor()
    ran = []
    ran_event = threading.Event()

    def callback():
        ran.append(threading.current_thread())
        ran_event.set()

    reactor.add_signal_handler(signal.SIGUSR2, callback)
    thread = threading.Thread(target=reactor.run, daemon=True)
    thread.start()
    try:
        os.kill(os.getpid(), signal.SIGUSR2)
        assert ran_event.wait(5), "the callback did not run"
        assert ran == [thread]
    finally:
        reactor.call_soon_threadsafe(reactor.stop)
        thread.join(5)
        reactor.close()
    assert signal.getsignal(signal.SIGUSR2) == previous
