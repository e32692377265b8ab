"""The worker pool: fixed threads that run application code.

Owns: the threads, the bounded job queue, and graceful drain.  Knows nothing of
HTTP, WSGI or sockets: a job is a callable.

Two queues:
  - requests (bounded by `queue_size`): `submit()` returns False when full,
    and the caller answers 503;
  - clean-ups (the app iterable's `close()` after the reactor finished a file
    transfer, and similar): always accepted, served first.  They are bounded by
    the connection count, since each connection has at most one outstanding.
"""
from __future__ import annotations

import collections
import logging
import threading
import time

log = logging.getLogger("ktlswsgi.pool")


class WorkerPool:
    def __init__(self, threads: int, queue_size: int, name: str = "ktlswsgi-worker"):
        self._threads_n = threads
        self._queue_size = queue_size
        self._jobs: collections.deque = collections.deque()
        self._cleanups: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._busy = 0
        self._threads: list[threading.Thread] = []
        self._name = name

    def start(self) -> None:
        for i in range(self._threads_n):
            t = threading.Thread(target=self._work, name=f"{self._name}-{i}", daemon=True)
            t.start()
            self._threads.append(t)

    @property
    def busy(self) -> int:
        return self._busy

    @property
    def queued(self) -> int:
        return len(self._jobs)

    def submit(self, job) -> bool:
        """Queue a request job; False when the queue is full or stopping."""
        with self._cond:
            if self._stopping or len(self._jobs) >= self._queue_size:
                return False
            self._jobs.append(job)
            self._cond.notify()
        return True

    def submit_cleanup(self, job) -> None:
        """Queue a clean-up job (app code that must run, e.g. close())."""
        with self._cond:
            self._cleanups.append(job)
            self._cond.notify()

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._cleanups and not self._jobs:
                    if self._stopping:
                        return
                    self._cond.wait()
                job = self._cleanups.popleft() if self._cleanups else self._jobs.popleft()
                self._busy += 1
            try:
                job()
            except BaseException:
                log.exception("worker: job raised")
            finally:
                with self._cond:
                    self._busy -= 1

    def shutdown(self, timeout_s: float) -> bool:
        """Stop taking requests, run what is queued, wait for the threads.

        Returns True when every thread finished within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)
