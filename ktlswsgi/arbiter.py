"""The master process: listeners, worker processes, supervision, signals.

Owns (gunicorn's arbiter shape): getting the listening sockets once (bound
here, inherited from systemd socket activation or from the master that
re-executed us), building the TLS context once, forking `--workers` worker
processes that each run a `server.Server` (one reactor + one thread pool),
and keeping them alive: reap the dead and replace them (backing off when they
die at boot), kill a worker whose reactor stopped sending heartbeats for
`--timeout` seconds, recycle after `--max-requests`, and stop everything
within `--graceful-timeout`.  It never accepts a connection and never holds
an SSL object of a client; a worker never forks.

Signals (gunicorn's meanings): TERM graceful stop, INT/QUIT quick stop, HUP
reload (config file, certificate and, without --preload, the app: new
workers first, then the old ones stop gracefully), TTIN/TTOU one worker more
or less, USR1 reopen log files (here and in every worker), USR2 re-execute
the current binary with the same listeners, CHLD reap.  Handlers only record
the signal and write to a pipe; the main loop acts on it.

Workers talk to the master through two channels made before the fork: a
shared memory page with one heartbeat slot per worker (the reactor writes
its monotonic clock there every tick), and a pipe of short messages (ready,
retiring, boot error).
"""
from __future__ import annotations

import atexit
import collections
import faulthandler
import logging
import os
import random
import select
import signal
import socket
import sys
import time

from . import hpackcoder, logs, sockets
from .sockets import address_text
from .workerlink import (MAX_SLOTS, MSG, MSG_BOOT_ERROR, MSG_READY, MSG_RETIRING, Heartbeats,
                         WorkerLink)

log = logging.getLogger("ktlswsgi.arbiter")

WORKER_BOOT_ERROR = 3
_KILL_AFTER_ABORT_S = 2.0      # SIGABRT (faulthandler dumps the stacks), then SIGKILL
_STOP_MARGIN_S = 2.0           # a worker gets this beyond --graceful-timeout
_BACKOFF_MAX_S = 5.0
_FAST_DEATH_S = 1.0            # a worker dying sooner than this after spawn backs off


_SIGNAMES = {getattr(signal, n): n for n in (
    "SIGTERM", "SIGINT", "SIGQUIT", "SIGHUP", "SIGTTIN", "SIGTTOU", "SIGUSR1", "SIGUSR2",
    "SIGCHLD", "SIGWINCH")}


class BootError(Exception):
    """The app cannot boot; the master stops instead of restarting in a loop."""


class Worker:
    __slots__ = ("pid", "slot", "generation", "spawned_at", "state", "kill_at", "aborted")

    def __init__(self, pid: int, slot: int, generation: int):
        self.pid, self.slot, self.generation = pid, slot, generation
        self.spawned_at = time.monotonic()
        self.state = "booting"     # booting -> ready -> (retiring | stopping)
        self.kill_at = 0.0         # when a stopping worker gets SIGKILL
        self.aborted = False       # timed out: SIGABRT sent

    @property
    def serving(self) -> bool:
        return self.state in ("booting", "ready")


class Arbiter:
    """Run with `Arbiter(cfg, reload_config).run()`; returns the exit code."""

    def __init__(self, cfg, reload_config=None, argv=None):
        self.cfg = cfg
        self._reload_config = reload_config   # () -> Config, re-reads the config file
        self._argv = list(sys.argv[1:] if argv is None else argv)
        self.pid = os.getpid()
        self.listeners: list[socket.socket] = []
        self._owned_unix_paths: list[str] = []
        self._transport_factory = None
        self._scheme = "http"
        self._app = None
        self.workers: dict[int, Worker] = {}
        self.num_workers = cfg.workers
        self.generation = 0
        self._generations = 0      # the newest ever made: a failed reload's number is not reused
        self._heartbeats = Heartbeats()
        self._signals: collections.deque = collections.deque()
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._notify_r, self._notify_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._notify_buf = b""
        self._stopping = False
        self._stop_deadline = 0.0
        self._exit_code = 0
        self._fast_deaths = 0
        self._next_spawn_at = 0.0
        self._reexec_pid = 0
        self._pidfile_path = None
        self._boot_error_logged: set = set()   # generations whose boot error is on stderr
        self.restarts = 0
        # --metrics-bind: a child process serves the sums of the workers' snapshots
        self._metrics = None          # metrics.MasterMetrics
        self._metrics_dir = None
        self._metrics_sock = None
        self._metrics_pid = 0

    # -- start -----------------------------------------------------------------------
    def run(self) -> int:
        try:
            self._start()
        except BootError as exc:
            log.error("%s", exc)
            self._exit_code = 1
            self._cleanup()
            return 1
        try:
            self._loop()
        finally:
            self._cleanup()
        return self._exit_code

    def _start(self) -> None:
        from .app import AppLoadError, load_app
        from .tls import TLSSetupError, tls_transport_factory
        cfg = self.cfg
        if cfg.umask is not None:
            os.umask(cfg.umask)
        if cfg.pid:
            self._write_pidfile(cfg.pid)
        # TLS first: nothing connects before the certificate is loaded (and
        # a generated, uncached one is already off the disk).
        if cfg.tls:
            try:
                self._transport_factory = tls_transport_factory(cfg)
            except TLSSetupError as exc:
                raise BootError(str(exc)) from None
            self._scheme = "https"
            if cfg.http2:
                log.info("HTTP/2: offered by ALPN, header compression by %s", hpackcoder.NAME)
        self.listeners = sockets.inherited_listeners()
        if not self.listeners:
            try:
                self.listeners = sockets.bind_sockets(cfg, hold_for_reuse_port=cfg.reuse_port)
            except OSError as exc:
                raise BootError(exc.strerror or str(exc)) from None
            self._owned_unix_paths = [b.path for b in cfg.binds if b.family == "unix"]
            if cfg.uid is not None:
                for path in self._owned_unix_paths:
                    os.chown(path, cfg.uid, cfg.gid if cfg.gid is not None else -1)
        if cfg.metrics_bind:
            self._start_metrics()
        if cfg.preload:
            try:
                self._app = load_app(cfg.app)
            except AppLoadError as exc:
                raise BootError(str(exc)) from None
        for sig in _SIGNAMES:
            signal.signal(sig, self._on_signal)
        for sock in self.listeners:
            log.info("listening on %s://%s", self._scheme, _describe(sock))
        log.info("master %d: %d worker%s, %d threads each%s", self.pid, self.num_workers,
                 "" if self.num_workers == 1 else "s", cfg.threads,
                 ", app preloaded" if cfg.preload else "")

    def _start_metrics(self) -> None:
        from . import metrics
        try:
            metrics.require()
            self._metrics_sock = metrics.listen(self.cfg.metrics_bind)
        except (metrics.MetricsUnavailable, OSError, ValueError) as exc:
            raise BootError(str(exc)) from None
        self._metrics_dir = metrics.make_dir()
        self._metrics = metrics.MasterMetrics(self._metrics_dir)
        self._spawn_metrics()

    def _spawn_metrics(self) -> None:
        """The endpoint runs in its own child: the master stays single-threaded."""
        from . import metrics
        pid = _fork_with_signals_blocked()
        if pid:
            self._metrics_pid = pid
            return
        code = 0
        try:
            for sig in _SIGNAMES:   # metrics.serve sets its own; none of the master's may run here
                signal.signal(sig, signal.SIG_IGN if sig == signal.SIGINT else signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNAMES)
            for sock in self.listeners:
                sock.close()
            for fd in (self._wake_r, self._wake_w, self._notify_r, self._notify_w):
                os.close(fd)
            metrics.serve(self._metrics_sock, self._metrics_dir)
        except BaseException:
            log.exception("metrics process failed")
            code = 1
        finally:
            os._exit(code)

    def _write_pidfile(self, path: str) -> None:
        try:
            with open(path) as f:
                old = int(f.read().strip() or 0)
        except (OSError, ValueError):
            old = 0
        if old and old != self.pid and _alive(old):
            raise BootError(f"--pid {path}: already running as PID {old}")
        tmp = f"{path}.{self.pid}.tmp"
        try:
            with open(tmp, "w") as f:
                f.write(f"{self.pid}\n")
            os.rename(tmp, path)
        except OSError as exc:
            raise BootError(f"--pid {path}: {exc.strerror}") from None
        self._pidfile_path = path

    # -- the loop ------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:
        # Record and wake, nothing else: this may interrupt the loop anywhere.
        if signum != signal.SIGCHLD:
            self._signals.append(signum)
        try:
            os.write(self._wake_w, b".")
        except OSError:
            pass

    def _loop(self) -> None:
        while True:
            self._reap()
            while self._signals:
                self._handle(self._signals.popleft())
            self._read_notify()
            if self._exit_code and not self._stopping:   # boot error: stop the rest
                self._stop(graceful=False)
            if self._stopping:
                if not self.workers:
                    return
                self._kill_overdue()
            else:
                self._murder_timeouts()
                self._manage_workers()
            self._sleep()

    def _sleep(self) -> None:
        if self._signals:
            return
        timeout = 1.0
        if self._next_spawn_at:
            timeout = max(0.0, min(timeout, self._next_spawn_at - time.monotonic()))
        try:
            ready, _, _ = select.select([self._wake_r, self._notify_r], [], [], timeout)
        except InterruptedError:
            return
        if self._wake_r in ready:
            try:
                while os.read(self._wake_r, 4096):
                    pass
            except BlockingIOError:
                pass

    def _handle(self, sig: int) -> None:
        name = _SIGNAMES.get(sig, str(sig))
        if sig == signal.SIGTERM:
            if self._stopping:
                log.info("SIGTERM during a graceful stop: quick stop")
                self._stop(graceful=False)
            else:
                log.info("SIGTERM: graceful stop (up to %.0fs)", self.cfg.graceful_timeout_s)
                self._stop(graceful=True)
        elif sig in (signal.SIGINT, signal.SIGQUIT):
            log.info("%s: quick stop", name)
            self._stop(graceful=False)
        elif self._stopping:
            log.info("%s ignored while stopping", name)
        elif sig == signal.SIGHUP:
            self._reload()
        elif sig == signal.SIGTTIN:
            self.num_workers += 1
            log.info("SIGTTIN: %d workers", self.num_workers)
        elif sig == signal.SIGTTOU:
            if self.num_workers > 1:
                self.num_workers -= 1
            log.info("SIGTTOU: %d worker%s", self.num_workers, "" if self.num_workers == 1 else "s")
        elif sig == signal.SIGUSR1:
            logs.reopen_files()
            self._kill_all(signal.SIGUSR1)
            log.info("SIGUSR1: reopened log files%s; told %d workers",
                     logs.paths_note(self._log_files()), len(self.workers))
        elif sig == signal.SIGUSR2:
            self._reexec()
        elif sig == signal.SIGWINCH:
            log.debug("SIGWINCH ignored (not daemonized)")

    # -- workers -------------------------------------------------------------------------
    def _manage_workers(self) -> None:
        current = [w for w in self.workers.values()
                   if w.serving and w.generation == self.generation]
        old = [w for w in self.workers.values() if w.serving and w.generation != self.generation]
        if old and sum(w.state == "ready" for w in current) >= self.num_workers:
            for w in old:
                self._stop_worker(w, graceful=True)
            log.info("reload: %d new workers ready, old workers stopping", len(current))
        if len(current) < self.num_workers:
            if time.monotonic() >= self._next_spawn_at:
                self._next_spawn_at = 0.0
                for _ in range(self.num_workers - len(current)):
                    self._spawn()
        elif len(current) > self.num_workers:
            excess = sorted(current, key=lambda w: w.spawned_at)[:len(current) - self.num_workers]
            for w in excess:
                self._stop_worker(w, graceful=True)

    def _free_slot(self) -> int:
        used = {w.slot for w in self.workers.values()}
        for slot in range(MAX_SLOTS):
            if slot not in used:
                return slot
        raise RuntimeError("no free worker slot")

    def _spawn(self) -> None:
        slot = self._free_slot()
        self._heartbeats.beat(slot)
        pid = _fork_with_signals_blocked()
        if pid:
            self.workers[pid] = Worker(pid, slot, self.generation)
            log.info("booting worker %d (slot %d)", pid, slot)
            return
        code = 1
        try:
            code = self._worker_main(slot)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            log.exception("worker %d: unexpected error", os.getpid())
        finally:
            try:
                atexit._run_exitfuncs()   # the app's (os._exit skips them)
                sys.stdout.flush()
                sys.stderr.flush()
            finally:
                os._exit(code)

    def _worker_main(self, slot: int) -> int:
        """The body of a worker process; returns its exit code."""
        from .app import AppLoadError, load_app
        from .server import Server
        # Until the server installs its handlers: TERM/INT/QUIT end a booting
        # worker; the master's signals (and USR1, sent to every worker at
        # reload) are ignored: their default action would kill or stop it.
        for sig in _SIGNAMES:
            stops = sig in (signal.SIGTERM, signal.SIGINT, signal.SIGQUIT, signal.SIGCHLD)
            signal.signal(sig, signal.SIG_DFL if stops else signal.SIG_IGN)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNAMES)
        os.close(self._wake_r)
        os.close(self._wake_w)
        os.close(self._notify_r)
        if self._metrics_sock is not None:   # the metrics process's, not ours to hold
            self._metrics_sock.close()
        random.seed()
        faulthandler.enable(all_threads=True)   # SIGABRT from the timeout: stacks to stderr
        cfg = self.cfg
        if cfg.workers != self.num_workers:   # after TTIN/TTOU (wsgi.multiprocess, EPOLLEXCLUSIVE)
            cfg = cfg.replace(workers=self.num_workers)
        link = WorkerLink(self.pid, slot, self._heartbeats, self._notify_w,
                          _jittered(cfg.max_requests, cfg.max_requests_jitter))
        link.beat()
        listeners = self.listeners
        listener = None
        try:
            if cfg.reuse_port:
                listeners = sockets.reuse_port_sockets(cfg, self.listeners)
            # Log files are opened before the privileges go (as gunicorn's),
            # and the access-log writer thread starts here: it did not fork.
            listener = logs.setup_logging(cfg)
            if cfg.uid is not None or cfg.gid is not None:
                _drop_privileges(cfg)
        except (OSError, BootError) as exc:   # the next worker would fail the same way
            link.boot_error(f"worker set-up failed: {exc}")
            if listener is not None:
                listener.stop()
            return WORKER_BOOT_ERROR
        try:
            app = self._app
            if app is None:
                try:
                    app = load_app(cfg.app)
                except AppLoadError as exc:
                    if not cfg.reload:
                        link.boot_error(str(exc))
                        return WORKER_BOOT_ERROR
                    # --reload (development): keep watching, answer 500
                    # meanwhile, import again at the next save.
                    log.error("%s; --reload: answering 500 until the next change imports",
                              exc)
                    app = _import_failed_app(str(exc))
            server = Server(cfg, app, sockets=listeners, transport_factory=self._transport_factory,
                            scheme=self._scheme, worker=link, owned_unix_paths=[])
            if cfg.reload:
                _watch_code(server)
            exporter = None
            if self._metrics_dir:
                from .metrics import WorkerExporter
                exporter = WorkerExporter(server.counters, self._metrics_dir,
                                          pool_depth=lambda: server.pool.queued)
                exporter.schedule(server.reactor)
            server.run()
            if exporter is not None:
                exporter.flush()
            return 0
        finally:
            if listener is not None:
                listener.stop()

    def _log_files(self) -> list:
        return [p for p in (self.cfg.access_logfile, getattr(self.cfg, "error_logfile", None))
                if p and p != "-"]

    def _stop_worker(self, w: Worker, graceful: bool, again: bool = False) -> None:
        if w.state == "stopping" and not again:
            return
        w.state = "stopping"
        w.kill_at = time.monotonic() + (self.cfg.graceful_timeout_s + _STOP_MARGIN_S
                                         if graceful else _STOP_MARGIN_S)
        _kill(w.pid, signal.SIGTERM if graceful else signal.SIGQUIT)

    def _kill_all(self, sig: int) -> None:
        for pid in list(self.workers):
            _kill(pid, sig)

    def _reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self._metrics_pid:
                self._metrics_pid = 0
                if not self._stopping:
                    log.error("the metrics process died (%s); starting another",
                              _status_text(status))
                    self._spawn_metrics()
                continue
            if pid == self._reexec_pid:
                self._reexec_pid = 0
                log.warning("the new master %d exited (%s); this master keeps serving",
                            pid, _status_text(status))
                if self._pidfile_path and os.path.exists(self._pidfile_path + ".oldbin"):
                    os.rename(self._pidfile_path + ".oldbin", self._pidfile_path)
                continue
            # What it wrote before it exited is in the pipe now: read it while
            # its slot still names it (a retiring worker is not a dead one, and
            # the slot's next worker must not get its messages).
            self._read_notify()
            w = self.workers.pop(pid, None)
            if w is None:
                continue
            if self._metrics is not None:
                self._metrics.on_worker_exit(pid)
            code = os.waitstatus_to_exitcode(status)
            if code == WORKER_BOOT_ERROR:
                self._on_boot_error(w)
                continue
            if w.state == "stopping":
                if code != 0:
                    log.info("worker %d exited (%s)", pid, _status_text(status))
                continue
            if w.state == "retiring":
                log.info("worker %d retired (%s)", pid, _status_text(status))
                continue
            self.restarts += 1
            if self._metrics is not None:
                self._metrics.count_restart()
            lived = time.monotonic() - w.spawned_at
            log.error("worker %d died (%s) after %.1fs; replacing it", pid,
                      _status_text(status), lived)
            if lived < _FAST_DEATH_S and not self._stopping:
                self._fast_deaths += 1
                delay = min(_BACKOFF_MAX_S, 0.1 * 2 ** self._fast_deaths)
                self._next_spawn_at = time.monotonic() + delay
                log.warning("workers die at boot: next one in %.1fs", delay)

    def _on_boot_error(self, w: Worker) -> None:
        if w.generation != self.generation or w.state == "stopping":
            return   # a failed reload already rolled back, or we stopped it
        older = [x for x in self.workers.values() if x.generation < w.generation and x.serving]
        if older and w.generation == self.generation:
            log.error("reload failed: the new workers cannot boot the app; keeping the old ones")
            for x in list(self.workers.values()):
                if x.generation == self.generation:
                    self._stop_worker(x, graceful=False)
            self.generation = max(x.generation for x in older)
            return
        if not self._exit_code:
            log.info("worker %d failed to boot: stopping", w.pid)
        self._exit_code = 1

    def _read_notify(self) -> None:
        try:
            while True:
                data = os.read(self._notify_r, 65536)
                if not data:
                    break
                self._notify_buf += data
        except BlockingIOError:
            pass
        buf = self._notify_buf
        while len(buf) >= MSG.size:
            kind, slot, n = MSG.unpack_from(buf)
            if len(buf) < MSG.size + n:
                break
            payload = buf[MSG.size:MSG.size + n].decode("utf-8", "replace")
            buf = buf[MSG.size + n:]
            w = next((x for x in self.workers.values() if x.slot == slot), None)
            if kind == MSG_BOOT_ERROR:
                gen = None if w is None else w.generation
                if gen is None or gen not in self._boot_error_logged:
                    log.error("%s", payload)   # every worker of a generation says the same
                    self._boot_error_logged.add(gen)
            if w is None:
                continue
            if kind == MSG_READY and w.state == "booting":
                w.state = "ready"
                self._fast_deaths = 0
                log.info("worker %d ready (%.2fs)", w.pid, time.monotonic() - w.spawned_at)
            elif kind == MSG_RETIRING and w.serving:
                w.state = "retiring"
                w.kill_at = time.monotonic() + self.cfg.graceful_timeout_s + _STOP_MARGIN_S
                log.info("worker %d retiring (%s)", w.pid, payload)
        self._notify_buf = buf

    def _murder_timeouts(self) -> None:
        now = time.monotonic()
        timeout = self.cfg.timeout_s
        for w in list(self.workers.values()):
            if w.state == "retiring":
                if now >= w.kill_at:
                    log.warning("worker %d did not retire in time: SIGKILL", w.pid)
                    _kill(w.pid, signal.SIGKILL)
                continue
            if w.state == "stopping":
                continue
            if w.aborted:
                if now >= w.kill_at:
                    _kill(w.pid, signal.SIGKILL)
                continue
            if timeout and now - self._heartbeats.last(w.slot) > timeout:
                log.error("worker %d timed out: its reactor sent no heartbeat for %.0fs; "
                          "SIGABRT (stacks follow), then SIGKILL", w.pid, timeout)
                w.aborted = True
                w.kill_at = now + _KILL_AFTER_ABORT_S
                _kill(w.pid, signal.SIGABRT)
        self._kill_overdue()

    def _kill_overdue(self) -> None:
        now = time.monotonic()
        for w in list(self.workers.values()):
            if w.state == "stopping" and now >= w.kill_at:
                log.warning("worker %d still running after its stop deadline: SIGKILL", w.pid)
                _kill(w.pid, signal.SIGKILL)
                w.kill_at = now + 3600

    # -- stop, reload, re-exec ---------------------------------------------------------------
    def _stop(self, graceful: bool) -> None:
        self._stopping = True
        for sock in self.listeners:   # no new connections queue up behind us
            try:
                sock.close()
            except OSError:
                pass
        for w in list(self.workers.values()):
            self._stop_worker(w, graceful, again=not graceful)

    def _reload(self) -> None:
        from .tls import TLSSetupError, tls_transport_factory
        cfg = self.cfg
        if self._reload_config is not None:
            try:
                cfg = self._reload_config()
            except Exception as exc:   # ConfigError and the config file's own errors
                log.error("reload: cannot read the configuration (%s); keeping the old one", exc)
                return
            if [str(b) for b in cfg.binds] != [str(b) for b in self.cfg.binds]:
                log.warning("reload: --bind changes take effect at the next restart")
                cfg = cfg.replace(bind=self.cfg.bind)
        factory = self._transport_factory
        if cfg.tls:
            try:
                factory = tls_transport_factory(cfg)
            except TLSSetupError as exc:
                log.error("reload: %s; keeping the old certificate and workers", exc)
                return
        logs.reopen_files()
        self._kill_all(signal.SIGUSR1)   # the old workers serve on until the new are ready
        log.info("SIGHUP: reloading: configuration, certificate%s, new workers; log files%s",
                 "" if cfg.preload else ", app", logs.paths_note(self._log_files()))
        self.cfg = cfg
        self._transport_factory = factory
        self.num_workers = cfg.workers
        self._generations += 1
        self.generation = self._generations
        self._next_spawn_at = 0.0

    def _reexec(self) -> None:
        if self._reexec_pid:
            log.warning("SIGUSR2: a new master (%d) is already running", self._reexec_pid)
            return
        if os.environ.get("KTLSWSGI_REEXEC_PARENT") and _alive(int(os.environ["KTLSWSGI_REEXEC_PARENT"])):
            log.warning("SIGUSR2 ignored: the master that started this one is still running")
            return
        if self._pidfile_path:
            os.rename(self._pidfile_path, self._pidfile_path + ".oldbin")
        fds = [s.fileno() for s in self.listeners]
        pid = os.fork()
        if pid:
            self._reexec_pid = pid
            log.info("SIGUSR2: started a new master %d with the same listeners; "
                     "send this master (%d) TERM to finish the switch", pid, self.pid)
            return
        try:
            for fd in fds:
                os.set_inheritable(fd, True)
            env = dict(os.environ)
            env[sockets.INHERIT_ENV] = ",".join(map(str, fds))
            env["KTLSWSGI_REEXEC_PARENT"] = str(self.pid)
            os.execve(sys.executable, [sys.executable, "-m", "ktlswsgi", *self._argv], env)
        finally:
            os._exit(1)

    def _cleanup(self) -> None:
        if self._metrics_pid:
            _kill(self._metrics_pid, signal.SIGTERM)
            try:
                os.waitpid(self._metrics_pid, 0)
            except ChildProcessError:
                pass
            self._metrics_pid = 0
        if self._metrics_dir:
            from .metrics import remove_dir
            remove_dir(self._metrics_dir)
        for sock in self.listeners:
            try:
                sock.close()
            except OSError:
                pass
        handed_over = self._reexec_pid and _alive(self._reexec_pid)
        if not handed_over:
            for path in self._owned_unix_paths:
                try:
                    os.unlink(path)
                except OSError:
                    pass
        if self._pidfile_path:
            for path in (self._pidfile_path, self._pidfile_path + ".oldbin"):
                try:
                    with open(path) as f:
                        mine = f.read().strip() == str(self.pid)
                    if mine:
                        os.unlink(path)
                except OSError:
                    pass
        log.info("master %d: exit %d (%d worker restarts)", self.pid, self._exit_code, self.restarts)


# -- helpers ---------------------------------------------------------------------------------
def _fork_with_signals_blocked() -> int:
    """fork(), our signals blocked in the child until it unblocks them.

    A signal that reached the child before it replaced the master's handlers
    would run them there and be lost (a TERM for a booting worker: it would
    serve on, and the master's stop wait for --graceful-timeout).  The child
    unblocks them once its own dispositions are in place; the parent at once.
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNAMES)
    try:
        pid = os.fork()
    except BaseException:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNAMES)
        raise
    if pid:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNAMES)
    return pid


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _status_text(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            return f"signal {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit {os.WEXITSTATUS(status)}"


def _describe(sock: socket.socket) -> str:
    addr = sock.getsockname()
    return address_text(addr) if isinstance(addr, tuple) else f"unix:{addr}"


def _jittered(max_requests: int, jitter: int) -> int:
    if max_requests <= 0:
        return 0
    return max_requests + (random.randint(0, jitter) if jitter > 0 else 0)


def _drop_privileges(cfg) -> None:
    if os.geteuid() != 0:
        if (cfg.uid is None or cfg.uid == os.geteuid()) and (cfg.gid is None or cfg.gid == os.getegid()):
            return
        raise BootError("--user/--group need the master to run as root")
    gid = cfg.gid if cfg.gid is not None else os.getegid()
    if cfg.user_name:
        os.initgroups(cfg.user_name, gid)
    else:
        os.setgroups([gid])
    os.setgid(gid)
    if cfg.uid is not None:
        os.setuid(cfg.uid)


def _import_failed_app(reason: str):
    """--reload's stand-in while the code does not import (gunicorn's and
    Werkzeug's reloaders do the same): every request gets a 500 that says why,
    in one line (module, exception type and message, as the error log)."""
    body = (f"500 Internal Server Error: the app does not import: {reason}\n"
            "(--reload: the server imports it again at the next change)\n").encode(
                "utf-8", "replace")

    def app(environ, start_response):
        start_response("500 Internal Server Error",
                       [("Content-Type", "text/plain; charset=utf-8"),
                        ("Content-Length", str(len(body)))])
        return [body]
    return app


def _watch_code(server) -> None:
    """--reload: a thread that retires this worker when a .py file under the
    current directory changes (watchfiles: inotify, debounced; what uvicorn uses)."""
    import threading

    import watchfiles

    def watch():
        root = os.getcwd()
        for changes in watchfiles.watch(root, watch_filter=watchfiles.PythonFilter(),
                                        stop_event=stop, raise_interrupt=False):
            paths = sorted({os.path.relpath(p, root) for _, p in changes})
            server.retire(f"code changed: {', '.join(paths[:3])}")
            return

    stop = threading.Event()
    threading.Thread(target=watch, name="ktlswsgi-reload", daemon=True).start()
