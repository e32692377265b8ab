"""``ktlswsgi --check-ktls``: the probe line, then a loopback self-test.

For TLS 1.2 and 1.3: a server ``SocketTransport`` (non-blocking, driven with
select) on a context with the kTLS option, Python's ``ssl`` module as the
client in a thread; report the version, cipher, whether kTLS TX/RX engaged
(OpenSSL's BIO_get_ktls_send/recv and the kernel's own SOL_TLS view), and
send a temporary file through ``send_file`` (SSL_sendfile when TX engaged,
else the pread + SSL_write fallback: the line says which), verified by
sha256 at the client.  Exit code 0 only when kTLS is available, TX engaged
for both versions and SSL_sendfile delivered the file intact.

Uses a throw-away self-signed certificate (never the user's cache).  Every
wait is bounded (10 s per case).
"""
from __future__ import annotations

import hashlib
import os
import select
import socket
import ssl
import sys
import tempfile
import threading
import time

from ktlswsgi.transport import WANT_READ, WANT_WRITE, TransportError

from .binding import HAS_KTLS, TLSError, openssl_version_text
from .context import ServerContext
from .ktls import kernel_tls_state, probe, read_tls_stat
from .selfsigned import generate_pem
from .transports import SocketTransport

FILE_BYTES = 4 * 1024 * 1024 + 7
CASE_TIMEOUT_S = 10.0


class _Case:
    def __init__(self, version: str):
        self.version = version
        self.ok = False
        self.info = {}
        self.kernel = {}
        self.ktls_tx = False
        self.ktls_rx = False
        self.method = ""
        self.sent = 0
        self.verified = False
        self.error = ""


def _wait(fd, want, end):
    left = end - time.monotonic()
    if left <= 0:
        raise TimeoutError("timed out")
    r, w = ([fd], []) if want == WANT_READ else ([], [fd])
    select.select(r, w, [], min(left, 1.0))


def _drive(fd, call, end):
    while True:
        result = call()
        if result is WANT_READ or result is WANT_WRITE:
            _wait(fd, result, end)
            continue
        return result


def _client(address, cafile, version, outcome):
    try:
        ctx = ssl.create_default_context(cafile=cafile)
        ctx.minimum_version = ctx.maximum_version = version
        ctx.set_alpn_protocols(["http/1.1"])
        with socket.create_connection(address, timeout=CASE_TIMEOUT_S) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                digest = hashlib.sha256()
                total = 0
                while True:
                    try:
                        chunk = tls.recv(1 << 20)
                    except ssl.SSLZeroReturnError:
                        break
                    if not chunk:
                        break
                    digest.update(chunk)
                    total += len(chunk)
                outcome["sha256"] = digest.hexdigest()
                outcome["bytes"] = total
    except Exception as exc:  # reported by the server side
        outcome["error"] = "client: %s" % exc


def _run_case(version: str, certfile: str, keyfile: str, path: str, expected: str) -> _Case:
    case = _Case(version)
    tls_version = ssl.TLSVersion.TLSv1_2 if version == "1.2" else ssl.TLSVersion.TLSv1_3
    end = time.monotonic() + CASE_TIMEOUT_S
    context = ServerContext(certfile, keyfile, min_version=version, ktls=True)
    listener = socket.socket()
    transport = None
    outcome = {}
    thread = None
    try:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        thread = threading.Thread(target=_client, daemon=True,
                                  args=(listener.getsockname(), certfile, tls_version, outcome))
        thread.start()
        if not select.select([listener], [], [], CASE_TIMEOUT_S)[0]:
            raise TimeoutError("no client connection")
        sock, _ = listener.accept()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        transport = SocketTransport(context, sock)
        _drive(transport.fd, transport.handshake, end)
        case.info = transport.info()
        case.kernel = kernel_tls_state(sock)
        case.ktls_tx, case.ktls_rx = transport.ktls_tx, transport.ktls_rx
        case.method = transport.file_method
        with open(path, "rb") as f:
            fd = f.fileno()
            while case.sent < FILE_BYTES:
                n = _drive(transport.fd, lambda: transport.send_file(
                    fd, case.sent, FILE_BYTES - case.sent), end)
                if n == 0:
                    raise TransportError("file ended early")
                case.sent += n
        while not transport.flush():
            _wait(transport.fd, WANT_WRITE, end)
        _drive(transport.fd, transport.shutdown, end)
        thread.join(max(0.1, end - time.monotonic()))
        if "error" in outcome:
            case.error = outcome["error"]
        elif outcome.get("sha256") != expected:
            case.error = "sha256 mismatch at the client (%s bytes received)" % outcome.get("bytes")
        else:
            case.verified = True
            case.ok = True
    except (TransportError, TLSError, OSError, TimeoutError) as exc:
        case.error = str(exc) or type(exc).__name__
        if "error" in outcome:
            case.error += "; " + outcome["error"]
    finally:
        if transport is not None:
            transport.close()
        listener.close()
        if thread is not None:
            thread.join(1.0)
    return case


def _kernel_text(kernel) -> str:
    parts = []
    for name in ("tx", "rx"):
        value = kernel.get(name)
        parts.append("%s=%s" % (name.upper(), "v%#06x/cipher %d" % value if value else "-"))
    return "kernel SOL_TLS " + " ".join(parts)


def run_check(out=None) -> int:
    """Print the probe and the loopback self-test; -> exit code 0 / 1."""
    out = out or sys.stdout

    def say(line=""):
        print(line, file=out)
        out.flush()

    result = probe()
    say(result.reason)
    say("  probe: %s" % result.detail)
    say("  library: %s, built %s KTLS" % (openssl_version_text(), "with" if HAS_KTLS else "without"))
    stat_before = read_tls_stat()

    cases = []
    with tempfile.TemporaryDirectory(prefix="ktlswsgi-check-") as tmp:
        certfile = os.path.join(tmp, "cert.pem")
        keyfile = os.path.join(tmp, "key.pem")
        cert_pem, key_pem = generate_pem()
        with open(certfile, "wb") as f:
            f.write(cert_pem)
        with open(os.open(keyfile, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(key_pem)
        path = os.path.join(tmp, "payload.bin")
        payload = os.urandom(FILE_BYTES)
        with open(path, "wb") as f:
            f.write(payload)
        expected = hashlib.sha256(payload).hexdigest()
        del payload
        for version in ("1.2", "1.3"):
            case = _run_case(version, certfile, keyfile, path, expected)
            cases.append(case)
            if case.error and not case.info:
                say("self-test TLS %s: FAILED: %s" % (version, case.error))
                continue
            ktls = ("kTLS TX %s, RX %s" % ("engaged" if case.ktls_tx else "not engaged",
                                          "engaged" if case.ktls_rx else "not engaged"))
            via = ("SSL_sendfile" if case.method == "ssl_sendfile"
                   else "pread + SSL_write fallback (kTLS TX not engaged)")
            say("self-test TLS %s: %s %s, %s; %s" % (
                version, case.info.get("tls_version"), case.info.get("cipher"), ktls,
                _kernel_text(case.kernel)))
            if case.verified:
                say("  file %d B via %s: sha256 verified by the client" % (FILE_BYTES, via))
            else:
                say("  file %d B via %s: FAILED: %s" % (FILE_BYTES, via, case.error))

    stat_after = read_tls_stat()
    if stat_before is not None and stat_after is not None:
        moved = {k: stat_after[k] - stat_before.get(k, 0) for k in stat_after
                 if stat_after[k] != stat_before.get(k, 0)}
        say("  /proc/net/tls_stat changes: %s" % (
            ", ".join("%s +%d" % kv for kv in sorted(moved.items())) or "none"))

    if not result.available:
        say("result: FAIL: %s" % result.reason)
        return 1
    broken = [c for c in cases if not c.verified]
    if broken:
        say("result: FAIL: the loopback transfer failed for TLS %s" % (
            ", ".join(c.version for c in broken)))
        return 1
    no_tx = [c for c in cases if not c.ktls_tx]
    if no_tx:
        say("result: FAIL: kTLS TX did not engage for %s although the kernel has the tls ULP: "
            "the kernel's cipher modules are probably missing (gcm, aesni_intel, "
            "ghash_clmulni_intel; for ChaCha20 chacha20poly1305 and its helpers)" % (
                ", ".join("TLS %s (%s)" % (c.version, c.info.get("cipher")) for c in no_tx)))
        return 1
    say("result: OK: kTLS TX engaged for TLS 1.2 and 1.3; SSL_sendfile delivered the file intact")
    return 0


if __name__ == "__main__":
    sys.exit(run_check())
