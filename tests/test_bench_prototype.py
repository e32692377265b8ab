"""bench/prototypes/cloop.c, the C-loop measurement prototype (issue 19),
still builds and answers, both ways it runs (the app inline on the loop
thread, and on a pool of Python worker threads), so the figures in
bench/results/issue19-s5-cloop.md can be measured again."""
from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("threads", ["0", "4"])
def test_the_c_loop_prototype_answers_keep_alive_requests(threads):
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench.prototypes.cloop_serve",
                             "bench.apps:raw_app", str(port), "3", threads],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 20   # gcc builds it on the first run
        while True:
            try:
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
