"""The process's TLS set-up: the SSL context from the settings, and the transport factory.

Owns: building the `ServerContext` once (certificate and key, or a cached
self-signed development pair, ciphers, versions, ALPN, the kTLS option),
logging what it chose, and picking the transport (`--tls-transport`: socket,
memory, or auto by the kTLS probe).  Used by the master before it forks (so
every worker shares the context and its session-ticket keys) and by a
process serving alone.  Knows nothing of HTTP beyond the ALPN names.
"""
from __future__ import annotations

import logging

log = logging.getLogger("ktlswsgi.server")


class TLSSetupError(Exception):
    """TLS cannot be set up; the message is one line for the operator."""


def tls_transport_factory(config):
    """Build the process's SSL context once and return `sock -> transport`.

    The context is built here, before any fork, so a pre-fork master shares
    it (and its session-ticket keys) with every worker process.  `auto` picks
    the socket transport where the kTLS probe passes (OpenSSL then promotes
    each connection to kTLS) and the memory transport elsewhere: with no
    kernel TLS it sends many records per syscall (see docs/tls.md).
    """
    from . import ktls
    from .binding import TLSError
    from .context import ServerContext
    from .transports import MemoryTransport, SocketTransport

    kwargs = {"min_version": config.tls_min_version, "ktls": config.ktls,
              "alpn": ("h2", "http/1.1") if config.http2 else ("http/1.1",)}
    if config.ciphers:
        kwargs["ciphers"] = config.ciphers
    if config.tls13_ciphersuites:
        kwargs["tls13_ciphersuites"] = config.tls13_ciphersuites
    if config.certfile:
        try:
            context = ServerContext(config.certfile, config.keyfile, config.keyfile_password,
                                    **kwargs)
        except TLSError as exc:
            raise TLSSetupError(str(exc)) from None
    else:
        from .selfsigned import COVERED_NAMES, development_pair, uncovered_binds
        try:
            # Loaded inside the block: an uncached pair's files are gone after it.
            with development_pair() as pair:
                try:
                    context = ServerContext(pair.certfile, pair.keyfile, **kwargs)
                except TLSError as exc:   # e.g. --ciphers: not the pair's fault
                    raise TLSSetupError(str(exc)) from None
        except (OSError, TLSError) as exc:
            raise TLSSetupError(f"TLS: cannot make a self-signed certificate: {exc}") from None
        log.warning("TLS: no --certfile given: using a self-signed certificate for %s (%s). "
                    "For development only.", COVERED_NAMES,
                    "not cached" if pair.cache_error else pair.certfile)
        if pair.cache_error:
            log.warning("TLS: the certificate cache %s cannot be written (%s): a new self-signed "
                        "certificate is generated at every start (set XDG_CACHE_HOME to a "
                        "writable directory to keep one)", pair.cache_dir, pair.cache_error)
        uncovered = uncovered_binds(config.binds)
        if uncovered:
            log.warning("TLS: the self-signed certificate only covers %s, but it is served "
                        "on non-loopback %s: clients that connect by another name or address "
                        "get a certificate error (give --certfile with a certificate for this "
                        "host)", COVERED_NAMES,
                        ", ".join(map(str, uncovered)))
    probe = ktls.log_once(log)
    choice = config.tls_transport
    if choice == "auto":
        choice = "socket" if probe.available and context.ktls else "memory"
    log.info("TLS: %s transport, %s", choice, context.describe())
    cls = SocketTransport if choice == "socket" else MemoryTransport
    return lambda sock: cls(context, sock)
