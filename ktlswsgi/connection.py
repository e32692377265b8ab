"""One client connection: a transport joined to a protocol session, on the reactor.

Owns: the connection's life (its states and their deadlines), the PROXY
header phase (before TLS; `proxyreader.py` reads it), the TLS handshake,
the choice of session by the ALPN the handshake settled (`h2session.H2Session`
or `h1session.H1Session`), reading bytes into the session, its deadlines
and the write timeout, starting the write pump (`pump.py`) and the
lingering close.  The only module that joins a transport to a protocol.
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

The session's interface, both ways, is `session.Session`.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from . import proxyreader, reactor as rx
from .filewrapper import INLINE_FILE_BYTES
from .h1session import H1Session
from .h2session import H2Session
from .pump import WritePump
from .transport import WANT_READ, WANT_WRITE, TransportError
from .wsgi import RequestFacts, tls_environ

log = logging.getLogger("ktlswsgi.connection")

PROXY, HANDSHAKE, OPEN, CLOSING, CLOSED = "proxy", "handshake", "open", "closing", "closed"

TRANSITIONS = {
    PROXY: {HANDSHAKE, OPEN, CLOSED},
    HANDSHAKE: {OPEN, CLOSED},
    OPEN: {CLOSING, CLOSED},
    CLOSING: {CLOSED},
    CLOSED: set(),
}

_READS_PER_EVENT = 4
_IN, _RDHUP = rx.IN, rx.RDHUP


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
        self._proxy_reader = None
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
        self.pump = WritePump(self, transport, shared.counters, shared.pool)
        self._shut = False
        self._interest = 0
        self._output_soon = False       # a worker's output_threadsafe() is pending
        self.tls_info: dict | None = None
        self.tls_environ: dict | None = None  # wsgi.tls_environ(), for every request
        self.request_facts: RequestFacts | None = None  # once OPEN
        # HTTP/1 files up to this size go out with their head (filewrapper.py);
        # 0 once kTLS TX is engaged: SSL_sendfile.
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
        s = self.s
        self.request_facts = RequestFacts(s.app, s.scheme, self.server_addr, self.peer,
                                          self.peer_ip, self.forwarded_trust,
                                          self.tls_environ, s.multiprocess)
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
                write_on = self.pump.write_on
                if write_on and ev & (write_on | rx.ERR):
                    self.kick()
                if self.state != CLOSED and self._reading() and ev & (self._read_on | rx.ERR | rx.RDHUP):
                    self._do_read()
                elif ev & rx.ERR and not self.pump.write_on:
                    self.abort("socket error or hang-up")
        except (TransportError, OSError) as exc:
            self._failed(exc)
        if self.state != CLOSED:
            self._update()

    def _update(self) -> None:
        """Re-arm epoll interest and the phase deadline from the current state."""
        st = self.state
        if st == OPEN or st == CLOSING:
            want = self.pump.write_on
            # _reading(), inline: CLOSING reads to discard
            if not self.peer_eof and (st == CLOSING or self.session.wants_read):
                read_on = self._read_on
                want |= read_on | _RDHUP if read_on == _IN else read_on
        elif st == CLOSED:
            return
        elif st == PROXY:
            want = _IN
        else:   # HANDSHAKE
            want = self._read_on
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
            self._failed(exc)
        if self.state != CLOSED:
            self._update()

    def call_threadsafe(self, fn, *args) -> None:
        """From a worker: run `fn` on the reactor soon (see call())."""
        self.s.reactor.call_soon_threadsafe(lambda: self.call(fn, *args))

    def output_threadsafe(self) -> None:
        """From a worker: new output is queued; run the pump (once for all
        the streams whose output came before it runs)."""
        if not self._output_soon:
            self._output_soon = True
            self.s.reactor.call_soon_threadsafe(self._on_output)

    def _on_output(self) -> None:
        self._output_soon = False   # before the pump looks at the queues
        self.call(self._output)

    def _output(self) -> None:
        pump = self.pump
        if (self.state != OPEN or pump.wire or pump.write_on
                or not self.session.send_whole()):
            self.kick()

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
        pump = self.pump
        if pump.wire or pump.write_on:
            cand = (pump.last_write + c.write_timeout_s, "write")
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
            self.close()
        elif what == "handshake":
            log.debug("%s: TLS handshake timed out", self.peer_text)
            self.s.counters.handshakes_failed += 1
            self.close()
        elif what == "write":
            log.info("%s: client read nothing for %.1fs; closing", self.peer_text,
                     self.cfg.write_timeout_s)
            self.abort("write timeout")
        elif what == "linger":
            self.close()
        else:
            self.session.expire(what)

    # -- PROXY protocol header (proxyreader.py) ----------------------------------------
    def _begin_proxy_header(self, proxy_trust) -> None:
        # The DIRECT peer decides: only a listed load balancer may say who
        # the client is.  Anyone else could name any address, so it gets no
        # say at all (and no read).
        if not proxy_trust.trusts(self.peer_ip):
            log.info("%s: peer not in --proxy-allow-from, PROXY header not accepted; closing",
                     self.peer_text)
            self.close()
            return
        self._proxy_reader = proxyreader.ProxyHeaderReader(self.sock,
                                                           self.cfg.proxy_header_max_bytes)
        try:
            self._read_proxy_header()  # the header usually arrives with the connection
        except (TransportError, OSError) as exc:  # from the first read after it
            self._failed(exc)

    def _read_proxy_header(self) -> None:
        result = self._proxy_reader.read()
        if result is proxyreader.NEED_DATA:
            return
        self._proxy_reader = None
        if type(result) is proxyreader.ProxyError:
            log.info("%s: no valid PROXY header (%s); closing", self.peer_text, result.reason)
            self.close()
            return
        log.debug("%s: PROXY v%d %s %s", self.peer_text, result.version, result.command,
                  result.family)
        named = proxyreader.addresses(result)
        if named is not None:  # the client behind the proxy becomes the peer
            self.peer, self.server_addr = named
            unix = not isinstance(self.peer, tuple)
            self.peer_text = "unix" if unix else self.peer[0]
            self.peer_ip = None if unix else self.peer[0]
        if self._tls:
            self._to(HANDSHAKE)
            self._do_handshake()
        else:
            # Its set-up is over, as a TLS connection's is after the handshake
            # (a server that counts PROXY-state connections as handshaking).
            self._open(H1Session(self))
            self.s.on_handshake_done(self)
            if self._reading():
                self._do_read()  # the request may have come with the header

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
            self.close()
            return
        if r is WANT_READ:
            self._read_on = rx.IN
            return
        if r is WANT_WRITE:
            self._read_on = rx.OUT
            return
        if not self.transport.flush():
            self.pump.write_on = rx.OUT
        self._read_on = rx.IN
        self.s.counters.handshakes_ok += 1
        info = self.transport.info()
        self.tls_info = info
        self.tls_environ = tls_environ(info)
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
        if self.state == OPEN and self._reading():
            self._do_read()  # the client's first request may already be buffered

    # -- reading ------------------------------------------------------------------------
    def _do_read(self) -> None:
        """Read into the session while it wants input (the caller checked
        that it wants some now)."""
        t = self.transport
        recv_bytes = self.cfg.recv_bytes
        for _ in range(_READS_PER_EVENT):
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
                    self.close()
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
            if not self._reading():
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

    # -- writing ------------------------------------------------------------------------
    def kick(self) -> None:
        """Run the write pump (pump.py); once output is flushed, a closing
        connection shuts down."""
        if self.pump.run() and self.state == CLOSING:
            self._shutdown()

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
            self.close()
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
            self.pump.write_on = rx.OUT if r is WANT_WRITE else rx.IN
            return
        self._shut = True
        if self.peer_eof:
            self.close()

    def abort(self, reason: str, notable: bool = False, unsent_status: int = 499) -> None:
        """Close at once, counted and logged (INFO if `notable`).  A request
        in flight still gets its access-log line: with its response's status
        if the head went out, else `unsent_status` (499, nginx's "client
        closed request", unless the server gave up)."""
        if self.state == CLOSED:
            return
        log.log(logging.INFO if notable else logging.DEBUG,
                "%s: aborting connection (%s) in state %s", self.peer_text, reason, self.state)
        self.s.counters.aborted_connections += 1
        self.close(unsent_status)

    def _failed(self, exc: Exception) -> None:
        """The transport or the socket raised: abort."""
        self.abort(f"{type(exc).__name__}: {exc}", getattr(exc, "notable", False))

    def close(self, unsent_status: int = 499) -> None:
        """Close at once, quietly: an idle or lingering connection's end, a
        failed set-up, or a handshake shed at a limit (server.py logs why)."""
        if self.state == CLOSED:
            return
        self.state = CLOSED
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
        if self.session is not None:  # every request that reached the app gets its line
            self.session.abandon_all(unsent_status)
        self.pump.release_all(unsent_status)
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
