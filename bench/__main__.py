"""`python -m bench`: ktlswsgi against gunicorn, granian, uWSGI and nginx.

Plain HTTP and TLS, a raw WSGI app and a Flask app, h2load --h1 on loopback
(server on core 0, client on core 1; with --workers N the server on cores
0..N-1), server CPU per request, RSS with idle TLS keep-alive connections, and a
locust mixed workload. With --protocols h1,h2 also HTTP/2 over TLS (h2load -m 10)
against granian, hypercorn and nginx. Writes bench/results/<date>[-quick].{json,md,png}. See
bench/README.md.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from . import load, peers, proc, report
from .apps import make_static_files

CASES = [
    # name, path, body bytes
    ("tiny", "/tiny", 2),
    ("16k_dynamic", "/16k", 16 * 1024),
    ("file_1b", "/file/1b", 1),
    ("file_16k", "/file/16k", 16 * 1024),
    ("file_64k", "/file/64k", 64 * 1024),
    ("file_1m", "/file/1m", 1024 * 1024),
]
CASE_NAMES = [c[0] for c in CASES]
PEER_KINDS = ["ktlswsgi", "gunicorn", "granian", "uwsgi", "nginx", "hypercorn"]
# HTTP/2 rows (--protocols ...,h2): the raw app's cases, and the Flask app's (send_file).
H2_CASES = "tiny,file_16k,file_64k,file_1m"
H2_FLASK_CASES = "file_1m"
HERE = os.path.dirname(os.path.abspath(__file__))


def log(msg: str) -> None:
    print("[bench %s] %s" % (time.strftime("%H:%M:%S"), msg), file=sys.stderr, flush=True)


class Budget:
    """A harness-wide time budget: past it, remaining work is skipped, not hung on."""

    def __init__(self, minutes: float):
        self.deadline = time.monotonic() + minutes * 60

    def left(self) -> float:
        return self.deadline - time.monotonic()

    def exceeded(self) -> bool:
        return self.left() <= 0


def make_cert(workdir: str) -> tuple[str, str]:
    cert, key = os.path.join(workdir, "cert.pem"), os.path.join(workdir, "key.pem")
    if shutil.which("openssl"):
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
             "-nodes", "-keyout", key, "-out", cert, "-days", "30", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1,IP:::1"],
            check=True, timeout=30, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    else:
        from ktlswsgi.tls.selfsigned import generate_pem
        cert_pem, key_pem = generate_pem()
        with open(cert, "wb") as f:
            f.write(cert_pem)
        with open(key, "wb") as f:
            f.write(key_pem)
    os.chmod(key, 0o600)
    return cert, key


def _version(argv: list[str]) -> str:
    try:
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            timeout=15, errors="replace")
        lines = [ln for ln in cp.stdout.strip().splitlines() if ln.strip()]
        return lines[0].strip() if lines else "?"
    except (OSError, subprocess.SubprocessError):
        return "not installed"


def host_meta(args) -> dict:
    def read(path):
        try:
            with open(path) as f:
                return f.read().strip()
        except OSError:
            return None
    cpu = "?"
    for line in (read("/proc/cpuinfo") or "").splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    py = sys.executable
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "kernel": platform.release(),
        "cpu": cpu, "cpus": os.cpu_count(),
        "tcp_available_ulp": read("/proc/sys/net/ipv4/tcp_available_ulp"),
        "python": platform.python_version(),
        "openssl": _version(["openssl", "version"]),
        "versions": {
            "ktlswsgi": _version([py, "-m", "ktlswsgi", "--version"]),
            "gunicorn": _version([py, "-m", "gunicorn", "--version"]),
            "granian": _version(["granian", "--version"]),
            "uwsgi": _version(["uwsgi", "--version"]),
            "nginx": _version(["nginx", "-v"]),
            "hypercorn": _hypercorn_version(),
            "h2load": _version(["h2load", "--version"]),
            "locust": _version(["locust", "--version"]),
        },
        "settings": {k: v for k, v in vars(args).items() if not callable(v)},
        "pinning": {"server_core": peers.SERVER_CORE, "client_core": load.CLIENT_CORE,
                    "by_workers": {str(n): {"server_cpus": peers.server_cpus(n),
                                            "client_core": load.client_core(n)}
                                   for n in args.workers},
                    "taskset": bool(shutil.which("taskset"))},
        "threads": peers.THREADS,
        "loadavg_start": os.getloadavg(),
        "git": _git_state(),
    }


def _hypercorn_version() -> str:
    try:
        from importlib.metadata import PackageNotFoundError, version
        try:
            return "hypercorn " + version("hypercorn")
        except PackageNotFoundError:
            return "not installed"
    except ImportError:
        return "?"


def _git_state() -> dict:
    """The commit measured, and whether ktlswsgi/ had uncommitted edits (the bench runs
    the working tree)."""
    def git(*a):
        try:
            # rstrip only: a porcelain line starts with its status columns (" M path").
            return subprocess.run(["git", *a], cwd=peers.REPO_ROOT, stdout=subprocess.PIPE,
                                  stderr=subprocess.DEVNULL, text=True, timeout=15).stdout.rstrip()
        except (OSError, subprocess.SubprocessError):
            return ""
    dirty = [ln[3:] for ln in git("status", "--porcelain", "--", "ktlswsgi").splitlines()
             if len(ln) > 3]
    return {"commit": git("rev-parse", "--short", "HEAD"),
            "subject": git("log", "-1", "--format=%s"), "ktlswsgi_dirty_files": dirty}


def _row(peer: peers.Peer, case: str, **kw) -> dict:
    r = {"server": peer.label, "kind": peer.kind, "transport": peer.transport,
         "scheme": peer.scheme, "protocol": peer.protocol, "app": peer.app,
         "workers": peer.workers,
         "server_cpus": peers.server_cpus(peer.workers),
         "client_core": load.client_core(peer.workers), "case": case}
    r.update(kw)
    return r


def _summarise(res: dict, size: int) -> dict:
    """Derived figures from one h2load run."""
    out = dict(res)
    secs = res.get("h2load_seconds") or res.get("wall_seconds") or 0
    ok = res.get("s2xx", 0)
    if secs:
        out["req_s"] = ok / secs
        out["mb_s"] = res.get("bytes_data", ok * size) / secs / 1e6
        wall = res.get("wall_seconds") or secs
        if res.get("server_cpu_seconds") is not None:
            out["server_cpu_util"] = res["server_cpu_seconds"] / wall
        out["client_cpu_util"] = res.get("client_cpu_seconds", 0) / wall
    cpu = res.get("server_cpu_seconds")
    out["req_per_cpu_s"] = ok / cpu if cpu else None
    if ok and res.get("server_ctx_voluntary") is not None:
        out["ctx_per_req"] = (res["server_ctx_voluntary"] + res["server_ctx_involuntary"]) / ok
    out["non2xx"] = res.get("s3xx", 0) + res.get("s4xx", 0) + res.get("s5xx", 0)
    out["failures"] = res.get("failed", 0) + res.get("errored", 0) + res.get("timeout", 0)
    out["status"] = "ok" if ok and "error" not in res else "failed"
    if out["status"] == "failed" and "reason" not in out:
        out["reason"] = res.get("error") or "no 2xx responses"
    return out


def _probe_h2(server, path: str, size: int, core: str) -> str | None:
    """One request over HTTP/2 with h2load: None if it answered 2xx over h2 with the
    exact body size, else why not."""
    res = load.probe(server.url(path), "h2", core=core)
    if res.get("error"):
        return res["error"]
    if res.get("app_protocol") != "h2":
        return "negotiated %s, not h2" % res.get("app_protocol", "no protocol")
    if res.get("s2xx") != 1 or res.get("bytes_data") != size:
        codes = "/".join(str(res.get(k, "?")) for k in ("s2xx", "s3xx", "s4xx", "s5xx"))
        return "over h2: 2xx/3xx/4xx/5xx %s, %s body bytes (want one 2xx, %d)" % (
            codes, res.get("bytes_data", "?"), size)
    return None


def bench_peer(peer, ctx, args, budget, results, case_names=None) -> None:
    case_names = args.cases if case_names is None else case_names
    cases = [c for c in CASES if c[0] in case_names]
    srv_info = {"server": peer.label, "scheme": peer.scheme, "app": peer.app,
                "workers": peer.workers, "protocol": peer.protocol}
    results["servers"].append(srv_info)
    why = peer.available()
    if why:
        for name, _p, _s in cases:
            results["runs"].append(_row(peer, name, status="unavailable", reason=why))
        srv_info["error"] = why
        log("%s %s %s: %s" % (peer.tag, peer.scheme, peer.app, why))
        return
    server = peers.Server(peer, ctx)
    old_logs: list[str] = []     # logs of server instances replaced by a restart

    def restart(why: str) -> bool:
        """h2 rows only: replace a server that stopped answering (hypercorn's WSGI
        threads wedge when h2load closes connections with streams in flight, at the end
        of every -D run). -> whether the new one is up."""
        nonlocal server
        log("  restarting %s: %s" % (peer.tag, why))
        srv_info.setdefault("restarts", []).append(why)
        server.stop()
        old_logs.append(server.log_text())
        server = peers.Server(peer, ctx)
        try:
            server.start("/tiny", timeout=args.start_timeout)
            return True
        except Exception as e:  # noqa: BLE001
            srv_info["restarts"].append("restart failed: %s" % str(e)[:300])
            return False

    try:
        try:
            server.start("/tiny", timeout=args.start_timeout)
        except Exception as e:  # noqa: BLE001 - a row, not a crash
            reason = "failed to start: %s" % str(e)[:600]
            srv_info["error"] = reason
            log("%s %s %s: %s" % (peer.tag, peer.scheme, peer.app, reason))
            for name, _p, _s in cases:
                results["runs"].append(_row(peer, name, status="failed", reason=reason))
            return
        srv_info["argv"] = server.argv
        log("%s %s %s: up on %d (pid %d, cores %s)" % (peer.tag, peer.scheme, peer.app,
                                                        server.port, server.pid, server.cpus))
        core = load.client_core(peer.workers)
        for name, path, size in cases:
            if budget.exceeded():
                results["runs"].append(_row(peer, name, status="skipped",
                                            reason="harness time budget exceeded"))
                continue
            why = peer.unsupported(name)
            if why:
                results["runs"].append(_row(peer, name, status="unsupported", reason=why))
                continue
            if server.popen.poll() is not None:
                reason = "server died (exit %s): %s" % (server.popen.returncode,
                                                        server.log_tail(300))
                results["runs"].append(_row(peer, name, status="failed", reason=reason))
                continue
            notes = []
            try:
                status, body = peers.fetch(server.port, peer.scheme, path, timeout=10)
            except OSError as e:
                if peer.protocol == "h2" and restart("no answer before %s (%s)" % (name, e)):
                    notes.append("server restarted before this case: it no longer answered "
                                 "after the previous run (%s)" % e)
                    try:
                        status, body = peers.fetch(server.port, peer.scheme, path, timeout=10)
                    except OSError as e2:
                        e = e2
                        status = None
                else:
                    status = None
                if status is None:
                    results["runs"].append(_row(peer, name, status="failed",
                                                reason="probe request: %s" % e))
                    continue
            if status != 200 or len(body) != size:
                reason = "HTTP %d, %d bytes (want 200, %d): %s" % (
                    status, len(body), size, body[:80].decode(errors="replace"))
                results["runs"].append(_row(peer, name, status="unsupported", reason=reason))
                log("  %-12s unsupported: %s" % (name, reason))
                continue
            if peer.protocol == "h2":
                # The HTTP/1.1 probe above checked the app; this checks h2 itself.
                why = _probe_h2(server, path, size, core)
                if why:
                    results["runs"].append(_row(peer, name, status="failed",
                                                reason="h2 probe: " + why))
                    log("  %-12s failed: h2 probe: %s" % (name, why))
                    continue
            url = server.url(path)
            quiet = proc.wait_quiet(args.quiet_wait) if args.quiet_wait > 0 else {}
            h2kw = {"protocol": peer.protocol, "streams": args.h2_streams}
            if args.warmup > 0:
                load.run_h2load(url, args.warmup, args.connections, None, core=core, **h2kw)
                if peer.protocol == "h2":
                    # The warm-up ends by closing connections with streams in flight: check
                    # the server still answers, else restart it and measure without warm-up.
                    why = _probe_h2(server, path, size, core)
                    if why:
                        if not restart("no answer after the warm-up of %s (%s)" % (name, why)):
                            results["runs"].append(_row(
                                peer, name, status="failed",
                                reason="no answer after the warm-up (%s); restart failed" % why))
                            continue
                        notes.append("wedged after the warm-up (h2load closed connections "
                                     "with streams in flight): restarted, measured without "
                                     "warm-up")
                        url = server.url(path)
            res = load.run_h2load(url, args.duration, args.connections, server.pid, core=core,
                                  **h2kw)
            extra = {"note": "; ".join(notes)} if notes else {}
            row = _row(peer, name, path=path, body_bytes=size, quiet_before=quiet,
                       h2load_streams=args.h2_streams if peer.protocol == "h2" else 1,
                       **extra, **_summarise(res, size))
            results["runs"].append(row)
            log("  %-12s %9.0f req/s %8.1f MB/s  srv-cpu %4.0f%%  %9s req/cpu-s  fail %d "
                "non2xx %d  other %.2f cores%s%s"
                % (name, row.get("req_s") or 0, row.get("mb_s") or 0,
                   100 * (row.get("server_cpu_util") or 0),
                   "%.0f" % row["req_per_cpu_s"] if row.get("req_per_cpu_s") else "-",
                   row.get("failures", 0), row.get("non2xx", 0),
                   row.get("other_cpu_cores") or 0,
                   "  ERROR " + row["reason"] if row["status"] != "ok" else "",
                   "  NOTE " + row["note"] if row.get("note") else ""))
    finally:
        server.stop()
        if peer.kind == "ktlswsgi":
            srv_info["telemetry"] = peers.ktlswsgi_telemetry(
                "\n".join(old_logs + [server.log_text()]))
        if server.popen is None and srv_info.get("error") is None:
            tail = server.log_tail(400)
            if "Traceback" in tail:
                srv_info["log_tail"] = tail


def bench_idle(peer, ctx, args, budget, results) -> None:
    """RSS of the server's tree before and with N idle TLS keep-alive connections."""
    entry = {"server": peer.label, "scheme": peer.scheme, "app": peer.app, "n": args.idle_n,
             "workers": peer.workers, "launch": peer.idle_note}
    results["idle"].append(entry)
    why = peer.available()
    if why:
        entry.update(status="unavailable", reason=why)
        return
    if budget.left() < 60:
        entry.update(status="skipped", reason="harness time budget exceeded")
        return
    server = peers.Server(peer, ctx, idle=True)
    client = None
    try:
        try:
            server.start("/tiny", timeout=args.start_timeout)
        except Exception as e:  # noqa: BLE001
            entry.update(status="failed", reason="failed to start: %s" % str(e)[:600])
            return
        for _ in range(5):
            peers.fetch(server.port, peer.scheme, "/tiny")
        time.sleep(0.5)
        before = proc.tree_memory_kib(server.pid)
        argv = [sys.executable, "-m", "bench.idle", "--port", str(server.port),
                "--n", str(args.idle_n), "--open-timeout", str(args.idle_open_timeout),
                "--hold-timeout", "120"]
        if peer.scheme == "https":
            argv.append("--tls")
        if shutil.which("taskset"):
            argv = ["taskset", "-c", load.client_core(peer.workers)] + argv
        cpu0 = proc.tree_cpu_seconds(server.pid)
        client = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, cwd=peers.REPO_ROOT,
                                  start_new_session=True)
        opened = _read_json_line(client, args.idle_open_timeout + 30)
        if opened is None:
            entry.update(status="failed", reason="idle client gave no answer: %s"
                         % _drain(client.stderr)[-300:])
            return
        time.sleep(2.0)   # let the server settle (buffers freed, timers armed)
        after = proc.tree_memory_kib(server.pid)
        cpu = proc.tree_cpu_seconds(server.pid) - cpu0
        client.stdin.write("measure-done\n")
        client.stdin.flush()
        final = _read_json_line(client, 60) or {}
        alive = final.get("alive")
        n_eff = alive if alive else opened.get("opened", 0)
        entry.update(
            status="ok" if opened.get("opened") else "failed",
            opened=opened.get("opened"), alive=alive, open_seconds=opened.get("seconds"),
            client_errors=opened.get("errors"),
            rss_before_kib=before["rss_kib"], rss_after_kib=after["rss_kib"],
            pss_before_kib=before["pss_kib"], pss_after_kib=after["pss_kib"],
            pids=after["pids"], server_cpu_seconds=cpu,
            rss_per_conn_kib=((after["rss_kib"] - before["rss_kib"]) / n_eff) if n_eff else None,
            pss_per_conn_kib=((after["pss_kib"] - before["pss_kib"]) / n_eff) if n_eff else None)
        if opened.get("opened", 0) < args.idle_n:
            entry["cap"] = ("held %d of %d (%s)" % (opened.get("opened", 0), args.idle_n,
                            "; ".join("%s x%d" % kv for kv in (opened.get("errors") or {}).items())))
        if not opened.get("opened"):
            entry["reason"] = entry.get("cap")
        log("idle %s: %s/%s open, %s alive, RSS %.1f -> %.1f MiB (%.1f KiB/conn), PSS %.1f MiB"
            % (peer.tag, opened.get("opened"), args.idle_n, alive,
               before["rss_kib"] / 1024, after["rss_kib"] / 1024,
               entry["rss_per_conn_kib"] or 0, after["pss_kib"] / 1024))
    finally:
        if client is not None:
            try:
                client.stdin.close()
            except OSError:
                pass
            try:
                client.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(client.pid, signal.SIGKILL)
                client.wait(5)
        server.stop()
        if peer.kind == "ktlswsgi":
            entry["telemetry"] = peers.ktlswsgi_telemetry(server.log_text())


def _read_json_line(p: subprocess.Popen, timeout: float):
    import selectors
    sel = selectors.DefaultSelector()
    sel.register(p.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=min(1.0, max(0.0, deadline - time.monotonic()))):
                if p.poll() is not None:
                    return None
                continue
            line = p.stdout.readline()
            if not line:
                return None
            try:
                return json.loads(line)
            except ValueError:
                continue
    finally:
        sel.close()
    return None


def _drain(stream) -> str:
    try:
        import fcntl
        fl = fcntl.fcntl(stream, fcntl.F_GETFL)
        fcntl.fcntl(stream, fcntl.F_SETFL, fl | os.O_NONBLOCK)
        return stream.read() or ""
    except (OSError, TypeError):
        return ""


def bench_locust(peer, ctx, args, budget, results) -> None:
    entry = {"server": peer.label, "scheme": peer.scheme, "app": peer.app,
             "workers": peer.workers, "users": args.locust_users,
             "seconds": args.locust_seconds}
    results["locust"].append(entry)
    if not shutil.which("locust"):
        entry.update(status="unavailable", reason="locust not installed (pip install locust)")
        return
    why = peer.available()
    if why:
        entry.update(status="unavailable", reason=why)
        return
    if budget.left() < args.locust_seconds + 30:
        entry.update(status="skipped", reason="harness time budget exceeded")
        return
    server = peers.Server(peer, ctx)
    try:
        try:
            server.start("/tiny", timeout=args.start_timeout)
        except Exception as e:  # noqa: BLE001
            entry.update(status="failed", reason="failed to start: %s" % str(e)[:600])
            return
        prefix = os.path.join(ctx.workdir, "locust-%s-w%d" % (peer.label.replace("/", "-"),
                                                               peer.workers))
        argv = ["locust", "-f", os.path.join(HERE, "locustfile.py"), "--headless",
                "-u", str(args.locust_users), "-r", str(args.locust_users),
                "-t", "%ds" % args.locust_seconds, "--host", server.url(""),
                "--csv", prefix, "--only-summary", "--loglevel", "WARNING",
                "--stop-timeout", "5"]
        if shutil.which("taskset"):
            argv = ["taskset", "-c", load.client_core(peer.workers)] + argv
        cpu0 = proc.tree_cpu_seconds(server.pid)
        t0 = time.monotonic()
        try:
            cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, errors="replace", timeout=args.locust_seconds + 60,
                                cwd=peers.REPO_ROOT, start_new_session=True)
            out = cp.stdout
        except subprocess.TimeoutExpired:
            entry.update(status="failed", reason="locust timed out")
            return
        wall = time.monotonic() - t0
        cpu = proc.tree_cpu_seconds(server.pid) - cpu0
        stats = _locust_stats(prefix + "_stats.csv")
        agg = stats.get("Aggregated")
        if not agg:
            entry.update(status="failed", reason="no locust stats: %s" % out[-400:])
            return
        reqs = int(agg["Request Count"])
        entry.update(
            status="ok", requests=reqs, failures=int(agg["Failure Count"]),
            req_s=float(agg["Requests/s"]), median_ms=float(agg["Median Response Time"]),
            p95_ms=float(agg["95%"]), p99_ms=float(agg["99%"]),
            server_cpu_seconds=cpu, server_cpu_util=cpu / wall,
            req_per_cpu_s=reqs / cpu if cpu else None,
            per_name={k: {"requests": int(v["Request Count"]), "failures": int(v["Failure Count"]),
                          "median_ms": float(v["Median Response Time"]),
                          "p95_ms": float(v["95%"])}
                      for k, v in stats.items() if k != "Aggregated"})
        log("locust %s: %.0f req/s, median %.0f ms, p95 %.0f ms, %d failures, %.0f req/cpu-s"
            % (peer.tag, entry["req_s"], entry["median_ms"], entry["p95_ms"],
               entry["failures"], entry["req_per_cpu_s"] or 0))
    finally:
        server.stop()
        if peer.kind == "ktlswsgi":
            entry["telemetry"] = peers.ktlswsgi_telemetry(server.log_text())


SPREAD_MODES = (("shared", False), ("reuse-port", True))


def bench_spread(workers, scheme, app, args, ctx, budget, results) -> None:
    """How ktlswsgi's workers share the load: one h2load run (`/tiny`, -c connections,
    no warm-up) against `-w workers` with the shared listening socket, then with
    --reuse-port; each worker's `requests=`/`connections=` from its counters line and
    its own CPU over the run."""
    for mode, reuse in SPREAD_MODES:
        peer = peers.Ktlswsgi(scheme, app, "socket" if scheme == "https" else None,
                              workers=workers, reuse_port=reuse)
        entry = {"server": peer.label, "scheme": scheme, "app": app, "workers": workers,
                 "mode": mode, "case": "tiny", "connections": args.connections,
                 "server_cpus": peers.server_cpus(workers),
                 "client_core": load.client_core(workers)}
        results["spread"].append(entry)
        if budget.left() < args.duration + 30:
            entry.update(status="skipped", reason="harness time budget exceeded")
            continue
        server = peers.Server(peer, ctx)
        cpu_before = cpu_after = {}
        try:
            try:
                server.start("/tiny", timeout=args.start_timeout)
            except Exception as e:  # noqa: BLE001
                entry.update(status="failed", reason="failed to start: %s" % str(e)[:600])
                continue
            entry["argv"] = server.argv
            entry["quiet_before"] = (proc.wait_quiet(args.quiet_wait)
                                     if args.quiet_wait > 0 else {})
            cpu_before = proc.per_pid_cpu_seconds(server.pid)
            res = load.run_h2load(server.url("/tiny"), args.duration, args.connections,
                                  server.pid, core=load.client_core(workers))
            cpu_after = proc.per_pid_cpu_seconds(server.pid)
            entry.update(_summarise(res, 2))
        finally:
            server.stop()
            tel = peers.ktlswsgi_telemetry(server.log_text())
        per = []
        for w in tel.get("per_worker", []):
            pid, c = w["pid"], w["counters"]
            cpu = (cpu_after.get(pid, 0) - cpu_before.get(pid, 0)
                   if pid in cpu_after and pid in cpu_before else None)
            per.append({"pid": pid, "requests": c.get("requests", 0),
                        "connections": c.get("connections", 0), "cpu_seconds": cpu})
        per.sort(key=lambda w: -w["requests"])
        total = sum(w["requests"] for w in per)
        entry["per_worker"] = per
        entry["counter_lines"] = len(per)
        entry["requests_counted"] = total
        entry["busiest_share"] = (per[0]["requests"] / total) if total else None
        if entry.get("status") == "ok" and len(per) != workers:
            entry["note"] = "%d counters lines for %d workers" % (len(per), workers)
        log("spread %s w%d %s %s: requests per worker %s (connections %s), %.0f req/s"
            % (peer.label, workers, scheme, mode,
               "/".join(str(w["requests"]) for w in per) or "-",
               "/".join(str(w["connections"]) for w in per) or "-",
               entry.get("req_s") or 0))


def _locust_stats(path: str) -> dict:
    try:
        with open(path, newline="") as f:
            return {row["Name"]: row for row in csv.DictReader(f)}
    except OSError:
        return {}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="smoke run (~2 min): 1 s runs, raw app, tiny + 1 MiB file, 500 idle conns")
    ap.add_argument("--duration", type=float, default=5, help="seconds per measured run")
    ap.add_argument("--warmup", type=float, default=1, help="unmeasured seconds before each")
    ap.add_argument("--connections", "-c", type=int, default=16, help="h2load -c")
    ap.add_argument("--peers", default=",".join(PEER_KINDS), help="comma list of: %s"
                    % ",".join(PEER_KINDS))
    ap.add_argument("--schemes", default="http,https")
    ap.add_argument("--protocols", default="h1",
                    help="comma list of h1 (h2load --h1, every peer but hypercorn, every scheme) "
                         "and h2 (HTTP/2 over TLS, h2load -m STREAMS, https only: ktlswsgi, granian, "
                         "hypercorn, nginx; gunicorn and uWSGI have no HTTP/2)")
    ap.add_argument("--h2-streams", type=int, default=load.H2_STREAMS,
                    help="h2load -m (concurrent streams per connection) for h2 rows")
    ap.add_argument("--h2-cases", default=H2_CASES,
                    help="cases for the h2 rows with the raw app (nginx: the same files)")
    ap.add_argument("--h2-flask-cases", default=H2_FLASK_CASES,
                    help="cases for the h2 rows with the Flask app (file_* = send_file)")
    ap.add_argument("--apps", default="raw,flask")
    ap.add_argument("--transports", default="socket,memory", help="ktlswsgi TLS transports")
    ap.add_argument("--cases", default=",".join(CASE_NAMES))
    ap.add_argument("--workers", default="1",
                    help="comma list of worker-process counts; every peer runs once per "
                         "value (ktlswsgi/gunicorn -w N, granian --workers N, uWSGI "
                         "--processes N, nginx worker_processes N), %d threads each; the "
                         "server tree is pinned to cores 0..N-1" % peers.THREADS)
    ap.add_argument("--no-spread", dest="spread", action="store_false",
                    help="with a worker count above 1: skip the ktlswsgi spread-across-"
                         "workers runs (shared socket vs --reuse-port)")
    ap.add_argument("--idle-n", type=int, default=10000, help="idle TLS connections (0: skip)")
    ap.add_argument("--idle-open-timeout", type=float, default=150)
    ap.add_argument("--locust-seconds", type=int, default=45, help="0: skip locust")
    ap.add_argument("--locust-users", type=int, default=32)
    ap.add_argument("--start-timeout", type=float, default=30)
    ap.add_argument("--quiet-wait", type=float, default=30,
                    help="before each run wait up to this many s for the host to be idle "
                         "(other work on a 2-core host skews numbers); 0: don't wait")
    ap.add_argument("--max-minutes", type=float, default=40,
                    help="harness budget: work past it is skipped and reported")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--tag", default=None,
                    help="results file name (default: date; only an untagged full run "
                         "rewrites the summary in bench/README.md)")
    args = ap.parse_args(argv)
    if args.quick:
        args.duration, args.warmup = 1, 0.5
        if args.apps == "raw,flask":
            args.apps = "raw"
        if args.cases == ",".join(CASE_NAMES):
            args.cases = "tiny,file_1m"
        args.idle_n = min(args.idle_n, 500)
        args.locust_seconds = min(args.locust_seconds, 8)
        args.locust_users = min(args.locust_users, 16)
        args.quiet_wait = 0
    for key in ("peers", "schemes", "apps", "transports", "cases", "protocols", "h2_cases",
                "h2_flask_cases"):
        setattr(args, key, [x.strip() for x in getattr(args, key).split(",") if x.strip()])
    for key in ("cases", "h2_cases", "h2_flask_cases"):
        bad = [c for c in getattr(args, key) if c not in CASE_NAMES]
        if bad:
            ap.error("--%s: unknown case(s) %s; known: %s" % (key.replace("_", "-"), bad,
                                                                CASE_NAMES))
    bad = [p for p in args.protocols if p not in load.PROTOCOLS]
    if bad or not args.protocols:
        ap.error("--protocols: a comma list of %s" % ",".join(load.PROTOCOLS))
    if "h2" in args.protocols and "https" not in args.schemes:
        ap.error("--protocols h2 needs --schemes with https (HTTP/2 here is ALPN h2 over TLS)")
    if args.h2_streams < 1:
        ap.error("--h2-streams: at least 1")
    try:
        workers = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        ap.error("--workers: a comma list of integers, e.g. 1,2")
    if not workers or min(workers) < 1:
        ap.error("--workers: counts must be >= 1")
    args.workers = list(dict.fromkeys(workers))
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    if not load.have_h2load():
        print("h2load not found: apt-get install nghttp2-client", file=sys.stderr)
        return 2

    def on_term(signum, frame):
        raise SystemExit(128 + signum)
    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    proc.raise_nofile(peers.NOFILE)
    budget = Budget(args.max_minutes)
    t_start = time.monotonic()
    tag = args.tag or (datetime.date.today().isoformat() + ("-quick" if args.quick else ""))
    os.makedirs(args.out, exist_ok=True)
    results = {"meta": host_meta(args), "cases": [list(c) for c in CASES],
               "runs": [], "servers": [], "idle": [], "locust": [], "spread": []}
    if max(args.workers) > peers.host_cpus():
        log("warning: %d workers on a %d-core host: the server is pinned to all cores"
            % (max(args.workers), peers.host_cpus()))
    workdir = tempfile.mkdtemp(prefix="ktlswsgi-bench-")
    static_dir = os.path.join(workdir, "static")
    make_static_files(static_dir)
    cert, key = make_cert(workdir)
    ctx = peers.Ctx(workdir, cert, key, static_dir)
    # Each peer reads the static files from here; warm the page cache once.
    for name in os.listdir(static_dir):
        with open(os.path.join(static_dir, name), "rb") as f:
            f.read()
    log("workdir %s; results -> %s/%s.*" % (workdir, args.out, tag))
    code = 0
    try:
        if "h1" in args.protocols:
            # hypercorn has HTTP/2 rows only (all_peers does not list it).
            all_p = [p for p in peers.all_peers(args.schemes, args.apps, args.transports,
                                                args.workers)
                     if p.kind in args.peers]
            for peer in all_p:
                bench_peer(peer, ctx, args, budget, results)
        if "h2" in args.protocols:
            results["h2_not_offered"] = [k for k in peers.NO_H2_PEER_KINDS if k in args.peers]
            for peer in peers.h2_peers(args.apps, args.transports, args.workers):
                if peer.kind not in args.peers:
                    continue
                names = args.h2_flask_cases if peer.app == "flask" else args.h2_cases
                if names:
                    bench_peer(peer, ctx, args, budget, results, case_names=names)
        if args.spread and "ktlswsgi" in args.peers:
            app = "raw" if "raw" in args.apps else args.apps[0]
            for n in args.workers:
                if n > 1:
                    for scheme in args.schemes:
                        bench_spread(n, scheme, app, args, ctx, budget, results)
        if args.idle_n > 0 and "https" in args.schemes:
            idle_peers = [p for p in peers.all_peers(["https"], ["raw"], args.transports,
                                                     args.workers)
                          if p.kind in args.peers]
            for peer in idle_peers:
                bench_idle(peer, ctx, args, budget, results)
        if args.locust_seconds > 0:
            scheme = "https" if "https" in args.schemes else "http"
            for kind in ("ktlswsgi", "gunicorn"):
                if kind not in args.peers:
                    continue
                for n in args.workers:
                    peer = (peers.Ktlswsgi(scheme, "flask", "auto" if scheme == "https" else None,
                                           workers=n)
                            if kind == "ktlswsgi" else peers.Gunicorn(scheme, "flask", workers=n))
                    bench_locust(peer, ctx, args, budget, results)
    except (KeyboardInterrupt, SystemExit) as e:
        log("interrupted (%s): writing partial results" % type(e).__name__)
        results["meta"]["interrupted"] = True
        code = 130
    finally:
        results["meta"]["harness_seconds"] = round(time.monotonic() - t_start, 1)
        results["meta"]["loadavg_end"] = os.getloadavg()
        paths = report.write_all(results, args.out, tag)
        default_out = os.path.abspath(args.out) == os.path.join(HERE, "results")
        # Only a dated full run rewrites the README summary; a --tag run (a partial or
        # experimental one) leaves it alone.
        if (default_out and not args.quick and args.tag is None
                and not results["meta"].get("interrupted")):
            if report.update_readme(results, os.path.join(HERE, "README.md"), tag):
                paths.append(os.path.join(HERE, "README.md"))
        for p in paths:
            log("wrote %s" % p)
        shutil.rmtree(workdir, ignore_errors=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
