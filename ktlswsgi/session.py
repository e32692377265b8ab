"""The interface between a connection and its protocol session.

Owns: the contract only.  `connection.Connection` is the transport side;
`h1session.H1Session` and `h2session.H2Session` implement `Session` and are
chosen by the ALPN the TLS handshake settled.  Everything runs on the
reactor thread.

What a session may call on its connection: `kick()` (run the write pump),
`finish()` (no more to say: flush, then close), `close()`, `abort()`,
`call_threadsafe()` and `output_threadsafe()` (for its workers),
`read_more()`, the pump's `drop_file()`, `discard_pieces()` and
`mark_write_start()`, and the facts: `peer`, `peer_text`, `server_addr`,
`tls_environ`, `cfg`, `peer_eof`, `closed`.
"""
from __future__ import annotations

from typing import Protocol


class Session(Protocol):
    def start(self) -> None:
        """The connection is open (after the handshake or the PROXY header)."""

    @property
    def wants_read(self) -> bool:
        """Read more now?  Bounded buffers say no until they drain."""

    def receive(self, data: bytes) -> None:
        """Bytes from the client."""

    def peer_closed(self) -> None:
        """The client closed its side (EOF)."""

    def fill(self, wire, room: int) -> None:
        """Frame ready output into the wire (`wire.py`), about `room` bytes."""

    def send_whole(self) -> bool:
        """The output the workers announced is one whole response, the usual
        case, and the wire is idle: frame and send it in one step, without
        the pump (HTTP/1).  False when it is not that case; nothing done."""

    def written(self, done) -> None:
        """A `wire.Done` reached the transport: its response is handed over."""

    def deadline(self):
        """(when, what) of the session's nearest deadline, or None."""

    def expire(self, what: str) -> None:
        """The deadline `deadline()` named has passed."""

    def close_gracefully(self) -> None:
        """The server is stopping: end what was started without failing it."""

    def abandon_all(self, unsent_status: int) -> None:
        """The connection is closing: log every request that reached the app
        and release everything queued."""
