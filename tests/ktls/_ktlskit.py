"""Helpers of the kTLS suite (tests/ktls; the gate, fixtures and the report
are in conftest.py): the gate's decision, the kernel's views of a connection
(getsockopt SOL_TLS, /proc/net/tls_stat), which kernel modules a cipher
lacks, test files with their sha256, and an HTTPS client that can read slowly.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import time

from support import free_port, tls_client_context, wait_port, wait_until
from ktlswsgi.tls import ktls
from ktlswsgi.tls.binding import openssl_version_text
from test_tls_server import make_file, sha256_file

IN_VM = os.environ.get("KTLSWSGI_IN_VM") == "1"
EXPECT = os.environ.get("KTLSWSGI_EXPECT_KTLS", "available")
PROBE = ktls.probe()
HERE = os.path.dirname(os.path.abspath(__file__))
HOW_TO_RUN = "the kTLS suite runs in a VM with a kTLS kernel: make ktls-smoke"

_m = re.match(r"OpenSSL (\d+)\.(\d+)", openssl_version_text())
OPENSSL = (int(_m.group(1)), int(_m.group(2))) if _m else (0, 0)
# kTLS RX for TLS 1.3 arrived in OpenSSL 3.2 (docs/ktls-facts.md); 3.0 does TX only.
TLS13_RX = OPENSSL >= (3, 2)


def decide(kind: str):
    """-> ("run" | "skip" | "fail", reason) for a test of ``kind``."""
    if EXPECT not in ("available", "unavailable"):
        return "fail", "KTLSWSGI_EXPECT_KTLS=%r: use available or unavailable" % EXPECT
    if kind == "ktls":
        if EXPECT == "unavailable":
            return "skip", ("KTLSWSGI_EXPECT_KTLS=unavailable: this run checks the fallback; "
                            "the kTLS tests belong to the normal boot")
        if PROBE.available:
            return "run", ""
        if IN_VM:
            return "fail", ("KTLSWSGI_IN_VM=1 but the kTLS probe says: %s [%s]"
                            % (PROBE.reason, PROBE.detail))
        return "skip", "%s -- %s" % (PROBE.reason, HOW_TO_RUN)
    if EXPECT != "unavailable":
        return "skip", ("fallback tests run only in the boot with tls.ko blacklisted "
                        "(KTLSWSGI_EXPECT_KTLS=unavailable, make ktls-smoke)")
    if PROBE.available:
        return "fail", ("KTLSWSGI_EXPECT_KTLS=unavailable but the kTLS probe says: %s "
                        "(module_blacklist=tls did not take?)" % PROBE.reason)
    return "run", ""


# -- the kernel's views ----------------------------------------------------------------

KERNEL_VERSIONS = {0x0303: "1.2", 0x0304: "1.3"}
# include/uapi/linux/tls.h
KERNEL_CIPHERS = {51: "AES-GCM-128", 52: "AES-GCM-256", 53: "AES-CCM-128",
                  54: "CHACHA20-POLY1305", 55: "SM4-GCM", 56: "SM4-CCM"}


def kernel_view(sock) -> dict:
    """{"tx": "1.3/AES-GCM-128" or None, "rx": ...}: getsockopt(SOL_TLS) with the
    4-byte struct tls_crypto_info (version and cipher, never the key)."""
    out = {}
    for name, value in ktls.kernel_tls_state(sock).items():
        out[name] = None if value is None else "%s/%s" % (
            KERNEL_VERSIONS.get(value[0], hex(value[0])), KERNEL_CIPHERS.get(value[1], value[1]))
    return out


class TlsStat:
    """Deltas of /proc/net/tls_stat since construction."""

    KEYS = ("TlsTxSw", "TlsRxSw", "TlsCurrTxSw", "TlsCurrRxSw", "TlsDecryptError")

    def __init__(self, required: bool = True):
        self.before = ktls.read_tls_stat()
        if required:
            assert self.before is not None, "no /proc/net/tls_stat: tls.ko is not loaded"

    def delta(self) -> dict:
        now = ktls.read_tls_stat()
        assert now is not None and self.before is not None, "no /proc/net/tls_stat"
        return {k: now.get(k, 0) - self.before.get(k, 0) for k in self.KEYS}


# Kernel modules kTLS needs for a cipher besides tls.ko (docs/ktls-facts.md); any
# one of each alternative set will do.
CIPHER_MODULES = {
    "AES-GCM": [("tls",), ("gcm",), ("aesni_intel", "aes_generic"),
                ("ghash_clmulni_intel", "ghash_generic")],
    "CHACHA20-POLY1305": [("tls",), ("chacha20poly1305",), ("chacha_x86_64", "chacha_generic"),
                          ("poly1305_x86_64", "poly1305_generic")],
}


def module_diagnosis(kernel_cipher: str) -> str:
    """Which of the kernel modules a cipher needs are missing (loaded or built in
    = /sys/module/NAME exists)."""
    family = "CHACHA20-POLY1305" if "CHACHA" in kernel_cipher else "AES-GCM"
    missing = [" or ".join(alts) for alts in CIPHER_MODULES[family]
               if not any(os.path.exists("/sys/module/" + m) for m in alts)]
    if missing:
        return "kernel modules missing for %s: %s" % (family, ", ".join(missing))
    return "every kernel module %s needs is present" % family


def only_connection(srv):
    conns = wait_until(lambda: list(srv.server.connections), 5, "the server's connection")
    assert len(conns) == 1, conns
    return conns[0]


def wait_no_connections(srv, timeout: float = 10.0):
    wait_until(lambda: not srv.server.connections, timeout, "server.connections to empty")


# -- files -------------------------------------------------------------------------------

class Files:
    """Test files made once per session (tmpfs in the VM), with their sha256."""

    def __init__(self, directory: str):
        self.dir = directory
        self._made = {}

    def get(self, size: int):
        """-> (path, sha256)."""
        if size not in self._made:
            path = make_file(self.dir, "f%d.bin" % size, size)
            self._made[size] = (path, sha256_file(path))
        return self._made[size]


# -- an HTTPS client ---------------------------------------------------------------------

class Response:
    def __init__(self, status, headers, length, sha256, body=None):
        self.status, self.headers, self.length, self.sha256, self.body = (
            status, headers, length, sha256, body)


class Client:
    """One keep-alive HTTPS connection (Python's ssl, userspace TLS on the
    client side so /proc/net/tls_stat counts only the server).  ``rcvbuf``
    shrinks SO_RCVBUF before connecting (a slow reader)."""

    def __init__(self, port: int, cert_pair, version=None, ciphers=None, rcvbuf=None,
                 timeout: float = 30.0, host: str = "127.0.0.1"):
        ctx = tls_client_context(cert_pair, version)
        if ciphers:
            ctx.set_ciphers(ciphers)
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        raw.settimeout(timeout)
        raw.connect((host, port))
        self.raw = raw
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        self.http = http.client.HTTPSConnection("localhost", port, context=ctx, timeout=timeout)
        self.http.sock = self.sock

    def request(self, method, path, body=None, headers=None, *, read=1 << 20, delay=0.0,
                keep_body=False, digest=True, deadline_s: float = 600.0) -> Response:
        """Send one request; read the body ``read`` bytes at a time (sleeping
        ``delay`` after each read), hashing it unless ``digest`` is False."""
        self.http.request(method, path, body=body, headers=headers or {})
        r = self.http.getresponse()
        h = hashlib.sha256()
        n = 0
        kept = bytearray() if keep_body else None
        end = time.monotonic() + deadline_s
        while True:
            chunk = r.read(read)
            if not chunk:
                break
            n += len(chunk)
            if digest:
                h.update(chunk)
            if kept is not None:
                kept += chunk
            if delay:
                time.sleep(delay)
            assert time.monotonic() < end, "response body not read within %.0fs" % deadline_s
        return Response(r.status, {k.lower(): v for k, v in r.getheaders()}, n,
                        h.hexdigest() if digest else None,
                        bytes(kept) if kept is not None else None)

    def get(self, path, **kw) -> Response:
        return self.request("GET", path, **kw)

    def close(self):
        self.http.close()
        self.sock.close()


def fetch(port: int, cert_pair, path: str, version=None, *, client_kw=None, **kw) -> Response:
    """One GET on a new connection (closed afterwards)."""
    client = Client(port, cert_pair, version, **(client_kw or {}))
    try:
        return client.get(path, **kw)
    finally:
        client.close()


def file_url(path: str) -> str:
    return "/file?path=" + path


def marker_file(directory: str):
    """-> (path, content): ~1 MiB of recognisable plaintext, to look for on the wire."""
    content = b"PLAINTEXT-MARKER-" * 65536
    path = os.path.join(directory, "marker.bin")
    with open(path, "wb") as f:
        f.write(content)
    return path, content


# -- the server as a subprocess ---------------------------------------------------------

class CliServer:
    """``python -m ktlswsgi ktls_apps:app --tls ...`` as a subprocess, optionally
    under a ``wrapper`` command (strace); ``stop()`` sends SIGTERM to the
    server itself (not to the wrapper) and returns (exit code, stderr)."""

    def __init__(self, cert_pair, *args, wrapper=(), startup_s: float = 180.0):
        self.port = free_port()
        env = dict(os.environ, PYTHONPATH=HERE + os.pathsep + os.environ.get("PYTHONPATH", ""))
        cmd = [*wrapper, sys.executable, "-m", "ktlswsgi", "ktls_apps:app", "--tls",
               "--certfile", cert_pair[0], "--keyfile", cert_pair[1],
               "-b", "127.0.0.1:%d" % self.port, *args]
        self.wrapped = bool(wrapper)
        self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        try:
            wait_port(self.port, timeout=startup_s, proc=self.proc)
        except BaseException:
            self.kill()
            raise

    def server_pid(self) -> int:
        if not self.wrapped:
            return self.proc.pid
        path = "/proc/%d/task/%d/children" % (self.proc.pid, self.proc.pid)
        with open(path) as f:
            children = f.read().split()
        assert len(children) == 1, "wrapper children: %r" % children
        return int(children[0])

    def stop(self, timeout: float = 120.0):
        os.kill(self.server_pid(), signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise
        return self.proc.returncode, err

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.communicate(timeout=30)


def counters_line(stderr: str) -> dict:
    """The server's shutdown line ``counters: name=value ...`` -> {name: int}."""
    lines = [line for line in stderr.splitlines() if "counters: " in line]
    assert len(lines) == 1, "no single counters line in:\n" + stderr[-3000:]
    text = lines[0].split("counters: ", 1)[1]
    return {k: int(v) for k, v in (p.split("=") for p in text.split())}
