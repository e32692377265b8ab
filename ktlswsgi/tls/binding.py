"""The Python layer over the compiled binding: loading it, the library's
identity, and the one helper that turns OpenSSL's error queue into an
exception.

Owns: ``ffi``/``lib`` (re-exported for the rest of ``tls/`` only: no raw
``lib.`` calls outside this package), ``TLSError`` and ``errors_from_queue``.
Must not: know HTTP, keep per-process state, block.
"""
from __future__ import annotations

try:
    from ktlswsgi.tls._openssl import ffi, lib
except ImportError as exc:  # pragma: no cover - depends on the build
    raise ImportError(
        "ktlswsgi's OpenSSL binding (ktlswsgi.tls._openssl) is not built: "
        "reinstall with 'pip install .' (needs gcc and the OpenSSL 3 headers, "
        "e.g. Debian libssl-dev): %s" % exc
    ) from exc

HAS_KTLS = bool(lib.Ktlswsgi_HAS_KTLS)
HAS_SSL_SENDFILE = bool(lib.Ktlswsgi_HAS_SSL_SENDFILE)
HAS_IGNORE_UNEXPECTED_EOF = bool(lib.Ktlswsgi_HAS_IGNORE_UNEXPECTED_EOF)


def openssl_version_text() -> str:
    """``OpenSSL 3.0.19`` (the library loaded at run time, date dropped)."""
    text = ffi.string(lib.OpenSSL_version(lib.OPENSSL_VERSION)).decode("ascii", "replace")
    parts = text.split()
    return " ".join(parts[:2]) if len(parts) >= 2 else text


class OpenSSLErrorEntry:
    """One entry of the error queue."""

    __slots__ = ("code", "lib", "reason")

    def __init__(self, code: int, lib_name: str, reason: str):
        self.code = code
        self.lib = lib_name
        self.reason = reason

    def __repr__(self):
        return "OpenSSLErrorEntry(%#x, %r, %r)" % (self.code, self.lib, self.reason)


class TLSError(Exception):
    """An OpenSSL failure; ``str()`` is one line, ``.errors`` the whole queue
    (oldest first), ``.reason`` OpenSSL's reason string for the root cause."""

    def __init__(self, message: str, errors=(), reason: str | None = None):
        super().__init__(message)
        self.errors = list(errors)
        self.reason = reason if reason is not None else first_reason(self.errors)


class TLSConfigError(TLSError):
    """The server's TLS configuration cannot be used (file, key, cipher...)."""


def _string(ptr) -> str:
    if ptr == ffi.NULL:
        return ""
    return ffi.string(ptr).decode("utf-8", "replace")


def drain_errors() -> list:
    """Empty the thread's error queue; return its entries, oldest first."""
    entries = []
    for _ in range(64):  # the queue holds at most 16 entries; stay bounded
        code = lib.ERR_get_error()
        if code == 0:
            break
        reason = _string(lib.ERR_reason_error_string(code))
        if not reason:
            if lib.ERR_SYSTEM_ERROR(code):
                import os

                reason = os.strerror(lib.ERR_GET_REASON(code))
            else:
                buf = ffi.new("char[]", 256)
                lib.ERR_error_string_n(code, buf, 256)
                reason = _string(buf)
        entries.append(OpenSSLErrorEntry(code, _string(lib.ERR_lib_error_string(code)), reason))
    return entries


def first_reason(entries) -> str:
    return entries[0].reason if entries else ""


def errors_from_queue(message: str, cls=TLSError) -> TLSError:
    """Drain the queue into ``cls("<message>: <reason>")``, one line."""
    entries = drain_errors()
    reason = first_reason(entries)
    text = "%s: %s" % (message, reason) if reason else message
    return cls(text, entries, reason)


def clear_errors() -> None:
    lib.ERR_clear_error()
