"""The worker pool: fixed threads that run application code.

Owns: the threads, the bounded job queue, and graceful drain.  Knows nothing of
HTTP, WSGI or sockets: a job is a callable.

Jobs travel through one `queue.SimpleQueue` (C-implemented: a hand-over costs
no Python-level condition variable).  Two kinds:
  - requests: `submit()` refuses (returns False) once `queue_size` requests
    are waiting, and the caller answers 503;
  - clean-ups (the app iterable's `close()` after the reactor finished a file
    transfer, and similar): `submit_cleanup()` always accepts them.  They are
    bounded by the connection count: each connection has at most one pending.
"""
from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time

log = logging.getLogger("ktlswsgi.pool")

_STOP = None


class WorkerPool:
    def __init__(self, threads: int, queue_size: int, name: str = "ktlswsgi-worker"):
        self._threads_n = threads
        self._queue_size = queue_size
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._waiting = 0      # request jobs queued, not yet started
        self._busy = 0
        self._stopping = False
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
        """Request jobs waiting for a thread."""
        return self._waiting

    @property
    def pending(self) -> int:
        """Jobs of either kind (requests, clean-ups) not yet taken by a thread."""
        return self._jobs.qsize()

    def submit(self, job) -> bool:
        """Queue a request job; False when the queue is full or stopping."""
        with self._lock:
            if self._stopping or self._waiting >= self._queue_size:
                return False
            self._waiting += 1
        self._jobs.put((job, True))
        return True

    def submit_cleanup(self, job) -> None:
        """Queue a clean-up job (app code that must run, e.g. close())."""
        self._jobs.put((job, False))

    def _work(self) -> None:
        _batch_scheduling()
        jobs = self._jobs
        lock = self._lock
        while True:
            item = jobs.get()
            if item is _STOP:
                return
            job, is_request = item
            with lock:
                if is_request:
                    self._waiting -= 1
                self._busy += 1
            try:
                job()
            except BaseException:
                log.exception("worker: job raised")
            finally:
                with lock:
                    self._busy -= 1

    def shutdown(self, timeout_s: float) -> bool:
        """Stop taking requests, run what is queued, wait for the threads.

        Returns True when every thread finished within `timeout_s`.
        """
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._stopping = True
        for _ in self._threads:
            self._jobs.put(_STOP)  # after every queued job: they still run
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self._threads)


_policy_warned = False
_policy_lock = threading.Lock()


def _batch_scheduling() -> None:
    """This thread as SCHED_BATCH: Linux then never lets its wake-up preempt the
    running thread.  A worker woken for a job would otherwise preempt the
    reactor at once, only to block on the GIL the reactor holds: two context
    switches for nothing, per request.  Where it is refused, one warning per
    process says so and why (the default policy still works, slower)."""
    global _policy_warned
    policy = getattr(os, "SCHED_BATCH", None)
    if policy is None:
        return  # not Linux
    try:
        os.sched_setscheduler(0, policy, os.sched_param(0))
    except OSError as exc:
        with _policy_lock:
            if _policy_warned:
                return
            _policy_warned = True
        log.warning("worker threads stay SCHED_OTHER: sched_setscheduler(SCHED_BATCH) failed "
                    "with %s; a seccomp filter is the likely cause (systemd SystemCallFilter= "
                    "with ~@resources: add SystemCallFilter=sched_setscheduler; a container "
                    "runtime's seccomp profile); serving on, with more context switches per "
                    "request", errno.errorcode.get(exc.errno, exc.errno))
