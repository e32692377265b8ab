"""One client connection: a transport joined to a protocol, on the reactor.

Owns: the connection's life (its states and their deadlines), reading the
PROXY protocol header off the raw socket (before TLS), the choice of protocol
by the ALPN the handshake settled (h2: the streams of `streams.H2Session`;
else HTTP/1.1 here, one `exchange.Exchange` per request), reading and feeding
the protocol, and the write pump that turns framed pieces (bytes, file
ranges, end markers) into writes on the transport.  The only module that
joins a transport to a protocol.  Runs on the reactor thread only, except the
thread-safe entry points named `*_threadsafe` and the jobs it submits.

States (a transfer's life is in the outbound items: head -> body -> file -> end):

    [PROXY ->] [HANDSHAKE ->] IDLE -> HEADERS -> ACTIVE -> (IDLE | LINGER | CLOSING) ... -> CLOSED
    [PROXY ->] HANDSHAKE -> H2 -> CLOSING -> CLOSED             (ALPN h2)

  PROXY      PROXY header being read (--proxy-protocol)  deadline proxy_header_timeout_s
  HANDSHAKE  TLS handshake running                  deadline handshake_timeout_s
  IDLE       waiting for a request's first byte     deadline keep_alive_s (first: header_timeout_s)
  HEADERS    a request head is arriving             deadline header_timeout_s -> 408
  ACTIVE     a request is in the app / being sent   body stall read_timeout_s or below
                                                    body_min_rate -> 408,
                                                    write stall write_timeout_s -> close
  LINGER     response sent, unread body drained     linger_s / linger_bytes, else close
  CLOSING    output flushed, then shutdown + drain  linger_s
  H2         HTTP/2 streams (streams.py)            idle keep_alive_s -> GOAWAY; body stall
                                                    read_timeout_s -> 408 on that stream;
                                                    write or window stall write_timeout_s -> close
"""
from __future__ import annotations

import collections
import io
import ipaddress
import logging
import socket
import time
from dataclasses import dataclass

from . import http1, proxyproto, reactor as rx, streams
from .exchange import Exchange
from .filewrapper import INLINE_FILE_BYTES, FileWrapper
from .httpdate import standard_headers
from .outbound import Abort, Chunk, End, FileRange, Head
from .transport import WANT_READ, WANT_WRITE, TransportError
from .wire import FileSend
from .wsgi import BodyError, BodyTimeout, close_iterable

log = logging.getLogger("ktlswsgi.connection")

PROXY, HANDSHAKE, IDLE, HEADERS, ACTIVE, LINGER, CLOSING, CLOSED, H2 = (
    "proxy", "handshake", "idle", "headers", "active", "linger", "closing", "closed", "h2")

TRANSITIONS = {
    PROXY: {HANDSHAKE, IDLE, CLOSED},
    HANDSHAKE: {IDLE, H2, CLOSED},
    H2: {CLOSING, CLOSED},
    IDLE: {HEADERS, ACTIVE, CLOSING, CLOSED},
    HEADERS: {ACTIVE, CLOSING, CLOSED},
    ACTIVE: {IDLE, LINGER, CLOSING, CLOSED},
    LINGER: {IDLE, CLOSING, CLOSED},
    CLOSING: {CLOSED},
    CLOSED: set(),
}

_COALESCE_BYTES = 64 * 1024
# Bytes one connection may write per reactor turn.  It also bounds how long a
# cold file (sendfile/pread waiting on the disk) can hold the reactor.
_WRITE_BUDGET_BYTES = 512 * 1024
_READS_PER_EVENT = 4
_PLAIN_FILES = (io.BufferedReader, io.FileIO)
# HTTP/2: reading stops while this much is queued for a peer that does not read
# (PING and SETTINGS acknowledgements would otherwise pile up).
_H2_WIRE_READ_BOUND = 4 * _COALESCE_BYTES
# A draining server keeps an idle keep-alive connection this long for a request
# the client may already be sending (closing at once would fail it).
_DRAIN_IDLE_S = 1.0


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


class _Done:
    """Wire marker: the response before it is completely written."""

    __slots__ = ("status", "body_bytes")

    def __init__(self, status: int, body_bytes: int):
        self.status, self.body_bytes = status, body_bytes


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
        self.state = PROXY if self.cfg.proxy_protocol else HANDSHAKE if handshake else IDLE
        self.http = self._new_http()
        now = time.monotonic()
        self._phase_since = now
        self._first_request = True
        self._draining = False          # the server is stopping: close after the next response
        self._drain_since = 0.0
        self._timer = None
        self._timer_when = 0.0
        # reading
        self._read_on = rx.IN           # the event the read side waits for
        self._peer_eof = False
        self._input_closed = False      # protocol input failed: read only to drain
        self._paused_bytes = 0          # bytes read while a request is in flight
        self._ex: Exchange | None = None  # the request in flight, until the next one starts
        # writing
        self.wire: collections.deque = collections.deque()  # framed pieces, in order
        self.h2: streams.H2Session | None = None
        self._write_on = 0              # 0 = nothing blocked; else the event awaited
        self._last_write = now
        self._close_after_response = False
        self._linger_bytes = 0
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
        self._update()

    def _new_http(self):
        c = self.cfg
        return http1.Http1(c.limit_request_line, c.limit_request_fields,
                           c.limit_request_field_size, c.limit_request_headers_bytes,
                           c.http_parser, max_body_bytes=c.max_body_bytes)

    # -- state ------------------------------------------------------------------
    def _to(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"connection: no transition {self.state} -> {state}")
        self.state = state
        self._phase_since = time.monotonic()

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
                    self._kick()
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
        want = 0
        if self.state == PROXY:
            want = rx.IN
        elif self.state == HANDSHAKE:
            want = self._read_on
        else:
            if self._reading():
                want |= self._read_on | (rx.RDHUP if self._read_on == rx.IN else 0)
            want |= self._write_on
        if want != self._interest:
            self.s.reactor.modify(self.fd, want)
            self._interest = want
        self._arm_deadline()

    def _reading(self) -> bool:
        if self._peer_eof or self.state == CLOSED:
            return False
        if self._input_closed:
            return self.state == CLOSING
        if self.state == H2:
            return self.h2.reading() and _wire_bytes(self.wire) < _H2_WIRE_READ_BOUND
        if self.state in (IDLE, HEADERS, LINGER, CLOSING):
            return True
        if self.state == ACTIVE:
            ex = self._ex
            body = ex.body
            if body is not None and not body.complete:
                return not ex.body_stopped and body.space() > 0
            return self._paused_bytes < self.cfg.pipeline_buffer_bytes
        return False

    # -- deadlines ------------------------------------------------------------------
    def _deadline(self):
        """(when, what) of the nearest deadline of the current phase, or None."""
        c = self.cfg
        st = self.state
        if st == PROXY:
            return self._phase_since + c.proxy_header_timeout_s, "proxy"
        if st == HANDSHAKE:
            return self._phase_since + c.handshake_timeout_s, "handshake"
        if st == IDLE:
            if self._first_request:
                return self._phase_since + c.header_timeout_s, "idle"
            when = self._phase_since + c.keep_alive_s
            if self._draining:
                when = min(when, max(self._phase_since, self._drain_since) + _DRAIN_IDLE_S)
            return when, "idle"
        if st == HEADERS:
            return self._phase_since + c.header_timeout_s, "headers"
        if st in (LINGER, CLOSING):
            return self._phase_since + c.linger_s, "linger"
        if st == H2:
            best = self.h2.deadline()
            if self.wire or self._write_on:
                cand = (self._last_write + c.write_timeout_s, "write")
                if best is None or cand[0] < best[0]:
                    best = cand
            return best
        if st == ACTIVE:
            best = None
            if self.wire or self._write_on:
                best = (self._last_write + c.write_timeout_s, "write")
            when = None if self._peer_eof else self._ex.body_deadline()
            if when is not None and (best is None or when < best[0]):
                best = (when, "body")
            return best
        return None

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
        self._expire(what)
        if self.state != CLOSED:
            self._update()

    def _expire(self, what: str) -> None:
        if what == "proxy":
            log.info("%s: no complete PROXY header in %.1fs; closing", self.peer_text,
                     self.cfg.proxy_header_timeout_s)
            self._close()
        elif what == "handshake":
            log.debug("%s: TLS handshake timed out", self.peer_text)
            self.s.counters.handshakes_failed += 1
            self._close()
        elif what == "idle":
            self._close()
        elif what == "headers":
            log.info("%s: request head not complete in %.1fs: 408", self.peer_text,
                     self.cfg.header_timeout_s)
            self._reply_error(408, "request head timed out")
        elif what == "body":
            ex = self._ex
            log.info("%s: %s: 408", self.peer_text, ex.body_timeout_reason(time.monotonic()))
            if not ex.dispatched:   # the app never saw it: answer here
                self._reply_unstarted(408, "request body timed out")
                return
            self._close_after_response = True
            ex.fail_body(BodyTimeout("request body timed out"))
        elif what == "write":
            log.info("%s: client read nothing for %.1fs; closing", self.peer_text,
                     self.cfg.write_timeout_s)
            self._abort("write timeout")
        elif what == "linger":
            self._close()
        elif what.startswith("h2-"):
            self.h2.expire(what)

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
            self._to(IDLE)
            # Its set-up is over, as a TLS connection's is after the handshake
            # (a server that counts PROXY-state connections as handshaking).
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
        src, dst = _unmapped(info.src), _unmapped(info.dst)
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
            self._to(H2)
            self.s.counters.h2_connections += 1
            self.h2 = streams.H2Session(self)
            self.s.on_handshake_done(self)
            if self._draining:
                self.h2.close_gracefully()
            self._kick()  # our SETTINGS
            if self.state == H2:
                self._do_read()
            return
        self._to(IDLE)
        self.s.on_handshake_done(self)
        self._do_read()  # the client's first request may already be buffered

    # -- reading ------------------------------------------------------------------------
    def _do_read(self) -> None:
        t = self.transport
        for _ in range(_READS_PER_EVENT):
            if not self._reading():
                return
            data = t.recv(self.cfg.recv_bytes)
            if data is WANT_READ:
                self._read_on = rx.IN
                return
            if data is WANT_WRITE:
                self._read_on = rx.OUT
                return
            self._read_on = rx.IN
            if not data:
                self._peer_eof = True
                self._on_peer_eof()
                return
            if self.state == H2:
                self.h2.receive(data)
                if self.state == CLOSED:
                    return
                if len(data) < self.cfg.recv_bytes and not t.has_pending():
                    return
                continue
            if self.state == ACTIVE and (self._ex.body is None or self._ex.body.complete):
                self._paused_bytes += len(data)
            elif self.state == CLOSING:
                continue  # lingering close: discard
            self.http.receive(data)
            self._process()
            if self.state == CLOSED:
                return
            if len(data) < self.cfg.recv_bytes and not t.has_pending():
                return
        if t.has_pending() and self._reading():
            # Out of turns with data already inside TLS: epoll will not
            # announce it, so come back on the next reactor turn.
            self.s.reactor.call_soon(self._continue_read)

    def _continue_read(self) -> None:
        if self.state == CLOSED or not self._reading():
            return
        try:
            self._do_read()
        except (TransportError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))
        if self.state != CLOSED:
            self._update()

    def _on_peer_eof(self) -> None:
        if self.state == H2:
            if self.h2.streams:
                self._abort("client closed with HTTP/2 streams open")
            else:
                self._close()
            return
        if self.state in (IDLE, CLOSING, LINGER):
            self._close()
            return
        if self.state == HEADERS:
            log.debug("%s: closed in the middle of a request head", self.peer_text)
            self._close()
            return
        # ACTIVE: a half-close is allowed once the request is complete; in the
        # middle of a body the client is gone.
        body = self._ex.body
        if body is not None and not body.complete:
            self._abort("client closed before the end of the request body")

    def _process(self) -> None:
        """Pull protocol events until the driver needs data or must wait."""
        http = self.http
        while self.state not in (CLOSED, CLOSING):
            if self.state == ACTIVE:
                body = self._ex.body
                if body is not None and not body.complete and body.space() <= 0:
                    return  # body buffer full: resumes when the app reads
            ev = http.next_event()
            if ev is http1.NEED_DATA:
                if self.state == IDLE and http.has_partial_request():
                    self._to(HEADERS)
                return
            if ev is http1.PAUSED:
                return
            kind = type(ev)
            if kind is http1.Request:
                self._on_request(ev)
            elif kind is http1.Body:
                self._on_body(ev.data)
            elif kind is http1.EndOfBody:
                self._on_body_end()
            elif kind is http1.BadRequest:
                self.s.counters.bad_requests += 1
                log.info("%s: %d %s", self.peer_text, ev.status, ev.reason)
                if self.state == ACTIVE and not self._ex.dispatched:
                    self._reply_unstarted(ev.status, ev.reason)
                elif self.state == ACTIVE:
                    self._input_failed(ev)
                else:
                    self._reply_error(ev.status, ev.reason)
                return
            elif kind is http1.PeerClosed:
                if self.state in (IDLE, LINGER):
                    self._close()
                return

    def _on_request(self, req: http1.Request) -> None:
        self._to(ACTIVE)
        self._first_request = False
        self._ex = ex = Exchange(self, req)
        self._close_after_response = False
        self._paused_bytes = 0
        self._linger_bytes = 0
        self._last_write = ex.started
        length = None
        chunked = False
        for name, value in req.headers:
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = True
        cfg = self.cfg
        refused = ex.admit(length, chunked or bool(length), on_output=self.output_threadsafe,
                           high_water=cfg.high_water_bytes, low_water=cfg.low_water_bytes,
                           on_drained=self._resume_threadsafe,
                           on_first_read=self._first_read_threadsafe,
                           head_only=req.method == b"HEAD",
                           close_after=req.http_version == b"1.0",
                           inline_file_bytes=self.inline_file_bytes)
        if refused == 413:
            self._reply_canned(413, "request body too large")
        elif self.http.they_are_waiting_for_100_continue:
            self._dispatch()   # the body comes once the app asks for it (100 Continue)
        else:
            self._dispatch_when_ready()

    def _dispatch_when_ready(self) -> None:
        ex = self._ex
        if not ex.dispatched and ex.ready_to_dispatch(self.cfg.body_prebuffer_bytes):
            self._dispatch()

    def _dispatch(self) -> None:
        if not self._ex.dispatch():
            self._reply_canned(503, "server busy, retry later",
                               extra_headers=[(b"retry-after", b"1")])

    def _input_failed(self, ev) -> None:
        """Bad bytes while a request is in flight: its body, or what follows it.

        The response in progress still goes out (the app answers a broken body
        with the status the body error carries); then the connection closes.
        """
        ex = self._ex
        if ex.body is not None and not ex.body.complete:
            err = BodyError(ev.reason)
            err.status = ev.status
            ex.fail_body(err)
        ex.body_stopped = True
        self._input_closed = True
        self._close_after_response = True

    def _on_body(self, data: bytes) -> None:
        ex = self._ex
        if self.state == LINGER or ex.body is None or ex.body_stopped:
            self._linger_bytes += len(data)
            if self._linger_bytes > self.cfg.linger_bytes:
                self._close()
            return
        if not ex.feed(data):
            self._close_after_response = True
        if not ex.dispatched:
            self._dispatch_when_ready()

    def _on_body_end(self) -> None:
        ex = self._ex
        if ex.body is not None:
            ex.body.finish()
        if self.state == LINGER:
            self._next_cycle()
        elif not ex.dispatched:
            self._dispatch_when_ready()

    # -- cross-thread entry points (called from workers) ------------------------------
    def _resume_threadsafe(self) -> None:
        self.s.reactor.call_soon_threadsafe(self._resume)

    def _first_read_threadsafe(self) -> None:
        self.s.reactor.call_soon_threadsafe(self._send_continue)

    def output_threadsafe(self) -> None:
        self.s.reactor.call_soon_threadsafe(self._on_output)

    def _resume(self) -> None:
        if self.state != ACTIVE:
            return
        self._ex.body_resumed()
        try:
            self._process()
            self._do_read()  # TLS may hold decrypted records epoll will not announce
        except (TransportError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))
        if self.state != CLOSED:
            self._update()

    def _send_continue(self) -> None:
        if self.state == ACTIVE and self.http.they_are_waiting_for_100_continue:
            self.wire.append(memoryview(self.http.continue_100()))
            self._on_output()

    def _on_output(self) -> None:
        if self.state == CLOSED:
            return
        try:
            self._kick()
        except (TransportError, OSError) as exc:
            self._abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))
        if self.state != CLOSED:
            self._update()

    # -- responses the reactor writes itself ------------------------------------------
    def _reply_error(self, status: int, text: str) -> None:
        """Answer a broken request and close (nothing else can be trusted)."""
        if self.http.can_respond():
            self.wire.append(memoryview(self.http.simple_response(
                status, text, close=True, extra_headers=standard_headers())))
        self._to(CLOSING)
        self._kick()

    def _reply_unstarted(self, status: int, text: str) -> None:
        """The request's body failed before its job went to the pool: the app
        never runs; answer for it, log the exchange, close."""
        ex = self._ex
        ex.stop_job()
        ex.body_stopped = True
        ex.status = status
        self._reply_error(status, text)
        ex.finish(status, len(text) + 1)

    def _reply_canned(self, status: int, text: str, extra_headers=()) -> None:
        """Answer without the app (413, 503); the connection may stay open."""
        body_pending = not self.http.request_complete
        close = False
        if body_pending:
            length = None
            for name, value in self._ex.request.headers:
                if name == b"content-length":
                    length = int(value)
            waiting = self.http.they_are_waiting_for_100_continue
            close = waiting or length is None or length > self.cfg.linger_bytes
        self._ex.body_stopped = True
        data = self.http.simple_response(status, text, close=close,
                                         extra_headers=standard_headers() + list(extra_headers))
        self._ex.status = status
        self._close_after_response = close
        self.wire.append(memoryview(data))
        self.wire.append(_Done(status, len(text) + 1))
        self._kick()

    # -- the write pump ------------------------------------------------------------------
    def _kick(self) -> None:
        """Run the pump now, or once more if it is already running (no nesting)."""
        if self._pumping:
            self._pump_again = True
        else:
            self._pump()

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
        """Move outbound items to the transport until it would block."""
        wire = self.wire
        t = self.transport
        counters = self.s.counters
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
            out = self._ex.out if self._ex is not None else None
            if self.h2 is not None:
                room = _COALESCE_BYTES - _wire_bytes(wire)
                if room > 0 and self.state == H2:
                    try:
                        self.h2.fill(room)
                    except Exception as exc:  # h2 refused a frame: a server bug
                        log.error("%s: cannot frame an HTTP/2 response (%s)", self.peer_text,
                                  type(exc).__name__)
                        self._abort("HTTP/2 framing error", unsent_status=500)
                        return
            elif out is not None:
                # Serialize what is queued, so small pieces leave in one write.
                room = _COALESCE_BYTES - _wire_bytes(wire)
                if room > 0:
                    items = out.pop_all()
                    while items:
                        if room <= 0:
                            out.unpop(items)
                            break
                        try:
                            room -= self._serialize(items.popleft())
                        except Exception as exc:  # the response cannot be framed: a bug
                            # Not the message: it may quote a header value.
                            log.error("%s: cannot frame the response (%s)", self.peer_text,
                                      type(exc).__name__)
                            out.unpop(items)   # the abort releases their file closers
                            self._abort("response framing error", unsent_status=500)
                            return
            if not wire:
                break
            piece = wire[0]
            kind = type(piece)
            if kind is memoryview or kind is tuple:
                view, counted = _coalesce(wire)
                n = t.send(view)
                if n is WANT_WRITE or n is WANT_READ:
                    wire.appendleft((view, counted) if counted else view)
                    self._write_on = rx.OUT if n is WANT_WRITE else rx.IN
                    break
                self._last_write = time.monotonic()
                counters.add("bytes_" + t.send_method, n)
                budget -= n
                if n < len(view):
                    rest = view[n:]
                    wire.appendleft((rest, counted) if counted else rest)
                elif counted:
                    self._ex.bytes_sent += counted
                    if out is not None:
                        out.sent(counted)
            elif kind is FileSend:
                head = piece.head
                if head is not None:
                    n = t.send_more(head) if piece.head_more else t.send(head)
                    if n is WANT_WRITE or n is WANT_READ:
                        self._write_on = rx.OUT if n is WANT_WRITE else rx.IN
                        break
                    piece.started = True
                    self._last_write = time.monotonic()
                    counters.add("bytes_" + t.send_method, n)
                    piece.head = head[n:] if n < len(head) else None
                    continue
                n = t.send_file(piece.src.fd, piece.offset, piece.left)
                if n is WANT_WRITE or n is WANT_READ:
                    self._write_on = rx.OUT if n is WANT_WRITE else rx.IN
                    break
                if n == 0:
                    log.error("%s: file ended %d bytes early (truncated while sent?): "
                              "aborting the connection", self.peer_text, piece.left)
                    self._abort("file shrank during transfer", unsent_status=500)
                    return
                piece.started = True
                self._last_write = time.monotonic()
                counters.add("bytes_" + t.file_method, n)
                budget -= n
                if piece.counted:
                    self._ex.bytes_sent += n
                piece.offset += n
                piece.left -= n
                if piece.left == 0:
                    wire.popleft()
                    self.drop_file(piece.src)
            elif kind is _Done:
                wire.popleft()
                self._response_done(piece)
            elif kind is streams.StreamDone:
                wire.popleft()
                self.h2.written(piece)
            elif kind is Abort:
                wire.popleft()
                log.info("%s: response aborted: %s", self.peer_text, piece.reason)
                self._abort(piece.reason, unsent_status=500)
                return
        if self.state == CLOSED:
            return
        if not t.flush():
            self._write_on = rx.OUT
        elif self.state == CLOSING and not wire and not self._write_on:
            self._shutdown()

    # -- what the HTTP/2 session asks of its connection ---------------------------------
    @property
    def closed(self) -> bool:
        return self.state == CLOSED

    def output_ready(self) -> None:
        """Frames are queued or may be framed now: run the pump."""
        self._on_output()

    def h2_finished(self) -> None:
        """GOAWAY is queued and no stream is left: flush, then close."""
        if self.state == H2:
            self._to(CLOSING)
            self._on_output()

    def abort(self, reason: str) -> None:
        self._abort(reason, notable=True)

    def shed(self) -> None:
        """Closed before its handshake (or PROXY header) finished, to make room
        for others at a limit (server.py chooses and logs)."""
        self._close()

    def abort_file_shrank(self) -> None:
        self._abort("file shrank during transfer", unsent_status=500)

    def _serialize(self, item) -> int:
        """Frame one response item onto the wire; the bytes it added there
        (a file range counts as a full coalescing buffer)."""
        http = self.http
        wire = self.wire
        kind = type(item)
        if kind is Chunk:
            data = item.data
            n = len(data)
            added = 0
            for p in http.body(data):
                if p is data:
                    wire.append((memoryview(p).cast("B"), n))
                else:
                    wire.append(memoryview(p))
                added += len(p)
            return added
        if kind is Head:
            close = (item.close or self._close_after_response or self._draining
                     or self._must_close_after())
            self._close_after_response = close
            self._ex.status = item.status
            self._ex.response_headers = item.headers
            head = http.response_head(item.status, item.headers, item.reason, close)
            wire.append(memoryview(head))
            return len(head)
        if kind is FileRange:
            self.s.counters.file_transfers += 1
            if item.count == 0:
                self.drop_file(item)
                return 0
            placeholder = http1.FileBody(item.count)
            for p in http.body(placeholder):
                # The queue's hold on the range passes to this one piece.
                wire.append(FileSend(item, item.offset, item.count, counted=True)
                            if p is placeholder else memoryview(p))
            return _COALESCE_BYTES
        if kind is End:
            tail = http.end()
            if tail:
                wire.append(memoryview(tail))
            wire.append(_Done(item.status, item.body_bytes))
            return len(tail)
        if kind is Abort:
            wire.append(item)
        return 0

    def _must_close_after(self) -> bool:
        """Close after this response if the unread request body cannot be drained."""
        if self.http.request_complete:
            return False
        if self.http.they_are_waiting_for_100_continue:
            return True  # the client may never send the body it announced
        return self._ex.body is not None and self._ex.body_stopped

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
        if _closes_only_a_file(closer):
            close_iterable(closer)  # close(2): no app code, no wait, no hop to the pool
        else:
            self.s.pool.submit_cleanup(lambda: close_iterable(closer))

    def _response_done(self, done: _Done) -> None:
        self._ex.finish(done.status, done.body_bytes)
        if self._close_after_response or not self._can_keep_alive():
            self._to(CLOSING)
            return
        if self.http.request_complete:
            self._next_cycle()
        else:
            self._linger_bytes = 0
            self._to(LINGER)

    def _can_keep_alive(self) -> bool:
        h = self.http
        return h.response_complete and (h.keep_alive or not h.request_complete) and not self._peer_eof

    def _next_cycle(self) -> None:
        self._ex = None
        self._paused_bytes = 0
        self.http.start_next_cycle()
        self._to(IDLE)
        self._process()

    # -- ending ------------------------------------------------------------------------------
    def close_gracefully(self) -> None:
        """Server shutdown (TERM, reload, --max-requests): drain without failing a request.

        The next response head says `Connection: close`.  A keep-alive client
        may be sending its next request right now, so an idle connection is
        not closed at once: it gets `_DRAIN_IDLE_S` to start one (a fresh
        connection keeps its header timeout).  --graceful-timeout bounds it all.
        """
        if self.state == CLOSING and self._shut:
            self._close()
            return
        if not self._draining:
            self._draining = True
            self._drain_since = time.monotonic()
            if self.state == H2:
                self.h2.close_gracefully()
            if self.state != CLOSED:
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
        if self._peer_eof:
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
        if self._timer is not None:
            self._timer.cancel()
        if self._ex is not None:  # every request that reached the app gets its line
            for item in self._ex.abandon(unsent_status):
                self.drop_file(item)
        if self.h2 is not None:
            self.h2.abandon_all(unsent_status)
        for piece in self.wire:
            kind = type(piece)
            if kind is FileSend:
                self.drop_file(piece.src)
            elif kind is streams.StreamDone:
                piece.stream.ex.abandon(unsent_status)
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


def _closes_only_a_file(closer) -> bool:
    """True when `closer.close()` is just open()'s own file object closing:
    our wrapper, a plain file, and nobody re-pointed either close at app code
    (Django sets `file.close = response.close`, which fires request_finished)."""
    if type(closer) is not FileWrapper:
        return False
    f = closer.filelike
    return (type(f) in _PLAIN_FILES and "close" not in getattr(f, "__dict__", ())
            and closer.close == f.close)


def _unmapped(addr):
    """(host, port) with an IPv4-mapped IPv6 host as IPv4, as forwarded.py gives
    REMOTE_ADDR; anything else unchanged."""
    if isinstance(addr, tuple) and addr[0].startswith("::ffff:"):
        mapped = ipaddress.IPv6Address(addr[0]).ipv4_mapped
        if mapped is not None:
            return (str(mapped), addr[1])
    return addr


def _wire_bytes(wire) -> int:
    """Bytes of plain pieces queued for the socket (a file range counts as full)."""
    total = 0
    for p in wire:
        kind = type(p)
        if kind is memoryview:
            total += len(p)
        elif kind is tuple:
            total += len(p[0])
        elif kind is FileSend:
            return _COALESCE_BYTES
    return total


def _coalesce(wire):
    """Pop the leading run of small byte pieces as one buffer.

    Returns (view, counted): `counted` is the outbound-queue payload the view
    carries, credited back to the queue once the whole view is written.
    """
    first = wire.popleft()
    view, counted = (first, 0) if type(first) is memoryview else first
    if len(view) >= _COALESCE_BYTES or not wire:
        return view, counted
    parts = [view]
    total = len(view)
    while wire and total < _COALESCE_BYTES:
        p = wire[0]
        kind = type(p)
        if kind is memoryview:
            v, c = p, 0
        elif kind is tuple:
            v, c = p
        else:
            break
        if total + len(v) > 4 * _COALESCE_BYTES:
            break  # a big chunk goes out on its own, uncopied
        wire.popleft()
        parts.append(v)
        total += len(v)
        counted += c
    if len(parts) == 1:
        return view, counted
    return memoryview(b"".join(parts)), counted
