"""The pre-fork process model, with real processes and real signals (arbiter.py).

A `python -m ktlswsgi` master forks `-w` workers that are its children and
alone answer requests; a worker that is killed, stuck in C holding the GIL
(--timeout: SIGABRT with faulthandler's stacks, then SIGKILL) or worn out
(--max-requests) is replaced, and no keep-alive client sees a request fail
across the recycle.  Five HUPs under 16 busy keep-alive connections (and
under h2load, where installed) fail no request and leave only new workers; a
HUP whose app no longer imports keeps the old workers (one error line), and
the next HUP after the fix replaces them; TERM lets a 50 MiB download finish;
TTIN/TTOU change the worker count; a bad app exits 1 with one line and no
restart loop (also with --preload); --pid, -c/--config (gunicorn aliases,
flags override the file, HUP re-reads it), USR2 (a new master on the same
listeners, the pidfile's .oldbin), --reuse-port (every worker accepts; the
spread of both modes is printed), systemd socket activation (LISTEN_FDS),
--user and --reload.  The signals' effect on transfers: tests/test_signals.py.
"""
from __future__ import annotations

import collections
import hashlib
import http.client
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time

import pytest

from support import free_port, wait_until

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
APP = "apps.arbiter_apps:app"


# -- helpers --------------------------------------------------------------------------------------
def cli_env(extra: dict | None = None) -> dict:
    env = dict(os.environ, PYTHONPATH=TESTS_DIR + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("LISTEN_FDS", None)
    env.pop("LISTEN_PID", None)
    env.update(extra or {})
    return env


def error_lines(text: str) -> list:
    """stderr's lines that report an error (all but INFO/DEBUG/WARNING log lines)."""
    return [line for line in text.splitlines() if line.strip()
            and not any(f"] [{lvl}] " in line for lvl in ("INFO", "DEBUG", "WARNING"))]


def children_of(pid: int) -> set:
    """The PIDs whose parent is `pid` (its main thread forks them)."""
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(x) for x in f.read().split()}
    except (FileNotFoundError, ProcessLookupError):
        return set()


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's zombie may wait for a PID 1 that never reaps)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return False


def get(port: int, path: str = "/pid", timeout: float = 10.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def pid_of(port: int) -> int:
    status, body = get(port)
    assert status == 200, (status, body)
    return int(body)


def wait_serving(port: int, timeout: float = 15.0) -> int:
    """Wait until a worker answers /pid on a fresh connection; return its PID."""
    def attempt():
        try:
            return pid_of(port)
        except (OSError, http.client.HTTPException):
            return None
    return wait_until(attempt, timeout, f"a worker answering on port {port}", step=0.05)


def pid_counts(port: int, connections: int, threads: int = 1) -> collections.Counter:
    """Which worker answered each of `connections` fresh connections."""
    counts: collections.Counter = collections.Counter()
    lock = threading.Lock()
    errors: list = []

    def client(n: int) -> None:
        try:
            for _ in range(n):
                pid = pid_of(port)
                with lock:
                    counts[pid] += 1
        except Exception as exc:   # reported below
            errors.append(repr(exc))

    share = [connections // threads + (i < connections % threads) for i in range(threads)]
    ts = [threading.Thread(target=client, args=(n,), daemon=True) for n in share]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[:5]
    assert sum(counts.values()) == connections
    return counts


def spread_text(counts: collections.Counter) -> str:
    return " / ".join(str(n) for _, n in counts.most_common())


class Master:
    """A `python -m ktlswsgi` master; a thread collects its stderr lines.

    Started through `sh -c 'ulimit -c 0; exec ...'` (the PID stays the
    master's): the workers that --timeout aborts leave no core files.
    """

    def __init__(self, args, cwd, port=None, bind=True, env=None, argv0=None):
        self.port = port or free_port()
        cmd = argv0 or [sys.executable, "-m", "ktlswsgi"]
        if bind:
            cmd = [*cmd, "-b", f"127.0.0.1:{self.port}"]
        cmd = [*cmd, *args]
        self.proc = subprocess.Popen(["sh", "-c", 'ulimit -c 0; exec "$@"', "sh", *cmd],
                                     cwd=cwd, env=cli_env(env), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        self.lines: list[str] = []
        self.others: set = set()        # processes started on our behalf (USR2's new master)
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

    def mark(self) -> int:
        with self._cond:
            return len(self.lines)

    def find(self, pattern: str, start: int = 0) -> list:
        """The regex matches among the stderr lines from `start` on."""
        with self._cond:
            return [m for line in self.lines[start:] for m in [re.search(pattern, line)] if m]

    def wait_log(self, pattern: str, start: int = 0, timeout: float = 10.0, count: int = 1):
        """The `count`-th match of the regex in stderr lines from `start` on."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [m for line in self.lines[start:] for m in [re.search(pattern, line)] if m]
                if len(found) >= count:
                    return found[count - 1]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"no stderr line matching {pattern!r} (x{count}) in {timeout}s (exit "
                        f"code {self.proc.poll()}); stderr:\n" + "\n".join(self.lines))
                self._cond.wait(min(left, 0.2))

    def send(self, sig: int, expect: str, timeout: float = 10.0):
        start = self.mark()
        self.proc.send_signal(sig)
        return self.wait_log(expect, start, timeout)

    def children(self) -> set:
        return children_of(self.pid)

    def wait_children(self, condition, timeout: float = 15.0, what: str = "") -> set:
        """Wait until the set of worker PIDs satisfies `condition`; return it."""
        try:
            return wait_until(lambda: (lambda c: c if condition(c) else None)(self.children()),
                            timeout, f"the workers of {self.pid}: {what}")
        except AssertionError as exc:
            raise AssertionError(f"{exc} (now {self.children()}); stderr:\n{self.stderr()}") from None

    def wait_count(self, n: int, timeout: float = 15.0) -> set:
        return self.wait_children(lambda c: len(c) == n, timeout, f"{n} of them")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> int:
        """Send `sig` (None: just wait); return the exit code."""
        if sig is not None:
            self.proc.send_signal(sig)
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"no exit {timeout}s after {sig!r}; stderr:\n{self.stderr()}")
        self._reader.join(2)   # a USR2 successor may hold stderr open
        return code

    def kill_everything(self) -> None:
        """Teardown: SIGKILL this master, whatever it started, and all their workers."""
        pids = set()
        for top in {self.pid, *self.others}:
            if running(top):
                pids |= {top} | children_of(top)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.proc.poll() is None:
            self.proc.wait(10)
        wait_until(lambda: not any(running(p) for p in pids), 10, f"{pids} to die")


@pytest.fixture
def master(tmp_path):
    """master(*args, ...) -> Master, serving APP unless `app=` says otherwise."""
    started: list[Master] = []

    def start(*args, app=APP, wait=True, cwd=None, **kwargs) -> Master:
        m = Master([*args, app] if app else list(args), cwd=cwd or tmp_path, **kwargs)
        started.append(m)
        if wait:
            m.wait_log(r"master \d+: ")
        return m

    yield start
    for m in started:
        m.kill_everything()


class KeepAliveLoad:
    """`threads` keep-alive clients GETting /pid in a loop on one connection each.

    A client opens a new connection only after a response said
    `Connection: close`; any exception or non-200 counts as failed (and the
    client reconnects).  Answers are counted per PID and per `phase`.
    """

    def __init__(self, port: int, threads: int = 16, max_seconds: float = 40.0,
                 max_per_thread: int = 200_000):
        self.port = port
        self.phase = "start"
        self.sent = self.failed = self.reconnects = 0
        self.by_phase: dict = collections.defaultdict(collections.Counter)
        self.errors: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        self._max = max_per_thread
        self._threads = [threading.Thread(target=self._client, daemon=True) for _ in range(threads)]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        assert not any(t.is_alive() for t in self._threads), "a client is stuck"

    def wait_sent(self, more: int, timeout: float = 15.0) -> None:
        target = self.sent + more
        wait_until(lambda: self.sent >= target or self._stop.is_set(), timeout,
                 f"{more} more requests (sent {self.sent}, failed {self.failed})")

    def _client(self) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        for _ in range(self._max):
            if self._stop.is_set() or time.monotonic() > self._deadline:
                break
            phase = self.phase
            fresh = conn.sock is None
            try:
                conn.request("GET", "/pid")
                r = conn.getresponse()
                body = r.read()
                ok = r.status == 200
                error = None if ok else f"status {r.status}"
            except Exception as exc:
                ok, error = False, repr(exc)
                conn.close()   # and reconnect
            with self._lock:
                self.sent += 1
                self.reconnects += fresh
                if ok:
                    self.by_phase[phase][int(body)] += 1
                else:
                    self.failed += 1
                    if len(self.errors) < 10:
                        self.errors.append(f"{phase}: {error}")
        conn.close()


def download_file(tmp_path, size: int) -> tuple[str, str]:
    data = os.urandom(size)
    path = tmp_path / "download.bin"
    path.write_bytes(data)
    return str(path), hashlib.sha256(data).hexdigest()


def run_cli(*args, cwd, timeout: float = 20.0) -> subprocess.CompletedProcess:
    """`python -m ktlswsgi ARGS` to completion (one that keeps serving fails here)."""
    try:
        return subprocess.run([sys.executable, "-m", "ktlswsgi", *args], cwd=cwd, env=cli_env(),
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"ktlswsgi {' '.join(args)} did not exit within {timeout}s "
                             f"(stderr: {exc.stderr!r})") from None


# -- workers: who serves, who replaces whom --------------------------------------------------------
def test_two_workers_serve_and_are_children_of_the_master(master):
    m = master("-w", "2")
    workers = m.wait_count(2)
    m.wait_log(r"worker \d+ ready", count=2)
    counts = pid_counts(m.port, 200, threads=8)
    print(f"\nshared socket, -w 2, 200 connections from 8 threads: {spread_text(counts)}")
    assert set(counts) == workers, (counts, workers)
    assert m.pid not in counts
    for pid in workers:
        assert parent_of(pid) == m.pid
    assert m.stop() == 0, m.stderr()


def test_a_killed_worker_is_replaced_and_counted_in_the_exit_line(master):
    m = master("-w", "2")
    victim, survivor = sorted(m.wait_count(2))
    os.kill(victim, signal.SIGKILL)
    m.wait_log(rf"worker {victim} died \(signal SIGKILL\) after [\d.]+s; replacing it")
    workers = m.wait_children(lambda c: len(c) == 2 and victim not in c, what="a replacement")
    assert survivor in workers
    answered = pid_counts(m.port, 20)
    assert victim not in answered and set(answered) <= workers, answered
    assert m.stop() == 0, m.stderr()
    assert m.find(rf"master {m.pid}: exit 0 \(1 worker restarts\)"), m.stderr()


def test_five_hups_under_keepalive_load_fail_no_request_and_replace_every_worker(master):
    m = master("-w", "2", "--graceful-timeout", "10")
    m.wait_log(r"worker \d+ ready", count=2)
    first = m.wait_count(2)
    seen = set(first)
    with KeepAliveLoad(m.port, threads=16) as load:
        load.wait_sent(500)
        for n in range(5):
            load.phase = f"hup{n + 1}"
            start = m.mark()
            m.proc.send_signal(signal.SIGHUP)
            m.wait_log(r"reload: 2 new workers ready, old workers stopping", start, timeout=15)
            load.wait_sent(1000)   # the old workers drain under load
            seen |= m.children()
        last = m.wait_children(lambda c: len(c) == 2, what="the old workers gone")
        load.phase = "after"
        load.wait_sent(1000)
        load.stop()
    after = load.by_phase["after"]
    print(f"\n5 HUPs under 16 keep-alive clients: {load.sent} requests sent, {load.failed} failed, "
          f"{load.reconnects} connections; PIDs after the last reload: {dict(after)}")
    assert load.failed == 0, (load.failed, load.errors, m.stderr())
    assert last.isdisjoint(first)
    assert after and set(after) <= last, (after, last)
    assert set(after).isdisjoint(first)
    assert len(m.find(r"SIGHUP: reloading")) == 5
    assert not m.find(r"died|timed out"), m.stderr()
    assert m.stop() == 0, m.stderr()


class Http2Load:
    """`clients` httpx HTTP/2 clients (one connection each, reopened by httpx
    after a GOAWAY), GETting /pid in a loop until stopped; failures counted
    by exception type."""

    def __init__(self, port: int, cert_pair, clients: int = 4, max_seconds: float = 40.0):
        import httpx
        self.url = f"https://localhost:{port}/pid"
        self.ok = 0
        self.failed: collections.Counter = collections.Counter()
        self.errors: list = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._deadline = time.monotonic() + max_seconds
        verify = ssl.create_default_context(cafile=cert_pair[0])
        self._clients = [httpx.Client(http2=True, verify=verify, timeout=10)
                         for _ in range(clients)]
        self._threads = [threading.Thread(target=self._run, args=(c,), daemon=True)
                         for c in self._clients]

    def __enter__(self):
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc):
        self.stop()

    def _run(self, client) -> None:
        while not self._stop.is_set() and time.monotonic() < self._deadline:
            try:
                r = client.get(self.url)
                good = r.status_code == 200 and r.http_version == "HTTP/2"
                with self._lock:
                    if good:
                        self.ok += 1
                    else:
                        self.failed[f"status {r.status_code} {r.http_version}"] += 1
            except Exception as exc:   # counted: the test's subject
                with self._lock:
                    self.failed[type(exc).__name__] += 1
                    self.errors.append(repr(exc))

    def wait_ok(self, n: int, timeout: float = 20.0) -> None:
        target = self.ok + n
        wait_until(lambda: self.ok >= target, timeout, f"{n} more answers")

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(20)
        for c in self._clients:
            c.close()


def _tls_master(master, cert_pair, *args):
    m = master(*args, "--graceful-timeout", "10", "--certfile", cert_pair[0],
               "--keyfile", cert_pair[1])
    return m


@pytest.mark.parametrize("cause", ["hup", "ttou", "max-requests"])
def test_http2_clients_fail_nothing_when_workers_go(master, cert_pair, cause):
    """httpx HTTP/2 clients while workers go away gracefully (reload, one
    worker fewer, --max-requests): RFC 9113 6.8's GOAWAY sequence loses no
    request (streams above the final GOAWAY's last id are retried by httpx)."""
    extra = {"hup": ["-w", "2"], "ttou": ["-w", "6"],
             "max-requests": ["-w", "2", "--max-requests", "50",
                              "--max-requests-jitter", "10"]}[cause]
    m = _tls_master(master, cert_pair, *extra)
    m.wait_log(r"worker \d+ ready", count=int(extra[1]))
    with Http2Load(m.port, cert_pair, clients=4) as load:
        load.wait_ok(200)
        for _ in range(5):
            start = m.mark()
            if cause == "hup":
                m.proc.send_signal(signal.SIGHUP)
                m.wait_log(r"reload: 2 new workers ready, old workers stopping", start,
                           timeout=15)
            elif cause == "ttou":
                m.proc.send_signal(signal.SIGTTOU)
                m.wait_log(r"worker \d+ exited|SIGTTOU", start, timeout=15)
            load.wait_ok(300)   # the leaving workers drain under load
        load.stop()
    retired = len(m.find(r"retired|retiring"))
    print(f"\n{cause}: 4 httpx HTTP/2 clients: {load.ok} ok, failed {dict(load.failed)}"
          f"{f', {retired} retirements' if cause == 'max-requests' else ''}")
    assert not load.failed, (dict(load.failed), load.errors[:5], m.stderr()[-3000:])
    if cause == "max-requests":
        assert retired >= 10
    assert not m.find(r"died|timed out"), m.stderr()
    assert m.stop() == 0, m.stderr()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_over_tls_h2_with_hups_fails_no_request(master, cert_pair):
    m = _tls_master(master, cert_pair, "-w", "2")
    m.wait_log(r"worker \d+ ready", count=2)
    h2load = subprocess.Popen(["h2load", "-c4", "-m1", "-D", "8",
                               f"https://localhost:{m.port}/pid"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(5):
            time.sleep(1.0)   # pacing the HUPs through the run, not synchronisation
            start = m.mark()
            m.proc.send_signal(signal.SIGHUP)
            m.wait_log(r"reload: 2 new workers ready, old workers stopping", start, timeout=15)
        out, _ = h2load.communicate(timeout=30)
    finally:
        if h2load.poll() is None:
            h2load.kill()
    summary = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored", out)
    print(f"\nh2load -c4 -m1 (h2) -D 8 with 5 HUPs: {summary.group(0) if summary else out}")
    assert "Application protocol: h2" in out, out
    assert summary and int(summary.group(4)) > 100, out
    # h2load submits its next request from the callback of the stream that
    # ends, before it reads the GOAWAY right behind that END_STREAM, and does
    # not retry it (RFC 9113 8.7 allows a retry: it was not processed).  At
    # most one such request per connection and reload; nothing the server
    # processed is lost (no aborted response in its log).
    failed = int(summary.group(5))
    assert failed <= 4 * 5, out
    assert not m.find(r" aborted$"), m.stderr()
    assert m.stop() == 0, m.stderr()


def test_curl_reusing_one_h2_connection_across_a_hup(master, cert_pair):
    """curl fetches 300 URLs over one HTTP/2 connection (reused while it lasts)
    while the master reloads: every one answered 200."""
    m = _tls_master(master, cert_pair, "-w", "1")
    m.wait_log(r"worker \d+ ready")
    url = f"https://localhost:{m.port}/pid"
    fetches = [arg for _ in range(300) for arg in ("-o", "/dev/null", url)]
    curl = subprocess.Popen(["curl", "-sS", "--http2", "--cacert", cert_pair[0],
                             "-w", "%{http_code} %{http_version}\\n", *fetches],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(2):
            start = m.mark()
            m.proc.send_signal(signal.SIGHUP)
            m.wait_log(r"reload: 1 new workers ready, old workers stopping", start, timeout=15)
        out, err = curl.communicate(timeout=60)
    finally:
        if curl.poll() is None:
            curl.kill()
    lines = out.split()
    assert curl.returncode == 0, err
    assert lines.count("200") == 300 and set(lines) <= {"200", "2"}, (out[:300], err, m.stderr())
    assert m.stop() == 0, m.stderr()


@pytest.mark.skipif(shutil.which("h2load") is None, reason="h2load (nghttp2-client) not installed")
def test_h2load_with_hups_fails_no_request(master):
    m = master("-w", "2", "--graceful-timeout", "10")
    m.wait_log(r"worker \d+ ready", count=2)
    h2load = subprocess.Popen(["h2load", "--h1", "-c16", "-D", "8", f"http://127.0.0.1:{m.port}/pid"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for n in range(5):
            time.sleep(1.0)   # pacing the HUPs through the run, not synchronisation
            start = m.mark()
            m.proc.send_signal(signal.SIGHUP)
            m.wait_log(r"reload: 2 new workers ready, old workers stopping", start, timeout=15)
        out, _ = h2load.communicate(timeout=30)
    finally:
        if h2load.poll() is None:
            h2load.kill()
            h2load.wait()
    summary = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                        r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    status = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    assert summary and status, out
    print(f"\nh2load --h1 -c16 -D 8 with 5 HUPs: {summary.group(0)}; {status.group(0)}")
    assert int(summary.group(5)) == 0 and int(summary.group(6)) == 0, out
    assert int(summary.group(4)) > 0 and int(status.group(1)) == int(summary.group(4)), out
    assert m.stop() == 0, m.stderr()


HUP_APP = '''
import os
{broken}

def app(environ, start_response):
    body = str(os.getpid()).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]
'''


def test_hup_with_an_app_that_no_longer_imports_keeps_the_old_workers(master, tmp_path):
    module = tmp_path / "hup_app.py"
    module.write_text(HUP_APP.format(broken=""))
    m = master("-w", "2", app="hup_app:app", env={"PYTHONDONTWRITEBYTECODE": "1"})
    m.wait_log(r"worker \d+ ready", count=2)
    old = m.wait_count(2)
    module.write_text(HUP_APP.format(broken='raise RuntimeError("broken on purpose")'))
    start = m.mark()
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log(r"reload failed: the new workers cannot boot the app; keeping the old ones", start)
    m.wait_children(lambda c: c == old, what="the new workers gone, the old ones left")
    assert set(pid_counts(m.port, 20, threads=4)) <= old
    assert m.proc.poll() is None and not m.find(r"failed to boot: stopping"), m.stderr()
    errors = error_lines(m.stderr())
    assert len(errors) == 2, errors   # the import error once (not once per worker), the rollback
    assert "error importing 'hup_app': RuntimeError: broken on purpose" in errors[0], errors

    module.write_text(HUP_APP.format(broken="# fixed"))
    start = m.mark()
    m.proc.send_signal(signal.SIGHUP)
    m.wait_log(r"reload: 2 new workers ready, old workers stopping", start)
    new = m.wait_children(lambda c: len(c) == 2 and not c & old, what="2 new workers")
    assert set(pid_counts(m.port, 20, threads=4)) <= new
    assert m.stop() == 0, m.stderr()


def test_term_during_a_50mib_download_completes_it_then_exits_0(master, tmp_path):
    path, digest = download_file(tmp_path, 50 * 1024 * 1024)
    m = master("-w", "2", env={"KTLSWSGI_TEST_DOWNLOAD": path})
    m.wait_log(r"worker \d+ ready", count=2)
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        sock.settimeout(20)
        sock.connect(("127.0.0.1", m.port))
        sock.sendall(b"GET /download HTTP/1.1\r\nHost: x\r\n\r\n")
        r = http.client.HTTPResponse(sock, method="GET")
        r.begin()
        assert r.status == 200
        h = hashlib.sha256()
        h.update(r.read(1024 * 1024))
        m.send(signal.SIGTERM, expect=r"SIGTERM: graceful stop")
        m.wait_log(r"shutting down: 1 connections open")
        while chunk := r.read(1024 * 1024):
            h.update(chunk)
    assert h.hexdigest() == digest
    assert m.stop(None) == 0, m.stderr()


def test_a_worker_stuck_holding_the_gil_is_aborted_with_its_stacks_and_replaced(master):
    m = master("-w", "1", "--timeout", "2")
    stuck = wait_serving(m.port)
    outcome: list = []

    def spin():
        try:
            outcome.append(get(m.port, "/spin", timeout=20))
        except (OSError, http.client.HTTPException) as exc:
            outcome.append(exc)

    client = threading.Thread(target=spin, daemon=True)
    client.start()
    m.wait_log(rf"worker {stuck} timed out: its reactor sent no heartbeat for 2s; "
               r"SIGABRT \(stacks follow\), then SIGKILL", timeout=15)
    m.wait_log(rf"worker {stuck} died \(signal SIG(ABRT|KILL)\)", timeout=10)
    client.join(15)
    assert len(outcome) == 1 and isinstance(outcome[0], Exception), outcome   # killed mid-request
    # faulthandler's dump: every thread, the stuck one inside the regex called by the app.
    text = m.stderr()
    assert "Fatal Python error: Aborted" in text, text
    assert re.search(r"File \".*arbiter_apps\.py\", line \d+ in app", text), text
    assert re.search(r"File \".*re/__init__\.py\", line \d+ in match", text), text
    replacement = wait_serving(m.port)
    assert replacement != stuck
    assert m.stop() == 0, m.stderr()
    assert m.find(r"exit 0 \(1 worker restarts\)"), m.stderr()


def test_a_reactor_idle_on_slow_clients_longer_than_timeout_keeps_its_worker(master):
    """Slow uploads (one inside the app, its thread waiting on the body; one
    whose small body the server buffers before the app) hold the reactor idle
    in epoll for three times --timeout: the heartbeat comes from the loop
    itself, so the master must not take the worker for a stuck one."""
    m = master("-w", "1", "--timeout", "2", "--read-timeout", "30", "--body-min-rate", "0")
    worker = wait_serving(m.port)
    slow = []
    try:
        for length, first in ((1_000_000, 70_000), (1000, 1)):
            s = socket.create_connection(("127.0.0.1", m.port), timeout=10)
            s.sendall(b"POST /read HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n"
                      % length + b"x" * first)
            slow.append(s)
        deadline = time.monotonic() + 6.5
        while time.monotonic() < deadline:
            for s in slow:
                s.sendall(b"y")            # a byte now and then: never a stall
            time.sleep(0.5)                # the client's pace, not a wait on the server
        assert pid_of(m.port) == worker
    finally:
        for s in slow:
            s.close()
    assert not m.find(r"timed out"), m.stderr()
    assert m.stop() == 0, m.stderr()


def test_max_requests_retires_the_worker_and_a_keepalive_client_sees_no_failure(master):
    m = master("-w", "1", "--max-requests", "20", "--max-requests-jitter", "0")
    first = wait_serving(m.port)
    conn = http.client.HTTPConnection("127.0.0.1", m.port, timeout=10)
    answers, failures = [], []
    deadline = time.monotonic() + 20
    try:
        while len(set(answers)) < 2 or answers[-1] == first:
            assert time.monotonic() < deadline and len(answers) < 50_000, \
                f"no second worker after {len(answers)} requests:\n{m.stderr()}"
            try:
                conn.request("GET", "/pid")
                r = conn.getresponse()
                body = r.read()
                assert r.status == 200, r.status
                answers.append(int(body))
            except Exception as exc:
                failures.append(repr(exc))
                conn.close()
        for _ in range(30):   # and the new worker goes on serving
            conn.request("GET", "/pid")
            answers.append(int(conn.getresponse().read()))
    finally:
        conn.close()
    retired = m.wait_log(rf"worker {first} retiring \((\d+) requests, --max-requests\)")
    m.wait_log(rf"worker {first} retired \(exit 0\)")
    served_by_first = answers.index(next(p for p in answers if p != first))
    print(f"\n--max-requests 20: the first worker retired at {retired.group(1)} requests "
          f"and answered {served_by_first} of this client's (+1 before)")
    assert not failures, failures
    assert int(retired.group(1)) == 20       # checked at each request, not each heartbeat
    assert served_by_first + 1 == 20, served_by_first   # + wait_serving's request
    assert answers[-1] != first and answers[served_by_first:].count(first) == 0
    assert not m.find(r"died"), m.stderr()
    assert m.stop() == 0, m.stderr()
    assert m.find(r"exit 0 \(0 worker restarts\)"), m.stderr()


def test_ttin_and_ttou_change_the_number_of_workers(master):
    m = master("-w", "2")
    two = m.wait_count(2)
    m.send(signal.SIGTTIN, expect=r"SIGTTIN: 3 workers")
    three = m.wait_count(3)
    assert two < three
    m.send(signal.SIGTTOU, expect=r"SIGTTOU: 2 workers")
    m.send(signal.SIGTTOU, expect=r"SIGTTOU: 1 worker\b")
    one = m.wait_count(1)
    assert one < three
    assert pid_counts(m.port, 10) == {next(iter(one)): 10}
    m.send(signal.SIGTTOU, expect=r"SIGTTOU: 1 worker\b")   # never below one
    assert m.children() == one
    assert m.stop() == 0, m.stderr()


# -- failing to start ------------------------------------------------------------------------------
@pytest.mark.parametrize("preload", [False, True], ids=["in-workers", "preload"])
def test_a_bad_app_exits_1_with_one_line_and_no_restart_loop(tmp_path, preload):
    args = ["-b", f"127.0.0.1:{free_port()}", "-w", "2", *(["--preload"] if preload else []),
            "apps.arbiter_apps:missing_attr"]
    r = run_cli(*args, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    lines = error_lines(r.stderr)
    assert len(lines) == 1, r.stderr
    assert "'apps.arbiter_apps'" in lines[0] and "'missing_attr'" in lines[0], lines
    assert r.stderr.count("booting worker") == (0 if preload else 2), r.stderr
    assert "died" not in r.stderr and "replacing" not in r.stderr, r.stderr
    assert re.search(r"master \d+: exit 1 ", r.stderr), r.stderr


def test_pidfile_holds_the_master_pid_refuses_a_second_master_and_goes_at_exit(master, tmp_path):
    pidfile = tmp_path / "ktlswsgi.pid"
    m = master("-w", "1", "--pid", str(pidfile))
    assert pidfile.read_text() == f"{m.pid}\n"
    r = run_cli("-b", f"127.0.0.1:{free_port()}", "--pid", str(pidfile), APP, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert error_lines(r.stderr) == [
        next(line for line in r.stderr.splitlines() if "[ERROR]" in line)], r.stderr
    assert f"--pid {pidfile}: already running as PID {m.pid}" in r.stderr
    assert pidfile.read_text() == f"{m.pid}\n"
    wait_serving(m.port)
    assert m.stop() == 0, m.stderr()
    assert not pidfile.exists()


def test_config_file_sets_workers_bind_and_gunicorn_aliases_and_hup_rereads_it(master, tmp_path):
    port = free_port()
    conf = tmp_path / "conf.py"
    conf.write_text(f'workers = 2\nbind = "127.0.0.1:{port}"\nkeepalive = 3\n')
    m = master("-c", str(conf), bind=False, port=port)
    m.wait_count(2)
    wait_serving(port)
    # keepalive = 3 (gunicorn's name for --keep-alive): an idle connection closes after 3 s.
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(b"GET /pid HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        idle_from = time.monotonic()
        assert sock.recv(4096) == b""
        idle = time.monotonic() - idle_from
    assert 2.5 < idle < 5, idle

    # A flag on the command line beats the file.
    other = master("-c", str(conf), "-w", "1", "-b", f"127.0.0.1:{free_port()}", bind=False)
    other.wait_count(1)
    assert other.stop() == 0, other.stderr()

    # An unknown setting: one line, exit 1.
    bad = tmp_path / "bad.py"
    bad.write_text("workers = 2\nno_such_setting = 1\n")
    r = run_cli("-c", str(bad), APP, cwd=tmp_path)
    assert r.returncode == 1, r.stderr
    assert error_lines(r.stderr) == [f"ktlswsgi: error: --config {str(bad)!r}: "
                                     "unknown setting 'no_such_setting'"], r.stderr

    # HUP re-reads the file.
    conf.write_text(f'workers = 3\nbind = "127.0.0.1:{port}"\nkeepalive = 3\n')
    before = m.children()
    m.send(signal.SIGHUP, expect=r"SIGHUP: reloading")
    m.wait_log(r"reload: 3 new workers ready, old workers stopping")
    after = m.wait_children(lambda c: len(c) == 3 and not c & before, what="3 new workers")
    assert set(pid_counts(m.port, 30, threads=6)) <= after
    assert m.stop() == 0, m.stderr()


# -- USR2, --reuse-port, systemd, --user, --reload ----------------------------------------------
def test_usr2_starts_a_new_master_on_the_same_listeners_and_the_old_one_can_go(master, tmp_path):
    pidfile = tmp_path / "ktlswsgi.pid"
    oldbin = tmp_path / "ktlswsgi.pid.oldbin"
    old = master("-w", "1", "--pid", str(pidfile))
    old_worker = wait_serving(old.port)
    failures: list = []
    answered: collections.Counter = collections.Counter()
    stop = threading.Event()

    def client():   # fresh connections all along: each must find a listener and a worker
        deadline = time.monotonic() + 40
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                answered[pid_of(old.port)] += 1
            except Exception as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=client, daemon=True)
    thread.start()
    try:
        new_pid = int(old.send(signal.SIGUSR2, expect=r"SIGUSR2: started a new master (\d+)")
                      .group(1))
        old.others.add(new_pid)
        old.wait_log(rf"\[{new_pid}\] \[INFO\] using 1 listening socket from the previous master")
        old.wait_log(rf"\[{new_pid}\] \[INFO\] worker \d+ ready")
        assert pidfile.read_text() == f"{new_pid}\n"
        assert oldbin.read_text() == f"{old.pid}\n"
        new_workers = children_of(new_pid)
        assert len(new_workers) == 1
        wait_until(lambda: set(answered) >= {old_worker, *new_workers}, 10,
                 f"both masters' workers answering ({answered})")

        assert old.stop() == 0, old.stderr()   # TERM: the new master serves on alone
        assert not oldbin.exists() and pidfile.read_text() == f"{new_pid}\n"
        mark = sum(answered.values())
        wait_until(lambda: sum(answered.values()) >= mark + 50, 10, "requests after the switch")
        stop.set()
        thread.join(15)
        assert not failures, failures[:5]
        assert running(new_pid) and children_of(new_pid) == new_workers

        os.kill(int(pidfile.read_text()), signal.SIGTERM)
        wait_until(lambda: not running(new_pid) and not any(running(p) for p in new_workers),
                 15, "the new master and its worker to exit")
        assert old.find(rf"\[{new_pid}\] \[INFO\] master {new_pid}: exit 0"), old.stderr()
        assert not pidfile.exists()
    finally:
        stop.set()
        thread.join(15)
        old.kill_everything()


@pytest.mark.parametrize("reuse_port", [False, True], ids=["shared-socket", "reuse-port"])
def test_every_worker_accepts_connections(master, reuse_port):
    """--reuse-port: the kernel hashes each connection to a worker's own socket,
    so every worker gets about half.  The shared socket (EPOLLEXCLUSIVE) wakes
    the first idle worker: even under concurrency, lopsided for one client
    that waits for each answer; there only the spread is printed."""
    m = master("-w", "2", *(["--reuse-port"] if reuse_port else []))
    m.wait_log(r"worker \d+ ready", count=2)
    workers = m.wait_count(2)
    sequential = pid_counts(m.port, 400)
    concurrent = pid_counts(m.port, 400, threads=8)
    print(f"\n{'--reuse-port' if reuse_port else 'shared socket'}, -w 2, 400 connections: "
          f"{spread_text(sequential)} one at a time, {spread_text(concurrent)} from 8 threads")
    assert set(sequential) <= workers and set(concurrent) <= workers, (sequential, concurrent)
    if reuse_port:
        assert set(sequential) == workers and set(concurrent) == workers, (sequential, concurrent)
    assert m.stop() == 0, m.stderr()


LAUNCHER = """
import os, socket, sys
port, argv = int(sys.argv[1]), sys.argv[2:]
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", port))
s.listen(128)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
env = dict(os.environ, LISTEN_FDS="1", LISTEN_PID=str(os.getpid()))
os.execve(sys.executable, [sys.executable, "-m", "ktlswsgi", *argv], env)
"""


def test_systemd_socket_activation_serves_on_the_inherited_socket_without_bind(master):
    port = free_port()
    m = master("-w", "2", bind=False, port=port,
               argv0=[sys.executable, "-c", LAUNCHER, str(port)])
    m.wait_log(r"using 1 listening socket from systemd socket activation")
    m.wait_log(rf"listening on http://127\.0\.0\.1:{port}$")
    assert not m.find(r"127\.0\.0\.1:8000")
    m.wait_log(r"worker \d+ ready", count=2)
    assert set(pid_counts(port, 20)) <= m.children()
    assert m.stop() == 0, m.stderr()


@pytest.mark.skipif(os.geteuid() != 0, reason="--user needs root")
def test_user_nobody_runs_the_app_as_nobody_and_the_master_stays_root(master):
    m = master("-w", "1", "--user", "nobody")
    wait_serving(m.port)
    status, body = get(m.port, "/uid")
    assert status == 200 and body == f"65534 {m.pid}".encode(), body
    with open(f"/proc/{m.pid}/status") as f:
        uids = next(line for line in f if line.startswith("Uid:")).split()[1:]
    assert uids == ["0", "0", "0", "0"]
    assert m.stop() == 0, m.stderr()


RELOAD_APP = '''
import os

def app(environ, start_response):
    body = ("%s %d" % (VERSION, os.getpid())).encode()
    start_response("200 OK", [("Content-Length", str(len(body)))])
    return [body]

VERSION = "{version}"
'''


def test_reload_survives_a_syntax_error_and_serves_the_next_good_save(master, tmp_path):
    """Saving a broken file answers 500 (with the error, once in the log per
    save) and keeps watching; the next good save serves again."""
    pytest.importorskip("watchfiles")
    module = tmp_path / "reload_app.py"
    module.write_text(RELOAD_APP.format(version="one"))
    m = master("-w", "1", "--reload", app="reload_app:app", env={"PYTHONDONTWRITEBYTECODE": "1"})

    def answer():
        try:
            return get(m.port, "/", timeout=5)
        except (OSError, http.client.HTTPException):
            return None

    wait_until(lambda: (lambda a: a if a and a[1].startswith(b"one") else None)(answer()), 15,
             "the first code")
    start = m.mark()
    module.write_text("def app(environ, start_response:\n    pass\n")   # a syntax error
    broken = wait_until(lambda: (lambda a: a if a and a[0] == 500 else None)(answer()), 20,
                      "the 500 of the broken code", step=0.1)
    assert b"SyntaxError" in broken[1], broken
    m.wait_log(r"error importing 'reload_app': SyntaxError.*--reload: answering 500", start)
    assert m.proc.poll() is None, "the master exited"
    module.write_text(RELOAD_APP.format(version="third"))
    wait_until(lambda: (lambda a: a if a and a[0] == 200 and a[1].startswith(b"third") else None)(
        answer()), 20, "the fixed code", step=0.1)
    assert len(m.find(r"SyntaxError", start)) == 1, m.stderr()   # one line for the one save
    assert m.stop() == 0, m.stderr()


def test_reload_serves_the_edited_code_from_a_new_worker(master, tmp_path):
    pytest.importorskip("watchfiles")
    module = tmp_path / "reload_app.py"
    module.write_text(RELOAD_APP.format(version="one"))
    m = master("-w", "1", "--reload", app="reload_app:app", env={"PYTHONDONTWRITEBYTECODE": "1"})

    def answer(version: str):
        try:
            status, body = get(m.port, "/", timeout=5)
        except (OSError, http.client.HTTPException):
            return None
        words = body.decode().split()
        return int(words[1]) if status == 200 and words[0] == version else None

    pid = wait_until(lambda: answer("one"), 15, "the first code to answer", step=0.05)
    m.wait_log(rf"worker {pid} ready")   # its watcher runs
    module.write_text(RELOAD_APP.format(version="second"))
    pid2 = wait_until(lambda: answer("second"), 20, "the edited code to answer", step=0.1)
    assert pid2 != pid
    m.wait_log(rf"worker {pid} retiring \(code changed: reload_app\.py\)")
    m.wait_log(rf"worker {pid} retired \(exit 0\)")   # not "died": it said it would go
    assert m.stop() == 0, m.stderr()
    assert m.find(r"exit 0 \(0 worker restarts\)"), m.stderr()
