"""bench/prototypes/cloop.c, the C-loop measurement prototype (issue 19),
still builds and answers, both ways it runs (the app inline on the loop
thread, and on a pool of Python worker threads; plain and over TLS), so the
figures in bench/results/issue19-s5-cloop.md can be measured again."""
from __future__ import annotations

import http.client
import os
import socket
import ssl
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("threads, tls", [("0", False), ("4", False), ("4", True)])
def test_the_c_loop_prototype_answers_keep_alive_requests(threads, tls, tmp_path):
    port = _free_port()
    argv = [sys.executable, "-m", "bench.prototypes.cloop_serve", "bench.apps:raw_app",
            str(port), "3", threads]
    if tls:
        cert, key = str(tmp_path / "cert.pem"), str(tmp_path / "key.pem")
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                        "ec_paramgen_curve:P-256", "-nodes", "-days", "1", "-subj",
                        "/CN=localhost", "-keyout", key, "-out", cert],
                       check=True, capture_output=True)
        argv += [cert, key]
    proc = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        deadline = time.monotonic() + 20   # gcc builds it on the first run
        while True:
            try:
                if tls:
                    ctx = ssl.create_default_context()
                    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                    conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5,
                                                       context=ctx)
                else:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.connect()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, proc.stderr.read()
                time.sleep(0.05)
        got = []
        for path in ("/tiny", "/16k", "/tiny"):   # one connection, kept alive
            conn.request("GET", path)
            resp = conn.getresponse()
            got.append((resp.status, len(resp.read())))
        conn.close()
        assert got == [(200, 2), (200, 16384), (200, 2)]
    finally:
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert out.strip() == "served 3"
