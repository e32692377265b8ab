"""`--metrics-bind`: aggregation over worker processes, the exposition, the endpoint.

Real forked processes write real snapshot files; the master side folds the
dead ones; the text is parsed back with prometheus_client's own parser; the
endpoint is spoken to over real sockets; an in-process server serves real
requests whose counts must show up after a flush.
"""
from __future__ import annotations

import http.client
import multiprocessing
import os
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time

import pytest

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from ktlswsgi import metrics
from ktlswsgi.telemetry import DURATION_BOUNDS_S, Counters
from support import recv_until_closed, tls_client_context, wait_until

FORK = multiprocessing.get_context("fork")


# -- helpers ---------------------------------------------------------------------------
@pytest.fixture
def mdir():
    d = metrics.make_dir()
    yield d
    metrics.remove_dir(d)


def samples(text: str) -> dict:
    """{(sample name, sorted label items): value} of an exposition text."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def scrape(d: str) -> dict:
    body, _ = metrics.render(d)
    return samples(body.decode())


def req(method: str, status: str):
    return ("ktlswsgi_requests_total", (("method", method), ("status", status)))


def val(name: str, **labels):
    return (name, tuple(sorted(labels.items())))


def assert_monotonic(before: dict, after: dict) -> None:
    """Every counter and histogram sample present before is there and no smaller."""
    gauges = {"ktlswsgi_open_connections", "ktlswsgi_pool_queue_depth", "ktlswsgi_workers"}
    for key, v in before.items():
        if key[0] in gauges:
            continue
        assert key in after, key
        assert after[key] >= v, (key, v, after[key])


# -- telemetry: what the reactor records -----------------------------------------------
def test_record_response_bounds_methods_and_buckets():
    c = Counters()
    c.record_response(b"GET", 200, 0.0005)        # exactly a bound: that bucket (le)
    c.record_response(b"GET", 200, 0.00050001)
    c.record_response(b"BREW", 418, 0.0)          # not a standard method
    c.record_response(b"X" * 100, 418, 1e9)       # another: same label, +Inf bucket
    assert c.responses == {("GET", 200): 2, ("OTHER", 418): 2}
    assert c.duration_buckets[0] == 2             # 0.0 and 0.0005
    assert c.duration_buckets[1] == 1             # (0.0005, 0.001]
    assert c.duration_buckets[-1] == 1
    assert len(c.duration_buckets) == len(DURATION_BOUNDS_S) + 1
    assert c.duration_sum_s == pytest.approx(0.0005 + 0.00050001 + 1e9)
    # The existing API is unchanged; the new field joins the summary line.
    assert set(c.snapshot()) >= {"connections", "bytes_sendfile", "connections_closed"}
    c.connections += 3
    c.connections_closed += 1
    assert c.open_connections == 2


def test_make_dir_is_private(mdir):
    assert stat.S_IMODE(os.stat(mdir).st_mode) == 0o700


# -- aggregation over real worker processes ------------------------------------------------
def _worker(directory: str, conn, method: bytes, n: int, duration_s: float) -> None:
    """A stand-in worker process: counts, flushes, waits for orders."""
    c = Counters()
    exp = metrics.WorkerExporter(c, directory, pool_depth=lambda: 2)
    c.connections += 3
    c.connections_closed += 1          # 2 open
    c.handshakes_ok += n
    c.bytes_ssl_sendfile += 1000 * n
    for _ in range(n):
        c.record_response(method, 200, duration_s)
    c.record_response(b"BREW", 418, duration_s)
    assert exp.flush()
    conn.send(("flushed", exp.path))
    while True:
        cmd = conn.recv()
        if cmd == "more":              # count more, flush, report
            c.record_response(method, 200, duration_s)
            c.bytes_ssl_sendfile += 1000
            assert exp.flush()
            conn.send(("flushed", exp.path))
        elif cmd == "exit":            # a clean exit flushes once more
            c.record_response(method, 200, duration_s)
            exp.flush()
            os._exit(0)


class Worker:
    def __init__(self, d, method=b"GET", n=5, duration_s=0.003):
        self.conn, child = FORK.Pipe()
        self.proc = FORK.Process(target=_worker, args=(d, child, method, n, duration_s),
                                 daemon=True)
        self.proc.start()
        self.pid = self.proc.pid
        assert self.conn.poll(10)
        self.path = self.conn.recv()[1]

    def more(self):
        self.conn.send("more")
        assert self.conn.poll(10)
        self.conn.recv()

    def exit(self):
        self.conn.send("exit")
        self.proc.join(10)
        assert self.proc.exitcode == 0

    def kill(self):
        os.kill(self.pid, signal.SIGKILL)
        self.proc.join(10)


def test_sums_over_workers_stay_monotonic_when_one_dies(mdir):
    master = metrics.MasterMetrics(mdir)
    a = Worker(mdir, b"GET", n=5, duration_s=0.003)
    b = Worker(mdir, b"POST", n=7, duration_s=0.2)
    try:
        s1 = scrape(mdir)
        assert s1[req("GET", "200")] == 5
        assert s1[req("POST", "200")] == 7
        assert s1[req("OTHER", "418")] == 2
        assert s1[val("ktlswsgi_file_bytes_total", path="ssl_sendfile")] == 12000
        assert s1[val("ktlswsgi_tls_handshakes_total", result="ok")] == 12
        assert s1[val("ktlswsgi_open_connections")] == 4
        assert s1[val("ktlswsgi_pool_queue_depth")] == 4
        assert s1[val("ktlswsgi_workers")] == 2
        assert s1[val("ktlswsgi_request_duration_seconds_count")] == 14
        assert s1[val("ktlswsgi_request_duration_seconds_bucket", le="0.005")] == 6
        assert s1[val("ktlswsgi_request_duration_seconds_bucket", le="0.25")] == 14

        a.more()                                   # a counts one more, then is killed
        a.kill()
        master.on_worker_exit(a.pid)
        master.count_restart()
        s2 = scrape(mdir)
        assert_monotonic(s1, s2)
        assert s2[req("GET", "200")] == 6          # a's last flush is kept
        assert s2[val("ktlswsgi_file_bytes_total", path="ssl_sendfile")] == 13000
        assert s2[val("ktlswsgi_open_connections")] == 2   # a's gauges are gone
        assert s2[val("ktlswsgi_workers")] == 1
        assert s2[val("ktlswsgi_worker_restarts_total")] == 1
        assert not os.path.exists(a.path)

        c = Worker(mdir, b"GET", n=1, duration_s=0.0001)   # the replacement
        s3 = scrape(mdir)
        assert_monotonic(s2, s3)
        assert s3[req("GET", "200")] == 7
        assert s3[val("ktlswsgi_workers")] == 2

        b.exit()                                   # a clean exit: its exit flush counts
        master.on_worker_exit(b.pid)
        c.exit()
        master.on_worker_exit(c.pid)
        s4 = scrape(mdir)
        assert_monotonic(s3, s4)
        assert s4[req("POST", "200")] == 8
        assert s4[req("GET", "200")] == 8
        assert s4[val("ktlswsgi_workers")] == 0
        assert s4[val("ktlswsgi_open_connections")] == 0
        # One file per live worker plus master.json: restarts do not grow it.
        assert sorted(os.listdir(mdir)) == ["master.json"]
    finally:
        for w in (a, b):
            if w.proc.is_alive():
                w.kill()


@pytest.mark.parametrize("fold_when", ["after listing", "before master.json is read"])
def test_a_fold_during_a_scrape_counts_the_worker_once(mdir, monkeypatch, fold_when):
    """The master folds a dead worker while the endpoint is reading: no dip, no double."""
    master = metrics.MasterMetrics(mdir)
    w = Worker(mdir, b"GET", n=4)
    w.kill()
    folded = []

    def fold():
        if not folded:
            folded.append(True)
            master.on_worker_exit(w.pid)

    if fold_when == "after listing":
        real_listdir = os.listdir

        def listdir(path):
            names = real_listdir(path)
            if path == mdir and names and not folded:
                fold()                         # the worker file vanishes after listing
            return names
        monkeypatch.setattr(metrics.os, "listdir", listdir)
    else:
        real_read = metrics._read_json

        def read_json(path):
            if path.endswith("master.json"):
                fold()                         # master.json changes after workers were read
            return real_read(path)
        monkeypatch.setattr(metrics, "_read_json", read_json)
    totals = metrics.read_totals(mdir)
    assert folded
    assert totals["responses"] == [["GET", 200, 4], ["OTHER", 418, 1]]
    assert totals["gauges"]["workers"] == 0


def test_a_failed_master_write_loses_nothing(mdir):
    """master.json cannot be written: no exception into the master, no count lost."""
    master = metrics.MasterMetrics(mdir)
    w = Worker(mdir, b"GET", n=3)
    w.kill()
    os.mkdir(os.path.join(mdir, "master.json.tmp"))   # the next write fails (EISDIR)
    master.on_worker_exit(w.pid)
    master.count_restart()
    s1 = scrape(mdir)
    assert s1[req("GET", "200")] == 3                  # still from the worker's file
    assert os.path.exists(w.path)
    os.rmdir(os.path.join(mdir, "master.json.tmp"))
    master.count_restart()                             # this write carries the fold
    s2 = scrape(mdir)
    assert s2[req("GET", "200")] == 3
    assert s2[val("ktlswsgi_worker_restarts_total")] == 2
    assert not os.path.exists(w.path)
    assert_monotonic(s1, s2)


def test_exposition_names_types_and_units(mdir):
    metrics.MasterMetrics(mdir)
    c = Counters()
    c.record_response(b"GET", 200, 0.01)
    c.bytes_sendfile += 7
    c.bytes_send += 3
    c.ktls_tx_connections += 1
    metrics.WorkerExporter(c, mdir).flush()
    body, ctype = metrics.render(mdir)
    assert ctype == CONTENT_TYPE_LATEST
    fams = {f.name: f for f in text_string_to_metric_families(body.decode())}
    assert fams["ktlswsgi_requests"].type == "counter"
    assert fams["ktlswsgi_request_duration_seconds"].type == "histogram"
    assert fams["ktlswsgi_open_connections"].type == "gauge"
    assert fams["ktlswsgi_pool_queue_depth"].type == "gauge"
    for name in ("ktlswsgi_file_bytes", "ktlswsgi_buffer_bytes", "ktlswsgi_tls_handshakes",
                 "ktlswsgi_ktls_connections", "ktlswsgi_worker_restarts",
                 "ktlswsgi_connections", "ktlswsgi_aborted_connections"):
        assert fams[name].type == "counter", name
    s = samples(body.decode())
    assert s[val("ktlswsgi_file_bytes_total", path="sendfile")] == 7
    assert s[val("ktlswsgi_file_bytes_total", path="pread_ssl_write")] == 0
    assert s[val("ktlswsgi_buffer_bytes_total", path="send")] == 3
    assert s[val("ktlswsgi_ktls_connections_total", direction="tx")] == 1
    assert s[val("ktlswsgi_request_duration_seconds_bucket", le="+Inf")] == 1
    assert s[val("ktlswsgi_request_duration_seconds_sum")] == pytest.approx(0.01)
    # Buckets are cumulative and end with +Inf.
    les = [k for k in s if k[0] == "ktlswsgi_request_duration_seconds_bucket"]
    assert len(les) == len(DURATION_BOUNDS_S) + 1


def test_import_does_not_need_prometheus_client():
    code = ("import sys; sys.modules['prometheus_client'] = None\n"
            "import ktlswsgi.cli, ktlswsgi.server, ktlswsgi.connection, ktlswsgi.metrics\n"
            "from ktlswsgi import metrics\n"
            "try:\n    metrics.require()\nexcept metrics.MetricsUnavailable as e:\n"
            "    print(e)\nelse:\n    print('no error')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [
        "--metrics-bind needs the prometheus-client package: pip install 'ktlswsgi[metrics]'"]


# -- the endpoint over a real socket ----------------------------------------------------------
@pytest.fixture
def endpoint(mdir):
    metrics.MasterMetrics(mdir)
    server = metrics.MetricsServer(metrics.listen("127.0.0.1:0"), mdir, timeout_s=0.5,
                                   max_request_bytes=4096)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield server
    server.close()
    t.join(5)
    assert not t.is_alive()


def http_get(addr, path, method="GET"):
    conn = http.client.HTTPConnection(addr[0], addr[1], timeout=5)
    try:
        conn.request(method, path)
        r = conn.getresponse()
        return r.status, r.getheader("Content-Type"), r.read()
    finally:
        conn.close()


def test_endpoint_answers_metrics_and_404(endpoint):
    status, ctype, body = http_get(endpoint.address, "/metrics")
    assert status == 200
    assert ctype == CONTENT_TYPE_LATEST
    assert val("ktlswsgi_workers") in samples(body.decode())
    assert http_get(endpoint.address, "/metrics?x=1")[0] == 200
    status, ctype, body = http_get(endpoint.address, "/metrics", "HEAD")
    assert (status, body) == (200, b"")
    assert http_get(endpoint.address, "/other")[0] == 404
    assert http_get(endpoint.address, "/")[0] == 404
    assert http_get(endpoint.address, "/metrics", "POST")[0] == 405


def test_idle_connections_do_not_delay_a_scrape(endpoint):
    """Connections that send nothing (a port scan, a stuck client, someone on
    the pod network) are served side by side with the scrape, not before it."""
    host, port = endpoint.address
    idle = [socket.create_connection((host, port), timeout=5) for _ in range(3)]
    try:
        started = time.monotonic()
        assert http_get(endpoint.address, "/metrics")[0] == 200
        assert time.monotonic() - started < 0.4   # well under one client's timeout_s
    finally:
        for s in idle:
            s.close()


def test_endpoint_bounds_its_connections(mdir):
    metrics.MasterMetrics(mdir)
    server = metrics.MetricsServer(metrics.listen("127.0.0.1:0"), mdir, timeout_s=30,
                                   max_clients=4)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        idle = [socket.create_connection(server.address, timeout=5) for _ in range(10)]
        # The oldest beyond the bound were closed to make room; the scrape is served.
        assert http_get(server.address, "/metrics")[0] == 200
        closed = 0
        for s in idle:
            s.settimeout(2)
            try:
                if s.recv(1) == b"":
                    closed += 1
            except (socket.timeout, TimeoutError):
                pass
            except ConnectionResetError:
                closed += 1
            s.close()
        assert closed >= 6, closed
    finally:
        server.close()
        t.join(5)


def test_endpoint_closes_an_oversized_request_and_a_silent_client(endpoint):
    host, port = endpoint.address
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(b"GET /metrics HTTP/1.1\r\nX-Pad: " + b"a" * 8192)
        try:
            data = recv_until_closed(s, timeout=5)
        except OSError:
            data = b""
        assert data == b"" or data.startswith(b"HTTP/1.1 431 ")
    # A client that sends nothing is dropped after timeout_s (0.5 s).
    started = time.monotonic()
    with socket.create_connection((host, port), timeout=5) as idle:
        assert recv_until_closed(idle, timeout=5) == b""
    assert time.monotonic() - started < 3
    assert http_get(endpoint.address, "/metrics")[0] == 200


def test_serve_in_a_forked_child_process(mdir):
    """The process shape the master uses: bind in the parent, serve in a child."""
    master = metrics.MasterMetrics(mdir)
    master.count_restart()
    lsock = metrics.listen("127.0.0.1:0")
    addr = lsock.getsockname()
    pid = os.fork()
    if pid == 0:
        try:
            metrics.serve(lsock, mdir)
        finally:
            os._exit(0)
    lsock.close()
    try:
        status, ctype, body = http_get(addr, "/metrics")
        assert status == 200
        assert samples(body.decode())[val("ktlswsgi_worker_restarts_total")] == 1
    finally:
        os.kill(pid, signal.SIGTERM)       # serve() restored SIGTERM's default
        _, code = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(code) and os.WTERMSIG(code) == signal.SIGTERM


def test_listen_reports_a_busy_port():
    with metrics.listen("127.0.0.1:0") as taken:
        port = taken.getsockname()[1]
        with pytest.raises(OSError, match="--metrics-bind"):
            metrics.listen(f"127.0.0.1:{port}")


# -- a real server: counts and latency after a flush ------------------------------------------
def _app(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/slow":
        time.sleep(0.3)
    if path == "/file":
        start_response("200 OK", [("Content-Type", "application/octet-stream")])
        return environ["wsgi.file_wrapper"](open(_FILE[0], "rb"))
    if path == "/stream":
        start_response("200 OK", [("Content-Type", "text/plain")])
        return _forever()
    status = "404 Not Found" if path == "/missing" else "200 OK"
    start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "2")])
    return [b"ok"]


_FILE: list = []


def _forever():
    while True:
        yield b"x" * 65536
        time.sleep(0.001)


def _flush_on_reactor(srv, exp) -> None:
    """Flush on the reactor thread, as a worker does, and wait for it."""
    done = threading.Event()

    def go():
        exp.flush()
        done.set()
    srv.server.reactor.call_soon_threadsafe(go)
    assert done.wait(5)


def test_real_requests_show_up_after_a_flush(serve, mdir, tmp_path):
    path = tmp_path / "f.bin"
    path.write_bytes(os.urandom(100_000))
    _FILE[:] = [str(path)]
    srv = serve(_app)
    metrics.MasterMetrics(mdir)
    exp = metrics.WorkerExporter(srv.counters, mdir, pool_depth=lambda: srv.server.pool.queued,
                                 interval_s=0.05)
    srv.server.reactor.call_soon_threadsafe(lambda: exp.schedule(srv.server.reactor))

    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
    for target in ("/", "/", "/slow", "/missing"):
        conn.request("GET", target)
        r = conn.getresponse()
        r.read()
    conn.request("BREW", "/")
    conn.getresponse().read()
    conn.request("GET", "/file")
    assert len(conn.getresponse().read()) == 100_000
    # The keep-alive connection is still open: the gauge says so.
    assert wait_until(lambda: scrape(mdir).get(req("GET", "404")) == 1)
    s = scrape(mdir)
    assert s[val("ktlswsgi_open_connections")] == 1
    conn.close()

    assert wait_until(lambda: scrape(mdir).get(req("GET", "200")) == 4)
    assert wait_until(lambda: scrape(mdir)[val("ktlswsgi_open_connections")] == 0)
    s = scrape(mdir)
    assert s[req("OTHER", "200")] == 1
    assert s[req("GET", "404")] == 1
    assert s[val("ktlswsgi_request_duration_seconds_count")] == 6
    # /slow took >= 300 ms; the others far less than 250 ms.
    assert s[val("ktlswsgi_request_duration_seconds_bucket", le="0.25")] == 5
    assert s[val("ktlswsgi_request_duration_seconds_bucket", le="0.5")] == 6
    assert s[val("ktlswsgi_request_duration_seconds_sum")] >= 0.3
    assert s[val("ktlswsgi_file_bytes_total", path="sendfile")] == 100_000
    assert s[val("ktlswsgi_file_transfers_total")] == 1
    assert s[val("ktlswsgi_connections_total")] == 1
    assert s[val("ktlswsgi_workers")] == 1
    assert s[val("ktlswsgi_pool_queue_depth")] == 0


def test_an_aborted_response_is_counted(serve, mdir):
    srv = serve(_app)
    metrics.MasterMetrics(mdir)
    exp = metrics.WorkerExporter(srv.counters, mdir)
    with srv.connect() as s:
        s.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
        # A reset, not a FIN: the server's next write fails and it aborts.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    assert wait_until(lambda: srv.counters.connections_closed == 1)
    _flush_on_reactor(srv, exp)
    s = scrape(mdir)
    assert s[req("GET", "200")] == 1                  # the head had gone out
    assert s[val("ktlswsgi_aborted_connections_total")] == 1
    assert s[val("ktlswsgi_open_connections")] == 0


def test_tls_handshakes_are_counted(serve_tls, cert_pair, mdir):
    srv = serve_tls(_app, transport="memory")
    metrics.MasterMetrics(mdir)
    exp = metrics.WorkerExporter(srv.counters, mdir)
    ctx = tls_client_context(cert_pair)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert recv_until_closed(tls).startswith(b"HTTP/1.1 200 ")
    with srv.connect() as bad:
        bad.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")   # plaintext to a TLS port
        try:
            recv_until_closed(bad, timeout=5)
        except (OSError, ssl.SSLError):
            pass
    assert wait_until(lambda: srv.counters.handshakes_failed == 1
                    and srv.counters.connections_closed == 2)
    _flush_on_reactor(srv, exp)
    s = scrape(mdir)
    assert s[val("ktlswsgi_tls_handshakes_total", result="ok")] == 1
    assert s[val("ktlswsgi_tls_handshakes_total", result="failed")] == 1
    assert s[val("ktlswsgi_buffer_bytes_total", path="ssl_write")] > 0
    assert s[req("GET", "200")] == 1


# -- the real command line: a master, two workers, the metrics process -----------------------

def _scrape_url(port: int) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    conn.request("GET", "/metrics")
    r = conn.getresponse()
    assert r.status == 200
    out = {}
    for fam in text_string_to_metric_families(r.read().decode()):
        for sample in fam.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def _worker_pids(master_pid: int) -> set:
    with open(f"/proc/{master_pid}/task/{master_pid}/children") as f:
        return {int(p) for p in f.read().split()}


def _listening_inode(port: int):
    """The inode of the socket listening on 127.0.0.1:`port` (from /proc/net/tcp)."""
    with open("/proc/net/tcp") as f:
        for line in f.readlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and int(local.split(":")[1], 16) == port:
                return inode
    return None


def _socket_inodes(pid: int) -> set:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    return inodes


def test_cli_metrics_sum_over_workers_and_survive_a_killed_worker(ktlswsgi_cli):
    from support import free_port
    mport = free_port()
    proc = ktlswsgi_cli("apps.arbiter_apps:app", "-w", "2", "--metrics-bind", f"127.0.0.1:{mport}")
    total = ("ktlswsgi_requests_total", (("method", "GET"), ("status", "200")))
    served: dict = {}
    try:
        for _ in range(40):
            c = http.client.HTTPConnection("127.0.0.1", proc.port, timeout=5)
            c.request("GET", "/pid")
            r = c.getresponse()
            assert r.status == 200
            pid = int(r.read())
            served[pid] = served.get(pid, 0) + 1
            c.close()
        # A worker reports once it has started: the one that served nothing
        # may still be starting when the other has served all 40.
        assert wait_until(lambda: _scrape_url(mport).get(total) == 40
                          and _scrape_url(mport)[("ktlswsgi_workers", ())] == 2, 10)
        victim = max(served, key=served.get)
        os.kill(victim, signal.SIGKILL)
        assert wait_until(lambda: _scrape_url(mport)[("ktlswsgi_worker_restarts_total", ())] == 1
                        and _scrape_url(mport)[("ktlswsgi_workers", ())] == 2, 15)
        # all 40 were in the snapshots before the kill: the dead worker's stay counted
        assert _scrape_url(mport)[total] == 40
        # The workers do not hold the metrics port's listening socket.
        inode, app_inode = _listening_inode(mport), _listening_inode(proc.port)
        assert inode is not None and app_inode is not None
        workers = [pid for pid in _worker_pids(proc.pid) if app_inode in _socket_inodes(pid)]
        assert len(workers) == 2
        for pid in workers:
            assert inode not in _socket_inodes(pid), f"worker {pid} holds the metrics socket"
    finally:
        proc.terminate()
        proc.wait(20)
