"""HTTP/1.1 on one connection: its requests in order, one exchange at a time.

Owns: the HTTP/1 driver (`http1.Http1`: h11, or llhttp for bodiless heads),
the exchange of the request in flight and the session's states, the request
body fed to that exchange (its job goes to the pool once a small body is
complete), the pipelined bytes held while a request runs, keep-alive, 100
Continue, the answers the server gives itself (400/408/413/431/503), and the
framing of the exchange's response items into wire pieces.  It touches the
wire only in `fill()`; it reaches the transport only through the connection.
Runs on the reactor thread; the workers reach it through the connection's
thread-safe `call_threadsafe`.

States (the connection's own, PROXY / HANDSHAKE / OPEN / CLOSING, are in
connection.py):

    IDLE -> HEADERS -> ACTIVE -> (IDLE | LINGER) ... -> DONE

  IDLE     waiting for a request's first byte    keep_alive_s (the first: header_timeout_s)
  HEADERS  a request head is arriving            header_timeout_s -> 408
  ACTIVE   a request is in the app / being sent  body stall or below body_min_rate -> 408
  LINGER   response sent, unread body drained    linger_s / linger_bytes, else close
  DONE     no more requests: the connection flushes and closes
"""
from __future__ import annotations

import collections
import logging
import time
from itertools import islice

from . import http1
from .exchange import Exchange, body_framing
from .outbound import Abort, Chunk, End, FileRange, Head
from .wire import Done, FileSend
from .wsgi import BodyError, BodyTimeout

log = logging.getLogger("ktlswsgi.connection")

IDLE, HEADERS, ACTIVE, LINGER, DONE = "idle", "headers", "active", "linger", "done"

TRANSITIONS = {
    IDLE: {HEADERS, ACTIVE, DONE},
    HEADERS: {ACTIVE, DONE},
    ACTIVE: {IDLE, LINGER, DONE},
    LINGER: {IDLE, DONE},
    DONE: set(),
}

# A file range counts as this many bytes of the wire's coalescing room.
_FILE_ROOM_BYTES = 64 * 1024
# A draining server keeps an idle keep-alive connection this long for a request
# the client may already be sending (closing at once would fail it).
DRAIN_IDLE_S = 1.0


class H1Session:
    """See the module docstring; the interface is `session.Session`."""

    def __init__(self, conn):
        self.conn = conn
        self.cfg = c = conn.cfg
        self.http = http1.Http1(c.limit_request_line, c.limit_request_fields,
                                c.limit_request_field_size, c.limit_request_headers_bytes,
                                c.http, max_body_bytes=c.max_body_bytes)
        self.state = IDLE
        self._phase_since = time.monotonic()
        self._first_request = True
        self._draining = False          # the server is stopping: close after the next response
        self._drain_since = 0.0
        self._input_closed = False      # protocol input failed: nothing more is parsed
        self._paused_bytes = 0          # bytes read while a request is in flight
        self._linger_bytes = 0
        self._close_after_response = False
        self.ex: Exchange | None = None  # the request in flight, until the next one starts
        self._staged: collections.deque = collections.deque()  # pieces fill() adds first
        self._framed_whole = False      # the exchange's whole response is on the wire
        # HTTP/1 files up to this size are read by the worker and sent with
        # their head (filewrapper.py); 0 once kTLS TX is engaged: SSL_sendfile.
        self.inline_file_bytes = conn.inline_file_bytes
        self._water = (c.high_water_bytes, c.low_water_bytes)  # the outbound queue's marks

    def _to(self, state: str) -> None:
        if state not in TRANSITIONS[self.state]:
            raise RuntimeError(f"h1 session: no transition {self.state} -> {state}")
        self.state = state
        self._phase_since = time.monotonic()

    def _finish(self) -> None:
        """No more requests on this connection: flush what is queued, then close."""
        if self.state != DONE:
            self._to(DONE)
        self.conn.finish()

    # -- the session interface ------------------------------------------------------
    def start(self) -> None:
        """The connection is open (after the handshake or the PROXY header)."""

    @property
    def wants_read(self) -> bool:
        st = self.state
        if self._input_closed or st == DONE:
            return False
        if st == ACTIVE:
            ex = self.ex
            body = ex.body
            if body is not None and not body.complete:
                return not ex.body_stopped and body.space() > 0
            return self._paused_bytes < self.cfg.pipeline_buffer_bytes
        return True

    def receive(self, data: bytes) -> None:
        if self.state == IDLE:
            req = self.http.whole_request(data)
            if req is not None:   # the usual case: one whole head without a body
                self._on_request(req, whole=True)
                return
        elif self.state == ACTIVE and (self.ex.body is None or self.ex.body.complete):
            self._paused_bytes += len(data)
        self.http.receive(data)
        self._process()

    def peer_closed(self) -> None:
        """The client closed its side (EOF)."""
        st = self.state
        if st in (IDLE, LINGER, DONE):
            self.conn.close()
        elif st == HEADERS:
            log.debug("%s: closed in the middle of a request head", self.conn.peer_text)
            self.conn.close()
        else:
            # ACTIVE: a half-close is allowed once the request is complete; in
            # the middle of a body the client is gone.
            body = self.ex.body
            if body is not None and not body.complete:
                self.conn.abort("client closed before the end of the request body", notable=True)

    def deadline(self):
        """(when, what) of the session's nearest deadline, or None."""
        c = self.cfg
        st = self.state
        if st == IDLE:
            if self._first_request:
                return self._phase_since + c.header_timeout_s, "idle"
            when = self._phase_since + c.keep_alive_s
            if self._draining:
                when = min(when, max(self._phase_since, self._drain_since) + DRAIN_IDLE_S)
            return when, "idle"
        if st == HEADERS:
            return self._phase_since + c.header_timeout_s, "headers"
        if st == LINGER:
            return self._phase_since + c.linger_s, "linger"
        if st == ACTIVE and self.ex.body is not None and not self.conn.peer_eof:
            when = self.ex.body_deadline()
            if when is not None:
                return when, "body"
        return None

    def expire(self, what: str) -> None:
        if what in ("idle", "linger"):
            self.conn.close()
        elif what == "headers":
            log.info("%s: request head not complete in %.1fs: 408", self.conn.peer_text,
                     self.cfg.header_timeout_s)
            self._reply_error(408, "request head timed out")
        elif what == "body":
            ex = self.ex
            log.info("%s: %s: 408", self.conn.peer_text,
                     ex.body_timeout_reason(time.monotonic()))
            if not ex.dispatched:   # the app never saw it: answer here
                self._reply_unstarted(408, "request body timed out")
                return
            self._close_after_response = True
            ex.fail_body(BodyTimeout("request body timed out"))

    def fill(self, wire, room: int) -> None:
        """Frame what is ready into the wire, up to about `room` bytes."""
        staged = self._staged
        while staged:
            piece = staged.popleft()
            wire.append(piece)
            if type(piece) is Done:
                return   # the next response starts only once this one is written
        out = self.ex.out if self.ex is not None else None
        if out is None or room <= 0 or self._framed_whole:
            return
        items = out.pop_all()
        if len(items) > 1 and type(items[0]) is Head and type(items[-1]) is End:
            if self._frame_whole(wire, items, room):
                return
        while items:
            if room <= 0:
                out.unpop(items)
                break
            try:
                room -= self._serialize(wire, items.popleft())
            except Exception as exc:  # the response cannot be framed: a bug
                out.unpop(items)   # the abort releases their file closers
                self._framing_failed(exc)
                return

    def send_whole(self) -> bool:
        ex = self.ex
        if ex is None or self._framed_whole or self._staged or ex.out is None:
            return False
        whole = ex.out.pop_whole()
        if whole is None:
            return False
        head, data, end = whole
        self._framed_whole = True
        try:
            frame = self.http.whole_response(head.status, head.headers, head.reason,
                                             self._close_for(head), data)
        except Exception as exc:  # the response cannot be framed: a bug
            self._framing_failed(exc)
            return True
        pump = self.conn.pump
        if pump.send_whole(frame, ex, len(data)):
            self._written(end.status, end.body_bytes)
        else:
            pump.wire.append(Done(ex, end.status, end.body_bytes))
            self.conn.kick()
        return True

    def written(self, done: Done) -> None:
        """The response before `done` is completely handed to the transport."""
        self._written(done.status, done.body_bytes)

    def _written(self, status: int, body_bytes: int) -> None:
        self.ex.finish(status, body_bytes)
        if self._close_after_response or not self._can_keep_alive():
            self._finish()
            return
        if self.http.request_complete:
            self._next_cycle()
        else:
            self._linger_bytes = 0
            self._to(LINGER)

    def close_gracefully(self) -> None:
        """Server shutdown: the next response head says `Connection: close`.  A
        keep-alive client may be sending its next request right now, so an
        idle connection is not closed at once: it gets DRAIN_IDLE_S to start
        one (a fresh connection keeps its header timeout)."""
        if not self._draining:
            self._draining = True
            self._drain_since = time.monotonic()

    def abandon_all(self, unsent_status: int) -> None:
        """The connection is closing: every request that reached the app gets
        its log line, and its queued files are released."""
        if self.ex is not None:
            for item in self.ex.abandon(unsent_status):
                self.conn.pump.drop_file(item)
        self._staged.clear()

    # -- requests in ---------------------------------------------------------------------
    def _process(self) -> None:
        """Pull protocol events until the driver needs data or must wait."""
        http = self.http
        conn = self.conn
        while self.state != DONE and not conn.closed:
            if self.state == ACTIVE:
                body = self.ex.body
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
                self.conn.s.counters.bad_requests += 1
                log.info("%s: %d %s", self.conn.peer_text, ev.status, ev.reason)
                if self.state == ACTIVE and not self.ex.dispatched:
                    self._reply_unstarted(ev.status, ev.reason)
                elif self.state == ACTIVE:
                    self._input_failed(ev)
                else:
                    self._reply_error(ev.status, ev.reason)
                return
            elif kind is http1.PeerClosed:
                if self.state in (IDLE, LINGER):
                    self.conn.close()
                return

    def _on_request(self, req: http1.Request, whole: bool = False) -> None:
        """A request head is in; `whole`: from whole_request, so no body and
        no Expect (the C parser refuses both)."""
        conn = self.conn
        self._to(ACTIVE)
        self._first_request = False
        self.ex = ex = Exchange(conn, req)
        self._framed_whole = False
        self._close_after_response = False
        self._paused_bytes = 0
        self._linger_bytes = 0
        conn.pump.mark_write_start(ex.started)
        length, chunked = (None, False) if whole else body_framing(req.headers)
        has_body = chunked or bool(length)
        high_water, low_water = self._water
        refused = ex.admit(length, has_body, on_output=conn.output_threadsafe,
                           high_water=high_water, low_water=low_water,
                           on_drained=self._resume_threadsafe if has_body else None,
                           on_first_read=self._send_continue_threadsafe if has_body else None,
                           head_only=req.method == b"HEAD",
                           close_after=req.http_version == b"1.0",
                           inline_file_bytes=self.inline_file_bytes)
        if whole:
            self._dispatch()
        elif refused == 413:
            self._reply_canned(413, "request body too large")
        elif self.http.they_are_waiting_for_100_continue:
            self._dispatch()   # the body comes once the app asks for it (100 Continue)
        else:
            self._dispatch_when_ready()

    def _dispatch_when_ready(self) -> None:
        ex = self.ex
        if not ex.dispatched and ex.ready_to_dispatch(self.cfg.body_prebuffer_bytes):
            self._dispatch()

    def _dispatch(self) -> None:
        if not self.ex.dispatch():
            self._reply_canned(503, "server busy, retry later",
                               extra_headers=[(b"retry-after", b"1")])

    def _input_failed(self, ev) -> None:
        """Bad bytes while a request is in flight: its body, or what follows it.

        The response in progress still goes out (the app answers a broken body
        with the status the body error carries); then the connection closes.
        """
        ex = self.ex
        if ex.body is not None and not ex.body.complete:
            err = BodyError(ev.reason)
            err.status = ev.status
            ex.fail_body(err)
        ex.body_stopped = True
        self._input_closed = True
        self._close_after_response = True

    def _on_body(self, data: bytes) -> None:
        ex = self.ex
        if self.state == LINGER or ex.body is None or ex.body_stopped:
            self._linger_bytes += len(data)
            if self._linger_bytes > self.cfg.linger_bytes:
                self.conn.close()
            return
        if not ex.feed(data):
            self._close_after_response = True
        if not ex.dispatched:
            self._dispatch_when_ready()

    def _on_body_end(self) -> None:
        ex = self.ex
        if ex.body is not None:
            ex.body.finish()
        if self.state == LINGER:
            self._next_cycle()
        elif not ex.dispatched:
            self._dispatch_when_ready()

    def _next_cycle(self) -> None:
        self.ex = None
        self._paused_bytes = 0
        waiting = self.http.start_next_cycle()
        self._to(IDLE)
        if waiting:
            self._process()

    # -- from the workers (run on the reactor by the connection) ----------------------------
    def _resume_threadsafe(self) -> None:
        self.conn.call_threadsafe(self._resume)

    def _send_continue_threadsafe(self) -> None:
        self.conn.call_threadsafe(self._send_continue)

    def _resume(self) -> None:
        """The app freed room in a full body buffer: read on."""
        if self.state != ACTIVE:
            return
        self.ex.body_resumed()
        self._process()
        self.conn.read_more()   # TLS may hold decrypted records epoll will not announce

    def _send_continue(self) -> None:
        if self.state == ACTIVE and self.http.they_are_waiting_for_100_continue:
            self._staged.append(memoryview(self.http.continue_100()))
            self.conn.kick()

    # -- answers without the app -------------------------------------------------------------
    def _reply_error(self, status: int, text: str) -> None:
        """Answer a broken request and close (nothing else can be trusted)."""
        if self.http.can_respond():
            self._staged.append(memoryview(self.http.simple_response(status, text, close=True)))
        self._finish()

    def _reply_unstarted(self, status: int, text: str) -> None:
        """The request failed before its job went to the pool: the app never
        runs; answer for it, log the exchange, close."""
        ex = self.ex
        ex.stop_job()
        ex.body_stopped = True
        ex.status = status
        self._reply_error(status, text)
        ex.finish(status, len(text) + 1)

    def _reply_canned(self, status: int, text: str, extra_headers=()) -> None:
        """Answer without the app (413, 503); the connection may stay open."""
        ex = self.ex
        close = False
        if not self.http.request_complete:
            length = body_framing(ex.request.headers)[0]
            waiting = self.http.they_are_waiting_for_100_continue
            close = waiting or length is None or length > self.cfg.linger_bytes
        ex.body_stopped = True
        data = self.http.simple_response(status, text, close=close, extra_headers=extra_headers)
        ex.status = status
        self._close_after_response = close
        self._staged.append(memoryview(data))
        self._staged.append(Done(ex, status, len(text) + 1))
        self.conn.kick()

    # -- responses out ------------------------------------------------------------------------
    def _frame_whole(self, wire, items, room: int) -> bool:
        """A whole response of bytes chunks popped at once (the usual case),
        within `room`: framed as one buffer, as `_serialize` would frame its
        items one by one.  False (nothing done) for anything else."""
        datas = []
        n = 0
        for item in islice(items, 1, len(items) - 1):
            data = item.data if type(item) is Chunk else None
            if type(data) is not bytes:
                return False
            datas.append(data)
            n += len(data)
        if n > room:
            return False
        ex = self.ex
        head, end = items[0], items[-1]
        try:
            parts = [self._head_bytes(head)]
            parts += self.http.body_to_end(datas, n)
        except Exception as exc:  # the response cannot be framed: a bug
            self._framing_failed(exc)
            return True
        wire.append((memoryview(b"".join(parts)), ((ex, n),)) if n else
                    memoryview(b"".join(parts)))
        wire.append(Done(ex, end.status, end.body_bytes))
        self._framed_whole = True
        return True

    def _framing_failed(self, exc: Exception) -> None:
        """A response that cannot be framed (a bug): logged by its error's
        type, not its message, which may quote a header value; the
        connection is aborted (500 in the access log)."""
        log.error("%s: cannot frame the response (%s)", self.conn.peer_text,
                  type(exc).__name__)
        self.conn.abort("response framing error", notable=True, unsent_status=500)

    def _head_bytes(self, item) -> bytes:
        """Frame a response head (`Head` item), deciding the connection's close."""
        return self.http.response_head(item.status, item.headers, item.reason,
                                       self._close_for(item))

    def _close_for(self, head) -> bool:
        """Whether the connection closes after the response `head` begins
        (also recorded: the exchange's status and headers for its log line)."""
        close = (head.close or self._close_after_response or self._draining
                 or self._must_close_after())
        self._close_after_response = close
        ex = self.ex
        ex.status = head.status
        ex.response_headers = head.headers
        return close

    def _serialize(self, wire, item) -> int:
        """Frame one response item onto the wire; the bytes it added there
        (a file range counts as a full coalescing buffer)."""
        http = self.http
        ex = self.ex
        kind = type(item)
        if kind is Chunk:
            data = item.data
            n = len(data)
            added = 0
            for p in http.body(data):
                if p is data:
                    wire.append((memoryview(p).cast("B"), ((ex, n),)))
                else:
                    wire.append(memoryview(p))
                added += len(p)
            return added
        if kind is Head:
            head = self._head_bytes(item)
            wire.append(memoryview(head))
            return len(head)
        if kind is FileRange:
            self.conn.s.counters.file_transfers += 1
            if item.count == 0:
                self.conn.pump.drop_file(item)
                return 0
            placeholder = http1.FileBody(item.count)
            for p in http.body(placeholder):
                # The queue's hold on the range passes to this one piece.
                wire.append(FileSend(item, item.offset, item.count, owner=ex)
                            if p is placeholder else memoryview(p))
            return _FILE_ROOM_BYTES
        if kind is End:
            tail = http.end()
            if tail:
                wire.append(memoryview(tail))
            wire.append(Done(ex, item.status, item.body_bytes))
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
        return self.ex.body is not None and self.ex.body_stopped

    def _can_keep_alive(self) -> bool:
        h = self.http
        return (h.response_complete and (h.keep_alive or not h.request_complete)
                and not self.conn.peer_eof)

