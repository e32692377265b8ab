"""The kTLS probe: can this process's sockets get kernel TLS at all?

Owns: one decision per process (memoized), from (1) the library: was libssl
built with KTLS (compile-time ``Ktlswsgi_HAS_KTLS``), and (2) the kernel:
``setsockopt(IPPROTO_TCP, TCP_ULP, "tls")`` on a CONNECTED loopback TCP pair
(on an unconnected socket it always fails with ENOTCONN).
``/proc/sys/net/ipv4/tcp_available_ulp`` is read before and after, because
it lists only ULPs already registered and a process with CAP_NET_ADMIN
autoloads ``tls.ko`` through that very setsockopt: the line says which
happened.

"available" means a socket *can* be promoted; whether a given connection
was (cipher modules loaded, TLS version, cipher) is only proven by
``BIO_get_ktls_send``/``recv`` after its handshake (SocketTransport.ktls_tx).

Logging: ``log_once(logger)`` logs the line once per process id.  The probe
result itself is inherited by forked children (same kernel, same library);
the log line is not: a pre-fork worker that calls ``log_once`` logs its own
line once, and one that does not call it stays silent.  The master decides.
Must not: block beyond a loopback connect (2 s bound), raise.
"""
from __future__ import annotations

import errno
import os
import socket
import threading
import struct
from dataclasses import dataclass

from .binding import HAS_KTLS, openssl_version_text

TCP_ULP = getattr(socket, "TCP_ULP", 31)
ULP_PATH = "/proc/sys/net/ipv4/tcp_available_ulp"
CAP_NET_ADMIN = 12


@dataclass(frozen=True)
class KTLSProbe:
    available: bool
    reason: str                   # the one log line
    kernel_tls: bool = False      # TCP_ULP "tls" accepted on a connected socket
    library_ktls: bool = False    # libssl built with KTLS
    autoloaded: bool = False      # the probe's setsockopt loaded tls.ko
    ulps_before: tuple | None = None
    ulps_after: tuple | None = None
    detail: str = ""              # errno and tcp_available_ulp, for --check-ktls


def read_available_ulps(path: str = ULP_PATH):
    """-> tuple of ULP names, or None when the file cannot be read."""
    try:
        with open(path) as f:
            return tuple(f.read().split())
    except OSError:
        return None


def _has_cap_net_admin() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_NET_ADMIN & 1)
    except (OSError, ValueError, IndexError):
        pass
    return os.geteuid() == 0


def _connected_pair():
    """-> (client, server, listener) over loopback; raises OSError."""
    last = OSError("no loopback address")
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        listener = client = None
        try:
            listener = socket.socket(family, socket.SOCK_STREAM)
            listener.bind((host, 0))
            listener.listen(1)
            client = socket.socket(family, socket.SOCK_STREAM)
            client.settimeout(2.0)
            client.connect(listener.getsockname()[:2])
            listener.settimeout(2.0)
            server, _ = listener.accept()
            return client, server, listener
        except OSError as exc:
            last = exc
            for s in (client, listener):
                if s is not None:
                    s.close()
    raise last


def try_tls_ulp():
    """-> (accepted, errno): setsockopt TCP_ULP "tls" on a connected pair."""
    client, server, listener = _connected_pair()
    try:
        client.setsockopt(socket.IPPROTO_TCP, TCP_ULP, b"tls")
        return True, 0
    except OSError as exc:
        return False, exc.errno or 0
    finally:
        for s in (client, server, listener):
            s.close()


def _ulps_text(ulps) -> str:
    if ulps is None:
        return "unreadable"
    return " ".join(ulps) or "(empty)"


def run_probe() -> KTLSProbe:
    """Probe now (no memo).  Never raises."""
    library = openssl_version_text()
    before = read_available_ulps()
    try:
        accepted, err = try_tls_ulp()
    except OSError as exc:
        return KTLSProbe(False, "kTLS: unavailable: cannot make a loopback TCP pair to probe "
                         "the kernel (%s)" % (exc.strerror or exc), library_ktls=HAS_KTLS,
                         ulps_before=before, detail=str(exc))
    after = read_available_ulps()
    autoloaded = bool(accepted and before is not None and "tls" not in before
                      and after is not None and "tls" in after)
    detail = "setsockopt(TCP_ULP, \"tls\"): %s; tcp_available_ulp before: %s, after: %s" % (
        "ok" if accepted else errno.errorcode.get(err, str(err)),
        _ulps_text(before), _ulps_text(after))
    common = dict(kernel_tls=accepted, library_ktls=HAS_KTLS, autoloaded=autoloaded,
                  ulps_before=before, ulps_after=after, detail=detail)
    if not accepted:
        if err == errno.ENOENT:
            if _has_cap_net_admin() or (before is not None and "tls" in before):
                line = ("kTLS: unavailable: kernel has no tls ULP "
                        "(load it with 'modprobe tls'; CONFIG_TLS)")
            else:
                line = ("kTLS: unavailable: kernel tls ULP not loaded and this process may not "
                        "load it (run 'modprobe tls' as root, or list tls in "
                        "/etc/modules-load.d; CONFIG_TLS)")
        elif err == errno.ENOPROTOOPT:
            line = "kTLS: unavailable: kernel has no TCP_ULP (Linux older than 4.13?)"
        else:
            line = "kTLS: unavailable: setsockopt(TCP_ULP, \"tls\") failed: %s" % (
                os.strerror(err) if err else "unknown error")
        return KTLSProbe(False, line, **common)
    if not HAS_KTLS:
        return KTLSProbe(False, "kTLS: unavailable: %s was built without KTLS "
                         "(OPENSSL_NO_KTLS)" % library, **common)
    if before is None:
        how = "kernel tls ULP"
    elif autoloaded:
        how = "kernel tls ULP, loaded by this probe"
    else:
        how = "kernel tls ULP, already loaded"
    return KTLSProbe(True, "kTLS: available (%s, %s with KTLS)" % (how, library), **common)


SOL_TLS = 282
TLS_TX = 1
TLS_RX = 2


def kernel_tls_state(sock):
    """The kernel's own view of one socket -> {"tx": (version, cipher_type) or
    None, "rx": ...}.  Reads only ``struct tls_crypto_info`` (4 bytes): a
    longer buffer would copy the live key out of the kernel."""
    state = {}
    for name, opt in (("tx", TLS_TX), ("rx", TLS_RX)):
        try:
            raw = sock.getsockopt(SOL_TLS, opt, 4)
            state[name] = struct.unpack("=HH", raw)
        except OSError:
            state[name] = None
    return state


def read_tls_stat(path: str = "/proc/net/tls_stat"):
    """-> {counter: int} from /proc/net/tls_stat, or None (no tls module)."""
    try:
        with open(path) as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except (OSError, ValueError):
        return None


_lock = threading.Lock()
_result: KTLSProbe | None = None
_logged_pid: int | None = None


def probe() -> KTLSProbe:
    """The process's probe result, decided on first call (a forked child
    inherits it: same kernel, same library)."""
    global _result
    with _lock:
        if _result is None:
            _result = run_probe()
        return _result


def log_once(logger, level=None) -> KTLSProbe:
    """Log ``probe().reason`` once per process id (INFO unless ``level``)."""
    global _logged_pid
    result = probe()
    pid = os.getpid()
    with _lock:
        if _logged_pid == pid:
            return result
        _logged_pid = pid
    import logging

    logger.log(logging.INFO if level is None else level, "%s", result.reason)
    return result


def _reset_for_tests() -> None:
    global _result, _logged_pid
    with _lock:
        _result = None
        _logged_pid = None
