"""One client connection: a transport joined to a protocol session, on the reactor.

Owns: the connection's life (its states and their deadlines), reading the
PROXY protocol header off the raw socket (before TLS), the TLS handshake,
the choice of session by the ALPN the handshake settled (`h2session.H2Session`
or `h1session.H1Session`, one interface, below), reading bytes into the
session, the write pump that turns wire pieces (`wire.py`) into writes on the
transport, the lingering close, and the release of files when pieces leave
or are discarded.  The only module that joins a transport to a protocol.
Runs on the reactor thread only, except the thread-safe entry points named
`*_threadsafe` and the jobs its sessions submit.

States:

    [PROXY ->] [HANDSHAKE ->] OPEN -> CLOSING -> CLOSED

  PROXY      PROXY header being read (--proxy-protocol)  proxy_header_timeout_s -> close
  HANDSHAKE  TLS handshake running                       handshake_timeout_s -> close
  OPEN       the session's requests                      the session's deadlines; no
                                                         write progress for write_timeout_s
                                                         while output waits -> close
  CLOSING    output flushed, then shutdown + drain       linger_s -> close

The session interface (what the connection calls):

  start()                    the connection is open
  wants_read                 read more now? (bounded buffers say no)
  receive(data)              bytes from the client
  peer_closed()              the client closed its side
  fill(wire, room)           frame ready output into the wire, about `room` bytes
  written(done)              a `wire.Done` reached the transport
  deadline() / expire(what)  the session's own timeouts
  close_gracefully()         the server is stopping
  abandon_all(status)        the connection is closing: log and release everything

and what a session may call here: kick(), finish(), close(), abort(),
call_threadsafe(), output_threadsafe(), drop_file(), discard_pieces(),
read_more(), mark_write_start(), and the facts (peer, TLS, config).
"""
from __future__ import annotations

import collections
import logging
import socket
import time
from dataclasses import dataclass

from . import proxyproto, reactor as rx
from .filewrapper import INLINE_FILE_BYTES, closes_only_a_file
from .h1session import H1Session
from .h2session import H2Session
from .outbound import FileRange
from .transport import WANT_READ, WANT_WRITE, TransportError
from .wire import COALESCE_BYTES, Done, FileSend, coalesce, wire_bytes
from .wsgi import close_iterable

log = logging.getLogger("ktlswsgi.connection")

PROXY, HANDSHAKE, OPEN, CLOSING, CLOSED = "proxy", "handshake", "open", "closing", "closed"

TRANSITIONS = {
    PROXY: {HANDSHAKE, OPEN, CLOSED},
    HANDSHAKE: {OPEN, CLOSED},
    OPEN: {CLOSING, CLOSED},
    CLOSING: {CLOSED},
    CLOSED: set(),
}

# Bytes one connection may write per reactor turn.  It also bounds how long a
# cold file (sendfile/pread waiting on the disk) can hold the reactor.
_WRITE_BUDGET_BYTES = 512 * 1024
_READS_PER_EVENT = 4


@dataclass
class Shared:
    """What every connection of a process uses; built once by the server."""

    config: object
    reactor: object
    pool: object
    app: object
    counters: object
    scheme: str
    multiprocess: bool
    on_closed: object           # callable(connection)
    on_handshake_done: object   # callable(connection)
    on_request: object = None   # callable(), after each request head (--max-requests)


class Connection:
    def __init__(self, shared: Shared, sock, peer, transport, handshake: bool):
        self.s = shared
        self.cfg = shared.config
        self.sock = sock
        self.fd = sock.fileno()
        self.peer = peer
        self.peer_text = peer[0] if isinstance(peer, tuple) else "unix"
        # The IP that decides --forwarded-allow-ips trust (None: a unix socket).
        self.peer_ip = peer[0] if isinstance(peer, tuple) else None
        self.server_addr = sock.getsockname()
        self.transport = transport
        self._tls = handshake           # a TLS handshake follows the PROXY header
        self.forwarded_trust, proxy_trust = self.cfg.proxy_trust()
        self._proxy_parser = None
        self.state = PROXY if self.cfg.proxy_protocol else HANDSHAKE if handshake else OPEN
        self.session = None             # H1Session or H2Session once OPEN
        self.closed = False             # state == CLOSED, for the sessions' loops
        now = time.monotonic()
        self._phase_since = now
        self._draining = False          # the server is stopping
        self._timer = None
        self._timer_when = 0.0
        # reading
        self._read_on = rx.IN           # the event the read side waits for
        self.peer_eof = False
        # writing
        self.wire: collections.deque = collections.deque()  # framed pieces, in order
        self._write_on = 0              # 0 = nothing blocked; else the event awaited
        self._last_write = now
        self._pumping = False
        self._pump_again = False
        self._shut = False
        self._interest = 0
        self.tls_info: dict | None = None
        self.tls_environ: dict | None = None  # HTTPS, SSL_PROTOCOL, ... for every request
        # HTTP/1 files up to this size are read by the worker and sent with
        # their head (filewrapper.py); 0 once kTLS TX is engaged: SSL_sendfile.
        # HTTP/2 streams keep the file path: its preadv fills framed DATA
        # without h2's per-frame Python (measured: 16 KiB 4004 -> 3313
        # req/CPU-s when inlined).
        self.inline_file_bytes = INLINE_FILE_BYTES
        shared.counters.connections += 1
        shared.reactor.add(self.fd, rx.IN | rx.RDHUP, self._on_event)
        self._interest = rx.IN | rx.RDHUP
        if self.state == PROXY:
            self._begin_proxy_header(proxy_trust)
        elif handshake:
            self._do_handshake()
        else:
            self._open(H1Session(self))
        self._update()

    # -- state ------------------------------------------------------------------
    def _to(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection: no transition {self.state} -> {state}")
        self.state = state
        self._phase_since = time.monotonic()

    def _open(self, session) -> None:
        if self.state != OPEN:
            self._to(OPEN)
        self.session = session
        session.start()
        if self._draining:
            session.close_gracefully()

    # -- events -------------------------------------------------------------------
    def _on_event(self, ev: int) -> None:
        if self.state == CLOSED:
            return
        try:
            if self.state == PROXY:
                self._read_proxy_header()
            elif self.state == HANDSHAKE:
                self._do_handshake()
            else:
                if self._write_on and ev & (self._write_on | rx.ERR):
                    self.kick()
                if self.state != CLOSED and self._reading() and ev & (self._read_on | rx.ERR | rx.RDHUP):
                    self._do_read()
                elif ev & rx.ERR and not self._write_on:
                    self._abort("socket error or hang-up")
        except (TransportError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))
        if self.state != CLOSED:
            self._update()

    def _update(self) -> None:
        """Re-arm epoll interest and the phase deadline from the current state."""
        if self.state == CLOSED:
            return
        if self.state == PROXY:
            want = rx.IN
        elif self.state == HANDSHAKE:
            want = self._read_on
        else:
            want = self._write_on
            if self._reading():
                want |= self._read_on | (rx.RDHUP if self._read_on == rx.IN else 0)
        if want != self._interest:
            self.s.reactor.modify(self.fd, want)
            self._interest = want
        self._arm_deadline()

    def _reading(self) -> bool:
        st = self.state
        if self.peer_eof or st == CLOSED:
            return False
        if st == CLOSING:
            return True   # lingering close: read to discard
        return st == OPEN and self.session.wants_read

    def call(self, fn, *args) -> None:
        """Run `fn` for the session now (on the reactor), then re-arm: the
        transport's errors abort the connection."""
        if self.state == CLOSED:
            return
        try:
            fn(*args)
        except (TransportError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))
        if self.state != CLOSED:
            self._update()

    def call_threadsafe(self, fn, *args) -> None:
        """From a worker: run `fn` on the reactor soon (see call())."""
        self.s.reactor.call_soon_threadsafe(lambda: self.call(fn, *args))

    def output_threadsafe(self) -> None:
        """From a worker: new output is queued; run the pump."""
        self.s.reactor.call_soon_threadsafe(self._on_output)

    def _on_output(self) -> None:
        self.call(self.kick)

    # -- deadlines ------------------------------------------------------------------
    def _deadline(self):
        """(when, what) of the nearest deadline, or None."""
        c = self.cfg
        st = self.state
        if st == PROXY:
            return self._phase_since + c.proxy_header_timeout_s, "proxy"
        if st == HANDSHAKE:
            return self._phase_since + c.handshake_timeout_s, "handshake"
        if st == CLOSING:
            return self._phase_since + c.linger_s, "linger"
        if st != OPEN:
            return None
        best = self.session.deadline()
        if self.wire or self._write_on:
            cand = (self._last_write + c.write_timeout_s, "write")
            if best is None or cand[0] < best[0]:
                best = cand
        return best

    def _arm_deadline(self) -> None:
        d = self._deadline()
        if d is None:
            return
        when = d[0]
        if self._timer is not None and not self._timer.cancelled and self._timer_when <= when:
            return  # an earlier check will re-evaluate
        if self._timer is not None:
            self._timer.cancel()
        self._timer_when = when
        self._timer = self.s.reactor.call_later(max(0.0, when - time.monotonic()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        if self.state == CLOSED:
            return
        d = self._deadline()
        if d is None:
            return
        when, what = d
        if when > time.monotonic():
            self._arm_deadline()
            return
        self.call(self._expire, what)

    def _expire(self, what: str) -> None:
        if what == "proxy":
            log.info("%s: no complete PROXY header in %.1fs; closing", self.peer_text,
                     self.cfg.proxy_header_timeout_s)
            self._close()
        elif what == "handshake":
            log.debug("%s: TLS handshake timed out", self.peer_text)
            self.s.counters.handshakes_failed += 1
            self._close()
        elif what == "write":
            log.info("%s: client read nothing for %.1fs; closing", self.peer_text,
                     self.cfg.write_timeout_s)
            self._abort("write timeout")
        elif what == "linger":
            self._close()
        else:
            self.session.expire(what)

    # -- PROXY protocol header ---------------------------------------------------------
    def _begin_proxy_header(self, proxy_trust) -> None:
        # The DIRECT peer decides: only a listed load balancer may say who
        # the client is.  Anyone else could name any address, so it gets no
        # say at all (and no read).
        if not proxy_trust.trusts(self.peer_ip):
            log.info("%s: peer not in --proxy-allow-from, PROXY header not accepted; closing",
                     self.peer_text)
            self._close()
            return
        self._proxy_parser = proxyproto.ProxyHeaderParser(self.cfg.proxy_header_max_bytes)
        try:
            self._read_proxy_header()  # the header usually arrives with the connection
        except (TransportError, OSError) as exc:  # from the first read after it
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))

    def _read_proxy_header(self) -> None:
        """Take exactly the header's bytes off the raw socket.

        Peek, let the parser say how many of the peeked bytes are header, and
        recv() exactly those: what follows (a ClientHello, a request) stays in
        the socket, where every transport reads it as if no header had been
        there (the socket transport's OpenSSL reads the fd itself).  Peeks
        never go past the header's bound, and a peek the parser cannot decide
        on is consumed whole, so level-triggered epoll cannot spin on it.
        """
        parser = self._proxy_parser
        window_bytes = self.cfg.proxy_header_max_bytes - parser.bytes_received
        try:
            peeked = self.sock.recv(window_bytes, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._proxy_failed(f"socket error: {exc.strerror or type(exc).__name__}")
            return
        consume = parser.feed_peeked(peeked)
        if consume and len(self.sock.recv(consume)) != consume:
            self._proxy_failed("socket gave back fewer bytes than it showed")
            return
        result = parser.result()
        if result is proxyproto.NEED_DATA:
            return
        self._proxy_parser = None
        if type(result) is proxyproto.ProxyError:
            self._proxy_failed(result.reason)
            return
        self._use_proxy_info(result)
        if self._tls:
            self._to(HANDSHAKE)
            self._do_handshake()
        else:
            # Its set-up is over, as a TLS connection's is after the handshake
            # (a server that counts PROXY-state connections as handshaking).
            self._open(H1Session(self))
            self.s.on_handshake_done(self)
            self._do_read()  # the request may have come with the header

    def _proxy_failed(self, reason: str) -> None:
        # `reason` is the parser's fixed text: never the peer's bytes.
        log.info("%s: no valid PROXY header (%s); closing", self.peer_text, reason)
        self._close()

    def _use_proxy_info(self, info) -> None:
        """The header's client becomes this connection's peer: REMOTE_ADDR, the
        access log's remote field, and the address --forwarded-allow-ips judges."""
        log.debug("%s: PROXY v%d %s %s", self.peer_text, info.version, info.command, info.family)
        if info.src is None:  # LOCAL (a health check) or UNKNOWN: the real addresses
            return
        src, dst = proxyproto.unmapped(info.src), proxyproto.unmapped(info.dst)
        self.peer, self.server_addr = src, dst
        if isinstance(src, tuple):
            self.peer_text = self.peer_ip = src[0]
        else:  # the proxy's client came over a unix socket
            self.peer_text, self.peer_ip = "unix", None

    # -- TLS handshake --------------------------------------------------------------
    def _do_handshake(self) -> None:
        try:
            r = self.transport.handshake()
        except (TransportError, OSError) as exc:
            log.debug("%s: TLS handshake failed: %s", self.peer_text, exc)
            self.s.counters.handshakes_failed += 1
            send_alert = getattr(self.transport, "send_alert", None)
            if send_alert is not None:
                send_alert()
            self._close()
            return
        if r is WANT_READ:
            self._read_on = rx.IN
            return
        if r is WANT_WRITE:
            self._read_on = rx.OUT
            return
        if not self.transport.flush():
            self._write_on = rx.OUT
        self._read_on = rx.IN
        self.s.counters.handshakes_ok += 1
        info = self.transport.info()
        self.tls_info = info
        self.tls_environ = {"HTTPS": "on", "SSL_PROTOCOL": info.get("tls_version", ""),
                            "SSL_CIPHER": info.get("cipher", ""),
                            "ktlswsgi.ktls": info.get("ktls", "off")}
        ktls = info.get("ktls", "off")
        if "tx" in ktls:
            self.s.counters.ktls_tx_connections += 1
            self.inline_file_bytes = 0
        if "rx" in ktls:
            self.s.counters.ktls_rx_connections += 1
        log.debug("%s: TLS %s %s alpn=%s sni=%s ktls=%s", self.peer_text,
                  info.get("tls_version"), info.get("cipher"), info.get("alpn"),
                  info.get("sni"), ktls)
        if info.get("alpn") == "h2":
            self.s.counters.h2_connections += 1
            self._open(H2Session(self))
        else:
            self._open(H1Session(self))
        self.s.on_handshake_done(self)
        self.kick()   # HTTP/2: our SETTINGS
        if self.state == OPEN:
            self._do_read()  # the client's first request may already be buffered

    # -- reading ------------------------------------------------------------------------
    def _do_read(self) -> None:
        t = self.transport
        recv_bytes = self.cfg.recv_bytes
        for _ in range(_READS_PER_EVENT):
            if not self._reading():
                return
            data = t.recv(recv_bytes)
            if data is WANT_READ:
                self._read_on = rx.IN
                return
            if data is WANT_WRITE:
                self._read_on = rx.OUT
                return
            self._read_on = rx.IN
            if not data:
                self.peer_eof = True
                if self.state == CLOSING:
                    self._close()
                else:
                    self.session.peer_closed()
                return
            if self.state == CLOSING:
                continue  # lingering close: discard
            self.session.receive(data)
            if self.state == CLOSED:
                return
            if len(data) < recv_bytes and not t.has_pending():
                return
        if t.has_pending() and self._reading():
            # Out of turns with data already inside TLS: epoll will not
            # announce it, so come back on the next reactor turn.
            self.s.reactor.call_soon(lambda: self.call(self.read_more))

    def read_more(self) -> None:
        """Read what the transport already holds (a session that paused
        reading and resumes: TLS may hold decrypted records epoll will not
        announce)."""
        if self.state != CLOSED and self._reading():
            self._do_read()

    # -- the write pump ------------------------------------------------------------------
    def kick(self) -> None:
        """Run the pump now, or once more if it is already running (no nesting)."""
        if self._pumping:
            self._pump_again = True
        else:
            self._pump()

    def mark_write_start(self, when: float) -> None:
        """A new response begins: its write stall is timed from `when`."""
        self._last_write = when

    def _pump(self) -> None:
        self._pumping = True
        try:
            while True:
                self._pump_again = False
                self._pump_once()
                if not self._pump_again or self.state == CLOSED:
                    break
        finally:
            self._pumping = False

    def _pump_once(self) -> None:
        """Move wire pieces to the transport until it would block."""
        wire = self.wire
        session = self.session
        if not wire:
            self._last_write = time.monotonic()  # a new write phase starts now
        self._write_on = 0
        budget = _WRITE_BUDGET_BYTES
        while self.state != CLOSED:
            if budget <= 0:
                # Fairness: other connections get the reactor; level-triggered
                # EPOLLOUT brings us back as soon as the socket is writable.
                self._write_on = rx.OUT
                break
            if session is not None:
                room = COALESCE_BYTES - wire_bytes(wire) if wire else COALESCE_BYTES
                if room > 0:
                    session.fill(wire, room)
            if not wire or self.state == CLOSED:
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
                log.info("%s: response aborted: %s", self.peer_text, piece.reason)
                self._abort(piece.reason, unsent_status=500)
                return
            if n is None:
                break   # blocked (or the connection closed)
            budget -= n
        if self.state == CLOSED:
            return
        if not self.transport.flush():
            self._write_on = rx.OUT
        elif self.state == CLOSING and not wire and not self._write_on:
            self._shutdown()

    def _blocked(self, want) -> None:
        self._write_on = rx.OUT if want is WANT_WRITE else rx.IN

    def _send_bytes(self):
        """Send the leading run of byte pieces, coalesced: the bytes the
        transport took, or None when it blocked."""
        wire = self.wire
        t = self.transport
        view, credits = coalesce(wire)
        n = t.send(view)
        if n is WANT_WRITE or n is WANT_READ:
            wire.appendleft((view, credits) if credits else view)
            self._blocked(n)
            return None
        self._last_write = time.monotonic()
        self.s.counters.add("bytes_" + t.send_method, n)
        if n < len(view):
            rest = view[n:]
            wire.appendleft((rest, credits) if credits else rest)
        elif credits:
            for owner, counted in credits:
                owner.chunk_sent(counted)
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
            self._last_write = time.monotonic()
            self.s.counters.add("bytes_" + t.send_method, n)
            piece.head = head[n:] if n < len(head) else None
            return n
        n = t.send_file(piece.src.fd, piece.offset, piece.left)
        if n is WANT_WRITE or n is WANT_READ:
            self._blocked(n)
            return None
        if n == 0:
            log.error("%s: file ended %d bytes early (truncated while sent?): "
                      "aborting the connection", self.peer_text, piece.left)
            self._abort("file shrank during transfer", unsent_status=500)
            return None
        piece.started = True
        self._last_write = time.monotonic()
        self.s.counters.add("bytes_" + t.file_method, n)
        if piece.owner is not None:
            piece.owner.bytes_sent += n
        piece.offset += n
        piece.left -= n
        if piece.left == 0:
            wire.popleft()
            self.drop_file(piece.src)
        return n

    # -- files on the wire ----------------------------------------------------------------
    def drop_file(self, src: FileRange) -> None:
        """Give back one hold on a file range; the last one releases its closer."""
        if src.drop():
            self.release_closer(src.closer)

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

    def release_closer(self, closer) -> None:
        release = getattr(self.transport, "release_file_buffer", None)
        if release is not None:
            release()
        if getattr(closer, "close", None) is None:
            return
        if closes_only_a_file(closer):
            close_iterable(closer)  # close(2): no app code, no wait, no hop to the pool
        else:
            self.s.pool.submit_cleanup(lambda: close_iterable(closer))

    # -- ending ------------------------------------------------------------------------------
    def finish(self) -> None:
        """The session has no more to say: flush the output, then close
        (TLS close_notify and FIN, drain until the client closes or linger_s)."""
        if self.state == OPEN:
            self._to(CLOSING)
            self.kick()

    def close_gracefully(self) -> None:
        """Server shutdown (TERM, reload, --max-requests): the session ends
        what it started without failing a request (--graceful-timeout bounds it)."""
        if self.state == CLOSING and self._shut:
            self._close()
            return
        if not self._draining:
            self._draining = True
            if self.state == OPEN:
                self.call(self.session.close_gracefully)
            elif self.state != CLOSED:
                self._update()

    def _shutdown(self) -> None:
        """Output is flushed: send FIN / close_notify, then drain until EOF or linger_s."""
        if self._shut:
            return
        r = self.transport.shutdown()
        if r is WANT_WRITE or r is WANT_READ:
            self._write_on = rx.OUT if r is WANT_WRITE else rx.IN
            return
        self._shut = True
        if self.peer_eof:
            self._close()

    def abort(self, reason: str, notable: bool = True, unsent_status: int = 499) -> None:
        """Close at once (see _abort); for sessions and the server."""
        self._abort(reason, notable, unsent_status)

    def close(self) -> None:
        """Close at once, quietly (an idle or lingering connection's end)."""
        self._close()

    def shed(self) -> None:
        """Closed before its handshake (or PROXY header) finished, to make room
        for others at a limit (server.py chooses and logs)."""
        self._close()

    def _abort(self, reason: str, notable: bool = False, unsent_status: int = 499) -> None:
        """Close at once.  A request in flight still gets its access-log line:
        with its response's status if the head went out, else `unsent_status`
        (499, nginx's "client closed request", unless the server gave up)."""
        if self.state == CLOSED:
            return
        log.log(logging.INFO if notable else logging.DEBUG,
                "%s: aborting connection (%s) in state %s", self.peer_text, reason, self.state)
        self.s.counters.aborted_connections += 1
        self._close(unsent_status)

    def _close(self, unsent_status: int = 499) -> None:
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.session is not None:  # every request that reached the app gets its line
            self.session.abandon_all(unsent_status)
        for piece in self.wire:
            kind = type(piece)
            if kind is FileSend:
                self.drop_file(piece.src)
            elif kind is Done:
                piece.exchange.abandon(unsent_status)
        self.wire.clear()
        self.s.reactor.remove(self.fd)
        sends = getattr(self.transport, "socket_sends", None)
        if sends is not None:
            self.s.counters.tls_mem_sends += sends
            self.s.counters.tls_mem_recvs += self.transport.socket_recvs
        # Last, so that whoever sees the close also sees what it added.
        self.s.counters.connections_closed += 1
        try:
            self.transport.close()
        except OSError:
            pass
        self.s.on_closed(self)
