"""`--metrics-bind`: Prometheus metrics summed over every worker process.

Owns: the metrics directory and its files, the worker-side export of
`telemetry.Counters`, the master-side bookkeeping of dead workers and
restarts, the Prometheus names, and the small HTTP endpoint that renders
them.  Must not: run on a request's path (the reactor only bumps plain ints
in `telemetry.Counters`), block the reactor beyond one small file write a
second, touch the network from a worker or the master, or put a header
value or any other client-chosen string in a label.

Why not prometheus_client's own multiprocess mode on the reactor.  Measured
on this host (AMD EPYC, 2 vCPUs shared with other work, Python 3.11.7,
prometheus-client 0.26.0; `timeit`, best of 5 x 200 000 calls, three runs;
`python3 -m ktlswsgi.metrics --bench` reruns it):

    multiprocess mode (PROMETHEUS_MULTIPROC_DIR set)
      Counter.labels("GET", "200").inc()         1.9-2.4 us
      Counter.labels(method=, status=).inc()     2.4-2.6 us
      a cached child's .inc()                    0.9-1.0 us
      Histogram.observe(0.0123)                  1.9-2.4 us
      Counter.labels("sendfile").inc(n)          1.8-2.1 us  (per socket write)
    single-process mode: labels().inc() 1.3-2.1 us, observe() 0.7-1.1 us
    telemetry.Counters.record_response(...)      0.26-0.30 us (once per response)
      as connection.py calls it, time.monotonic() included   0.32-0.43 us

With the library a request would pay ~4-5 us (labels().inc() + observe(),
plus ~2 us for every socket write if bytes by path went through it) against
a budget of a few hundred ns: 10-15x over.  So the reactor records into
plain ints and a per-(method, status) dict, and `WorkerExporter.flush()`
copies a cumulative snapshot out once a second: 27-29 us of the reactor's
time per second (JSON, write, rename on /dev/shm); rendering a scrape takes
0.3-0.4 ms in the metrics process.

Why a snapshot file per worker rather than pushing deltas into the
multiprocess store once a second.  That store keeps one mmap file per
process per metric type (64 KiB each) and, to keep counters monotonic, never
deletes a dead process's counter and histogram files: every worker restart
(HUP replaces them all) adds files that every scrape then reads, without
bound.  It also takes its directory from a process-wide environment variable
read at import.  Here a worker's snapshot, once the worker is dead, is
folded by the master into one `master.json`, so the directory holds one file
per live worker plus one; the directory is passed explicitly.
prometheus_client still does what it is best at: the text format
(`generate_latest`, `CONTENT_TYPE_LATEST`) rendered from a custom collector.

The directory (`make_dir()`, created by the master; `remove_dir()` at exit):
a private temporary directory, mode 0700, on /dev/shm when there is one (a
write is then a memory copy, never a disk wait), else in $TMPDIR.  It holds

    worker-<pid>-<ns>.json   one per live worker: its cumulative counters,
                             rewritten whole (temp file + rename) by its
                             reactor every second and at its exit
    master.json              written by the master only: worker restarts,
                             the summed final snapshots of dead workers
                             ("retired"), the names folded into them

A reader (the endpoint) lists and reads the worker files first, then
master.json, and skips a worker file named in master.json's "folded": the
master writes master.json before it unlinks a folded worker file, so either
order of the race counts every worker once.  Counters stay monotonic across
worker deaths; what a worker counted after its last flush (at most ~1 s,
only if it was killed before its exit flush) is lost.  Gauges (open
connections, pool queue depth) are summed over live workers only.

The process side (wired by the arbiter):

    master, at start:      require(); d = make_dir(); lsock = listen(bind)
                           master = MasterMetrics(d)
                           fork a child: close inherited listeners; serve(lsock, d); os._exit(0)
    master, worker reaped: master.on_worker_exit(pid)  (after waitpid, before the next fork)
                           master.count_restart()      (when it forks a replacement)
    master, child reaped:  fork another on the same lsock (the child keeps no state)
    master, at exit:       SIGTERM the child, reap it; remove_dir(d)
                           (a child whose master is gone exits within ~1 s by itself)
    worker, after fork:    exp = WorkerExporter(server.counters, d,
                                            pool_depth=lambda: server.pool.queued)
                           exp.schedule(server.reactor)  (every interval_s on the reactor)
                           after server.run() returns: exp.flush()
"""
from __future__ import annotations

import errno
import json
import logging
import os
import selectors
import shutil
import signal
import socket
import tempfile
import time

from .sockets import address_text
from .telemetry import DURATION_BOUNDS_S, FIELDS

log = logging.getLogger("ktlswsgi.metrics")

SNAPSHOT_VERSION = 1
_WORKER_PREFIX = "worker-"
_MASTER_FILE = "master.json"
# Names of folded worker files kept in master.json, newest last.  A reader
# needs a name only while it is between listing and reading master.json
# (milliseconds); 1024 worker deaths inside that window cannot happen.
_FOLDED_KEEP = 1024
_N_BUCKETS = len(DURATION_BOUNDS_S) + 1

INSTALL_HINT = "pip install 'ktlswsgi[metrics]'"


class MetricsUnavailable(RuntimeError):
    """prometheus-client is not installed; the message is one line for the operator."""


def require() -> None:
    """Fail fast (at start-up, in the master) when the endpoint cannot work."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise MetricsUnavailable("--metrics-bind needs the prometheus-client package: "
                                 + INSTALL_HINT) from None


# -- the directory ---------------------------------------------------------------------
def make_dir() -> str:
    """A private (0700) directory for the snapshots; the caller removes it."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        try:
            return tempfile.mkdtemp(prefix="ktlswsgi-metrics-", dir=shm)
        except OSError:
            pass  # a full or odd /dev/shm: the ordinary temp dir will do
    return tempfile.mkdtemp(prefix="ktlswsgi-metrics-")


def remove_dir(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


def _write_atomic(path: str, data: bytes) -> None:
    """Readers see the old file or the new one, never a part."""
    tmp = path + ".tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _empty_totals() -> dict:
    return {"counters": dict.fromkeys(FIELDS, 0), "responses": [],
            "duration_buckets": [0] * _N_BUCKETS, "duration_sum_s": 0.0}


# -- the worker side ----------------------------------------------------------------------
class WorkerExporter:
    """Copies one worker's `Counters` to its snapshot file; reactor thread only.

    Create it in the worker (after the fork): the file is named by the pid.
    `flush()` never raises: a metrics failure must not take a worker down.
    """

    def __init__(self, counters, directory: str, pool_depth=None, interval_s: float = 1.0):
        self.counters = counters
        self.directory = directory
        self.pool_depth = pool_depth            # callable -> requests waiting for a thread
        self.interval_s = interval_s
        self._pid = 0
        self.path = ""
        self._last: bytes = b""
        self._timer = None
        self._failed = False

    def _name(self) -> str:
        pid = os.getpid()
        if pid != self._pid:                    # first flush, or created before a fork
            self._pid = pid
            self._last = b""
            self.path = os.path.join(self.directory,
                                     f"{_WORKER_PREFIX}{pid}-{time.monotonic_ns()}.json")
        return self.path

    def snapshot(self) -> dict:
        c = self.counters
        return {
            "v": SNAPSHOT_VERSION,
            "counters": c.snapshot(),
            "responses": [[m, s, n] for (m, s), n in c.responses.items()],
            "duration_buckets": list(c.duration_buckets),
            "duration_sum_s": c.duration_sum_s,
            "gauges": {"open_connections": c.open_connections,
                       "pool_queue_depth": self.pool_depth() if self.pool_depth else 0},
        }

    def flush(self) -> bool:
        """Write the snapshot if it changed; False if the write failed."""
        try:
            path = self._name()
            data = json.dumps(self.snapshot(), separators=(",", ":")).encode()
            if data == self._last:
                return True                     # an idle worker costs no syscall
            _write_atomic(path, data)
            self._last = data
            return True
        except Exception as exc:                # never into the reactor
            log.log(logging.DEBUG if self._failed else logging.WARNING,
                    "metrics: cannot write %s: %s", self.path or self.directory, exc)
            self._failed = True
            return False

    def schedule(self, reactor) -> None:
        """Flush now (the worker reports from its start), then every
        `interval_s` on `reactor` (from its thread, or before run())."""
        def tick():
            self.flush()
            self._timer = reactor.call_later(self.interval_s, tick)
        self.flush()
        self._timer = reactor.call_later(self.interval_s, tick)

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None


# -- the master side -----------------------------------------------------------------------
class MasterMetrics:
    """The master's part: restarts, and dead workers folded into master.json.

    Single-threaded (the master's), like the master.  Call `on_worker_exit`
    after `waitpid` returned the pid and before forking again: until the
    pid is reaped it cannot be reused, so `worker-<pid>-*` is that worker's.
    """

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, _MASTER_FILE)
        self.state = {"v": SNAPSHOT_VERSION, "restarts": 0, "retired": _empty_totals(),
                      "folded": []}
        # Worker files already folded into self.state but not yet unlinked:
        # only after master.json with their fold is written (module doc).
        self._unlink_after_write: list = []
        self._write_atomic_state(raise_errors=True)    # at start-up an error is the start's

    def _write_atomic_state(self, raise_errors: bool = False) -> bool:
        """Write master.json, then drop the files it now accounts for.

        A failure is logged, never raised into the master's loop: the state
        stays in memory and the next write carries it; the folded files stay
        (readers skip them by name) until a write succeeds.
        """
        try:
            _write_atomic(self.path, json.dumps(self.state, separators=(",", ":")).encode())
        except OSError as exc:
            if raise_errors:
                raise
            log.warning("metrics: cannot write %s: %s", self.path, exc)
            return False
        for path in self._unlink_after_write:
            try:
                os.unlink(path)
            except OSError:
                pass
        self._unlink_after_write = []
        return True

    def count_restart(self) -> None:
        """One worker replaced (the master decides what counts as one)."""
        self.state["restarts"] += 1
        self._write_atomic_state()

    def on_worker_exit(self, pid: int) -> None:
        """Keep a dead worker's last counts (in "retired"), drop its gauges and files."""
        prefix = f"{_WORKER_PREFIX}{pid}-"
        try:
            names = [n for n in os.listdir(self.directory) if n.startswith(prefix)]
        except OSError as exc:
            log.warning("metrics: cannot list %s: %s", self.directory, exc)
            return
        if not names:
            return                              # never flushed (or not a worker)
        folded = [n for n in names if n.endswith(".json")]
        for name in folded:
            snap = _read_snapshot(os.path.join(self.directory, name))
            if snap is not None:
                _add_into(self.state["retired"], snap)
        self.state["folded"] = (self.state["folded"] + folded)[-_FOLDED_KEEP:]
        self._unlink_after_write += [os.path.join(self.directory, n) for n in names]
        self._write_atomic_state()


def _read_json(path: str):
    try:
        with open(path, "rb") as f:
            snap = json.loads(f.read())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("metrics: skipping unreadable %s: %s", path, exc)
        return None
    if not isinstance(snap, dict) or snap.get("v") != SNAPSHOT_VERSION:
        return None
    return snap


def _read_snapshot(path: str):
    """A worker's snapshot, or None (gone, unreadable, or of another layout)."""
    snap = _read_json(path)
    if snap is None or len(snap.get("duration_buckets", ())) != _N_BUCKETS:
        return None
    return snap


def _add_into(totals: dict, snap: dict) -> None:
    """totals += snap, counters only (gauges die with their worker)."""
    tc = totals["counters"]
    for name, n in snap["counters"].items():
        if name in tc:
            tc[name] += n
    merged = {(m, s): n for m, s, n in totals["responses"]}
    for m, s, n in snap["responses"]:
        merged[(m, s)] = merged.get((m, s), 0) + n
    totals["responses"] = [[m, s, n] for (m, s), n in sorted(merged.items())]
    totals["duration_buckets"] = [a + b for a, b in
                                  zip(totals["duration_buckets"], snap["duration_buckets"])]
    totals["duration_sum_s"] += snap["duration_sum_s"]


def read_totals(directory: str) -> dict:
    """Every worker's counts summed, monotonic over worker deaths (module doc)."""
    snaps = {}
    for name in os.listdir(directory):
        if name.startswith(_WORKER_PREFIX) and name.endswith(".json"):
            snap = _read_snapshot(os.path.join(directory, name))
            if snap is not None:                # None: folded meanwhile, see master.json
                snaps[name] = snap
    master = _read_json(os.path.join(directory, _MASTER_FILE)) or {}
    retired = master.get("retired") or _empty_totals()
    folded = set(master.get("folded", ()))
    totals = _empty_totals()
    _add_into(totals, retired)
    open_connections = queue_depth = workers = 0
    for name, snap in snaps.items():
        if name in folded:
            continue
        _add_into(totals, snap)
        gauges = snap.get("gauges", {})
        open_connections += gauges.get("open_connections", 0)
        queue_depth += gauges.get("pool_queue_depth", 0)
        workers += 1
    totals["restarts"] = master.get("restarts", 0)
    totals["gauges"] = {"open_connections": open_connections,
                        "pool_queue_depth": queue_depth, "workers": workers}
    return totals


# -- the Prometheus names --------------------------------------------------------------------
FILE_PATHS = ("sendfile", "ssl_sendfile", "pread_ssl_write")
BUFFER_PATHS = ("send", "ssl_write")


class Collector:
    """A prometheus_client custom collector over `read_totals(directory)`."""

    def __init__(self, directory: str):
        self.directory = directory

    def collect(self):
        from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                            HistogramMetricFamily)
        from prometheus_client.utils import floatToGoString

        t = read_totals(self.directory)
        c = t["counters"]
        g = t["gauges"]

        def counter(name, doc, value):
            return CounterMetricFamily(name, doc, value=value)

        requests = CounterMetricFamily(
            "ktlswsgi_requests_total", "Responses ended (sent or aborted), by request method "
            "(OTHER outside the standard set) and status code.", labels=["method", "status"])
        for m, s, n in t["responses"]:
            requests.add_metric([m, str(s)], n)
        yield requests

        cum = 0
        buckets = []
        for bound, n in zip(DURATION_BOUNDS_S + (float("inf"),), t["duration_buckets"]):
            cum += n
            buckets.append((floatToGoString(bound), cum))
        yield HistogramMetricFamily(
            "ktlswsgi_request_duration_seconds", "From the complete request head to the "
            "last response byte handed to the kernel (the access log's request time).",
            buckets=buckets, sum_value=t["duration_sum_s"])

        yield GaugeMetricFamily("ktlswsgi_open_connections",
                                "Client connections open now (TLS handshakes included).",
                                value=g["open_connections"])
        yield GaugeMetricFamily("ktlswsgi_pool_queue_depth",
                                "Requests waiting for a worker thread now.",
                                value=g["pool_queue_depth"])
        yield GaugeMetricFamily("ktlswsgi_workers",
                                "Worker processes reporting (a snapshot file each).",
                                value=g["workers"])
        yield counter("ktlswsgi_connections_total", "Client connections accepted.",
                      c["connections"])
        yield counter("ktlswsgi_aborted_connections_total",
                      "Connections closed at once (client gone, timeout, error).",
                      c["aborted_connections"])
        yield counter("ktlswsgi_bad_requests_total",
                      "Request heads refused before the app (4xx from the server).",
                      c["bad_requests"])
        yield counter("ktlswsgi_pool_rejections_total",
                      "Requests answered 503 because the pool queue was full.",
                      c["responses_503"])
        hs = CounterMetricFamily("ktlswsgi_tls_handshakes_total",
                                 "TLS handshakes by result (shed: closed unfinished to make "
                                 "room at --max-handshakes or --max-connections).",
                                 labels=["result"])
        hs.add_metric(["ok"], c["handshakes_ok"])
        hs.add_metric(["failed"], c["handshakes_failed"])
        hs.add_metric(["shed"], c["handshakes_shed"])
        yield hs
        kt = CounterMetricFamily("ktlswsgi_ktls_connections_total",
                                 "TLS connections with kernel TLS engaged, by direction.",
                                 labels=["direction"])
        kt.add_metric(["tx"], c["ktls_tx_connections"])
        kt.add_metric(["rx"], c["ktls_rx_connections"])
        yield kt
        fb = CounterMetricFamily("ktlswsgi_file_bytes_total",
                                 "File bytes sent, by path (sendfile: plain TCP; ssl_sendfile: "
                                 "kTLS TX; pread_ssl_write: userspace TLS).", labels=["path"])
        for p in FILE_PATHS:
            fb.add_metric([p], c["bytes_" + p])
        yield fb
        bb = CounterMetricFamily("ktlswsgi_buffer_bytes_total",
                                 "Bytes sent from memory (heads, bodies that are not files), "
                                 "by path (send: plain TCP; ssl_write: TLS).", labels=["path"])
        for p in BUFFER_PATHS:
            bb.add_metric([p], c["bytes_" + p])
        yield bb
        yield counter("ktlswsgi_file_transfers_total",
                      "Responses whose body was a file range sent by the reactor.",
                      c["file_transfers"])
        yield counter("ktlswsgi_worker_restarts_total",
                      "Worker processes the master replaced.", t["restarts"])


def render(directory: str) -> tuple[bytes, str]:
    """(exposition text, its content type)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collector(directory))
    return generate_latest(registry), CONTENT_TYPE_LATEST


# -- the endpoint ---------------------------------------------------------------------------------
def listen(bind: str, backlog: int = 16) -> socket.socket:
    """Bind `HOST:PORT` in the master, so a busy port fails the start.

    Raises OSError naming --metrics-bind (busy port, unresolvable host, a
    unix: address) or sockets.BindError (malformed HOST:PORT).
    """
    from .sockets import Bind, bind_one
    b = Bind.parse(bind)
    if b.family != "tcp":
        raise OSError(errno.EINVAL, f"--metrics-bind {bind}: a HOST:PORT is needed")
    try:
        sock = bind_one(b, backlog)
    except OSError as exc:
        raise OSError(exc.errno, f"--metrics-bind: {exc.strerror or exc}") from None
    sock.set_inheritable(False)
    return sock


class _Client:
    __slots__ = ("sock", "deadline", "inbuf", "out", "accepted")

    def __init__(self, sock, deadline: float, accepted: float):
        self.sock, self.deadline, self.accepted = sock, deadline, accepted
        self.inbuf = b""
        self.out: memoryview | None = None   # the response, once there is one


class MetricsServer:
    """GET /metrics over HTTP/1.x, many connections at once, everything bounded.

    One thread, non-blocking sockets and a selector: an idle or slow client
    never delays another's scrape.  A client gets `timeout_s` in all for its
    request and the response, then is closed; at most `max_clients` are open
    at once (one more closes the oldest); a request head over
    `max_request_bytes` is answered 431; any path but /metrics is 404, any
    method but GET/HEAD 405.  Every response closes the connection.
    """

    def __init__(self, listener, directory: str, timeout_s: float = 5.0,
                 max_request_bytes: int = 8192, max_clients: int = 64):
        self.listener = listener if isinstance(listener, socket.socket) else listen(listener)
        self.directory = directory
        self.timeout_s = timeout_s
        self.max_request_bytes = max_request_bytes
        self.max_clients = max_clients
        self._wake_r, self._wake_w = socket.socketpair()
        self._stopping = False
        self._clients: dict[socket.socket, _Client] = {}   # oldest first
        self._selector = None

    @property
    def address(self):
        return self.listener.getsockname()

    def serve_forever(self, parent_pid: int | None = None) -> None:
        """Serve until `close()`, or until `parent_pid` is no longer our parent."""
        self.listener.setblocking(False)
        sel = self._selector = selectors.DefaultSelector()
        sel.register(self.listener, selectors.EVENT_READ, "accept")
        sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        try:
            while not self._stopping:
                now = time.monotonic()
                timeout = 1.0
                if self._clients:
                    soonest = min(c.deadline for c in self._clients.values())
                    timeout = max(0.0, min(timeout, soonest - now))
                for key, events in sel.select(timeout):
                    if key.data == "accept":
                        self._accept()
                    elif key.data == "wake":
                        continue
                    else:
                        self._on_ready(key.data, events)
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.info("metrics: the master is gone; exiting")
                    return
                now = time.monotonic()
                for client in [c for c in self._clients.values() if c.deadline <= now]:
                    self._drop(client)
        finally:
            for client in list(self._clients.values()):
                self._drop(client)
            sel.close()
            self.listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def close(self) -> None:
        """Stop serve_forever (from another thread)."""
        self._stopping = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass

    def _accept(self) -> None:
        for _ in range(16):
            try:
                conn, _ = self.listener.accept()
            except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                return
            except OSError as exc:   # EMFILE and kin: the select loop comes back
                log.warning("metrics: accept failed: %s", exc.strerror or exc)
                return
            if len(self._clients) >= self.max_clients:
                self._drop(next(iter(self._clients.values())))   # the oldest
            conn.setblocking(False)
            now = time.monotonic()
            client = _Client(conn, now + self.timeout_s, now)
            self._clients[conn] = client
            self._selector.register(conn, selectors.EVENT_READ, client)

    def _drop(self, client: _Client) -> None:
        if self._clients.pop(client.sock, None) is None:
            return
        try:
            self._selector.unregister(client.sock)
        except (KeyError, ValueError):
            pass
        client.sock.close()

    def _on_ready(self, client: _Client, events: int) -> None:
        try:
            if client.out is None:
                self._read(client)
            if client.out is not None:
                self._write(client)
        except OSError as exc:
            log.debug("metrics: request failed: %s", exc)
            self._drop(client)

    def _read(self, client: _Client) -> None:
        data = client.sock.recv(4096)
        if not data:
            self._drop(client)
            return
        client.inbuf += data
        buf = client.inbuf
        if b"\r\n\r\n" not in buf and b"\n\n" not in buf:
            if len(buf) > self.max_request_bytes:
                self._respond(client, 431, b"request too large\n")
            return
        if len(buf) > self.max_request_bytes:
            self._respond(client, 431, b"request too large\n")
            return
        head = buf.split(b"\n", 1)[0].rstrip(b"\r")
        parts = head.split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/1."):
            self._respond(client, 400, b"bad request\n")
            return
        method, target = parts[0], parts[1]
        path = target.split(b"?", 1)[0]
        if path != b"/metrics":
            self._respond(client, 404, b"not found; try /metrics\n")
            return
        if method not in (b"GET", b"HEAD"):
            self._respond(client, 405, b"method not allowed\n", [(b"Allow", b"GET, HEAD")])
            return
        try:
            body, ctype = render(self.directory)
        except Exception as exc:  # the directory is gone (the master is exiting), say
            log.warning("metrics: cannot render: %s", exc)
            self._respond(client, 500, b"metrics unavailable\n")
            return
        self._respond(client, 200, body, [(b"Content-Type", ctype.encode())],
                      head_only=method == b"HEAD")

    def _respond(self, client: _Client, status: int, body: bytes, headers=(),
                 head_only: bool = False) -> None:
        reason = {200: b"OK", 400: b"Bad Request", 404: b"Not Found",
                  405: b"Method Not Allowed", 431: b"Request Header Fields Too Large",
                  500: b"Internal Server Error"}[status]
        lines = [b"HTTP/1.1 %d %s" % (status, reason)]
        if not any(name == b"Content-Type" for name, _ in headers):
            headers = [(b"Content-Type", b"text/plain; charset=utf-8"), *headers]
        lines += [name + b": " + value for name, value in headers]
        lines += [b"Content-Length: %d" % len(body), b"Connection: close", b"", b""]
        client.out = memoryview(b"\r\n".join(lines) + (b"" if head_only else body))
        self._selector.modify(client.sock, selectors.EVENT_WRITE, client)

    def _write(self, client: _Client) -> None:
        try:
            n = client.sock.send(client.out)
        except (BlockingIOError, InterruptedError):
            return
        client.out = client.out[n:]
        if not client.out:
            try:
                client.sock.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            self._drop(client)


def serve(listener, directory: str, timeout_s: float = 5.0) -> None:
    """The metrics child's main: serve until SIGTERM or the master's death.

    `listener` is a socket from `listen()` (bound by the master) or a
    HOST:PORT.  Meant for a child the master forks while single-threaded:
    the master's signal handlers are reset here (they would run the master's
    logic in this process); the child should close the fds it inherited but
    does not need (the app listeners) before calling this.
    """
    require()
    parent = os.getppid()
    try:
        signal.set_wakeup_fd(-1)
    except (ValueError, OSError):
        pass
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT,
                signal.SIGUSR1, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                signal.SIGCHLD, signal.SIGWINCH):
        try:
            signal.signal(sig, signal.SIG_DFL)
        except (ValueError, OSError):
            pass
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # ^C on the terminal is the master's to handle
    server = MetricsServer(listener, directory, timeout_s=timeout_s)
    log.info("metrics: serving http://%s/metrics", address_text(server.address))
    server.serve_forever(parent_pid=parent)


def _bench(n: int = 200_000) -> None:
    import timeit

    from .telemetry import Counters

    def best_ns(stmt, env, number=n):
        return min(timeit.repeat(stmt, number=number, repeat=5, globals=env)) / number * 1e9

    d = make_dir()
    try:
        # multiprocess mode is chosen when prometheus_client is first imported
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = d
        from prometheus_client import CollectorRegistry, Counter, Histogram
        reg = CollectorRegistry()
        env = {"c": Counter("b_requests", "x", ["method", "status"], registry=reg),
               "h": Histogram("b_duration_seconds", "x", registry=reg),
               "f": Counter("b_file_bytes", "x", ["path"], registry=reg)}
        env["child"] = env["c"].labels("GET", "200")
        for stmt in ("c.labels('GET', '200').inc()", "c.labels(method='GET', status='200').inc()",
                     "child.inc()", "h.observe(0.0123)", "f.labels('sendfile').inc(4096)"):
            print(f"multiprocess {stmt:55s} {best_ns(stmt, env):8.0f} ns")
        counters = Counters()
        env = {"k": counters, "time": time, "t0": time.monotonic()}
        for stmt in ("k.record_response(b'GET', 200, 0.0123)",
                     "k.record_response(b'GET', 200, time.monotonic() - t0)"):
            print(f"telemetry    {stmt:55s} {best_ns(stmt, env):8.0f} ns")
        for i, (m, s) in enumerate([(b"GET", 200), (b"POST", 201), (b"GET", 404), (b"PUT", 500)]):
            counters.record_response(m, s, 0.001 * i)
        exp = WorkerExporter(counters, d, pool_depth=lambda: 0)
        master = MasterMetrics(d)
        env = {"exp": exp, "k": counters, "d": d, "render": render, "master": master}
        # a real flush writes only when something changed: make it change
        print(f"worker       {'flush() (JSON + write + rename)':55s} "
              f"{best_ns('k.requests += 1; exp.flush()', env, 2000) / 1000:8.1f} us")
        print(f"endpoint     {'render() (1 worker)':55s} "
              f"{best_ns('render(d)', env, 500) / 1000:8.1f} us")
    finally:
        os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
        remove_dir(d)


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--bench"]:
        sys.exit("usage: python3 -m ktlswsgi.metrics --bench")
    _bench()
