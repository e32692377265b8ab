"""Logging set-up and reopening the log files.

Owns: the error log (the "ktlswsgi" logger: stderr, or `--error-logfile`),
the access log's writer thread (a `QueueListener` that takes the finished
lines `accesslog.py` puts on its queue and writes them through the target
handler, so the reactor never waits on a log file), and reopening the log
files this module opened (SIGUSR1, SIGHUP: after logrotate renames a file,
the next line goes to a new file at the same path).  stderr is never reopened.

Processes: the master calls `setup_logging(cfg, start_writer=False)` before
it forks (no thread may run in a process that forks; the master writes no
access log), and each worker calls `setup_logging(cfg)` after the fork,
which replaces what it inherited and starts its own writer.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import queue
import sys

from . import accesslog

log = logging.getLogger("ktlswsgi.logs")

ERROR_FORMAT = "[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s"

# The FileHandlers set up by `setup_logging`: what `reopen_files` reopens and
# the next `setup_logging` closes.
_file_handlers: list[logging.FileHandler] = []
# The running access log writer and the process that started it (a forked
# child has the object but not the thread).
_writer: "_AccessWriter | None" = None
_writer_pid = 0


class _AccessWriter(logging.handlers.QueueListener):
    """The access log's writer thread.

    Its queue carries finished lines (str) from `accesslog.log_response`;
    the LogRecord a handler needs is made here, off the reactor thread.
    Records that something else logged to "ktlswsgi.access" pass as they are.
    `stop()` writes what is queued, then ends the thread; a second call does
    nothing (both `setup_logging` and its caller may stop it).
    """

    def prepare(self, item):
        if isinstance(item, str):
            return logging.LogRecord("ktlswsgi.access", logging.INFO, __file__, 0,
                                     item, None, None)
        return item

    def stop(self) -> None:
        if self._thread is not None:
            super().stop()


def _handler(path: str) -> logging.Handler:
    """stderr for '-', else a FileHandler (appending) that `reopen_files` reopens."""
    if path == "-":
        return logging.StreamHandler(sys.stderr)
    handler = logging.FileHandler(path)
    _file_handlers.append(handler)
    return handler


def _take_down() -> None:
    """Undo the previous `setup_logging` of this process: stop its writer (the
    lines still queued are written first) and close the files it opened.
    In a forked child these are copies of the parent's descriptors: closing
    them leaves the parent's open."""
    global _writer
    accesslog.set_writer(None)
    if _writer is not None and _writer_pid == os.getpid():
        _writer.stop()
    _writer = None
    for handler in _file_handlers:
        handler.close()
    _file_handlers.clear()


def setup_logging(cfg, start_writer: bool = True) -> "_AccessWriter | None":
    """(Re)build the error log and the access log from `cfg`.

    The error log goes to `cfg.error_logfile` ('-': stderr), written
    synchronously.  The access log (`cfg.access_logfile`, None: off) is
    written by a thread started here, only with `start_writer`: without it
    (a master about to fork) the access log is off in this process.  Calling
    it again replaces everything the previous call set up.  Returns the
    writer (its `stop()` writes the queued lines), or None.
    """
    global _writer, _writer_pid
    _take_down()
    root = logging.getLogger("ktlswsgi")
    root.setLevel(getattr(logging, cfg.log_level.upper()))
    root.propagate = False
    error_handler = _handler(cfg.error_logfile or "-")
    error_handler.setFormatter(logging.Formatter(ERROR_FORMAT))
    root.handlers[:] = [error_handler]

    accesslog.set_format(cfg.access_logformat, hide=cfg.access_log_hide_header)
    access = logging.getLogger("ktlswsgi.access")
    access.propagate = False
    if cfg.access_logfile and start_writer:
        target = _handler(cfg.access_logfile)
        target.setFormatter(logging.Formatter("%(message)s"))
        lines: queue.SimpleQueue = queue.SimpleQueue()
        _writer = _AccessWriter(lines, target, respect_handler_level=False)
        _writer_pid = os.getpid()
        access.setLevel(logging.INFO)
        access.handlers[:] = [logging.handlers.QueueHandler(lines)]
        _writer.start()
        accesslog.set_writer(lines.put)
    else:
        access.setLevel(logging.CRITICAL + 1)
        access.handlers[:] = []
    return _writer


def paths_note(paths: list) -> str:
    """The tail of a "reopened log files" line: which files, or that there were none."""
    return f" ({', '.join(paths)})" if paths else ": none (stderr is not reopened)"


def reopen_files() -> list[str]:
    """Reopen every log file at its path; return the paths reopened.

    Not for a signal handler itself: it takes each handler's lock, which the
    writer thread holds while it writes a line (call it from the reactor's
    turn).  The new file is opened before the old one is closed, so a file
    that cannot be opened (directory gone, permissions) leaves the handler
    writing where it did, with an error line on the error log.
    """
    reopened = []
    for handler in list(_file_handlers):
        handler.acquire()
        try:
            try:
                stream = open(handler.baseFilename, handler.mode, encoding=handler.encoding,
                              errors=handler.errors)
            except OSError as exc:
                error = exc
            else:
                error = None
                old, handler.stream = handler.stream, stream
                if old is not None:
                    try:
                        old.close()
                    except OSError:
                        pass  # its last flush failed (disk full?): nothing to do about it
        finally:
            handler.release()
        if error is not None:
            log.error("cannot reopen %s: %s; still writing to the old file",
                      handler.baseFilename, error.strerror or error)
        elif handler.baseFilename not in reopened:   # error and access log in one file
            reopened.append(handler.baseFilename)
    return reopened


class Throttled:
    """One log line per `interval_s` at most for a recurring condition, with
    the count of the lines it held back since the last one ("... (37 more
    in 1.0 s)").  For the reactor: no lock, no thread; the clock is
    monotonic.  A flood of connections or of accept errors must not become a
    flood of log lines."""

    def __init__(self, logger: logging.Logger, level: int, interval_s: float = 1.0,
                 clock=None):
        import time
        self._log = logger
        self._level = level
        self._interval_s = interval_s
        self._clock = clock or time.monotonic
        self._last = None
        self._held = 0

    def __call__(self, msg: str, *args) -> bool:
        """Log `msg % args` unless a line went out less than `interval_s` ago;
        True when it was logged."""
        now = self._clock()
        if self._last is not None and now - self._last < self._interval_s:
            self._held += 1
            return False
        if self._held:
            msg += " (%d more in the last %.1fs)"
            args = args + (self._held, now - self._last)
        self._last = now
        self._held = 0
        self._log.log(self._level, msg, *args)
        return True
