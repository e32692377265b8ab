"""Reading a PROXY protocol header off a connection's raw socket, before TLS.

Owns: taking exactly the header's bytes out of the socket (the parsing is
`proxyproto.ProxyHeaderParser`'s) and turning the header's addresses into
the connection's peer and server address.  Peek, let the parser say how many
of the peeked bytes are header, and recv() exactly those: what follows (a
ClientHello, a request) stays in the socket, where every transport reads it
as if no header had been there (the socket transport's OpenSSL reads the fd
itself).  Peeks never go past the header's bound, and a peek the parser
cannot decide on is consumed whole, so level-triggered epoll cannot spin on
it.  Non-blocking; runs on the reactor thread.
"""
from __future__ import annotations

import socket

from . import proxyproto
from .proxyproto import NEED_DATA, ProxyError

__all__ = ["NEED_DATA", "ProxyError", "ProxyHeaderReader", "addresses"]


class ProxyHeaderReader:
    """One connection's header, read in as many steps as it arrives."""

    def __init__(self, sock, max_bytes: int):
        self.sock = sock
        self.max_bytes = max_bytes
        self.parser = proxyproto.ProxyHeaderParser(max_bytes)

    def read(self):
        """NEED_DATA (wait for the socket to be readable), or the final
        `proxyproto.ProxyInfo` or `ProxyError` (a fixed reason, never the
        peer's bytes)."""
        parser = self.parser
        try:
            peeked = self.sock.recv(self.max_bytes - parser.bytes_received, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return NEED_DATA
        except OSError as exc:
            return ProxyError(f"socket error: {exc.strerror or type(exc).__name__}")
        consume = parser.feed_peeked(peeked)
        if consume and len(self.sock.recv(consume)) != consume:
            return ProxyError("socket gave back fewer bytes than it showed")
        return parser.result()


def addresses(info):
    """(peer, server address) the header names, or None when it names none
    (LOCAL, a health check, or UNKNOWN: the real connection's addresses hold).
    IPv4-mapped IPv6 addresses come back as IPv4."""
    if info.src is None:
        return None
    return proxyproto.unmapped(info.src), proxyproto.unmapped(info.dst)
