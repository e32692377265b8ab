"""What a worker process and its master share: the heartbeat page and the message pipe.

Owns: the heartbeat slots (one double per worker, in an anonymous shared
mapping made before the fork: the worker's reactor writes the time, the
master reads it for --timeout), the worker -> master messages (ready,
retiring, boot error) and their wire format, and `WorkerLink`, the worker's
side of both.  No sockets, no HTTP.
"""
from __future__ import annotations

import mmap
import os
import struct
import time

MAX_SLOTS = 1024
SLOT = struct.Struct("d")
# Messages on the worker -> master pipe: kind, slot, payload length, payload.
MSG = struct.Struct("!BHH")
MSG_READY, MSG_RETIRING, MSG_BOOT_ERROR = 1, 2, 3
MSG_MAX_PAYLOAD = 1024        # keeps every message under PIPE_BUF: written atomically


class Heartbeats:
    """One double per worker slot in an anonymous shared mapping (made before fork)."""

    def __init__(self, slots: int = MAX_SLOTS):
        self._map = mmap.mmap(-1, slots * SLOT.size)

    def beat(self, slot: int) -> None:
        SLOT.pack_into(self._map, slot * SLOT.size, time.monotonic())

    def last(self, slot: int) -> float:
        return SLOT.unpack_from(self._map, slot * SLOT.size)[0]


class WorkerLink:
    """A worker's side of the master's channels; used on the worker's reactor thread."""

    def __init__(self, master_pid: int, slot: int, heartbeats: Heartbeats, notify_fd: int,
                 max_requests: int):
        self.master_pid = master_pid
        self.slot = slot
        self._heartbeats = heartbeats
        self._notify_fd = notify_fd
        self.max_requests = max_requests

    def beat(self) -> None:
        self._heartbeats.beat(self.slot)

    def send(self, kind: int, text: str = "") -> None:
        payload = text.encode("utf-8", "replace")[:MSG_MAX_PAYLOAD]
        try:
            os.write(self._notify_fd, MSG.pack(kind, self.slot, len(payload)) + payload)
        except OSError:
            pass  # the master is gone: the parent check stops this worker

    def ready(self) -> None:
        """The worker serves."""
        self.send(MSG_READY)

    def retiring(self, reason: str) -> None:
        """The worker stops gracefully on its own (--max-requests, --reload):
        the master starts its replacement."""
        self.send(MSG_RETIRING, reason)

    def boot_error(self, reason: str) -> None:
        """The worker cannot serve (the app does not import...)."""
        self.send(MSG_BOOT_ERROR, reason)

    def master_alive(self) -> bool:
        return os.getppid() == self.master_pid
