"""Logging set-up and reopening the log files.

Owns: the error log (stderr), the access log's hand-off to its writer thread
(a `QueueHandler` on the "ktlswsgi.access" logger, a `QueueListener` thread
that writes through the target handler, so the reactor never waits on a log
file), and reopening the log files this module opened (SIGUSR1, SIGHUP: after
logrotate renames a file, the next line goes to a new file at the same path).
stderr is never reopened.
"""
from __future__ import annotations

import logging
import logging.handlers
import queue
import sys

log = logging.getLogger("ktlswsgi.logs")

# The FileHandlers set up by `setup_logging`: what `reopen_files` reopens.
_file_handlers: list[logging.FileHandler] = []


def setup_logging(cfg):
    """Error log on stderr; access log through a queue.  Returns the listener (or None)."""
    level = getattr(logging, cfg.log_level.upper())
    root = logging.getLogger("ktlswsgi")
    root.setLevel(level)
    root.propagate = False
    fmt = logging.Formatter("[%(asctime)s] [%(process)d] [%(levelname)s] %(message)s")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(fmt)
    q: queue.SimpleQueue = queue.SimpleQueue()
    targets = [handler]
    access = logging.getLogger("ktlswsgi.access")
    access.propagate = False
    _file_handlers.clear()
    if cfg.access_logfile:
        if cfg.access_logfile == "-":
            target = logging.StreamHandler(sys.stderr)
        else:
            target = logging.FileHandler(cfg.access_logfile)
            _file_handlers.append(target)
        target.setFormatter(logging.Formatter("%(message)s"))
        access.setLevel(logging.INFO)
        access.handlers[:] = [logging.handlers.QueueHandler(q)]
        listener = logging.handlers.QueueListener(q, target, respect_handler_level=False)
    else:
        access.setLevel(logging.CRITICAL + 1)
        listener = None
    root.handlers[:] = targets
    if listener:
        listener.start()
    return listener


def reopen_files() -> list[str]:
    """Reopen every log file at its path; return the paths reopened.

    Not for a signal handler itself: it takes each handler's lock, which the
    writer thread holds while it writes a line (call it from the reactor's
    turn).  The new file is opened before the old one is closed, so a file
    that cannot be opened (directory gone, permissions) leaves the handler
    writing where it did, with an error line on stderr.
    """
    reopened = []
    for handler in list(_file_handlers):
        handler.acquire()
        try:
            try:
                stream = handler._open()
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
        else:
            reopened.append(handler.baseFilename)
    return reopened
