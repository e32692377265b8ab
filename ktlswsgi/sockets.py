"""Listening sockets: binding them, inheriting them, one per worker with SO_REUSEPORT.

Owns: opening every --bind address (TCP v4/v6, unix), taking listening
sockets over from a re-executing master (USR2, KTLSWSGI_LISTEN_FDS) or from
systemd (LISTEN_FDS), and a worker's own SO_REUSEPORT socket per address.
Used by the master (arbiter.py), a process serving alone (server.py) and the
metrics endpoint (metrics.py).  No client sockets here.
"""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
from dataclasses import dataclass

log = logging.getLogger("ktlswsgi.arbiter")

INHERIT_ENV = "KTLSWSGI_LISTEN_FDS"    # listeners handed over by USR2 re-exec


class BindError(ValueError):
    """A --bind address that cannot be parsed; one line for the operator."""


def address_text(addr) -> str:
    """HOST:PORT of a socket address tuple, IPv6 hosts in brackets."""
    host, port = addr[0], addr[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class Bind:
    """One listening address: ("tcp", host, port) or ("unix", path)."""

    family: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> "Bind":
        if text.startswith("unix:"):
            path = text[5:]
            if not path:
                raise BindError(f"bind {text!r}: empty unix socket path")
            return cls("unix", path=path)
        if text.startswith("["):
            host, sep, rest = text[1:].partition("]")
            if not sep:
                raise BindError(f"bind {text!r}: missing ']' after IPv6 address")
            port_s = rest[1:] if rest.startswith(":") else ""
        elif ":" in text:
            host, _, port_s = text.rpartition(":")
        else:
            host, port_s = text, ""
        if not port_s:
            port = 8000
        else:
            try:
                port = int(port_s)
            except ValueError:
                raise BindError(f"bind {text!r}: port {port_s!r} is not a number") from None
        if not 0 <= port <= 65535:
            raise BindError(f"bind {text!r}: port out of range")
        return cls("tcp", host=host or "0.0.0.0", port=port)

    def __str__(self) -> str:
        if self.family == "unix":
            return f"unix:{self.path}"
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def bind_sockets(config, hold_for_reuse_port: bool = False) -> list:
    """Open every --bind address; raise OSError with the address in the message.

    `hold_for_reuse_port` (the master under --reuse-port): TCP sockets get
    SO_REUSEPORT and are bound but not listening.  They hold the address for
    the workers' own SO_REUSEPORT listeners; a listening one would take its
    share of the connections, which no process accepts.
    """
    socks = []
    try:
        for b in config.binds:
            socks.append(bind_one(b, config.backlog, hold_for_reuse_port))
    except OSError:
        for s in socks:
            s.close()
        raise
    return socks


def bind_one(b, backlog: int, hold_for_reuse_port: bool = False) -> socket.socket:
    """One listening socket for a `Bind`, non-blocking; OSError names the address."""
    if b.family == "unix":
        try:
            if stat.S_ISSOCK(os.stat(b.path).st_mode):
                os.unlink(b.path)  # a stale socket from an earlier run
        except FileNotFoundError:
            pass
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.bind(b.path)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind {b}: {exc.strerror}") from None
    else:
        try:
            infos = socket.getaddrinfo(b.host, b.port, type=socket.SOCK_STREAM,
                                       flags=socket.AI_PASSIVE)
        except socket.gaierror as exc:
            raise OSError(errno.EINVAL, f"cannot resolve {b}: {exc}") from None
        family, _, _, _, addr = infos[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if hold_for_reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            sock.bind(addr)
        except OSError as exc:
            sock.close()
            raise OSError(exc.errno, f"cannot bind {b}: {exc.strerror}") from None
        if hold_for_reuse_port:
            sock.setblocking(False)
            return sock
    sock.listen(backlog)
    sock.setblocking(False)
    return sock


def inherited_listeners() -> list:
    """Listening sockets from a re-executing master (USR2) or from systemd
    (LISTEN_FDS), already bound; [] when there are none."""
    fds = []
    text = os.environ.pop(INHERIT_ENV, "")
    if text:
        fds = [int(x) for x in text.split(",") if x]
        how = "the previous master"
    elif os.environ.get("LISTEN_PID") == str(os.getpid()):
        count = int(os.environ.get("LISTEN_FDS", "0"))
        fds = list(range(3, 3 + count))
        how = "systemd socket activation"
    for name in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        os.environ.pop(name, None)
    socks = []
    for fd in fds:
        sock = socket.socket(fileno=fd)
        sock.setblocking(False)
        os.set_inheritable(fd, False)
        socks.append(sock)
    if socks:
        log.info("using %d listening socket%s from %s", len(socks),
                 "" if len(socks) == 1 else "s", how)
    return socks


def reuse_port_sockets(cfg, shared: list) -> list:
    """Each worker's own SO_REUSEPORT socket per TCP address the master holds (bound,
    not listening); unix sockets and listening inherited ones stay shared."""
    out = []
    for sock in shared:
        addr = sock.getsockname()
        if (sock.family not in (socket.AF_INET, socket.AF_INET6)
                or sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)):
            # A listening one (systemd's): its connections need an acceptor.
            out.append(sock)
            continue
        own = socket.socket(sock.family, socket.SOCK_STREAM)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        own.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if sock.family == socket.AF_INET6:
            own.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        own.bind(addr[:2] if sock.family == socket.AF_INET else addr)
        own.listen(cfg.backlog)
        own.setblocking(False)
        out.append(own)
        sock.close()   # this worker's copy of the shared one: the master keeps its own
    return out
