"""The write pump of one connection: wire pieces to the transport, in order.

Owns: the wire (the deque of `wire.py` pieces a session frames into), what
the write side waits on (`write_on`), when writing last made progress (the
clock of --write-timeout), the write budget of one reactor turn, coalescing
small pieces into one write, sending a file piece (its frame header, then
the file), crediting body bytes to their exchanges, and the holds on file
ranges: a range's closer is released when its last piece has left the wire
or was discarded.  It reaches the session only through `fill()` and
`written()`, and the connection only through its public face (`closed`,
`session`, `abort`).  Runs on the reactor thread.
"""
from __future__ import annotations

import collections
import logging
import time

from . import reactor as rx
from .filewrapper import closes_only_a_file
from .transport import WANT_READ, WANT_WRITE
from .wire import COALESCE_BYTES, Done, FileSend, coalesce, uncoalesce, wire_bytes
from .wsgi import close_iterable

log = logging.getLogger("ktlswsgi.connection")

# Bytes one connection may write per reactor turn.  It also bounds how long a
# cold file (sendfile/pread waiting on the disk) can hold the reactor.
WRITE_BUDGET_BYTES = 512 * 1024


class WritePump:
    """See the module docstring."""

    def __init__(self, conn, transport, counters, pool):
        self.conn = conn
        self.transport = transport
        self.counters = counters
        self.pool = pool
        self.wire: collections.deque = collections.deque()  # framed pieces, in order
        self.write_on = 0               # 0 = nothing blocked; else the event awaited
        self.last_write = time.monotonic()
        self._pumping = False
        self._again = False
        self._send_counter = "bytes_" + transport.send_method   # the counter bytes sent go to

    def mark_write_start(self, when: float) -> None:
        """A new response begins: its write stall is timed from `when`."""
        self.last_write = when

    def run(self) -> bool:
        """Move pieces to the transport until it would block or the wire is
        empty; if already running, run once more instead (no nesting).
        True when this call left everything written and flushed."""
        if self._pumping:
            self._again = True
            return False
        self._pumping = True
        try:
            while True:
                self._again = False
                self._run_once()
                if not self._again or self.conn.closed:
                    break
        finally:
            self._pumping = False
        return not self.conn.closed and not self.wire and not self.write_on

    def _run_once(self) -> None:
        wire = self.wire
        conn = self.conn
        session = conn.session
        if not wire:
            self.last_write = time.monotonic()  # a new write phase starts now
        self.write_on = 0
        budget = WRITE_BUDGET_BYTES
        while not conn.closed:
            if budget <= 0:
                # Fairness: other connections get the reactor; level-triggered
                # EPOLLOUT brings us back as soon as the socket is writable.
                self.write_on = rx.OUT
                break
            # A leading Done sends nothing: the session fills once it is handled.
            if session is not None and (not wire or type(wire[0]) is not Done):
                room = COALESCE_BYTES - wire_bytes(wire) if wire else COALESCE_BYTES
                if room > 0:
                    session.fill(wire, room)
            if not wire or conn.closed:
                break
            kind = type(wire[0])
            if kind is memoryview or kind is tuple:
                n = self._send_bytes()
            elif kind is FileSend:
                n = self._send_file()
            elif kind is Done:
                session.written(wire.popleft())
                continue
            else:   # Abort
                piece = wire.popleft()
                log.info("%s: response aborted: %s", conn.peer_text, piece.reason)
                conn.abort(piece.reason, notable=False, unsent_status=500)
                return
            if n is None:
                break   # blocked (or the connection closed)
            budget -= n
        if not conn.closed and not self.transport.flush():
            self.write_on = rx.OUT

    def send_whole(self, frame: bytes, owner, body_bytes: int) -> bool:
        """A whole response framed in one buffer, onto an idle wire (the
        caller checked): True when the transport took all of it; else what
        it did not take is on the wire, for the caller to end with its Done
        and kick().  `body_bytes` of it are credited to `owner`."""
        n = self.transport.send(frame)
        if n is WANT_WRITE or n is WANT_READ:
            n = 0
        else:
            self.last_write = time.monotonic()
            counters, name = self.counters, self._send_counter
            setattr(counters, name, getattr(counters, name) + n)
        if n < len(frame):
            rest = memoryview(frame)[n:]
            self.wire.append((rest, ((owner, body_bytes),)) if body_bytes else rest)
            return False
        # Counted, not chunk_sent(): the End is queued, no producer waits for room.
        owner.bytes_sent += body_bytes
        if not self.transport.flush():
            self.write_on = rx.OUT
        return True

    def _blocked(self, want) -> None:
        self.write_on = rx.OUT if want is WANT_WRITE else rx.IN

    def _send_bytes(self):
        """Send the leading run of byte pieces, coalesced: the bytes the
        transport took, or None when it blocked."""
        wire = self.wire
        t = self.transport
        view, credits, dones = coalesce(wire)
        n = t.send(view)
        blocked = n is WANT_WRITE or n is WANT_READ
        taken = 0 if blocked else n
        if not blocked:
            self.last_write = time.monotonic()
            self.counters.add(self._send_counter, n)
        if taken < len(view):
            uncoalesce(wire, view, taken, credits, dones)
        elif credits:
            for owner, counted in credits:
                owner.chunk_sent(counted)
        if dones is not None:
            # HTTP/2 streams whose last bytes were in this write: complete, in order.
            written = self.conn.session.written
            for offset, done in dones:
                if offset > taken or self.conn.closed:
                    break
                written(done)
        if blocked:
            self._blocked(n)
            return None
        return n

    def _send_file(self):
        """Send from the leading file piece (its frame header first): the
        bytes the transport took, or None when it blocked (or the file
        shrank: then the connection is aborted)."""
        wire = self.wire
        t = self.transport
        piece = wire[0]
        head = piece.head
        if head is not None:
            n = t.send_more(head) if piece.head_more else t.send(head)
            if n is WANT_WRITE or n is WANT_READ:
                self._blocked(n)
                return None
            piece.started = True
            self.last_write = time.monotonic()
            self.counters.add(self._send_counter, n)
            piece.head = head[n:] if n < len(head) else None
            return n
        n = t.send_file(piece.src.fd, piece.offset, piece.left)
        if n is WANT_WRITE or n is WANT_READ:
            self._blocked(n)
            return None
        if n == 0:
            log.error("%s: file ended %d bytes early (truncated while sent?): "
                      "aborting the connection", self.conn.peer_text, piece.left)
            self.conn.abort("file shrank during transfer", notable=False, unsent_status=500)
            return None
        piece.started = True
        self.last_write = time.monotonic()
        self.counters.add("bytes_" + t.file_method, n)
        if piece.owner is not None:
            piece.owner.bytes_sent += n
        piece.offset += n
        piece.left -= n
        if piece.left == 0:
            wire.popleft()
            self.drop_file(piece.src)
        return n

    # -- files on the wire ----------------------------------------------------------------
    def drop_file(self, src) -> None:
        """Give back one hold on a `FileRange`; the last one releases its closer."""
        if src.drop():
            self._release_closer(src.closer)

    def discard_pieces(self, stream) -> int:
        """Take the pieces of an HTTP/2 stream that have not started off the
        wire (a started one completes: the peer has part of its frame);
        returns their payload bytes, which never used the peer's window."""
        wire = self.wire
        keep = collections.deque()
        discarded = 0
        for piece in wire:
            if type(piece) is FileSend and piece.stream is stream and not piece.started:
                discarded += piece.left
                self.drop_file(piece.src)
            else:
                keep.append(piece)
        if discarded:
            wire.clear()
            wire.extend(keep)
        return discarded

    def _release_closer(self, closer) -> None:
        release = getattr(self.transport, "release_file_buffer", None)
        if release is not None:
            release()
        if getattr(closer, "close", None) is None:
            return
        if closes_only_a_file(closer):
            close_iterable(closer)  # close(2): no app code, no wait, no hop to the pool
        else:
            self.pool.submit_cleanup(lambda: close_iterable(closer))

    def release_all(self, unsent_status: int) -> None:
        """The connection closed: every queued file is released and every
        queued response end logs its exchange with `unsent_status`."""
        for piece in self.wire:
            kind = type(piece)
            if kind is FileSend:
                self.drop_file(piece.src)
            elif kind is Done:
                piece.exchange.abandon(unsent_status)
        self.wire.clear()
