"""The servers under test: how to launch each, and a handle that always ends them.

Every server runs in its own session (process group) pinned to the server cores
with `taskset` (core 0 for one worker process, cores 0-(N-1) for N), with
RLIMIT_NOFILE raised (the `ulimit -n` of the launch), its output in a log file;
stop() sends SIGTERM to the group, then SIGKILL.
"""
from __future__ import annotations

import http.client
import importlib.metadata
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time

from . import proc

SERVER_CORE = "0"       # the server's core with one worker process (server_cpus(1))
THREADS = 16            # threads per worker process, whatever the worker count
NOFILE = 65536
IDLE_MAX_CONNECTIONS = 20000
IDLE_KEEPALIVE = 600
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def host_cpus() -> int:
    return os.cpu_count() or 1


def server_cpus(workers: int) -> str:
    """The taskset list for a server with `workers` processes: cores 0..N-1 (capped at
    the host's core count)."""
    n = max(1, min(workers, host_cpus()))
    return SERVER_CORE if n == 1 else "0-%d" % (n - 1)


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _which_module_or_script(module: str, script: str) -> list[str] | None:
    """Prefer `python -m module` of this interpreter; else the script on PATH."""
    import importlib.util
    if importlib.util.find_spec(module) is not None:
        return [sys.executable, "-m", module]
    path = shutil.which(script)
    return [path] if path else None


class Ctx:
    """What every launch needs: temp dir, certificate, static dir."""

    def __init__(self, workdir: str, cert: str, key: str, static_dir: str):
        self.workdir, self.cert, self.key, self.static_dir = workdir, cert, key, static_dir


class Peer:
    """One server configuration: name, scheme, app; argv(port) builds the launch."""

    name = "?"
    kind = "?"          # ktlswsgi | gunicorn | granian | uwsgi | nginx | hypercorn
    static_only = False
    # Whether the server speaks HTTP/2 (ALPN h2 over TLS); without it a peer gets
    # no h2 rows, only a "-" in the HTTP/2 table.
    http2 = False
    # For the idle-connection case: what the launch raises and the cap it leaves.
    idle_note = ""

    def __init__(self, scheme: str, app: str, transport: str | None = None, workers: int = 1,
                 protocol: str = "h1"):
        self.scheme, self.app, self.transport = scheme, app, transport
        self.workers = workers      # worker processes (-w / --workers / --processes / ...)
        self.protocol = protocol    # the load's protocol: "h1" (h2load --h1) or "h2"

    @property
    def label(self) -> str:
        """The server's name without the worker count (rows carry `workers` apart)."""
        t = "/%s" % self.transport if self.transport else ""
        return "%s%s" % (self.kind, t)

    @property
    def tag(self) -> str:
        """label + worker count (+ protocol for h2), for logs and file names:
        `ktlswsgi/socket w2`, `granian w1 h2`."""
        return "%s w%d%s" % (self.label, self.workers,
                             " h2" if self.protocol == "h2" else "")

    def available(self) -> str | None:
        """None if launchable here, else the reason it is not."""
        return None

    def argv(self, port: int, ctx: Ctx, idle: bool = False) -> list[str]:
        raise NotImplementedError

    def unsupported(self, case: str) -> str | None:
        return None


class Ktlswsgi(Peer):
    kind = "ktlswsgi"
    http2 = True        # --http2 is on by default: ALPN offers h2 before http/1.1
    idle_note = "--max-connections %d --keep-alive %d" % (IDLE_MAX_CONNECTIONS, IDLE_KEEPALIVE)

    def __init__(self, scheme, app, transport=None, workers=1, reuse_port=False,
                 protocol="h1"):
        super().__init__(scheme, app, transport, workers, protocol)
        self.reuse_port = reuse_port    # --reuse-port: one SO_REUSEPORT socket per worker

    def argv(self, port, ctx, idle=False):
        a = [sys.executable, "-m", "ktlswsgi", "bench.apps:%s_app" % self.app,
             "-b", "127.0.0.1:%d" % port, "-w", str(self.workers), "--threads", str(THREADS)]
        if self.reuse_port:
            a.append("--reuse-port")
        if self.scheme == "https":
            a += ["--certfile", ctx.cert, "--keyfile", ctx.key,
                  "--tls-transport", self.transport or "auto"]
        if idle:
            a += ["--max-connections", str(IDLE_MAX_CONNECTIONS),
                  "--keep-alive", str(IDLE_KEEPALIVE), "--backlog", "4096"]
        return a


class Gunicorn(Peer):
    kind = "gunicorn"
    http2 = True        # gunicorn 27: --http-protocols h2,h1 (ALPN), on the h2 rows only
    idle_note = "--worker-connections %d --keep-alive %d" % (IDLE_MAX_CONNECTIONS, IDLE_KEEPALIVE)

    def available(self):
        if not _which_module_or_script("gunicorn", "gunicorn"):
            return "gunicorn not installed"
        if self.protocol == "h2":
            try:
                major = int(importlib.metadata.version("gunicorn").split(".")[0])
            except (importlib.metadata.PackageNotFoundError, ValueError):
                major = 0
            if major < 27:
                return "HTTP/2 needs gunicorn 27 (--http-protocols)"
        return None

    def argv(self, port, ctx, idle=False):
        a = _which_module_or_script("gunicorn", "gunicorn") + [
            "-k", "gthread", "-w", str(self.workers), "--threads", str(THREADS),
            "-b", "127.0.0.1:%d" % port, "bench.apps:%s_app" % self.app]
        if self.scheme == "https":
            a += ["--certfile", ctx.cert, "--keyfile", ctx.key]
        if self.protocol == "h2":
            a += ["--http-protocols", "h2,h1"]
        if idle:
            a += ["--worker-connections", str(IDLE_MAX_CONNECTIONS),
                  "--keep-alive", str(IDLE_KEEPALIVE), "--backlog", "4096"]
        return a


class Granian(Peer):
    kind = "granian"
    http2 = True
    idle_note = "--backlog 4096 --backpressure %d (no idle timeout)" % IDLE_MAX_CONNECTIONS

    def available(self):
        return None if shutil.which("granian") else "granian not installed (pip install granian)"

    def argv(self, port, ctx, idle=False):
        a = [shutil.which("granian"), "--interface", "wsgi", "--workers", str(self.workers),
             "--blocking-threads", str(THREADS), "--host", "127.0.0.1", "--port", str(port),
             "--no-ws", "--log-level", "warning"]
        if self.scheme == "https":
            a += ["--ssl-certificate", ctx.cert, "--ssl-keyfile", ctx.key]
        if self.protocol == "h2":
            # auto (the default) = ALPN h2 or http/1.1; `--http 2` would answer the
            # harness's HTTP/1.1 readiness probe with h2 frames. h2load checks it got h2.
            a += ["--http", "auto"]
        if idle:
            a += ["--backlog", "4096", "--backpressure", str(IDLE_MAX_CONNECTIONS)]
        return a + ["bench.apps:%s_app" % self.app]


class Uwsgi(Peer):
    kind = "uwsgi"
    idle_note = ("--http-timeout %d, listen 4096, router max fd %d"
                 % (IDLE_KEEPALIVE, NOFILE))

    def available(self):
        return None if shutil.which("uwsgi") else "uwsgi not installed (pip install uwsgi)"

    def argv(self, port, ctx, idle=False):
        addr = "127.0.0.1:%d" % port
        a = [shutil.which("uwsgi"), "--master", "--processes", str(self.workers),
             "--threads", str(THREADS),
             "--module", "bench.apps:%s_app" % self.app, "--need-app",
             "--disable-logging", "--die-on-term", "--http-keepalive=1",
             "--pythonpath", REPO_ROOT, "--listen", "4096" if idle else "1024"]
        if self.scheme == "https":
            a += ["--https", "%s,%s,%s" % (addr, ctx.cert, ctx.key)]
        else:
            a += ["--http", addr]
        if idle:
            a += ["--http-timeout", str(IDLE_KEEPALIVE), "--max-fd", str(NOFILE)]
        return a


class Hypercorn(Peer):
    """hypercorn (HTTP/2 rows only): serves a WSGI callable directly (its WSGIWrapper runs
    the app in asyncio's default thread pool: min(32, cores + 4) threads, not settable
    from the command line; no wsgi.file_wrapper, so the raw app's file cases answer
    501). h2 by ALPN with --certfile/--keyfile."""
    kind = "hypercorn"
    http2 = True
    idle_note = "--backlog 4096 --keep-alive %d" % IDLE_KEEPALIVE

    def available(self):
        return None if _which_module_or_script("hypercorn", "hypercorn") else \
            "hypercorn not installed (pip install hypercorn)"

    def argv(self, port, ctx, idle=False):
        a = _which_module_or_script("hypercorn", "hypercorn") + [
            "-b", "127.0.0.1:%d" % port, "-w", str(self.workers), "-k", "asyncio",
            "--log-level", "warning", "--backlog", "4096" if idle else "1024"]
        if self.scheme == "https":
            a += ["--certfile", ctx.cert, "--keyfile", ctx.key]
        if idle:
            a += ["--keep-alive", str(IDLE_KEEPALIVE)]
        return a + ["bench.apps:%s_app" % self.app]


NGINX_CONF = """
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
user root;
pid {workdir}/nginx-{port}.pid;
error_log {workdir}/nginx-{port}-error.log warn;
events {{ worker_connections {worker_connections}; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_timeout {keepalive}s;
    keepalive_requests 10000000;
    client_body_temp_path {workdir}/nginx-body;
    proxy_temp_path {workdir}/nginx-proxy;
    fastcgi_temp_path {workdir}/nginx-fastcgi;
    uwsgi_temp_path {workdir}/nginx-uwsgi;
    scgi_temp_path {workdir}/nginx-scgi;
    types {{ }}
    default_type application/octet-stream;
    server {{
        listen 127.0.0.1:{port}{ssl}{http2} backlog=4096;
        {ssl_lines}
        location = /tiny {{ default_type text/plain; return 200 "ok"; }}
        location /file/ {{ alias {static_dir}/; }}
    }}
}}
"""


class Nginx(Peer):
    kind = "nginx"
    static_only = True
    http2 = True        # `listen ... ssl http2` (nginx 1.22 syntax)
    idle_note = "worker_connections %d, keepalive_timeout %ds" % (IDLE_MAX_CONNECTIONS, IDLE_KEEPALIVE)

    def __init__(self, scheme, app="static", transport=None, workers=1, protocol="h1"):
        super().__init__(scheme, "static", transport, workers, protocol)

    def available(self):
        return None if (shutil.which("nginx") or os.path.exists("/usr/sbin/nginx")) else \
            "nginx not installed (apt-get install nginx-light)"

    def argv(self, port, ctx, idle=False):
        ssl_lines = ""
        if self.scheme == "https":
            ssl_lines = ("ssl_certificate %s; ssl_certificate_key %s; "
                         "ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache shared:SSL:10m; "
                         "ssl_conf_command Options KTLS;" % (ctx.cert, ctx.key))
        conf = NGINX_CONF.format(
            nofile=NOFILE, workdir=ctx.workdir, port=port, workers=self.workers,
            worker_connections=IDLE_MAX_CONNECTIONS + 1000 if idle else 4096,
            keepalive=IDLE_KEEPALIVE if idle else 75,
            ssl=" ssl" if self.scheme == "https" else "", ssl_lines=ssl_lines,
            http2=" http2" if self.protocol == "h2" else "",
            static_dir=ctx.static_dir)
        path = os.path.join(ctx.workdir, "nginx-%d.conf" % port)
        with open(path, "w") as f:
            f.write(conf)
        return [shutil.which("nginx") or "/usr/sbin/nginx", "-c", path, "-p", ctx.workdir]

    def unsupported(self, case):
        if case == "16k_dynamic":
            return "n/a: static server (tiny = `return 200`)"
        return None


def all_peers(schemes, apps, transports=("socket", "memory"), workers=(1,)) -> list[Peer]:
    """Every configuration, each once per worker count (the counts of one configuration
    next to each other, so a drifting host load hits them alike)."""
    out: list[Peer] = []
    for scheme in schemes:
        for app in apps:
            if scheme == "https":
                for t in transports:
                    out += [Ktlswsgi(scheme, app, t, workers=n) for n in workers]
            else:
                out += [Ktlswsgi(scheme, app, workers=n) for n in workers]
            for cls in (Gunicorn, Granian, Uwsgi):
                out += [cls(scheme, app, workers=n) for n in workers]
        out += [Nginx(scheme, workers=n) for n in workers]
    return out


# HTTP/2 peers, and those without HTTP/2 (shown as "-" in the HTTP/2 table).
H2_PEER_KINDS = ("ktlswsgi", "gunicorn", "granian", "hypercorn", "nginx")
NO_H2_PEER_KINDS = ("uwsgi",)


def h2_peers(apps, transports=("socket", "memory"), workers=(1,)) -> list[Peer]:
    """The HTTP/2 configurations (TLS only: ALPN h2): ktlswsgi with each transport,
    gunicorn (27: --http-protocols h2,h1), granian, hypercorn per app, and nginx
    serving the static files."""
    out: list[Peer] = []
    for app in apps:
        for t in transports:
            out += [Ktlswsgi("https", app, t, workers=n, protocol="h2") for n in workers]
        for cls in (Gunicorn, Granian, Hypercorn):
            out += [cls("https", app, workers=n, protocol="h2") for n in workers]
    out += [Nginx("https", workers=n, protocol="h2") for n in workers]
    return out


def _set_limits():
    # The `ulimit -n` of the launch, in the child before exec.
    proc.raise_nofile(NOFILE)


class Server:
    """A running server. Use as a context manager: it is always stopped."""

    def __init__(self, peer: Peer, ctx: Ctx, idle: bool = False):
        self.peer, self.ctx, self.idle = peer, ctx, idle
        self.port = free_port()
        self.popen: subprocess.Popen | None = None
        self.log_path = os.path.join(
            ctx.workdir, "%s-w%d-%s-%s-%d.log" % (peer.label.replace("/", "-"), peer.workers,
                                                  peer.scheme, peer.app, self.port))
        self.argv: list[str] = []
        self.cpus = server_cpus(peer.workers)

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen else None

    def url(self, path: str) -> str:
        return "%s://127.0.0.1:%d%s" % (self.peer.scheme, self.port, path)

    def start(self, ready_path: str, timeout: float = 30.0) -> None:
        self.argv = self.peer.argv(self.port, self.ctx, idle=self.idle)
        self.cpus = server_cpus(self.peer.workers)
        argv = (["taskset", "-c", self.cpus] if shutil.which("taskset") else []) + self.argv
        env = dict(os.environ)
        env["BENCH_STATIC_DIR"] = self.ctx.static_dir
        env["PYTHONPATH"] = REPO_ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, cwd=REPO_ROOT, env=env,
                                      start_new_session=True, preexec_fn=_set_limits)
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError("exited with code %s: %s" % (self.popen.returncode,
                                                                  self.log_tail(300)))
            try:
                status, _body = fetch(self.port, self.peer.scheme, ready_path, timeout=2)
                if status < 500 or status == 501:
                    return
                last = "HTTP %d" % status
            except (OSError, http.client.HTTPException) as e:
                last = "%s: %s" % (type(e).__name__, str(e)[:200])
            time.sleep(0.2)
        raise RuntimeError("not ready after %.0fs (%s): %s" % (timeout, last, self.log_tail(300)))

    def log_tail(self, n: int = 2000) -> str:
        try:
            if not self._log.closed:
                self._log.flush()
            with open(self.log_path, "rb") as f:
                data = f.read()
            return data[-n:].decode(errors="replace").strip()
        except OSError:
            return ""

    def log_text(self) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode(errors="replace")
        except OSError:
            return ""

    def _exited(self, wait: float) -> bool:
        """Wait up to `wait` s for the leader to exit, WITHOUT reaping it: while it is
        a zombie its pid (= our group id) cannot be reused by another process."""
        deadline = time.monotonic() + wait
        while True:
            try:
                r = os.waitid(os.P_PID, self.popen.pid,
                              os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return True
            if r is not None:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def stop(self, timeout: float = 10.0) -> None:
        p = self.popen
        if p is None:
            return
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(p.pid, sig)   # the group this harness created for it
            except ProcessLookupError:
                break
            if self._exited(wait):
                break
        # Workers that outlived their master (same group; leader not yet reaped).
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            pass
        self._log.close()
        self.popen = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def fetch(port: int, scheme: str, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
    """One GET (certificate not verified): -> (status, body)."""
    if scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=timeout, context=ctx)
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


# Every worker process logs one `counters: k=v ...` line at exit (a log line
# `[time] [pid] [LEVEL] counters: ...`); the master logs the probe and TLS lines once.
_COUNTERS = re.compile(r"^(.*?)counters: (.*)$", re.M)
_PID = re.compile(r"\[(\d+)\]\s*\[[A-Z]+\]\s*$")
_KTLS = re.compile(r"kTLS: (.*)$", re.M)
_TLSLINE = re.compile(r"TLS: (.*transport.*)$", re.M)


def _parse_counters(text: str) -> dict:
    out = {}
    for kv in text.split():
        k, _, v = kv.partition("=")
        if v.isdigit():
            out[k] = int(v)
    return out


def ktlswsgi_telemetry(log: str) -> dict:
    """The probe line, the TLS line and the shutdown counters from a ktlswsgi log:
    `counters` = the sum over every `counters:` line (one per worker process that
    exited, replaced workers included), `per_worker` = each line with its pid."""
    out: dict = {}
    m = _KTLS.search(log)
    if m:
        out["ktls_probe"] = m.group(1).strip()
    m = _TLSLINE.search(log)
    if m:
        out["tls"] = m.group(1).strip()
    per_worker = []
    for prefix, text in _COUNTERS.findall(log):
        c = _parse_counters(text)
        if not c:
            continue
        pm = _PID.search(prefix)
        per_worker.append({"pid": int(pm.group(1)) if pm else None, "counters": c})
    if per_worker:
        total: dict = {}
        for w in per_worker:
            for k, v in w["counters"].items():
                total[k] = total.get(k, 0) + v
        out["counters"] = total
        out["counter_lines"] = len(per_worker)
        out["per_worker"] = per_worker
    return out
