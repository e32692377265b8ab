"""`python -m bench.files`: files the way frameworks send them, against their peers.

Rows, all over TLS with userspace crypto on both sides (ktlswsgi
--tls-transport memory; nginx without kTLS, which this host's kernel lacks):

  static_16k, static_1m   ktlswsgi `--static /s=DIR` against nginx serving DIR
                          (`location /file/ { alias DIR/; }`, sendfile on)
  range_1m                Flask send_file, a 206 of 1 MiB from the middle of a
                          64 MiB file (`Range: bytes=32M-33M-1`): ktlswsgi
                          against gunicorn (gthread)

Each round starts every server of a row in turn (interleaved, so a drifting
host load hits them alike): one worker process pinned to core 0, h2load --h1
-c16 on core 1, 2 s of warm-up, then 4 s measured.  The figure is requests
per server-CPU-second (the server's process tree: utime + stime); the medians
and their ratio are printed, with every round's values.  Every run is
bounded by h2load -D and a timeout.

    python -m bench.files [--rounds 5] [--rows static_16k,static_1m,range_1m]
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile

from . import load, peers, proc
from .__main__ import make_cert
from .apps import make_static_files

MiB = 1024 * 1024
RANGE = "bytes=%d-%d" % (32 * MiB, 33 * MiB - 1)


class KtlswsgiStatic(peers.Ktlswsgi):
    """ktlswsgi with the bench's static directory mounted at /s."""

    def argv(self, port, ctx, idle=False):
        return super().argv(port, ctx, idle) + ["--static", "/s=" + ctx.static_dir]


# row -> [(peer, path)], the first is ktlswsgi; the header every request carries.
ROWS = {
    "static_16k": ([(KtlswsgiStatic("https", "raw", "memory"), "/s/16k"),
                    (peers.Nginx("https"), "/file/16k")], None),
    "static_1m": ([(KtlswsgiStatic("https", "raw", "memory"), "/s/1m"),
                   (peers.Nginx("https"), "/file/1m")], None),
    "range_1m": ([(peers.Ktlswsgi("https", "flask", "memory"), "/range/64m"),
                  (peers.Gunicorn("https", "flask"), "/range/64m")], "range: " + RANGE),
}


def measure(server, path: str, header: str | None, expect: int) -> float | None:
    """Requests per server-CPU-second of one 4 s h2load run (after 2 s of warm-up)."""
    url = server.url(path)
    extra = ["-H", header] if header else []
    base = ["taskset", "-c", load.client_core(), "h2load", "--h1", "-c", "16", *extra]
    subprocess.run(base + ["-D", "2", url], capture_output=True, timeout=60)
    cpu0 = proc.tree_cpu_seconds(server.pid)
    cp = subprocess.run(base + ["-D", "4", url], capture_output=True, text=True, timeout=60)
    cpu = proc.tree_cpu_seconds(server.pid) - cpu0
    res = load.parse_h2load(cp.stdout)
    done = res.get("succeeded", 0)
    # Responses cut off at the end of -D count in 2xx but not in succeeded.
    if not done or res.get("s2xx", 0) < done or res.get("s4xx") or res.get("s5xx") or cpu <= 0:
        print("  %s: no clean run (%s)" % (server.peer.tag, cp.stdout[-300:]), file=sys.stderr)
        return None
    per_request = res.get("bytes_data", 0) / done
    if abs(per_request - expect) > 0.05 * expect + 16:
        print("  %s: %.0f body bytes per request, expected %d" % (server.peer.tag, per_request,
                                                                   expect), file=sys.stderr)
        return None
    return done / cpu


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--rows", default=",".join(ROWS))
    args = ap.parse_args(argv)
    if not shutil.which("h2load"):
        print("h2load is needed (apt-get install nghttp2-client)", file=sys.stderr)
        return 2
    workdir = tempfile.mkdtemp(prefix="ktlswsgi-bench-files-")
    static_dir = os.environ.get("BENCH_STATIC_DIR", "/tmp/ktlswsgi-bench-static")
    make_static_files(static_dir)
    cert, key = make_cert(workdir)
    ctx = peers.Ctx(workdir, cert, key, static_dir)
    expect = {"static_16k": 16 * 1024, "static_1m": MiB, "range_1m": MiB}
    for row in args.rows.split(","):
        configs, header = ROWS[row]
        missing = [p.available() for p, _ in configs if p.available()]
        if missing:
            print("%s: skipped (%s)" % (row, "; ".join(missing)))
            continue
        values = {p.tag: [] for p, _ in configs}
        for _ in range(args.rounds):
            for peer, path in configs:
                with peers.Server(peer, ctx) as server:
                    server.start(path)
                    v = measure(server, path, header, expect[row])
                    if v is not None:
                        values[peer.tag].append(v)
        medians = {tag: statistics.median(v) if v else None for tag, v in values.items()}
        ours, theirs = configs[0][0].tag, configs[1][0].tag
        ratio = (medians[ours] / medians[theirs]) if medians[ours] and medians[theirs] else None
        print("%-10s req/CPU-s  %s" % (row, "  ".join(
            "%s: %s (median %s)" % (tag, " ".join("%.0f" % x for x in v),
                                    "%.0f" % medians[tag] if medians[tag] else "-")
            for tag, v in values.items())))
        print("%-10s ktlswsgi / %s = %s" % (row, configs[1][0].kind,
                                           "%.2f" % ratio if ratio else "-"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
