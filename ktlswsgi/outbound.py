"""Outbound queues: ordered response items from a worker to the reactor.

Owns: the item types a response is made of (`Head`, `Chunk`, `FileRange`,
`End`, `Abort`), the hand-over of those items between threads, and the
producer-side backpressure.  One queue per HTTP/1 response and one per
HTTP/2 stream.  A worker `put`s items; above the high-water mark the
*worker* waits until the reactor has drained below the low-water mark.
The reactor `pop`s and never waits.  An aborted queue wakes every waiting
producer with `QueueAborted`.

Bytes are counted from `put` until the reactor reports them sent with `sent()`,
so the bound covers what the reactor still holds, not only what is queued.
"""
from __future__ import annotations

import collections
import threading


# -- response items (worker -> reactor) ---------------------------------------
class Head:
    __slots__ = ("status", "reason", "headers", "close")

    def __init__(self, status: int, reason: bytes, headers: list, close: bool):
        self.status, self.reason, self.headers, self.close = status, reason, headers, close


class Chunk:
    __slots__ = ("data",)

    def __init__(self, data):
        self.data = data


class FileRange:
    """`count` bytes of `fd` from `offset`, and the owner of that descriptor.

    The descriptor stays open (its `closer` is not run) while anything still
    names it: the producer cutting it into wire pieces holds it once, and so
    does every wire piece until it has left the wire or been discarded.
    `hold()` takes one more hold; `drop()` gives one back and says whether it
    was the last, when the caller releases `closer` (the reactor, exactly
    once).  A reset or an abort discards pieces through their owner, never by
    closing the file while the pump may still send from it.
    """

    __slots__ = ("fd", "offset", "count", "closer", "holds")

    def __init__(self, fd: int, offset: int, count: int, closer):
        self.fd, self.offset, self.count, self.closer = fd, offset, count, closer
        self.holds = 1   # the producer's (the queue's, then the framer's)

    def hold(self) -> None:
        self.holds += 1

    def drop(self) -> bool:
        """Give back one hold; True when it was the last one."""
        self.holds -= 1
        if self.holds < 0:
            raise RuntimeError("file range released twice")
        return self.holds == 0


class End:
    __slots__ = ("status", "body_bytes")

    def __init__(self, status: int, body_bytes: int):
        self.status, self.body_bytes = status, body_bytes


class Abort:
    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class QueueAborted(Exception):
    """The connection is gone; stop producing."""


class OutboundQueue:
    """See the module docstring.  One plain lock guards the queue; the
    Condition producers wait on is made (on that lock) only when one must
    wait, which a response under the high-water mark never does."""

    __slots__ = ("_items", "_lock", "_cond", "_bytes", "_high", "_low", "_wake",
                 "_reactor_idle", "aborted", "abort_reason")

    def __init__(self, high_water_bytes: int, low_water_bytes: int, wake):
        self._items: collections.deque = collections.deque()
        self._lock = threading.Lock()
        self._cond: threading.Condition | None = None
        self._bytes = 0
        self._high = high_water_bytes
        self._low = low_water_bytes
        self._wake = wake  # called (from any thread) when the reactor should pump
        self._reactor_idle = True
        self.aborted = False
        self.abort_reason = ""

    # -- producer side (worker threads) --------------------------------------
    def put(self, item, nbytes: int = 0) -> None:
        """Append an item; wait first while the queue is above high water."""
        with self._lock:
            if self._bytes > self._high:
                self._wait_for_room()
            if self.aborted:
                raise QueueAborted(self.abort_reason)
            self._items.append(item)
            self._bytes += nbytes
            wake = self._reactor_idle
            self._reactor_idle = False
        if wake:
            self._wake()

    def put_many(self, items, nbytes: int = 0) -> None:
        """Append several items at once (one lock, at most one wake-up)."""
        with self._lock:
            if self._bytes > self._high:
                self._wait_for_room()
            if self.aborted:
                raise QueueAborted(self.abort_reason)
            self._items.extend(items)
            self._bytes += nbytes
            wake = self._reactor_idle
            self._reactor_idle = False
        if wake:
            self._wake()

    def _wait_for_room(self) -> None:
        # Called with the lock held.
        if self._cond is None:
            self._cond = threading.Condition(self._lock)
        self._cond.wait_for(lambda: self.aborted or self._bytes <= self._low)

    # -- consumer side (the reactor) -----------------------------------------
    def pop(self):
        """The next item, or None (then the next put wakes the reactor)."""
        with self._lock:
            if self._items:
                return self._items.popleft()
            self._reactor_idle = True
            return None

    def pop_all(self) -> list:
        """Every queued item, in order; empty (and the next put wakes the
        reactor) when there is none."""
        with self._lock:
            items = self._items
            if items:
                self._items = collections.deque()
                return items
            self._reactor_idle = True
            return ()

    def pop_whole(self):
        """A whole response queued at once, the usual case: (Head, body
        bytes, End) when the queue holds exactly a Head, at most one Chunk
        of bytes and an End (then taken); else None and nothing taken."""
        with self._lock:
            items = self._items
            n = len(items)
            if n == 3:
                head, chunk, end = items
                if type(chunk) is not Chunk or type(chunk.data) is not bytes:
                    return None
                data = chunk.data
            elif n == 2:
                head, end = items
                data = b""
            else:
                return None
            if type(head) is not Head or type(end) is not End:
                return None
            items.clear()
            return head, data, end

    def awaits_producer(self) -> bool:
        """Empty, and the producer's next put wakes the reactor: nothing to
        pop until then.  Read without the lock: a put racing with it makes
        it False, or wakes the reactor after it."""
        return not self._items and self._reactor_idle

    def unpop(self, items) -> None:
        """Put back, in front and in order, items `pop_all` returned."""
        with self._lock:
            self._items.extendleft(reversed(items))

    def sent(self, nbytes: int) -> None:
        """The reactor put `nbytes` of counted payload on the wire."""
        if nbytes <= 0:
            return
        with self._lock:
            before = self._bytes
            self._bytes -= nbytes
            if before > self._low >= self._bytes and self._cond is not None:
                self._cond.notify_all()

    @property
    def pending_bytes(self) -> int:
        return self._bytes

    def abort(self, reason: str) -> list:
        """Fail every producer; return what was still queued (for clean-up)."""
        with self._lock:
            self.aborted = True
            self.abort_reason = reason
            left = list(self._items)
            self._items.clear()
            self._bytes = 0
            if self._cond is not None:
                self._cond.notify_all()
        return left
