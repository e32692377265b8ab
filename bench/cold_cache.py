"""How long a cold file stalls the reactor: tiny-page latency during a cold download.

sendfile() and pread() of a file that is not in the page cache wait for the
disk even on a non-blocking socket, and they run on the reactor thread.  This
measures what that costs the other clients: a 100 MiB file is evicted from
the page cache (posix_fadvise DONTNEED), one client downloads it over plain
TCP (or TLS with --tls) while 4 clients fetch a tiny page in a loop; the tiny
requests' latency is reported, then the same with the file warm.

    python -m bench.cold_cache [--size-mib 100] [--tls]
"""
from __future__ import annotations

import argparse
import http.client
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time


def app(environ, start_response):
    """Served by the ktlswsgi under test: /big is the file named by KTLSWSGI_COLD_FILE."""
    if environ["PATH_INFO"] == "/big":
        f = open(os.environ["KTLSWSGI_COLD_FILE"], "rb")
        start_response("200 OK", [("Content-Length", str(os.fstat(f.fileno()).st_size))])
        return environ["wsgi.file_wrapper"](f)
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]


def evict(path: str) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)


def cached_fraction(path: str) -> float:
    """Share of the file's pages in the page cache (mincore via fincore(1) if present)."""
    try:
        out = subprocess.run(["fincore", "-b", "-n", "-o", "RES,SIZE", path],
                             capture_output=True, text=True, timeout=10).stdout.split()
        return int(out[0]) / max(1, int(out[1]))
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return float("nan")


def run_once(port: int, tls: bool, stop_after_s: float) -> dict:
    ctx = None
    if tls:
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    latencies: list[float] = []
    done = threading.Event()

    def conn():
        if tls:
            return http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=60)
        return http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def tiny_loop():
        c = conn()
        while not done.is_set():
            t0 = time.perf_counter()
            c.request("GET", "/tiny")
            c.getresponse().read()
            latencies.append(time.perf_counter() - t0)

    threads = [threading.Thread(target=tiny_loop, daemon=True) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    before = len(latencies)
    t0 = time.perf_counter()
    c = conn()
    c.request("GET", "/big")
    r = c.getresponse()
    total = 0
    while True:
        chunk = r.read(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    download_s = time.perf_counter() - t0
    done.set()
    for t in threads:
        t.join(stop_after_s)
    during = sorted(latencies[before:])
    return {
        "download_s": round(download_s, 3),
        "download_MBps": round(total / download_s / 1e6, 1),
        "tiny_requests": len(during),
        "tiny_p50_ms": round(statistics.median(during) * 1000, 2),
        "tiny_p99_ms": round(during[int(len(during) * 0.99) - 1] * 1000, 2),
        "tiny_max_ms": round(during[-1] * 1000, 2),
    }


def _wait_port(port: int) -> None:
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit("server did not start")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size-mib", type=int, default=100)
    p.add_argument("--tls", action="store_true")
    args = p.parse_args(argv)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with tempfile.TemporaryDirectory(dir=os.path.expanduser("~")) as d:
        path = os.path.join(d, "big.bin")
        with open(path, "wb") as f:
            block = os.urandom(1 << 20)
            for _ in range(args.size_mib):
                f.write(block)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        cmd = [sys.executable, "-m", "ktlswsgi", "bench.cold_cache:app", "-b", f"127.0.0.1:{port}",
               "--threads", "8"] + (["--tls", "--tls-transport", "memory"] if args.tls else [])
        server = subprocess.Popen(cmd, cwd=root, env=dict(os.environ, KTLSWSGI_COLD_FILE=path),
                                  stderr=subprocess.DEVNULL)
        try:
            _wait_port(port)
            evict(path)
            cold_frac = cached_fraction(path)
            cold = run_once(port, args.tls, 10)
            warm_frac = cached_fraction(path)
            warm = run_once(port, args.tls, 10)
        finally:
            server.terminate()
            server.wait(15)
    print(f"file {args.size_mib} MiB over {'TLS (memory transport)' if args.tls else 'plain TCP'}")
    print(f"{'':6} {'cached':>7} {'download s':>10} {'MB/s':>7} {'tiny n':>7} "
          f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}")
    for name, frac, r in (("cold", cold_frac, cold), ("warm", warm_frac, warm)):
        print(f"{name:6} {frac:7.2f} {r['download_s']:10.3f} {r['download_MBps']:7.1f} "
              f"{r['tiny_requests']:7d} {r['tiny_p50_ms']:7.2f} {r['tiny_p99_ms']:7.2f} "
              f"{r['tiny_max_ms']:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
