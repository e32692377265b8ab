"""The event loop: epoll readiness, a timer heap, and cross-thread wake-ups.

Owns: registration of file descriptors with their callbacks, timers, and the
thread-safe call queue that worker threads use to hand work to the reactor.
Knows no protocol.  Never blocks except in epoll_wait, never sleeps, never
calls application code.

epoll is used level-triggered: a callback that stops short (a bounded read, a
paused connection) is simply called again while the condition holds, and a
connection states its interest explicitly with `modify`.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import select
import threading
import time

log = logging.getLogger("ktlswsgi.reactor")

IN = select.EPOLLIN
OUT = select.EPOLLOUT
RDHUP = select.EPOLLRDHUP
ERR = select.EPOLLERR | select.EPOLLHUP


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Reactor:
    def __init__(self):
        self._epoll = select.epoll()
        self._handlers: dict[int, object] = {}
        self._timers: list = []
        self._seq = itertools.count()
        self._calls: collections.deque = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._wake_lock = threading.Lock()
        self._running = False
        self._closed = False
        self.thread: threading.Thread | None = None
        self._epoll.register(self._wake_fd, IN)

    # -- registration (reactor thread only) --------------------------------
    def add(self, fd: int, events: int, callback) -> None:
        self._handlers[fd] = callback
        self._epoll.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self._epoll.modify(fd, events)

    def remove(self, fd: int) -> None:
        if self._handlers.pop(fd, None) is not None:
            try:
                self._epoll.unregister(fd)
            except (OSError, ValueError):
                pass

    # -- timers (reactor thread only) --------------------------------------
    def call_later(self, delay_s: float, callback) -> Timer:
        timer = Timer(time.monotonic() + delay_s, callback)
        heapq.heappush(self._timers, (timer.when, next(self._seq), timer))
        return timer

    def call_soon(self, callback) -> None:
        """Run `callback` on the next turn (reactor thread only)."""
        self._calls.append(callback)

    # -- from any thread ----------------------------------------------------
    def call_soon_threadsafe(self, callback) -> None:
        """Run `callback` on the reactor thread soon; a no-op once closed."""
        self._calls.append(callback)
        with self._wake_lock:
            if self._wake_pending or self._closed:
                return
            self._wake_pending = True
            try:
                os.eventfd_write(self._wake_fd, 1)
            except BlockingIOError:
                pass

    def in_reactor_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def stop(self) -> None:
        self._running = False

    # -- the loop -----------------------------------------------------------
    def run(self) -> None:
        self.thread = threading.current_thread()
        self._running = True
        poll = self._epoll.poll
        handlers = self._handlers
        wake_fd = self._wake_fd
        while self._running:
            timeout = self._next_timeout()
            try:
                events = poll(timeout)
            except InterruptedError:
                continue
            for fd, ev in events:
                if fd == wake_fd:
                    self._drain_wake()
                    continue
                handler = handlers.get(fd)
                if handler is not None:
                    self._dispatch(handler, ev)
            self._run_calls()
            self._run_timers()

    def _dispatch(self, handler, ev: int) -> None:
        try:
            handler(ev)
        except Exception:
            log.exception("reactor: unhandled error in an event handler")

    def _next_timeout(self) -> float:
        if self._calls:
            return 0
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return 1.0
        return max(0.0, min(1.0, timers[0][0] - time.monotonic()))

    def _drain_wake(self) -> None:
        # Read and clear together: clearing first would let a worker's write
        # be consumed here and leave the flag stuck, silencing later wake-ups.
        with self._wake_lock:
            try:
                os.eventfd_read(self._wake_fd)
            except BlockingIOError:
                pass
            self._wake_pending = False

    def _run_calls(self) -> None:
        calls = self._calls
        for _ in range(len(calls)):
            callback = calls.popleft()
            try:
                callback()
            except Exception:
                log.exception("reactor: unhandled error in a scheduled call")

    def _run_timers(self) -> None:
        now = time.monotonic()
        timers = self._timers
        while timers and timers[0][0] <= now:
            _, _, timer = heapq.heappop(timers)
            if timer.cancelled:
                continue
            timer.cancelled = True
            try:
                timer.callback()
            except Exception:
                log.exception("reactor: unhandled error in a timer")

    def close(self) -> None:
        with self._wake_lock:
            self._closed = True
            os.close(self._wake_fd)
        self._epoll.close()
