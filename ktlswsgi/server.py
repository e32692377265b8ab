"""The server process: listening sockets, accept, signals, shutdown.

Owns: binding (TCP v4/v6 and unix sockets), the accept loop with its bounds
(`--max-connections`, concurrent TLS handshakes), choosing each connection's
transport, graceful shutdown (SIGTERM/SIGINT: stop accepting, let in-flight
requests finish for `--graceful-timeout`, then close), and the counters line
logged at exit.  The reactor runs on the thread that calls `run()`.
"""
from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import stat
import threading

from .connection import Connection, Shared
from .pool import WorkerPool
from .reactor import IN, Reactor
from .telemetry import Counters
from .transport import PlainTransport

log = logging.getLogger("ktlswsgi.server")

_ACCEPTS_PER_EVENT = 64


def bind_sockets(config) -> list:
    """Open every --bind address; raise OSError with the address in the message."""
    socks = []
    try:
        for b in config.binds:
            socks.append(_bind_one(b, config.backlog))
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def _bind_one(b, backlog: int) -> socket.socket:
    if b.family == "unix":
        try:
            if stat.S_ISSOCK(os.stat(b.path).st_mode):
                os.unlink(b.path)  # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(b.path)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind {b}: {exc.strerror}") from None
    else:
        try:
            infos = socket.getaddrinfo(b.host, b.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise OSError(errno.EINVAL, f"cannot resolve {b}: {exc}") from None
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind {b}: {exc.strerror}") from None
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


class Server:
    def __init__(self, config, app, sockets=None, transport_factory=None, scheme: str = "http"):
        self.config = config
        self.app = app
        self.sockets = sockets if sockets is not None else bind_sockets(config)
        self.reactor = Reactor()
        self.pool = WorkerPool(config.threads, config.queue_size)
        self.counters = Counters()
        self.connections: set[Connection] = set()
        self.handshaking: set[Connection] = set()
        self._make_transport = transport_factory or PlainTransport
        self._tls = transport_factory is not None
        self._paused = False
        self._stopping = False
        self.shared = Shared(config=config, reactor=self.reactor, pool=self.pool, app=app,
                             counters=self.counters, scheme=scheme, multiprocess=False,
                             on_closed=self._on_closed,
                             on_handshake_done=self._on_handshake_done)
        self.started = threading.Event()

    @property
    def addresses(self) -> list:
        return [s.getsockname() for s in self.sockets]

    # -- accept ---------------------------------------------------------------------
    def _listen(self) -> None:
        for sock in self.sockets:
            self.reactor.add(sock.fileno(), IN, lambda ev, s=sock: self._accept(s))

    def _set_accepting(self, on: bool) -> None:
        if on == (not self._paused) or self._stopping:
            return
        self._paused = not on
        for sock in self.sockets:
            self.reactor.modify(sock.fileno(), IN if on else 0)
        if not on:
            log.warning("connection limit reached (%d open, %d handshaking): "
                        "pausing accept", len(self.connections), len(self.handshaking))

    def _at_capacity(self) -> bool:
        return (len(self.connections) >= self.config.max_connections
                or len(self.handshaking) >= self.config.max_handshakes)

    def _accept(self, listener) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            if self._at_capacity():
                self._set_accepting(False)
                return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("accept failed: %s; pausing accept until a connection closes", exc)
                    self._set_accepting(False)
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if sock.family != socket.AF_UNIX:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            try:
                transport = self._make_transport(sock)
            except Exception as exc:
                log.error("cannot set up a transport for %s: %s", peer, exc)
                sock.close()
                continue
            conn = Connection(self.shared, sock, peer, transport, handshake=self._tls)
            if conn.state != "closed":
                self.connections.add(conn)
                if conn.state == "handshake":
                    self.handshaking.add(conn)

    def _on_closed(self, conn) -> None:
        self.handshaking.discard(conn)
        self.connections.discard(conn)
        if self._stopping:
            if not self.connections:
                self.reactor.stop()
        elif self._paused and not self._at_capacity():
            self._set_accepting(True)

    def _on_handshake_done(self, conn) -> None:
        self.handshaking.discard(conn)
        if self._paused and not self._at_capacity():
            self._set_accepting(True)

    # -- life -------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> None:
        """Serve until a shutdown signal (or `stop()`); then drain and return."""
        self.pool.start()
        self._listen()
        if install_signals:
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self.reactor.call_soon_threadsafe(self._begin_shutdown))
        for addr in self.config.binds:
            log.info("listening on %s://%s", "https" if self._tls else "http", addr)
        self.started.set()
        try:
            self.reactor.run()
        finally:
            self._finish()

    def stop(self) -> None:
        """Begin a graceful shutdown (from any thread)."""
        self.reactor.call_soon_threadsafe(self._begin_shutdown)

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        log.info("shutting down: %d connections open, graceful timeout %.0fs",
                 len(self.connections), self.config.graceful_timeout_s)
        self._stopping = True
        for sock in self.sockets:
            self.reactor.remove(sock.fileno())
            sock.close()
        for conn in list(self.connections):
            conn.close_gracefully()
        if not self.connections:
            self.reactor.stop()
            return
        self.reactor.call_later(self.config.graceful_timeout_s, self._force_close)

    def _force_close(self) -> None:
        if self.connections:
            log.warning("graceful timeout: closing %d connections", len(self.connections))
        for conn in list(self.connections):
            conn._abort("graceful timeout")
        self.reactor.stop()

    def _finish(self) -> None:
        for conn in list(self.connections):
            conn._abort("server stopped")
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        for b in self.config.binds:
            if b.family == "unix":
                try:
                    os.unlink(b.path)
                except OSError:
                    pass
        if not self.pool.shutdown(self.config.graceful_timeout_s):
            log.warning("some workers were still busy at exit")
        self.reactor.close()
        log.info("counters: %s", self.counters.summary())


# -- TLS ------------------------------------------------------------------------------
class TLSSetupError(Exception):
    """TLS cannot be set up; the message is one line for the operator."""


def tls_transport_factory(config):
    """Build the process's SSL context once and return `sock -> transport`.

    The context is built here, before any fork, so a pre-fork master shares
    it (and its session-ticket keys) with every worker process.  `auto` picks
    the socket transport where the kTLS probe passes (OpenSSL then promotes
    each connection to kTLS) and the memory transport elsewhere: with no
    kernel TLS it sends many records per syscall (see README, "Transports").
    """
    from .tls import ktls
    from .tls.binding import TLSError
    from .tls.context import ServerContext
    from .tls.transports import MemoryTransport, SocketTransport

    certfile, keyfile = config.certfile, config.keyfile
    if not certfile:
        from .tls.selfsigned import ensure_selfsigned
        try:
            certfile, keyfile = ensure_selfsigned()
        except (OSError, TLSError) as exc:
            raise TLSSetupError(f"TLS: cannot make a self-signed certificate: {exc}") from None
        log.warning("TLS: no --certfile given: using a self-signed certificate for "
                    "localhost, 127.0.0.1 and ::1 (%s). For development only.", certfile)
    kwargs = {"min_version": config.tls_min_version, "ktls": config.ktls,
              "alpn": ("http/1.1",)}
    if config.ciphers:
        kwargs["ciphers"] = config.ciphers
    if config.tls13_ciphersuites:
        kwargs["tls13_ciphersuites"] = config.tls13_ciphersuites
    try:
        context = ServerContext(certfile, keyfile, config.keyfile_password, **kwargs)
    except TLSError as exc:
        raise TLSSetupError(str(exc)) from None
    probe = ktls.log_once(log)
    choice = config.tls_transport
    if choice == "auto":
        choice = "socket" if probe.available and context.ktls else "memory"
    log.info("TLS: %s transport, %s", choice, context.describe())
    cls = SocketTransport if choice == "socket" else MemoryTransport
    return lambda sock: cls(context, sock)
