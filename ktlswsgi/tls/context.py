"""The server-side TLS configuration: one ``SSL_CTX`` built from plain
arguments.

Owns: certificate chain and key loading (with one-line errors that name the
file and give OpenSSL's reason), protocol floor, cipher order, session
tickets, ALPN offer, the kTLS option.  Knows nothing of HTTP, sockets or
processes.

Pre-fork: a ``ServerContext`` holds no per-process state (no pid, no thread,
no file descriptor, no session cache), so a master creates it ONCE and forks.
Session-ticket keys: ``SSL_CTX_new`` draws the ticket encryption and HMAC keys
from the RAND generator into the context itself; every child forked after the
context exists inherits the very same keys by copy-on-write, so a ticket
issued by one worker process is accepted by any other.  The keys live as long
as the master (restart the master to rotate them).  The server-side
session-ID cache is switched off because it would be per process; TLS 1.2
resumption goes through tickets (RFC 5077) and TLS 1.3 uses stateless
tickets, both shared as above.
"""
from __future__ import annotations

import os
import re

from .binding import HAS_KTLS, TLSConfigError, drain_errors, ffi, lib

# Server preference: AES-GCM first (AES-NI, every kTLS kernel since 4.13, NIC
# offload), then ChaCha20-Poly1305 (kTLS from kernel 5.11 with its modules).
DEFAULT_CIPHERS = ":".join([
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
])
DEFAULT_TLS13_CIPHERSUITES = ":".join([
    "TLS_AES_128_GCM_SHA256",
    "TLS_AES_256_GCM_SHA384",
    "TLS_CHACHA20_POLY1305_SHA256",
])
DEFAULT_ALPN = ("http/1.1",)

_VERSIONS = {"1.2": lib.TLS1_2_VERSION, "1.3": lib.TLS1_3_VERSION}

# Queue entries that only say "something below failed".
_GENERIC_REASONS = {
    "interrupted or cancelled", "PEM lib", "system lib", "unable to get passphrase",
}


def _pick_reason(entries) -> str:
    specific = [e.reason for e in entries if e.reason not in _GENERIC_REASONS]
    if specific:
        return specific[0]
    return entries[0].reason if entries else "unknown error"


def _fail(message: str, entries, reason: str | None = None) -> TLSConfigError:
    reason = reason if reason is not None else _pick_reason(entries)
    return TLSConfigError("TLS: %s: %s" % (message, reason), entries, reason)


def _has_pem_private_key(path) -> bool:
    """Whether ``path`` holds a PEM private key block (any kind, encrypted or
    not); True when it cannot be read, so OpenSSL's reason stands."""
    try:
        with open(path, "rb") as f:
            text = f.read()
    except OSError:
        return True
    return re.search(rb"^-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----", text, re.MULTILINE) is not None


def alpn_wire(protocols) -> bytes:
    """``["h2", "http/1.1"]`` -> b"\\x02h2\\x08http/1.1" (RFC 7301 wire form)."""
    out = bytearray()
    for name in protocols:
        raw = name.encode("ascii") if isinstance(name, str) else bytes(name)
        if not 0 < len(raw) < 256:
            raise TLSConfigError("TLS: ALPN protocol name of bad length: %r" % (name,))
        out.append(len(raw))
        out += raw
    return bytes(out)


class ServerContext:
    """A server ``SSL_CTX``.

    ``ServerContext(certfile, keyfile=None, password=None, *, ciphers=...,
    tls13_ciphersuites=..., min_version="1.2", ktls=True, alpn=("http/1.1",),
    session_tickets=True)``.  ``keyfile`` defaults to ``certfile`` (key in the
    same PEM).  ``password`` (str/bytes) decrypts an encrypted key; without
    it an encrypted key fails at once, never prompting on a terminal.
    Raises ``TLSConfigError`` with one line naming the file and OpenSSL's
    reason.  ``ktls=False`` leaves out ``SSL_OP_ENABLE_KTLS``: then no socket
    made from this context ever gets kTLS.
    """

    def __init__(self, certfile, keyfile=None, password=None, *,
                 ciphers: str = DEFAULT_CIPHERS,
                 tls13_ciphersuites: str = DEFAULT_TLS13_CIPHERSUITES,
                 min_version: str = "1.2",
                 ktls: bool = True,
                 alpn=DEFAULT_ALPN,
                 session_tickets: bool = True):
        self.certfile = os.fspath(certfile)
        self.keyfile = os.fspath(keyfile) if keyfile is not None else self.certfile
        self.min_version = str(min_version)
        self.alpn = tuple(alpn or ())
        self.ciphers = ciphers
        self.tls13_ciphersuites = tls13_ciphersuites
        self.session_tickets = bool(session_tickets)
        if self.min_version not in _VERSIONS:
            raise TLSConfigError(
                "TLS: minimum version must be '1.2' or '1.3', not %r" % (min_version,))

        lib.ERR_clear_error()
        ctx = lib.SSL_CTX_new(lib.TLS_server_method())
        if ctx == ffi.NULL:
            raise _fail("cannot create an SSL_CTX", drain_errors())
        self._ctx = ffi.gc(ctx, lib.SSL_CTX_free)

        options = (lib.SSL_OP_NO_COMPRESSION | lib.SSL_OP_NO_RENEGOTIATION
                   | lib.SSL_OP_CIPHER_SERVER_PREFERENCE
                   | lib.SSL_OP_IGNORE_UNEXPECTED_EOF)
        self.ktls = bool(ktls) and HAS_KTLS
        if self.ktls:
            options |= lib.SSL_OP_ENABLE_KTLS
        else:
            lib.SSL_CTX_clear_options(self._ctx, lib.SSL_OP_ENABLE_KTLS)
        if not self.session_tickets:
            options |= lib.SSL_OP_NO_TICKET
        lib.SSL_CTX_set_options(self._ctx, options)
        lib.SSL_CTX_set_mode(self._ctx, lib.SSL_MODE_ENABLE_PARTIAL_WRITE
                             | lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER
                             | lib.SSL_MODE_RELEASE_BUFFERS)
        if not lib.SSL_CTX_set_min_proto_version(self._ctx, _VERSIONS[self.min_version]):
            raise _fail("cannot set minimum version %s" % self.min_version, drain_errors())

        # Per-process session-ID caches would not be shared across workers.
        lib.SSL_CTX_set_session_cache_mode(self._ctx, lib.SSL_SESS_CACHE_OFF)
        sid = b"ktlswsgi"
        lib.SSL_CTX_set_session_id_context(self._ctx, sid, len(sid))
        if not self.session_tickets:
            lib.SSL_CTX_set_num_tickets(self._ctx, 0)

        if ciphers and not lib.SSL_CTX_set_cipher_list(self._ctx, ciphers.encode("ascii")):
            raise _fail("bad cipher list %r" % ciphers, drain_errors())
        if tls13_ciphersuites and not lib.SSL_CTX_set_ciphersuites(
                self._ctx, tls13_ciphersuites.encode("ascii")):
            raise _fail("bad TLS 1.3 ciphersuites %r" % tls13_ciphersuites, drain_errors())

        self._load_chain_and_key(password)

        # The ALPN offer and its C view must live as long as the SSL_CTX.
        self._alpn_wire = alpn_wire(self.alpn)
        self._alpn_buf = ffi.new("unsigned char[]", self._alpn_wire or b"\0")
        self._alpn = ffi.new("Ktlswsgi_alpn *")
        self._alpn.protos = self._alpn_buf
        self._alpn.length = len(self._alpn_wire)
        if self._alpn_wire:
            lib.Ktlswsgi_CTX_set_alpn_select(self._ctx, self._alpn)

    def _load_chain_and_key(self, password) -> None:
        # The password callback is always installed: OpenSSL's default one
        # would prompt on the terminal.
        pw = ffi.new("Ktlswsgi_password *")
        keep = None
        if password is not None:
            raw = password.encode("utf-8") if isinstance(password, str) else bytes(password)
            keep = ffi.new("char[]", raw)
            pw.password = keep
            pw.length = len(raw)
        lib.SSL_CTX_set_default_passwd_cb(self._ctx, ffi.addressof(lib, "Ktlswsgi_password_cb"))
        lib.SSL_CTX_set_default_passwd_cb_userdata(self._ctx, pw)
        try:
            lib.ERR_clear_error()
            if not lib.SSL_CTX_use_certificate_chain_file(self._ctx, os.fsencode(self.certfile)):
                entries = drain_errors()
                raise _fail("cannot load certfile %r" % self.certfile, entries,
                            self._file_reason(self.certfile, entries, "certificate"))
            pw.called = 0
            if not lib.SSL_CTX_use_PrivateKey_file(self._ctx, os.fsencode(self.keyfile),
                                                   lib.SSL_FILETYPE_PEM):
                entries = drain_errors()
                if pw.called and password is None:
                    reason = "the key is encrypted and no password was given"
                elif pw.too_long:
                    reason = "the password is too long"
                elif pw.called:
                    reason = "wrong password (%s)" % _pick_reason(entries)
                elif not _has_pem_private_key(self.keyfile):
                    # OpenSSL 3's decoders say only "unsupported" for a PEM
                    # without a key (a certificate alone, or junk).
                    reason = "no private key found in it"
                    if self.keyfile == self.certfile:
                        reason += " (give --keyfile, or put the key in the PEM)"
                else:
                    reason = self._file_reason(self.keyfile, entries, "private key")
                    if reason == "key values mismatch":
                        reason = "the key does not match the certificate in %r (%s)" % (
                            self.certfile, reason)
                raise _fail("cannot load keyfile %r" % self.keyfile, entries, reason)
            if not lib.SSL_CTX_check_private_key(self._ctx):
                entries = drain_errors()
                raise _fail("keyfile %r does not match certfile %r" % (
                    self.keyfile, self.certfile), entries)
        finally:
            # Loading is over: no later call may reach the callback's data.
            lib.SSL_CTX_set_default_passwd_cb_userdata(self._ctx, ffi.NULL)
            del keep, pw

    @staticmethod
    def _file_reason(path, entries, what) -> str:
        reason = _pick_reason(entries)
        if reason == "no start line":
            return "no PEM %s found (%s)" % (what, reason)
        return reason

    @property
    def ctx(self):
        """The ``SSL_CTX *`` (for the transports in this package only)."""
        return self._ctx

    def describe(self) -> str:
        return "TLS >= %s, kTLS option %s, ALPN %s" % (
            self.min_version, "on" if self.ktls else "off", ",".join(self.alpn) or "none")
