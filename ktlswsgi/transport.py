"""The byte-transport seam between a socket and a connection.

Owns: the interface every transport gives `connection.py` (plain TCP here; the
TLS transports in `tls/` implement the same), and the plain TCP transport.
Never blocks: each call does what the socket allows now and says what it waits
for.  Knows nothing of HTTP or WSGI.

Results (the connection never sees errno or OpenSSL codes):
  - ``handshake()`` -> ``None`` when done, else ``WANT_READ`` / ``WANT_WRITE``.
  - ``recv(max_bytes)`` -> ``bytes`` (``b""`` is a clean EOF), or a WANT.
  - ``send(view)`` -> ``int`` (> 0, bytes of the view taken), or a WANT.
  - ``send_more(view)`` -> as send(), for bytes the next write continues
    (MSG_MORE where the kernel frames the bytes: plain TCP, kTLS TX).
  - ``send_file(fd, offset, count)`` -> ``int`` (bytes of the file taken; 0
    means the file ended early: it shrank under us), or a WANT.
  - ``flush()`` -> ``True`` when nothing is held back for the socket.
  - ``shutdown()`` -> ``None`` when done, else a WANT.
  Any fatal condition raises ``TransportError`` (or ``OSError``); the caller
  then closes the connection.
"""
from __future__ import annotations

import errno
import os
import socket

from .native import native

WANT_READ = "want_read"
WANT_WRITE = "want_write"


class TransportError(Exception):
    """The connection is unusable; close it.

    `notable` marks a cause the operator should see at the default log level
    (most causes, such as a client reset, are routine and logged at debug).
    """

    notable = False


class PlainTransport:
    """Plain TCP (or unix) socket; files go out with os.sendfile."""

    kind = "tcp"
    send_method = "send"
    file_method = "sendfile"
    # _csrc/gate.c: recv and send without releasing the GIL (None: the socket's).
    _gate = native

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.fd = sock.fileno()
        sock.setblocking(False)

    def handshake(self):
        return None

    def recv(self, max_bytes: int):
        gate = self._gate
        if gate is not None and self.fd >= 0:
            data = gate.sock_recv(self.fd, max_bytes)
            return WANT_READ if data is None else data
        try:
            return self.sock.recv(max_bytes)
        except (BlockingIOError, InterruptedError):
            return WANT_READ

    def send(self, view):
        gate = self._gate
        if gate is not None and self.fd >= 0:
            n = gate.sock_send(self.fd, view)
            return WANT_WRITE if n < 0 else n
        try:
            return self.sock.send(view)
        except (BlockingIOError, InterruptedError):
            return WANT_WRITE

    def send_more(self, view):
        try:
            return self.sock.send(view, socket.MSG_MORE)
        except (BlockingIOError, InterruptedError):
            return WANT_WRITE

    def send_file(self, fd: int, offset: int, count: int):
        try:
            return os.sendfile(self.fd, fd, offset, count)
        except (BlockingIOError, InterruptedError):
            return WANT_WRITE
        except OSError as exc:
            if exc.errno == errno.EAGAIN:
                return WANT_WRITE
            raise

    def has_pending(self) -> bool:
        return False

    def flush(self) -> bool:
        return True

    def shutdown(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return None

    def info(self) -> dict:
        return {}

    def close(self) -> None:
        self.fd = -1   # the number may soon name another connection's socket
        self.sock.close()
