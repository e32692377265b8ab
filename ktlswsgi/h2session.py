"""HTTP/2 on one connection: its streams, between the connection and the h2 driver.

The HTTP/2 session (h1session.H1Session's sibling; the interface is
`session.Session`).  Owns: each stream's exchange (one WSGI job on the pool) and its outbound
queue; request bodies fed from DATA frames, the flow-control windows opened
as the app reads (never ahead of the per-stream body buffer); the scheduler
that turns the streams' queued responses into frames for the connection's
wire, round-robin, one frame per stream per pass, within the connection and
stream windows and the peer's SETTINGS_MAX_FRAME_SIZE; GOAWAY on errors and
idle; graceful shutdown (RFC 9113 6.8: GOAWAY(2^31-1) and a PING, at a
moment with no stream open if one comes soon, then the final GOAWAY once the
PING is acknowledged); the HTTP/2 deadlines (idle, body stall and rate,
flow-control stall: a stream that gets less than PROGRESS_BYTES of window in
--write-timeout is reset); how many of a connection's streams are active at
once (--h2-max-active-streams: in the app or sending, each may hold a worker
and an open file).

File ranges become DATA frames whose payload is not copied when kTLS TX is
engaged: a 9-byte header from userspace, sent with MSG_MORE so that the
kernel opens a record with it, then the payload by SSL_sendfile; the payload
of a frame is 16384 - 9 bytes, so header and payload fill exactly one TLS
record.  Each such frame is one `wire.FileSend` holding the stream's
`FileRange`: a reset discards the frames not yet started and gives back
their window, and the file is closed only when no frame names it.  Without
kTLS, several frames' payloads are read with one preadv into a cache-sized
buffer with room left for the headers, and go out in one write.

It touches the wire only while `fill()` runs: frames made at other times
(control frames, GOAWAY) are staged and go first at the next fill.  Runs on
the reactor thread only, like the connection; the jobs run on the pool and
reach back only through the connection's `call_threadsafe`.
"""
from __future__ import annotations

import collections
import logging
import os
import time

from . import http2
from .exchange import Exchange, body_framing
from .outbound import Abort, Chunk, End, FileRange, Head
from .responses import body_forbidden, text_answer
from .wire import COALESCE_BYTES, Done, FileSend, wire_bytes
from .wsgi import BodyTimeout

log = logging.getLogger("ktlswsgi.connection")

# A slice of the wire the scheduler may fill per pump pass: what a few
# frames of several streams take; it keeps the L2-sized coalescing of HTTP/1.
FILE_READ_BYTES = 64 * 1024
# How a file DATA frame goes out under kTLS TX.  "merged": the 9-byte header
# with MSG_MORE, then 16384 - 9 payload bytes by sendfile, one TLS record per
# frame.  "separate": the header by SSL_write, its own record, then a payload
# of up to SETTINGS_MAX_FRAME_SIZE.  Both measured in the kTLS VM
# (tests/ktls/test_ktls_h2.py); "merged" is kept.
ZERO_COPY_LAYOUT = "merged"
_NO_ERROR, _INTERNAL_ERROR, _CANCEL = 0, 2, 8
# A stream waiting for the client's flow-control window must get this much of
# it within --write-timeout (or finish): 1-byte WINDOW_UPDATEs now and then do
# not keep a response, its file and its worker alive.
PROGRESS_BYTES = 16 * 1024
# Graceful shutdown (RFC 9113 6.8), a session's drain states:
#   serving;
#   drain-wait: for the last open stream's END_STREAM, or the first one's if
#     none is open (at most _DRAIN_IDLE_WAIT_S); the final GOAWAY goes out
#     right behind it, in the same write, so the client reads both before it
#     can open another stream.
#     A stream it was opening meanwhile is above the GOAWAY's last id: not
#     processed, the client may retry it.  (python-h2, under httpx, takes no
#     frame at all after a GOAWAY: one that arrives mid-response fails that
#     response, which is why GOAWAY waits for a gap.)
#   announced: no such moment came: GOAWAY(2^31-1) and a PING are out, the
#     streams the client still opens are taken;
#   final: GOAWAY(last stream taken), behind the last END_STREAM, or once the
#     PING came back (or _DRAIN_PING_WAIT_S passed); a stream above it is
#     ignored (unprocessed: the client knows from the GOAWAY and may retry).
_SERVING, _DRAIN_WAIT, _ANNOUNCED, _FINAL = "serving", "drain-wait", "announced", "final"
_DRAIN_IDLE_WAIT_S = 1.0   # at most, for an END_STREAM to carry the final GOAWAY
_DRAIN_PING_WAIT_S = 1.0   # at most, for the PING's ACK (one round trip)
_DRAIN_PING = b"ktlsdrn!"
_MAX_STREAM_ID = 2 ** 31 - 1
# Reading stops while this much is queued for a peer that does not read
# (PING and SETTINGS acknowledgements would otherwise pile up).
_WIRE_READ_BOUND = 4 * COALESCE_BYTES
# A whole response's body up to this size is copied into one piece with its
# frame headers; a larger one goes on the wire as it is.
_JOIN_BODY_BYTES = 4096


class _Stream:
    __slots__ = ("sid", "ex", "items", "cur", "cur_counted", "file", "no_body", "head_sent",
                 "done", "blocked_since", "stall_sent", "expects_continue", "body_full",
                 "active")

    def __init__(self, sid: int, ex: Exchange, expects_continue: bool):
        self.sid = sid
        self.ex = ex
        self.items: collections.deque = collections.deque()  # popped, not yet framed
        self.cur = None            # memoryview of a Chunk being framed
        self.cur_counted = 0
        self.file: FileRange | None = None  # a file range being framed (offset/count advance)
        self.no_body = False       # HEAD, 204, 304: DATA is dropped
        self.head_sent = False
        self.done = False          # END_STREAM framed (or reset): nothing more to frame
        self.blocked_since = 0.0   # waiting for the client to open a window, since
        self.stall_sent = 0        # bytes sent since (PROGRESS_BYTES clears the wait)
        self.active = False        # dispatched: counts against --h2-max-active-streams
        self.expects_continue = expects_continue
        self.body_full = False     # the body buffer filled: the client waits for the app


class H2Session:
    """HTTP/2 on one connection (see the module docstring)."""

    def __init__(self, conn):
        self.conn = conn
        cfg = conn.cfg
        self.driver = http2.Http2(http2.Limits(
            max_concurrent_streams=cfg.h2_max_concurrent_streams,
            # Not below HTTP/2's default: a client may send that much before our
            # SETTINGS arrive, and some (httpcore) mishandle a window shrunk under them.
            initial_window=min(max(cfg.body_buffer_bytes, 65535), 2 ** 31 - 1),
            connection_window=min(max(4 * cfg.body_buffer_bytes, 65535), 2 ** 31 - 1),
            header_list_bytes=cfg.limit_request_headers_bytes,
            header_block_bytes=cfg.limit_request_headers_bytes,
            max_resets=cfg.h2_max_reset_streams,
            max_control=cfg.h2_max_control_frames))
        self.streams: dict[int, _Stream] = {}
        self._order: collections.deque = collections.deque()  # responding streams, round-robin
        self._ready: list = []     # streams whose job goes to the pool after this read
        # Ready streams waiting for a place under --h2-max-active-streams.
        self._waiting: collections.deque = collections.deque()
        self.active = 0            # streams dispatched and not yet over
        # Jobs of streams that were reset or dropped while the app ran: they
        # still hold a worker, so they count against the concurrency limit.
        self.orphans = 0
        self._zero_copy = zero_copy_frames(conn.transport)
        self._wire = None          # the connection's wire, while fill() runs
        self._staged: collections.deque = collections.deque()  # frames made outside fill()
        self.goaway_sent = False   # the final GOAWAY: no new streams, the others finish
        self.drain = _SERVING
        self._drain_since = 0.0
        self.failed = False
        self.idle_since = time.monotonic()

    # -- the session interface (session.py) ---------------------------------------
    def start(self) -> None:
        self._flush_control()   # our SETTINGS

    @property
    def wants_read(self) -> bool:
        return not self.failed and wire_bytes(self.conn.pump.wire) < _WIRE_READ_BOUND

    def peer_closed(self) -> None:
        if self.streams:
            self.conn.abort("client closed with HTTP/2 streams open", notable=False)
        else:
            self.conn.close()

    # -- input (reactor) -------------------------------------------------------
    def receive(self, data: bytes) -> None:
        if self.failed:
            return
        for ev in self.driver.receive(data, time.monotonic()):
            if self.failed:
                return
            kind = type(ev)
            if kind is http2.Request:
                self._on_request(ev)
            elif kind is http2.Data:
                self._on_data(ev)
            elif kind is http2.EndOfBody:
                st = self.streams.get(ev.stream_id)
                if st is not None and st.ex.body is not None:
                    st.ex.body.finish()
                    self._maybe_ready(st)
            elif kind is http2.Reset:
                self._on_reset(ev)
            elif kind is http2.WindowsChanged:
                pass  # the pump below looks at every stream
            elif kind is http2.GoingAway:
                # h2 sends nothing after a GOAWAY it received: what is open is lost.
                log.debug("%s: client sent GOAWAY", self.conn.peer_text)
                self.failed = True
                self.abandon_all(499)
                self.conn.finish()
                return
            elif kind is http2.PingAcked:
                if ev.opaque == _DRAIN_PING and self.drain == _ANNOUNCED:
                    self._final_goaway()
            elif kind is http2.Failed:
                self._fail(ev)
                return
        self._dispatch_ready()
        self._flush_control()
        self.conn.kick()

    def _maybe_ready(self, st: _Stream) -> None:
        ex = st.ex
        if not ex.dispatched and (st.expects_continue or ex.ready_to_dispatch(
                self.conn.cfg.body_prebuffer_bytes)):
            self._ready.append(st)

    def _dispatch_ready(self) -> None:
        """The streams that became ready during this read go to the pool, only
        now: a stream opened and reset in the same read never runs the app.
        At most --h2-max-active-streams of one connection are in the app or
        sending their response at once (each may hold a worker and an open
        file); the others wait here, in order, for one of those to end."""
        waiting = self._waiting
        waiting.extend(self._ready)
        self._ready = []
        cap = self.conn.cfg.h2_max_active_streams
        while waiting and self.active < cap:
            st = waiting.popleft()
            if st.done or self.streams.get(st.sid) is not st or st.ex.dispatched:
                continue
            if not st.ex.dispatch():
                # Not processed: the client may retry it (RFC 9113 8.7).
                st.ex.finish(503, 0)
                self._forget(st.sid)
                self._drop(st, 503)
                if self.driver.refuse(st.sid):
                    self._fail(self.driver.fail(http2.ErrorCodes.ENHANCE_YOUR_CALM,
                                                "too many streams refused"))
                    return
                continue
            st.active = True
            self.active += 1

    def _on_request(self, ev: http2.Request) -> None:
        conn = self.conn
        sid = ev.stream_id
        if self.goaway_sent:
            # Above the last stream our final GOAWAY named: unprocessed, and
            # ignored, as RFC 9113 6.8 has it (a RST_STREAM that reaches
            # python-h2 in the same read as the GOAWAY breaks its retry).
            log.debug("%s: stream %d opened after the final GOAWAY: ignored",
                      conn.peer_text, sid)
            return
        if len(self.streams) + self.orphans >= conn.cfg.h2_max_concurrent_streams:
            # Over SETTINGS_MAX_CONCURRENT_STREAMS.
            if self.driver.refuse(sid):
                self._fail(self.driver.fail(http2.ErrorCodes.ENHANCE_YOUR_CALM,
                                            "too many streams refused"))
            return
        ex = Exchange(conn, ev)
        conn.s.counters.h2_streams += 1
        st = _Stream(sid, ex, ev.expects_continue)
        refusal = http2.request_verdict(ev)
        if refusal is not None:   # answered as HTTP/1.1 answers it, without the app
            status, reason = refusal
            conn.s.counters.bad_requests += 1
            log.info("%s: stream %d: %d %s", conn.peer_text, sid, status, reason)
            self.streams[sid] = st
            self._order.append(st)
            self._respond_without_app(st, status, reason)
            return
        length = body_framing(ev.headers)[0]
        cfg = conn.cfg
        has_body = not ev.ended
        refused = ex.admit(
            length, has_body, on_output=conn.output_threadsafe,
            high_water=cfg.high_water_bytes, low_water=cfg.low_water_bytes,
            on_drained=_nothing,
            on_first_read=(lambda: self._threadsafe(self._continue, sid)) if has_body else None,
            on_consumed=(lambda n: self._threadsafe(self._consumed, sid, n)) if has_body else None,
            head_only=ev.method == b"HEAD", close_after=False)
        self.streams[sid] = st
        self._order.append(st)
        if refused == 413:
            ex.out = None
            self._respond_without_app(st, 413, "request body too large")
        else:
            self._maybe_ready(st)

    def _respond_without_app(self, st: _Stream, status: int, text: str) -> None:
        headers, body = text_answer(text)
        st.items.extend((Head(status, b"", headers, False), Chunk(body), End(status, len(body))))

    def _on_data(self, ev: http2.Data) -> None:
        st = self.streams.get(ev.stream_id)
        if st is None or st.ex.body is None or st.ex.body_stopped:
            self.driver.acknowledge(ev.flow_length, ev.stream_id)  # discarded
            return
        if ev.flow_length > len(ev.data):
            self.driver.acknowledge(ev.flow_length - len(ev.data), ev.stream_id)  # padding
        ex = st.ex
        if ev.data and not ex.feed(ev.data):
            self.driver.acknowledge(len(ev.data), ev.stream_id)
        if ex.body.space() <= 0:
            st.body_full = True
        if not ex.dispatched:
            self._maybe_ready(st)

    def _on_reset(self, ev: http2.Reset) -> None:
        st = self._forget(ev.stream_id)
        if st is None:
            return
        log.debug("%s: stream %d reset %s (code %d)", self.conn.peer_text, ev.stream_id,
                  "by the client" if ev.by_client else "for a client error", ev.code)
        self._drop(st, 499 if ev.by_client else 400)

    def _forget(self, sid: int):
        """The stream is over for us: no more of its body goes to the app.
        What is buffered and unread is credited back to the connection
        window (RFC 9113 6.9: discarded DATA still counts)."""
        st = self.streams.pop(sid, None)
        if st is not None:
            if st.active:
                st.active = False
                self.active -= 1
            body = st.ex.body
            if body is not None:
                self.driver.acknowledge(body.discard(), sid)
            if not self.streams:
                self.idle_since = time.monotonic()
                if self.drain == _DRAIN_WAIT and not self.failed:
                    self._final_goaway()
        return st

    def _drop(self, st: _Stream, unsent_status: int) -> None:
        """The stream will not complete: a job not started never runs (one
        that runs counts against the stream limit until it returns); discard
        its unsent pieces, give back its holds on files (a frame already
        partly on the wire completes from its still-open file)."""
        st.done = True
        conn = self.conn
        if st.ex.stop_job(self._orphan_threadsafe):
            self.orphans += 1
        ranges = st.ex.abandon(unsent_status)
        if st.file is not None:
            ranges.append(st.file)
            st.file = None
        ranges.extend(i for i in st.items if type(i) is FileRange)
        st.items.clear()
        for item in ranges:
            conn.pump.drop_file(item)
        unsent = conn.pump.discard_pieces(st)
        if unsent:
            self.driver.unsend(unsent)
        try:
            self._order.remove(st)
        except ValueError:
            pass

    def _fail(self, ev: http2.Failed) -> None:
        self.failed = True
        self.conn.s.counters.bad_requests += 1
        log.info("%s: HTTP/2 connection error %d: %s", self.conn.peer_text, ev.code, ev.reason)
        self._flush_control()   # the GOAWAY h2 queued
        for st in list(self.streams.values()):
            self._drop(st, 499)
        self.streams.clear()
        self.conn.finish()

    # -- cross-thread (workers) -----------------------------------------------------
    def _threadsafe(self, fn, *args) -> None:
        self.conn.call_threadsafe(self._run, fn, *args)

    def _run(self, fn, *args) -> None:
        if self.failed:
            return
        fn(*args)
        self.conn.kick()

    def _orphan_threadsafe(self) -> None:
        self.conn.call_threadsafe(self._orphan_ended)

    def _orphan_ended(self) -> None:
        self.orphans -= 1

    def _consumed(self, sid: int, nbytes: int) -> None:
        self.driver.acknowledge(nbytes, sid)
        st = self.streams.get(sid)
        if st is not None and st.body_full:
            st.body_full = False
            st.ex.body_resumed()

    def _continue(self, sid: int) -> None:
        st = self.streams.get(sid)
        if st is not None and st.expects_continue and not st.head_sent:
            st.expects_continue = False
            self.driver.send_continue(sid)

    # -- output: the scheduler (reactor, from the connection's pump) ----------------
    def _emit(self, piece) -> None:
        """A piece for the wire: straight in while fill() runs, else staged
        for the next fill (so the order of frames is kept)."""
        if self._wire is not None:
            self._wire.append(piece)
        else:
            self._staged.append(piece)

    def _flush_control(self) -> None:
        """Frames h2 made (HEADERS, control frames) go out before what follows."""
        data = self.driver.data_to_send()
        if data:
            self._emit(memoryview(data))

    def send_whole(self) -> bool:
        return False   # streams share the wire: always the pump

    def fill(self, wire, room: int) -> None:
        """Frame queued responses into the wire, up to about `room` bytes."""
        self._wire = wire
        try:
            staged = self._staged
            while staged:
                wire.append(staged.popleft())
            self._flush_control()
            self._fill(room)
        finally:
            self._wire = None

    def _fill(self, room: int) -> None:
        order = self._order
        progress = True
        while room > 0 and progress and order:
            progress = False
            for _ in range(len(order)):
                st = order[0]
                order.rotate(-1)
                out = st.ex.out
                if (out is not None and not st.items and st.cur is None and st.file is None
                        and out.awaits_producer()):
                    continue   # its worker has queued nothing yet
                n = self._frame_one(st, room)
                if st.done and st in order:
                    order.remove(st)
                if n:
                    progress = True
                    room -= n
                    if room <= 0:
                        break
        self._flush_control()

    def _next_item(self, st: _Stream):
        if st.items:
            return st.items.popleft()
        out = st.ex.out
        return out.pop() if out is not None else None

    def _peek_end(self, st: _Stream) -> bool:
        """Is the stream's next item its End?  (The last DATA frame then carries END_STREAM.)"""
        if not st.items:
            out = st.ex.out
            item = out.pop() if out is not None else None
            if item is None:
                return False
            st.items.append(item)
        return type(st.items[0]) is End

    def _frame_one(self, st: _Stream, room: int) -> int:
        """Frame the stream's next piece: bytes framed, 0 if it must wait."""
        driver = self.driver
        if not st.head_sent and st.ex.out is not None and not st.items:
            whole = st.ex.out.pop_whole()
            if whole is not None and (framed := self._frame_whole(st, *whole)):
                return framed
        framed = 0
        while not st.done:
            if st.cur is not None or st.file is not None:
                return framed + self._frame_data(st, room)
            item = self._next_item(st)
            if item is None:
                return framed
            kind = type(item)
            if kind is Head:
                self._head_begins(st, item, body_forbidden(item.status, st.ex.request.method))
                end = self._peek_end(st)
                if end:
                    st.items.popleft()
                self._flush_control()
                head = driver.head_frames(st.sid, item.status, item.headers, end)
                self._emit(memoryview(head))
                framed += len(head)
                if end:
                    self._stream_end(st, item.status, 0)
                    return framed
            elif kind is Chunk:
                n = len(item.data)
                if st.no_body or not n:
                    if st.ex.out is not None:
                        st.ex.out.sent(n)
                    continue
                st.cur = memoryview(item.data).cast("B")
            elif kind is FileRange:
                self.conn.s.counters.file_transfers += 1
                if st.no_body or item.count == 0:
                    self.conn.pump.drop_file(item)
                    continue
                st.file = item
            elif kind is End:
                driver.end_stream(st.sid)
                self._stream_end(st, item.status, item.body_bytes)
                return framed + 9
            elif kind is Abort:
                log.info("%s: stream %d response aborted: %s", self.conn.peer_text, st.sid,
                         item.reason)
                self._flush_control()
                driver.reset(st.sid, _INTERNAL_ERROR)
                self._forget(st.sid)
                self._drop(st, 500)
                return framed + 13
        return framed

    def _frame_whole(self, st: _Stream, head: Head, data: bytes, end: End) -> int:
        """A whole response the worker queued at once (the usual case: head,
        at most one bytes body, end): HEADERS and one DATA frame with
        END_STREAM framed in one piece, as the item-by-item path below would
        frame them; a body without one (HEAD, 204, 304, or empty) ends the
        stream on the HEADERS frame.  0 (the items left for that path) when
        the body does not fit in one frame of the stream's window."""
        status = head.status
        n = len(data)
        no_body = body_forbidden(status, st.ex.request.method) or not n
        driver = self.driver
        if not no_body and (n > driver.max_frame or n > driver.window(st.sid)):
            st.items.extend((head, Chunk(data), end))
            return 0
        self._head_begins(st, head, no_body)
        self._flush_control()
        frames = driver.head_frames(st.sid, status, head.headers, no_body)
        if no_body:
            self._emit(memoryview(frames))
            self._stream_end(st, status, 0)
            return len(frames)
        header = driver.data_header(st.sid, n, True)
        if n <= _JOIN_BODY_BYTES:
            self._emit(memoryview(b"".join((frames, header, data))))
        else:
            self._emit(memoryview(frames + header))
            self._emit(memoryview(data))
        # Not out.sent(): the End is queued, no producer waits for room.
        st.ex.bytes_sent += n
        self._stream_end(st, end.status, end.body_bytes)
        return len(frames) + 9 + n

    @staticmethod
    def _head_begins(st: _Stream, head: Head, no_body: bool) -> None:
        """The stream's response head is being framed (its exchange keeps the
        status and headers for the access log)."""
        st.no_body = no_body
        st.head_sent = True
        st.ex.status = head.status
        st.ex.response_headers = head.headers

    def _frame_data(self, st: _Stream, room: int) -> int:
        driver = self.driver
        window = driver.window(st.sid)
        if window <= 0 or (window < http2.SMALL_WINDOW_INCREMENT
                           and window < (len(st.cur) if st.cur is not None else st.file.count)
                           and driver.peer_initial_window >= http2.SMALL_WINDOW_INCREMENT):
            # No DATA frame cut to the crumb left of a window whose client keeps
            # a larger one: its acknowledgement would be a tiny WINDOW_UPDATE,
            # which counts as a flood (http2.py); the next update opens more.
            if not st.blocked_since:
                st.blocked_since = time.monotonic()
                st.stall_sent = 0
            return 0
        framed = self._frame_payload(st, window, room)
        if st.blocked_since:
            st.stall_sent += framed
            if st.stall_sent >= PROGRESS_BYTES:
                st.blocked_since = 0.0
        return framed

    def _frame_payload(self, st: _Stream, window: int, room: int) -> int:
        driver = self.driver
        max_frame = driver.max_frame
        if st.cur is not None:
            view = st.cur
            n = min(len(view), window, max_frame)
            last = n == len(view)
            end = last and self._peek_end(st)
            self._flush_control()
            self._emit(memoryview(driver.data_header(st.sid, n, end)))
            self._emit(view[:n])
            st.ex.bytes_sent += n
            if st.ex.out is not None:
                st.ex.out.sent(n)
            st.cur = None if last else view[n:]
            if end:
                end_item = st.items.popleft()
                self._stream_end(st, end_item.status, end_item.body_bytes)
            return n + 9
        f = st.file
        if self._zero_copy:
            return self._frame_file_zero_copy(st, f, window, max_frame)
        return self._frame_file_copied(st, f, window, max_frame, room)

    def _frame_file_zero_copy(self, st: _Stream, f: FileRange, window: int, max_frame: int) -> int:
        merged = ZERO_COPY_LAYOUT == "merged"
        if merged:  # header + payload = one full TLS record
            max_frame = min(max_frame, http2.TLS_RECORD_BYTES - http2.FRAME_HEADER_BYTES)
        n = min(f.count, window, max_frame)
        last = n == f.count
        end = last and self._peek_end(st)
        self._flush_control()
        header = memoryview(self.driver.data_header(st.sid, n, end))
        f.hold()   # the frame's; the stream keeps its own until the last frame is cut
        self._emit(FileSend(f, f.offset, n, head=header, head_more=merged, stream=st))
        st.ex.bytes_sent += n
        f.offset += n
        f.count -= n
        if last:
            st.file = None
            self.conn.pump.drop_file(f)
            if end:
                end_item = st.items.popleft()
                self._stream_end(st, end_item.status, end_item.body_bytes)
        return n + 9

    def _frame_file_copied(self, st: _Stream, f: FileRange, window: int, max_frame: int,
                           room: int) -> int:
        """Several frames' payloads with one preadv, headers written into the gaps."""
        budget = min(f.count, window, max(room, max_frame), FILE_READ_BYTES)
        tail = budget % max_frame
        if budget < f.count and budget > max_frame and tail < http2.SMALL_WINDOW_INCREMENT:
            budget -= tail   # no crumb of a frame at the end (see _frame_data)
        sizes = []
        while budget > 0:
            n = min(budget, max_frame)
            sizes.append(n)
            budget -= n
        total = sum(sizes)
        buf = bytearray(total + 9 * len(sizes))
        view = memoryview(buf)
        slots, pos = [], 9
        for n in sizes:
            slots.append(view[pos:pos + n])
            pos += n + 9
        got = os.preadv(f.fd, slots, f.offset)
        if got < total:
            log.error("%s: file ended %d bytes early (truncated while sent?): aborting "
                      "the connection", self.conn.peer_text, f.count - got)
            self.conn.abort("file shrank during transfer", notable=False, unsent_status=500)
            return 0
        last = total == f.count
        end = last and self._peek_end(st)
        self._flush_control()
        pos = 0
        for i, n in enumerate(sizes):
            frame_end = end and i == len(sizes) - 1
            view[pos:pos + 9] = self.driver.data_header(st.sid, n, frame_end)
            pos += n + 9
        self._emit(view)
        counters = self.conn.s.counters
        counters.bytes_pread_ssl_write += total
        counters.bytes_ssl_write -= total  # the pump counts the whole buffer as written bytes
        st.ex.bytes_sent += total
        f.offset += total
        f.count -= total
        if last:
            st.file = None
            self.conn.pump.drop_file(f)
            if end:
                end_item = st.items.popleft()
                self._stream_end(st, end_item.status, end_item.body_bytes)
        return pos

    def _stream_end(self, st: _Stream, status: int, body_bytes: int) -> None:
        """END_STREAM is framed: the log line follows once the wire hands it over.

        Draining, and this was the last open stream: the final GOAWAY goes
        right behind its END_STREAM, in the same write, so a client reads
        both before it can open another stream on this connection."""
        st.done = True
        self._flush_control()
        if (self.drain == _DRAIN_WAIT and not self._waiting and not self._ready
                and all(s.done for s in self.streams.values())):
            self._final_goaway()
        self._emit(Done(st.ex, status, body_bytes, stream=st))

    def written(self, done: Done) -> None:
        """The pump handed a stream's last frame to the transport."""
        st = done.stream
        st.ex.finish(done.status, done.body_bytes)
        if self._forget(st.sid) is not None and self.driver.client_may_send(st.sid):
            # The response is complete and the request body is not wanted any more.
            self.driver.reset(st.sid, _NO_ERROR)
            self._flush_control()
        if self._waiting:
            self._dispatch_ready()
        if not self.streams and self.goaway_sent:
            self.conn.finish()

    # -- deadlines -------------------------------------------------------------------
    def deadline(self):
        """(when, what) of the nearest HTTP/2 deadline, or None."""
        cfg = self.conn.cfg
        if self.drain == _DRAIN_WAIT:
            drain = (self._drain_since + _DRAIN_IDLE_WAIT_S, "h2-drain")
        elif self.drain == _ANNOUNCED:
            drain = (self._drain_since + _DRAIN_PING_WAIT_S, "h2-drain")
        else:
            drain = None
        if not self.streams:
            return drain or (self.idle_since + cfg.keep_alive_s, "h2-idle")
        best = drain
        for st in self.streams.values():
            cand = st.ex.body_deadline()
            if cand is not None and (best is None or cand < best[0]):
                best = (cand, "h2-body")
            if st.blocked_since:
                cand = st.blocked_since + cfg.write_timeout_s
                if best is None or cand < best[0]:
                    best = (cand, "h2-window")
        return best

    def expire(self, what: str) -> None:
        now = time.monotonic()
        cfg = self.conn.cfg
        if what == "h2-idle":
            self._start_drain(idle=True)
        elif what == "h2-drain":
            if self.drain == _DRAIN_WAIT and not self.streams:
                self._final_goaway()   # no request came
            elif self.drain == _DRAIN_WAIT:
                self._announce()       # no gap came
            elif self.drain == _ANNOUNCED:
                self._final_goaway()
        elif what == "h2-body":
            for st in list(self.streams.values()):
                ex = st.ex
                when = ex.body_deadline()
                if when is None or when > now:
                    continue
                log.info("%s: stream %d %s: 408", self.conn.peer_text, st.sid,
                         ex.body_timeout_reason(now))
                if ex.dispatched:
                    ex.fail_body(BodyTimeout("request body timed out"))
                else:   # the app never saw it: answer here
                    ex.stop_job()
                    ex.body_stopped = True
                    ex.out = None
                    self._respond_without_app(st, 408, "request body timed out")
                    self.conn.kick()
        elif what == "h2-window":
            if self.driver.connection_window() <= 0:
                log.info("%s: client opened no connection flow-control window for %.1fs; "
                         "closing", self.conn.peer_text, cfg.write_timeout_s)
                self.conn.abort("flow-control window stayed closed", notable=True)
                return
            for st in list(self.streams.values()):
                if st.blocked_since and st.blocked_since + cfg.write_timeout_s <= now:
                    log.info("%s: stream %d: client opened %d bytes of flow-control window "
                             "in %.1fs (less than %d): RST_STREAM CANCEL", self.conn.peer_text,
                             st.sid, st.stall_sent, now - st.blocked_since, PROGRESS_BYTES)
                    self._flush_control()
                    self.driver.reset(st.sid, _CANCEL)
                    self._forget(st.sid)
                    self._drop(st, 499)
            self._dispatch_ready()
            self._flush_control()
            self.conn.kick()

    # -- ending ------------------------------------------------------------------------
    def close_gracefully(self) -> None:
        """The server is stopping (see _start_drain)."""
        self._start_drain(idle=False)

    def _start_drain(self, idle: bool) -> None:
        """Begin RFC 9113 6.8's graceful shutdown (see the drain states): every
        stream the client opened before it could see our GOAWAY is answered,
        then the connection closes.  A connection with no stream open gets
        _DRAIN_IDLE_WAIT_S for a request the client may be sending right now
        (its END_STREAM then carries the GOAWAY), unless it was `idle` for
        --keep-alive already."""
        if self.failed or self.drain != _SERVING:
            return
        self.drain = _DRAIN_WAIT
        self._drain_since = time.monotonic()
        if idle and not self.streams:
            self._final_goaway()

    def _announce(self) -> None:
        """GOAWAY(2^31-1) and a PING: the client opens no more streams, and
        its PING ACK proves it has seen the GOAWAY."""
        self.drain = _ANNOUNCED
        self._drain_since = time.monotonic()
        self._flush_control()
        self._emit(memoryview(self.driver.goaway(last_stream_id=_MAX_STREAM_ID)))
        self.driver.ping(_DRAIN_PING)
        self._flush_control()
        self.conn.kick()

    def _final_goaway(self) -> None:
        """GOAWAY naming the last stream taken; those finish, later ones are
        refused (unprocessed: the client may retry them), then the connection
        closes."""
        self.drain = _FINAL
        self.goaway_sent = True
        self._flush_control()
        self._emit(memoryview(self.driver.goaway()))
        if not self.streams:
            self.conn.finish()
        else:
            self.conn.kick()

    def abandon_all(self, unsent_status: int) -> None:
        for st in list(self.streams.values()):
            self._drop(st, unsent_status)
        self.streams.clear()



def zero_copy_frames(transport) -> bool:
    """File DATA frames as header + file range (the pump sends the payload
    from the descriptor) when kTLS TX is on; else copied by preadv here."""
    return bool(getattr(transport, "ktls_tx", False))


def _nothing() -> None:
    pass
