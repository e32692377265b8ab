"""The event loop: epoll readiness, a timer heap, and cross-thread wake-ups.

Owns: registration of file descriptors with their callbacks, timers, the
thread-safe call queue that worker threads use to hand work to the reactor,
and signal handlers (which only record the signal; its callback runs on the
reactor's next turn).  Knows no protocol.  Never blocks except in epoll_wait,
never sleeps, never calls application code.

Wake-ups take no lock.  A Python signal handler runs on the main thread (the
reactor's) between two bytecodes, also while the reactor is inside one of its
own methods: any lock the reactor can hold, a handler that takes it deadlocks
on.  So a wake-up is a deque append plus, at most once per batch (the
`_wake_pending` flag), an eventfd write.

epoll is used level-triggered: a callback that stops short (a bounded read, a
paused connection) is simply called again while the condition holds, and a
connection states its interest explicitly with `modify`.

Two implementations of `run()`'s loop, one turn: `--loop c` (the default
where ktlswsgi._native is built) runs it in `_csrc/loop.c` over this same
object's state; `--loop python` runs the loop below, the reference.
"""
from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import select
import signal
import threading
import time

from .native import native

log = logging.getLogger("ktlswsgi.reactor")

IN = select.EPOLLIN
OUT = select.EPOLLOUT
RDHUP = select.EPOLLRDHUP
ERR = select.EPOLLERR | select.EPOLLHUP
EPOLLEXCLUSIVE = getattr(select, "EPOLLEXCLUSIVE", 1 << 28)


class Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when: float, callback):
        self.when = when
        self.callback = callback
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def loop_name(choice: str) -> str:
    """The loop `--loop choice` runs: auto is c where the extension is built.
    ValueError for c where it is not."""
    if choice == "auto":
        return "python" if native is None else "c"
    if choice == "c" and native is None:
        raise ValueError("--loop c: ktlswsgi._native is not built (pip install . compiles it)")
    return choice


class Reactor:
    def __init__(self, loop: str = "auto"):
        self.loop = loop_name(loop)
        self._epoll = select.epoll()
        self._handlers: dict[int, object] = {}
        self._timers: list = []
        self._seq = itertools.count()
        self._calls: collections.deque = collections.deque()
        self._wake_fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        self._wake_pending = False
        self._signals: collections.deque = collections.deque()   # signal numbers not yet handled
        self._signal_callbacks: dict[int, object] = {}
        self._signal_previous: dict[int, object] = {}          # handlers to restore on close()
        self._signal_pipe: tuple[int, int] | None = None       # set_wakeup_fd's pipe
        self._wakeup_previous = -1
        self._running = False
        self._closed = False
        self._heartbeat = None          # (callback, interval_s): see set_heartbeat
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
        """Run `callback` on the reactor thread soon; a no-op once closed.

        One eventfd write per batch: once a wake-up is pending, later calls
        only append (the reactor runs every queued call after it drains the
        eventfd).  Two threads may both see the flag clear and both write:
        a spare wake-up, never a lost one.
        """
        self._calls.append(callback)
        if self._wake_pending or self._closed:
            return
        self._wake_pending = True
        self._wake()

    def _wake(self) -> None:
        try:
            os.eventfd_write(self._wake_fd, 1)
        except OSError:
            pass  # EAGAIN: the counter is full, so already readable; EBADF: closed

    # -- signals (main thread only: Python runs signal handlers there) --------
    def add_signal_handler(self, sig: int, callback) -> None:
        """Run `callback()` on the reactor thread on the turn after `sig` arrives."""
        if self._signal_pipe is None:
            # The kernel may deliver the signal to a pool thread: CPython's C
            # handler then only sets a flag, and epoll_wait on this thread
            # would sleep on until its timeout.  The wake-up fd (one byte per
            # signal, written by that C handler) makes epoll return at once.
            r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
            self._signal_pipe = (r, w)
            self._wakeup_previous = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            self.add(r, IN, self._drain_signal_pipe)
        self._signal_callbacks[sig] = callback
        previous = signal.signal(sig, self._on_signal)
        self._signal_previous.setdefault(sig, previous)

    def _on_signal(self, signum: int, frame) -> None:
        # Only record and wake: this may run inside any reactor method.  The
        # write is unconditional (signals are rare), so it can never depend
        # on a flag the interrupted code is about to change.
        self._signals.append(signum)
        if not self._closed:
            self._wake()

    def set_heartbeat(self, callback, interval_s: float) -> None:
        """Call `callback()` from the loop itself at least every `interval_s`
        while the loop turns: not a timer, so no error in a callback and no
        lost timer can silence it; only a loop that stops turning does."""
        self._heartbeat = (callback, interval_s)

    def in_reactor_thread(self) -> bool:
        return threading.current_thread() is self.thread

    def stop(self) -> None:
        self._running = False

    # -- the loop -----------------------------------------------------------
    def run(self) -> None:
        self.thread = threading.current_thread()
        self._running = True
        if self.loop == "c":
            native.loop_run(self)
            return
        poll = self._epoll.poll
        handlers = self._handlers
        wake_fd = self._wake_fd
        beat, beat_s = self._heartbeat or (None, 0.0)
        next_beat = 0.0
        while self._running:
            if beat is not None:
                now = time.monotonic()
                if now >= next_beat:
                    beat()
                    next_beat = now + beat_s
            timeout = self._next_timeout()
            if beat is not None:
                timeout = min(timeout, beat_s)
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
                    try:
                        handler(ev)
                    except Exception as exc:
                        self._unhandled("an event handler", exc)
            if self._signals:
                self._run_signals()
            self._run_calls()
            self._run_timers()

    def _unhandled(self, what: str, exc: BaseException) -> None:
        """A callback raised: logged, and the loop goes on (both loops)."""
        log.error("reactor: unhandled error in %s", what, exc_info=exc)

    def _next_timeout(self) -> float:
        if self._calls or self._signals:
            return 0
        timers = self._timers
        while timers and timers[0][2].cancelled:
            heapq.heappop(timers)
        if not timers:
            return 1.0
        return max(0.0, min(1.0, timers[0][0] - time.monotonic()))

    def _drain_wake(self) -> None:
        # Read, THEN clear.  Clearing first would let a worker set the flag
        # and write, this read consume that write, and the flag stay set with
        # nothing left to wake us: every later wake-up silenced.  In this
        # order a call appended while the flag is still set runs this turn
        # (`_run_calls` comes after), and one appended after the clear writes.
        try:
            os.eventfd_read(self._wake_fd)
        except BlockingIOError:
            pass
        self._wake_pending = False

    def _drain_signal_pipe(self, ev: int) -> None:
        try:
            while os.read(self._signal_pipe[0], 4096):
                pass
        except BlockingIOError:
            pass

    def _run_signals(self) -> None:
        signals = self._signals
        for _ in range(len(signals)):
            callback = self._signal_callbacks.get(signals.popleft())
            if callback is None:
                continue
            try:
                callback()
            except Exception as exc:
                self._unhandled("a signal callback", exc)

    def _run_calls(self) -> None:
        calls = self._calls
        for _ in range(len(calls)):
            callback = calls.popleft()
            try:
                callback()
            except Exception as exc:
                self._unhandled("a scheduled call", exc)

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
            except Exception as exc:
                self._unhandled("a timer", exc)

    def close(self) -> None:
        # Restore the handlers first: a signal from now on must not touch the
        # eventfd.  Then mark closed before closing it, so that threads still
        # running stop writing.  (A thread already past that check could
        # still write once, to a reused fd number: the server shuts its pool
        # down before close(), so only a worker stuck past the shutdown
        # timeout could, as the process exits.)
        for sig, previous in self._signal_previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._signal_previous.clear()
        if self._signal_pipe is not None:
            signal.set_wakeup_fd(self._wakeup_previous)
            for fd in self._signal_pipe:
                os.close(fd)
            self._signal_pipe = None
        self._closed = True
        self._wake_pending = True
        os.close(self._wake_fd)
        self._epoll.close()
