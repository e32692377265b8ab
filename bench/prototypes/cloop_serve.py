"""Run bench/prototypes/cloop.c (a measurement prototype, see its header):
build it into a temporary directory with gcc, then serve `APP` on `PORT`
for `SECONDS`, pinned as the caller pins it.

    python -m bench.prototypes.cloop_serve bench.apps:raw_app 18600 20 [THREADS [CERT KEY]]

THREADS (default 0): 0 runs the app inline on the loop thread; N > 0 hands
each request to N Python worker threads (queue.SimpleQueue), which call the
app and frame and send its response in C (`run`), as a server with a pool
would.  CERT and KEY (PEM files): TLS through OpenSSL.
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import socket
import subprocess
import sys
import sysconfig
import tempfile
import threading
import queue

HERE = os.path.dirname(os.path.abspath(__file__))


def build() -> object:
    out = os.path.join(tempfile.gettempdir(), "ktlswsgi-cloop")
    os.makedirs(out, exist_ok=True)
    so = os.path.join(out, "_cloop" + sysconfig.get_config_var("EXT_SUFFIX"))
    src = os.path.join(HERE, "cloop.c")
    if not os.path.exists(so) or os.path.getmtime(so) < os.path.getmtime(src):
        subprocess.run(["gcc", "-O2", "-Wall", "-shared", "-fPIC",
                        "-I" + sysconfig.get_paths()["include"], src, "-o", so,
                        "-lssl", "-lcrypto"], check=True)
    spec = importlib.util.spec_from_file_location("_cloop", so)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main() -> int:
    target, port, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    mod_name, _, attr = target.partition(":")
    app = getattr(importlib.import_module(mod_name), attr)
    lsock = socket.socket()
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lsock.bind(("127.0.0.1", port))
    lsock.listen(1024)
    lsock.setblocking(False)
    base = {"SCRIPT_NAME": "", "SERVER_NAME": "127.0.0.1", "SERVER_PORT": str(port),
            "REMOTE_ADDR": "127.0.0.1", "wsgi.version": (1, 0),
            "wsgi.url_scheme": "https" if len(sys.argv) > 6 else "http",
            "wsgi.input": __import__("io").BytesIO(b""), "wsgi.errors": sys.stderr,
            "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False}
    threads = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    mod = build()
    jobs: queue.SimpleQueue = queue.SimpleQueue()
    run = mod.run

    def worker() -> None:
        while (job := jobs.get()) is not None:
            run(app, *job)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    for t in pool:
        t.start()
    cert, key = (sys.argv[5], sys.argv[6]) if len(sys.argv) > 6 else (None, None)
    served = mod.serve(app, lsock.fileno(), seconds, base, jobs.put if threads else None,
                       cert, key)
    for _ in pool:
        jobs.put(None)
    print("served", served, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
