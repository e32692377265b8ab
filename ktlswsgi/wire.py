"""The pieces a session puts on the wire for the connection's write pump.

The wire is a deque of, in order:
  - a memoryview: bytes to send (consecutive ones are coalesced);
  - a tuple (memoryview, credits): response body bytes; `credits` lists the
    (exchange, n) whose n body bytes the view carries, credited to each
    exchange once the whole view is written;
  - `FileSend`: part of a file range (an HTTP/1 body, or an HTTP/2 DATA frame:
    a 9-byte header then its payload).  It keeps its `FileRange`
    (outbound.py), which owns the descriptor: the pump sends from `src.fd`
    only while the piece holds the range, and gives its hold back when the
    piece has left the wire or was discarded;
  - `Done`: the response of an exchange is completely handed to the
    transport (the session's `written()` hears it); an HTTP/2 stream's
    marker rides inside a coalesced write, so streams that end together go
    out in one write;
  - `outbound.Abort`: the response failed half-way; the connection closes.
No I/O here.
"""
from __future__ import annotations

# The wire's coalescing room: what a session may frame ahead of the socket,
# and the size of the writes small pieces are gathered into.
COALESCE_BYTES = 64 * 1024


class FileSend:
    """`left` bytes of `src` (a held `FileRange`) from `offset`, after `head`.

    `head` (None, or a memoryview) is a frame header that goes out first:
    with MSG_MORE when `head_more`, so that under kTLS the kernel opens the
    payload's record with it.  `stream` is the HTTP/2 stream the piece belongs
    to (None on HTTP/1).  `started` turns true once any of its bytes were
    taken by the transport: from then on it must be completed, since the
    peer already has part of it.  `owner`: the exchange whose sent body bytes
    grow as the pump sends (HTTP/1; HTTP/2 counts when it frames).
    """

    __slots__ = ("src", "offset", "left", "head", "head_more", "stream", "started", "owner")

    def __init__(self, src, offset: int, left: int, *, head=None, head_more: bool = False,
                 stream=None, owner=None):
        self.src = src
        self.offset = offset
        self.left = left
        self.head = head
        self.head_more = head_more
        self.stream = stream
        self.started = False
        self.owner = owner


class Done:
    """Marker: `exchange`'s response (with `status` and `body_bytes`) is
    completely handed to the transport once the pump reaches this piece.
    `stream`: its HTTP/2 stream (None on HTTP/1)."""

    __slots__ = ("exchange", "status", "body_bytes", "stream")

    def __init__(self, exchange, status: int, body_bytes: int, stream=None):
        self.exchange, self.status, self.body_bytes, self.stream = (
            exchange, status, body_bytes, stream)


def wire_bytes(wire) -> int:
    """Bytes of plain pieces queued for the socket (a file range counts as full)."""
    total = 0
    for p in wire:
        kind = type(p)
        if kind is memoryview:
            total += len(p)
        elif kind is tuple:
            total += len(p[0])
        elif kind is FileSend:
            return COALESCE_BYTES
    return total


def coalesce(wire):
    """Pop the leading run of small byte pieces as one buffer, with the
    HTTP/2 streams' `Done` markers among them (several streams' responses
    then go out in one write; an HTTP/1 `Done` ends the run, since the next
    response is framed only once it is handled).

    Returns (view, credits, dones): `credits` lists the (exchange, body
    bytes) the view carries, credited once the whole view is written (None
    if none); `dones` lists the (offset, Done) taken, each complete once the
    view's first `offset` bytes are written (None if none).
    """
    first = wire.popleft()
    if type(first) is memoryview:
        view, credits = first, None
    else:
        view, credits = first
    if len(view) >= COALESCE_BYTES or not wire:
        return view, credits, None
    parts = [view]
    total = len(view)
    dones = None
    while wire and total < COALESCE_BYTES:
        p = wire[0]
        kind = type(p)
        if kind is memoryview:
            v, c = p, None
        elif kind is tuple:
            v, c = p
        elif kind is Done and p.stream is not None:
            wire.popleft()
            if dones is None:
                dones = []
            dones.append((total, p))
            continue
        else:
            break
        if total + len(v) > 4 * COALESCE_BYTES:
            break  # a big chunk goes out on its own, uncopied
        wire.popleft()
        parts.append(v)
        total += len(v)
        if c:
            credits = list(credits or ()) + list(c)
    if len(parts) == 1:
        return view, credits, dones
    return memoryview(b"".join(parts)), credits, dones


def uncoalesce(wire, view, n: int, credits, dones) -> None:
    """Put back, in front and in order, what `coalesce` took beyond the
    view's first `n` bytes: the rest of the bytes, cut where the `Done`
    markers not yet reached were, and those markers (`credits` ride with
    the last bytes: they are credited when all of them are written)."""
    pieces = []
    start = n
    for offset, done in dones or ():
        if offset <= n:
            continue   # reached: the caller hands it to the session
        if offset > start:
            pieces.append(view[start:offset])
        pieces.append(done)
        start = offset
    if start < len(view):
        pieces.append(view[start:])
    if credits:
        for i in range(len(pieces) - 1, -1, -1):
            if type(pieces[i]) is memoryview:
                pieces[i] = (pieces[i], credits)
                break
    wire.extendleft(reversed(pieces))
