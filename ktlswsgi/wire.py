"""Wire pieces that are not plain bytes: what a session hands the write pump.

Owns: `FileSend`, a part of a file range on its way to the socket (a whole
HTTP/1 body, or one HTTP/2 DATA frame: a 9-byte header then its payload).
The piece keeps its `FileRange` (outbound.py), which owns the descriptor: the
pump sends from `src.fd` only while the piece holds the range, and gives its
hold back when the piece has left the wire or was discarded.  No I/O here.
"""
from __future__ import annotations


class FileSend:
    """`left` bytes of `src` (a held `FileRange`) from `offset`, after `head`.

    `head` (None, or a memoryview) is a frame header that goes out first:
    with MSG_MORE when `head_more`, so that under kTLS the kernel opens the
    payload's record with it.  `stream` is the HTTP/2 stream the piece belongs
    to (None on HTTP/1).  `started` turns true once any of its bytes were
    taken by the transport: from then on it must be completed, since the
    peer already has part of it.  `counted`: the pump adds what it sends to
    the exchange's body bytes (HTTP/1; HTTP/2 counts when it frames).
    """

    __slots__ = ("src", "offset", "left", "head", "head_more", "stream", "started", "counted")

    def __init__(self, src, offset: int, left: int, *, head=None, head_more: bool = False,
                 stream=None, counted: bool = False):
        self.src = src
        self.offset = offset
        self.left = left
        self.head = head
        self.head_more = head_more
        self.stream = stream
        self.started = False
        self.counted = counted
