"""The load client: h2load pinned to the client core, and its output parsed.

Protocol "h1": `h2load --h1` (HTTP/1.1, keep-alive, one request in flight per
connection). Protocol "h2": h2load's default HTTP/2 (ALPN h2 over TLS) with
`-m <streams>` concurrent streams per connection.
"""
from __future__ import annotations

import re
import shutil
import subprocess
import time

from . import proc

CLIENT_CORE = "1"       # the client's core next to a one-worker server (client_core(1))


def client_core(workers: int = 1) -> str:
    """The core for the load client next to a server with `workers` processes pinned
    to cores 0..N-1: core N, or the last core when the server takes them all (on a
    2-core host a 2-worker server then shares core 1 with the client)."""
    import os
    ncpu = os.cpu_count() or 1
    if ncpu < 2:
        return "0"
    return str(min(max(1, workers), ncpu - 1))


def have_h2load() -> bool:
    return shutil.which("h2load") is not None


def _taskset(core: str, argv: list[str]) -> list[str]:
    if shutil.which("taskset"):
        return ["taskset", "-c", core] + argv
    return argv


PROTOCOLS = ("h1", "h2")
H2_STREAMS = 10         # h2load -m for protocol h2


def _proto_args(protocol: str, streams: int) -> list[str]:
    if protocol == "h1":
        return ["--h1"]
    if protocol == "h2":
        return ["-m", str(streams)]
    raise ValueError("protocol: one of %s, not %r" % (PROTOCOLS, protocol))


def h2load_argv(url: str, duration: float, connections: int, threads: int = 1,
                core: str = CLIENT_CORE, protocol: str = "h1",
                streams: int = H2_STREAMS) -> list[str]:
    return _taskset(core, [
        "h2load", *_proto_args(protocol, streams), "-c", str(connections), "-t", str(threads),
        "-D", "%ds" % max(1, round(duration)), url])


def probe(url: str, protocol: str = "h1", timeout: float = 15.0,
          core: str = CLIENT_CORE) -> dict:
    """One request with h2load (-n 1 -c 1) in the given protocol: -> parse_h2load's dict
    (status codes, body bytes, the negotiated application protocol), plus `error`."""
    argv = _taskset(core, ["h2load", *_proto_args(protocol, 1), "-n", "1", "-c", "1", url])
    try:
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=timeout, text=True, errors="replace")
    except subprocess.TimeoutExpired:
        return {"error": "h2load probe timed out after %.0fs" % timeout}
    res = parse_h2load(cp.stdout)
    if cp.returncode != 0 or "succeeded" not in res:
        res["error"] = "h2load probe exit %d: %s" % (cp.returncode, cp.stdout[-300:])
    return res


_FINISHED = re.compile(r"finished in ([\d.]+)(ms|s), ([\d.]+) req/s")
_REQS = re.compile(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                   r"(\d+) failed, (\d+) errored, (\d+) timeout")
_CODES = re.compile(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx")
_TRAFFIC = re.compile(r"traffic: .*?\((\d+)\) total, .*?\((\d+)\) headers.*?, .*?\((\d+)\) data")


def parse_h2load(text: str) -> dict:
    out: dict = {}
    m = _FINISHED.search(text)
    if m:
        secs = float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
        out["h2load_seconds"] = secs
        out["h2load_req_s"] = float(m.group(3))
    m = _REQS.search(text)
    if m:
        (out["total"], out["started"], out["done"], out["succeeded"], out["failed"],
         out["errored"], out["timeout"]) = map(int, m.groups())
    m = _CODES.search(text)
    if m:
        out["s2xx"], out["s3xx"], out["s4xx"], out["s5xx"] = map(int, m.groups())
    m = _TRAFFIC.search(text)
    if m:
        out["bytes_total"], out["bytes_headers"], out["bytes_data"] = map(int, m.groups())
    for key, label in (("tls_protocol", "TLS Protocol"), ("tls_cipher", "Cipher"),
                       ("app_protocol", "Application protocol")):
        m = re.search(r"^%s: (\S+)" % label, text, re.M)
        if m:
            out[key] = m.group(1)
    return out


def run_h2load(url: str, duration: float, connections: int, server_pid: int | None,
               timeout_extra: float = 30.0, core: str = CLIENT_CORE, protocol: str = "h1",
               streams: int = H2_STREAMS) -> dict:
    """One bounded h2load run; server CPU is measured over exactly this run."""
    argv = h2load_argv(url, duration, connections, core=core, protocol=protocol,
                       streams=streams)
    cpu0 = proc.tree_cpu_seconds(server_pid) if server_pid else None
    ctx0 = proc.tree_ctx_switches(server_pid) if server_pid else None
    ccpu0 = proc.children_cpu_seconds()
    busy0 = proc.system_busy_seconds()
    t0 = time.monotonic()
    try:
        cp = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            timeout=duration + timeout_extra, text=True, errors="replace")
        text, rc = cp.stdout, cp.returncode
    except subprocess.TimeoutExpired as e:
        out = e.stdout or ""
        text = out.decode(errors="replace") if isinstance(out, bytes) else out
        return {"error": "h2load timed out after %.0fs" % (duration + timeout_extra),
                "h2load_tail": text[-800:]}
    wall = time.monotonic() - t0
    busy = proc.system_busy_seconds() - busy0
    cpu1 = proc.tree_cpu_seconds(server_pid) if server_pid else None
    ctx1 = proc.tree_ctx_switches(server_pid) if server_pid else None
    res = parse_h2load(text)
    if ctx0 is not None:
        # Threads that ended during the run are missed (a server's pool keeps its threads).
        res["server_ctx_voluntary"] = ctx1[0] - ctx0[0]
        res["server_ctx_involuntary"] = ctx1[1] - ctx0[1]
    res["wall_seconds"] = wall
    res["client_cpu_seconds"] = proc.children_cpu_seconds() - ccpu0
    if cpu0 is not None:
        res["server_cpu_seconds"] = cpu1 - cpu0
        # CPU that neither the server tree nor the client used: other work on the
        # host during the run (in cores; a noisy neighbour shows here).
        res["other_cpu_cores"] = max(0.0, busy - res["server_cpu_seconds"]
                                     - res["client_cpu_seconds"]) / wall
    if rc != 0 or "succeeded" not in res:
        res["error"] = "h2load exit %d" % rc
        res["h2load_tail"] = text[-800:]
    elif protocol == "h2" and res.get("app_protocol") != "h2":
        # h2load falls back to HTTP/1.1 when the server's ALPN has no h2: not an h2 run.
        res["error"] = "negotiated %s, not h2" % res.get("app_protocol", "no protocol")
        res["h2load_tail"] = text[-800:]
    return res
