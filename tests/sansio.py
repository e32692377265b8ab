"""A sans-I/O harness: one real `Connection` (and its HTTP/1 or HTTP/2 session,
exchanges and outbound queues) driven without sockets, threads or wall time.

- `FakeTransport` stands where a socket or TLS transport stands: what the
  client "sent" waits in `inbound`; what the server writes lands in `out`
  (files are pread from their descriptor, as the pread path does); `room`
  bounds how many more bytes the "socket" takes before WANT_WRITE, so a test
  can stop a transfer at any byte.
- `FakeReactor` keeps epoll interest, timers on a `FakeClock`, and the
  cross-thread call queue; `run()` runs what is queued.
- `FakePool` holds submitted jobs until `run_jobs()` runs them on the test's
  own thread (the app then runs exactly when the test says).
- `Harness.deliver(data)` is "bytes arrived, epoll said readable";
  `Harness.writable()` is "epoll said writable"; `advance(s)` moves the clock
  and fires the timers that fell due.

The clock replaces `time` in the modules that read it (connection, the two
sessions, exchange), through pytest's monkeypatch, so deadlines are exact and
no test waits.
"""
from __future__ import annotations

import collections
import os
import types

from ktlswsgi import connection as connection_mod
from ktlswsgi import exchange as exchange_mod
from ktlswsgi import reactor as rx
from ktlswsgi import h1session as h1session_mod
from ktlswsgi import h2session as h2session_mod
from ktlswsgi.config import Config
from ktlswsgi.connection import Connection, Shared
from ktlswsgi.telemetry import Counters
from ktlswsgi.transport import WANT_READ, WANT_WRITE


class FakeClock:
    def __init__(self, start: float = 1000.0):
        self.now = start

    def monotonic(self) -> float:
        return self.now


class _Timer:
    __slots__ = ("when", "callback", "cancelled")

    def __init__(self, when, callback):
        self.when, self.callback, self.cancelled = when, callback, False

    def cancel(self):
        self.cancelled = True


class FakeReactor:
    def __init__(self, clock: FakeClock):
        self.clock = clock
        self.interest: dict[int, int] = {}
        self.handlers: dict[int, object] = {}
        self.timers: list[_Timer] = []
        self.calls: collections.deque = collections.deque()

    def add(self, fd, events, callback):
        self.interest[fd] = events
        self.handlers[fd] = callback

    def modify(self, fd, events):
        self.interest[fd] = events

    def remove(self, fd):
        self.interest.pop(fd, None)
        self.handlers.pop(fd, None)

    def call_later(self, delay_s, callback):
        t = _Timer(self.clock.now + delay_s, callback)
        self.timers.append(t)
        return t

    def call_soon(self, callback):
        self.calls.append(callback)

    call_soon_threadsafe = call_soon

    def run(self) -> int:
        """Run the queued calls (and those they queue); how many ran."""
        n = 0
        while self.calls:
            self.calls.popleft()()
            n += 1
        return n

    def fire_due(self) -> None:
        due = [t for t in self.timers if not t.cancelled and t.when <= self.clock.now]
        self.timers = [t for t in self.timers if t not in due and not t.cancelled]
        for t in sorted(due, key=lambda t: t.when):
            t.callback()


class FakePool:
    def __init__(self, queue_size: int = 256):
        self.jobs: collections.deque = collections.deque()
        self.cleanups: collections.deque = collections.deque()
        self.queue_size = queue_size
        self.busy = 0

    @property
    def queued(self) -> int:
        return len(self.jobs)

    def submit(self, job) -> bool:
        if len(self.jobs) >= self.queue_size:
            return False
        self.jobs.append(job)
        return True

    def submit_cleanup(self, job) -> None:
        self.cleanups.append(job)

    def run_jobs(self) -> int:
        n = 0
        while self.jobs or self.cleanups:
            q = self.jobs if self.jobs else self.cleanups
            q.popleft()()
            n += 1
        return n


class FakeTransport:
    kind = "fake"
    send_method = "send"
    file_method = "sendfile"

    def __init__(self, alpn: str | None = None, ktls_tx: bool = False):
        self.inbound = bytearray()
        self.eof = False
        self.out = bytearray()
        self.room: int | None = None   # None: unbounded
        self.ktls_tx = ktls_tx
        self.alpn = alpn
        self.closed = False
        self.shut = False
        self.file_sends: list = []     # (fd, offset, n) of every send_file that took bytes

    def _take(self, n: int) -> int:
        if self.room is None:
            return n
        n = min(n, self.room)
        self.room -= n
        return n

    def handshake(self):
        return None

    def info(self) -> dict:
        return {"alpn": self.alpn, "ktls": "tx" if self.ktls_tx else "off",
                "tls_version": "TLSv1.3", "cipher": "FAKE"}

    def recv(self, max_bytes: int):
        if self.inbound:
            data = bytes(self.inbound[:max_bytes])
            del self.inbound[:max_bytes]
            return data
        return b"" if self.eof else WANT_READ

    def send(self, view):
        n = self._take(len(view))
        if n == 0:
            return WANT_WRITE
        self.out += bytes(view[:n])
        return n

    send_more = send

    def send_file(self, fd: int, offset: int, count: int):
        n = self._take(count)
        if n == 0:
            return WANT_WRITE
        data = os.pread(fd, n, offset)
        if len(data) < n and self.room is not None:
            self.room += n - len(data)
        self.out += data
        if data:
            self.file_sends.append((fd, offset, len(data)))
        return len(data)

    def has_pending(self) -> bool:
        return False

    def flush(self) -> bool:
        return True

    def shutdown(self):
        self.shut = True
        return None

    def close(self) -> None:
        self.closed = True

    def take_output(self) -> bytes:
        data = bytes(self.out)
        self.out.clear()
        return data


class _FakeSock:
    _next_fd = 10_000

    def __init__(self):
        _FakeSock._next_fd += 1
        self._fd = _FakeSock._next_fd

    def fileno(self) -> int:
        return self._fd

    def getsockname(self):
        return ("127.0.0.1", 8443)


class Harness:
    """One connection under test (see the module docstring)."""

    def __init__(self, app, monkeypatch, *, tls: bool = True, alpn: str | None = None,
                 ktls_tx: bool = False, **config):
        self.clock = FakeClock()
        fake_time = types.SimpleNamespace(monotonic=self.clock.monotonic)
        for mod in (connection_mod, h1session_mod, h2session_mod, exchange_mod):
            monkeypatch.setattr(mod, "time", fake_time)
        self.config = Config(**config).validate()
        self.reactor = FakeReactor(self.clock)
        self.pool = FakePool(self.config.queue_size)
        self.counters = Counters()
        self.closed: list = []
        self.shared = Shared(config=self.config, reactor=self.reactor, pool=self.pool, app=app,
                             counters=self.counters, scheme="https" if tls else "http",
                             multiprocess=False, on_closed=self.closed.append,
                             on_handshake_done=lambda conn: None)
        self.transport = FakeTransport(alpn=alpn, ktls_tx=ktls_tx)
        self.conn = Connection(self.shared, _FakeSock(), ("127.0.0.1", 50000), self.transport,
                               handshake=tls)

    # -- what the network and the threads do ---------------------------------------
    def deliver(self, data: bytes = b"", eof: bool = False) -> None:
        self.transport.inbound += data
        self.transport.eof = self.transport.eof or eof
        self.conn._on_event(rx.IN)
        self.reactor.run()

    def writable(self) -> None:
        self.conn._on_event(rx.OUT)
        self.reactor.run()

    def run_jobs(self) -> None:
        """Run the app's jobs, then what they handed to the reactor; repeat until quiet."""
        while self.pool.run_jobs() or self.reactor.run():
            pass

    def advance(self, seconds: float) -> None:
        self.clock.now += seconds
        self.reactor.fire_due()
        self.reactor.run()

    def output(self) -> bytes:
        return self.transport.take_output()

    @property
    def state(self) -> str:
        return self.conn.state
