"""The server process: listening sockets, accept, signals, shutdown.

Owns: binding (TCP v4/v6 and unix sockets), the accept loop with its bounds
(`--max-connections`, concurrent TLS handshakes), choosing each connection's
transport, what each signal means (gunicorn's meanings; docs/processes.md),
graceful shutdown (SIGTERM: stop accepting, let in-flight requests finish for
`--graceful-timeout`, then close), quick shutdown (SIGINT, SIGQUIT, a second
SIGTERM: stop accepting, abort every connection), and the counters line
logged at exit.  The reactor runs on the thread that calls `run()`.
"""
from __future__ import annotations

import collections
import errno
import logging
import os
import signal
import socket
import threading
import time

from . import logs, staticfiles
from .connection import Connection, Shared
from .sockets import bind_sockets
from .pool import WorkerPool
from .reactor import EPOLLEXCLUSIVE, IN, Reactor
from .telemetry import Counters
from .transport import PlainTransport

log = logging.getLogger("ktlswsgi.server")

_ACCEPTS_PER_EVENT = 64
# A handshake younger than this is never shed to make room: a burst of real
# clients waits in the backlog instead (a handshake takes milliseconds).
_SHED_MIN_AGE_S = 0.25
_FD_ERRNOS = {errno.EMFILE: "EMFILE (the process's descriptor limit, ulimit -n)",
              errno.ENFILE: "ENFILE (the system's descriptor limit)",
              errno.ENOBUFS: "ENOBUFS (no socket buffer memory)",
              errno.ENOMEM: "ENOMEM (no kernel memory)"}

# After a quick stop, how long exit waits for workers still inside the app
# (their connections are already gone; gunicorn's quick stop waits 0.1 s).
_QUICK_STOP_WORKER_WAIT_S = 1.0


class Server:
    """One serving process: the reactor on the thread that calls `run()`, plus the pool.

    Alone (tests, embedding) it binds its own sockets and answers signals
    itself.  As a worker of the master (`worker` is the arbiter's
    `WorkerLink`) it serves the sockets it was given, beats its heartbeat from
    a reactor timer, obeys TERM (graceful) and INT/QUIT (quick), reopens logs
    on USR1, and ignores the signals meant for the master.
    """

    def __init__(self, config, app, sockets=None, transport_factory=None, scheme: str = "http",
                 worker=None, owned_unix_paths=None):
        self.config = config
        self.app = app = staticfiles.wrap(app, config)
        self.worker = worker
        if sockets is None:
            sockets = bind_sockets(config)
            owned_unix_paths = [b.path for b in config.binds if b.family == "unix"]
        self.sockets = sockets
        self._owned_unix_paths = list(owned_unix_paths or ())
        # Workers sharing one listening socket: wake one of them per connection.
        self._listen_events = IN
        if worker is not None and not config.reuse_port and config.workers > 1:
            self._listen_events = IN | EPOLLEXCLUSIVE
        self.reactor = Reactor(config.loop)
        self.pool = WorkerPool(config.threads, config.queue_size)
        self.counters = Counters()
        self.connections: set[Connection] = set()
        # Connections still in the PROXY header or the TLS handshake, oldest
        # first, with their accept time: the ones shed at a limit.
        self.handshaking: dict[Connection, float] = {}
        self._make_transport = transport_factory or PlainTransport
        self._tls = transport_factory is not None
        self._paused = False
        self._paused_for_fds = False   # accept failed for lack of descriptors
        self._recheck = None           # timer: shed once the oldest handshake is old enough
        self._log_limit = logs.Throttled(log, logging.WARNING)
        self._log_accept_error = logs.Throttled(log, logging.ERROR)
        self._log_shed = logs.Throttled(log, logging.INFO)
        self._stopping = False
        self._quick = False            # a quick stop: connections aborted, short exit
        self.shared = Shared(config=config, reactor=self.reactor, pool=self.pool, app=app,
                             counters=self.counters, scheme=scheme,
                             multiprocess=worker is not None and config.workers > 1,
                             on_closed=self._on_closed,
                             on_handshake_done=self._on_handshake_done,
                             on_request=(self._on_request if worker is not None
                                         and worker.max_requests else None))
        self.started = threading.Event()
        self._tick_s = max(0.1, min(1.0, config.timeout_s / 4)) if config.timeout_s else 1.0

    @property
    def addresses(self) -> list:
        return [s.getsockname() for s in self.sockets]

    # -- accept ---------------------------------------------------------------------
    def _listen(self) -> None:
        for sock in self.sockets:
            self.reactor.add(sock.fileno(), self._listen_events, lambda ev, s=sock: self._accept(s))

    def _set_accepting(self, on: bool) -> None:
        if on == (not self._paused) or self._stopping:
            return
        self._paused = not on
        if on:
            self._paused_for_fds = False
            self._listen()
        else:  # (EPOLLEXCLUSIVE registrations cannot be modified, only removed)
            for sock in self.sockets:
                self.reactor.remove(sock.fileno())

    def _at_limit(self) -> bool:
        cfg = self.config
        return (len(self.connections) >= cfg.max_connections
                or len(self.handshaking) >= cfg.max_handshakes)

    def _shed(self, victim) -> None:
        self.counters.handshakes_shed += 1
        self._log_shed("%s: unfinished %s shed to make room (%d open, %d handshaking)",
                       victim.peer_text, "handshake" if self._tls else "PROXY header",
                       len(self.connections), len(self.handshaking))
        victim.close()

    def _shed_candidate(self):
        """The oldest pending handshake of the peer address that has the most
        of them, if it is older than _SHED_MIN_AGE_S; else None.  So silent
        connections, renewed inside the handshake timeout, cannot hold every
        slot: the newest handshakes (real clients finish in milliseconds)
        get through, and one address cannot take the slots of others."""
        if not self.handshaking:
            return None
        counts = collections.Counter(conn.peer_ip for conn in self.handshaking)
        heaviest = max(counts.values())
        now = time.monotonic()
        for conn, since in self.handshaking.items():   # oldest first
            if counts[conn.peer_ip] == heaviest:
                if now - since >= _SHED_MIN_AGE_S:
                    return conn
                self._recheck_at(since + _SHED_MIN_AGE_S - now)
                return None
        return None

    def _recheck_at(self, delay_s: float) -> None:
        if self._recheck is None:
            self._recheck = self.reactor.call_later(max(0.0, delay_s), self._on_recheck)

    def _on_recheck(self) -> None:
        self._recheck = None
        if self._paused and not self._paused_for_fds:
            self._set_accepting(True)   # level-triggered: waiting connections fire at once

    def _pause_at_limit(self) -> None:
        self._set_accepting(False)
        self._log_limit("connection limit reached (%d open of --max-connections %d, %d "
                        "handshaking of %d): pausing accept", len(self.connections),
                        self.config.max_connections, len(self.handshaking),
                        self.config.max_handshakes)

    def _accept(self, listener) -> None:
        for _ in range(_ACCEPTS_PER_EVENT):
            victim = None
            if self._at_limit():
                # At a limit, an old enough unfinished handshake makes room,
                # but only for a connection that is really waiting.
                victim = self._shed_candidate()
                if victim is None:
                    self._pause_at_limit()
                    return
            try:
                sock, peer = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in _FD_ERRNOS:
                    self._log_accept_error("accept failed: %s; pausing accept until a "
                                           "connection closes", _FD_ERRNOS[exc.errno])
                    self._set_accepting(False)
                    self._paused_for_fds = True
                    return
                if exc.errno in (errno.ECONNABORTED, errno.EPROTO):
                    continue
                raise
            if victim is not None:
                self._shed(victim)
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
                if conn.state in ("proxy", "handshake"):
                    self.handshaking[conn] = time.monotonic()

    def _on_closed(self, conn) -> None:
        self.handshaking.pop(conn, None)
        self.connections.discard(conn)
        if self._stopping:
            if not self.connections:
                self.reactor.stop()
        elif self._paused:
            self._set_accepting(True)   # a descriptor was freed: try again

    def _on_handshake_done(self, conn) -> None:
        self.handshaking.pop(conn, None)
        if self._paused and not self._paused_for_fds:
            self._set_accepting(True)

    # -- life -------------------------------------------------------------------------
    def run(self, install_signals: bool = True) -> None:
        """Serve until a shutdown signal (or `stop()`); then drain and return."""
        self.pool.start()
        self._listen()
        worker = self.worker
        if worker is not None:
            self._install_worker_signals()
            worker.beat()
            self.reactor.set_heartbeat(worker.beat, self._tick_s)
            self._tick()
            worker.ready()
        else:
            if install_signals:
                self._install_signals()
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

    def retire(self, reason: str) -> None:
        """A worker asks the master for a replacement, then stops gracefully (any thread)."""
        def retire():
            if not self._stopping:
                self.worker.retiring(reason)
                self._begin_shutdown()
        self.reactor.call_soon_threadsafe(retire)

    # -- signals: the reactor records them and runs these on its next turn -------------
    def _install_signals(self) -> None:
        """gunicorn's meanings; a signal it gives the master that needs one says so."""
        on = self.reactor.add_signal_handler
        on(signal.SIGTERM, self._on_term)
        on(signal.SIGINT, lambda: self._quick_stop("SIGINT"))
        on(signal.SIGQUIT, lambda: self._quick_stop("SIGQUIT"))
        on(signal.SIGUSR1, self._on_usr1)
        on(signal.SIGHUP, self._on_hup)
        for sig, what in ((signal.SIGUSR2, "re-exec a new binary"),
                          (signal.SIGTTIN, "add a worker"),
                          (signal.SIGTTOU, "remove a worker")):
            on(sig, lambda name=sig.name, what=what: log.info(
                "%s ignored in single-process mode (gunicorn's master would %s)", name, what))
        # gunicorn ignores WINCH unless daemonized; terminals send it on resize.
        on(signal.SIGWINCH, lambda: log.debug("SIGWINCH ignored (not daemonized)"))

    def _install_worker_signals(self) -> None:
        on = self.reactor.add_signal_handler
        on(signal.SIGTERM, self._on_term)
        on(signal.SIGINT, lambda: self._quick_stop("SIGINT"))
        on(signal.SIGQUIT, lambda: self._quick_stop("SIGQUIT"))
        on(signal.SIGUSR1, lambda: logs.reopen_files())
        for sig in (signal.SIGHUP, signal.SIGUSR2, signal.SIGTTIN, signal.SIGTTOU,
                    signal.SIGWINCH):
            signal.signal(sig, signal.SIG_IGN)   # the master's signals

    def _tick(self) -> None:
        """The worker's periodic checks: is the master alive, is the worker
        worn out (--max-requests).  (The heartbeat itself is the reactor's,
        `Reactor.set_heartbeat`: a reactor stuck for --timeout seconds stops
        beating and the master replaces the worker.)"""
        worker = self.worker
        try:
            if not self._stopping:
                if not worker.master_alive():
                    log.warning("worker %d: the master is gone; stopping", os.getpid())
                    self._begin_shutdown()
                else:
                    self._retire_if_worn_out()
        finally:
            self.reactor.call_later(self._tick_s, self._tick)

    def _on_request(self) -> None:
        """Each request head (a worker with --max-requests): the one that reaches
        the limit retires the worker on the reactor's next turn (not inside the
        connection's own call), so its response already says `Connection: close`."""
        if self.counters.requests == self.worker.max_requests:
            self.reactor.call_later(0, self._retire_if_worn_out)

    def _retire_if_worn_out(self) -> None:
        worker = self.worker
        if not self._stopping and worker.max_requests and self.counters.requests >= worker.max_requests:
            worker.retiring(f"{self.counters.requests} requests, --max-requests")
            self._begin_shutdown()

    def _on_term(self) -> None:
        if self._stopping:
            self._quick_stop("SIGTERM during a graceful stop")
        else:
            self._begin_shutdown()

    def _on_usr1(self) -> None:
        log.info("SIGUSR1: reopened log files%s", logs.paths_note(logs.reopen_files()))

    def _on_hup(self) -> None:
        paths = logs.reopen_files()
        log.info("SIGHUP: reloading is the master's (this server runs without one); "
                 "reopened log files%s, still serving", logs.paths_note(paths))

    # -- shutdown -----------------------------------------------------------------------
    def _stop_accepting(self) -> None:
        for sock in self.sockets:
            if sock.fileno() >= 0:
                if self.config.reuse_port and self.worker is not None and not self._quick:
                    # Our own SO_REUSEPORT socket: the connections queued on it
                    # would be reset by its close, so take them first.
                    self._accept(sock)
                self.reactor.remove(sock.fileno())
                sock.close()
        self._stopping = True

    def _begin_shutdown(self) -> None:
        if self._stopping:
            return
        log.info("shutting down: %d connections open, graceful timeout %.0fs",
                 len(self.connections), self.config.graceful_timeout_s)
        self._stop_accepting()
        for conn in list(self.connections):
            conn.close_gracefully()
        if not self.connections:
            self.reactor.stop()
            return
        self.reactor.call_later(self.config.graceful_timeout_s, self._force_close)

    def _quick_stop(self, why: str) -> None:
        """Stop accepting, abort every connection now, exit without the graceful wait."""
        if self._quick:
            return
        self._quick = True
        log.info("%s: quick stop: aborting %d connections", why, len(self.connections))
        self._stop_accepting()
        for conn in list(self.connections):
            conn.abort(why, notable=False)
        self.reactor.stop()

    def _force_close(self) -> None:
        if self.connections:
            log.warning("graceful timeout: closing %d connections", len(self.connections))
        for conn in list(self.connections):
            conn.abort("graceful timeout", notable=False)
        self.reactor.stop()

    def _finish(self) -> None:
        for conn in list(self.connections):
            conn.abort("server stopped", notable=False)
        for sock in self.sockets:
            try:
                sock.close()
            except OSError:
                pass
        for path in self._owned_unix_paths:
            try:
                os.unlink(path)
            except OSError:
                pass
        wait_s = _QUICK_STOP_WORKER_WAIT_S if self._quick else self.config.graceful_timeout_s
        if not self.pool.shutdown(wait_s):
            log.warning("some workers were still busy at exit")
        self.reactor.close()
        log.info("counters: %s", self.counters.summary())
