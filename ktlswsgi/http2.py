"""The HTTP/2 driver: h2's state machine plus the limits that stop known attacks.

Owns: turning received bytes into stream events (`Request`, `Data`,
`EndOfBody`, `Reset`, `WindowsChanged`, `GoingAway`, `PingAcked`, `Failed`)
and response pieces into frames; the frame-level bounds h2 itself does not keep:

  - a header block (HEADERS + CONTINUATION) larger than `header_block_bytes`
    on the wire (CONTINUATION flood, CVE-2024-27316 and kin) -> GOAWAY
    ENHANCE_YOUR_CALM;
  - more than `max_resets` RST_STREAM frames from the client per window
    that cancel work (Rapid Reset, CVE-2023-44487: a stream opened in the
    same read, or one we still send to; a reset of a stream that is already
    over is routine) -> GOAWAY ENHANCE_YOUR_CALM;
  - more than `max_control` PING, SETTINGS, PRIORITY, empty DATA, unknown
    and WINDOW_UPDATE frames per window, the WINDOW_UPDATEs beyond two per
    DATA frame sent or opening less than SMALL_WINDOW_INCREMENT, and DATA on
    a closed stream (each costs us a RST_STREAM) -- floods that cost work and
    produce none -> GOAWAY ENHANCE_YOUR_CALM.

Streams the client opens beyond SETTINGS_MAX_CONCURRENT_STREAMS are the
session's to refuse (REFUSED_STREAM, a stream error as RFC 9113 5.1.2 asks);
those refusals, and the resets h2 sends for a client's stream errors
(MadeYouReset, CVE-2025-8671), count with the client's RST_STREAMs.

Malformed request and trailer blocks (missing, repeated or unknown
pseudo-headers, upper-case names, illegal characters, connection-specific
headers, Host against :authority: PROTOCOL_ERROR) are found by h2's own rules,
run in C with the Request's fields (_csrc/h2request.c) where the extension
has them, else by h2.  h2 keeps the rest: the decoded header list size (HPACK
bomb: DenialOfServiceError, ENHANCE_YOUR_CALM), a content-length the DATA
disagrees with (PROTOCOL_ERROR) and flow control.  All are connection
errors: GOAWAY with the RFC 9113 code, then close.

Response heads and DATA frames are framed here, with h2's state advanced as
its `send_headers` / `send_data` would (h2adapter.py: the one place that
touches h2's private state): `head_frames()` returns a head's HEADERS frames
(HPACK through hpackcoder.py), `data_header()` a DATA frame's 9-byte header,
whose payload the caller sends itself: bytes in memory without a copy into
a frame, a file's by sendfile, or read by one preadv into the gaps between
headers.  Control frames (SETTINGS, WINDOW_UPDATE, RST_STREAM, PING, the
100 Continue head) are h2's, from `data_to_send()`.  Sans-I/O: no sockets, no threads, no clock of its own
(callers pass `now`).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

from . import h2adapter, hpackcoder
from .native import native
from .responses import NO_BODY_STATUSES

# Request and trailer blocks checked (h2's rules) and read in one C pass.
_CHECK_BLOCKS = native is not None and hasattr(native, "h2_request")

PREFACE_BYTES = 24
FRAME_HEADER_BYTES = 9
TLS_RECORD_BYTES = 16384
_DATA, _HEADERS, _PRIORITY, _RST, _SETTINGS, _PUSH, _PING, _GOAWAY, _WINDOW, _CONT = range(10)
_END_STREAM = 0x1
_FRAME_HEADER = struct.Struct(">HBBBI")  # length (24 bits as H+B), type, flags, stream id
# Request headers an h2 server must not map onto the WSGI environ's HTTP_* keys.
_PSEUDO = (b":method", b":scheme", b":authority", b":path")
# Connection-specific response headers (RFC 9113 8.2.2): never sent over HTTP/2.
CONNECTION_SPECIFIC = frozenset((b"connection", b"keep-alive", b"proxy-connection",
                                 b"transfer-encoding", b"upgrade"))
# A WINDOW_UPDATE opening less than this is a control frame whatever else
# happens: 1-byte increments would each buy a 1-byte DATA frame.
SMALL_WINDOW_INCREMENT = 1024


@dataclass
class Limits:
    max_concurrent_streams: int = 100
    initial_window: int = 256 * 1024      # per-stream request body window (= body buffer)
    connection_window: int = 1024 * 1024  # all streams' request bodies together
    header_list_bytes: int = 64 * 1024    # decoded header list (SETTINGS_MAX_HEADER_LIST_SIZE)
    header_block_bytes: int = 64 * 1024   # one header block on the wire, CONTINUATIONs included
    max_resets: int = 200                 # RST_STREAM frames from the client per window
    max_control: int = 1000               # PING/SETTINGS/PRIORITY/empty DATA/WINDOW_UPDATE per window
    window_s: float = 10.0


# -- events -------------------------------------------------------------------
@dataclass
class Request:
    """A request head on a new stream (field names as http1.Request)."""

    stream_id: int
    method: bytes
    target: bytes
    headers: list          # [(lower-case name, value)], host first when :authority was given
    ended: bool            # no body follows
    expects_continue: bool = False
    http_version: bytes = b"2"


@dataclass
class Data:
    stream_id: int
    data: bytes
    flow_length: int       # what it took of the window (padding included)


@dataclass
class EndOfBody:
    stream_id: int


@dataclass
class Reset:
    """The client reset a stream."""

    stream_id: int
    code: int
    by_client: bool = True   # False: h2 reset it for a client error


class WindowsChanged:
    """The client opened flow-control windows or changed SETTINGS: sending may resume."""


WINDOWS_CHANGED = WindowsChanged()


@dataclass
class GoingAway:
    """The client sent GOAWAY: no new streams; those up to `last_stream_id` may finish."""

    last_stream_id: int


@dataclass
class PingAcked:
    """The client acknowledged a PING we sent."""

    opaque: bytes


@dataclass
class Failed:
    """A connection error: GOAWAY with `code` is queued; flush it and close."""

    code: int
    reason: str             # fixed text, never the peer's bytes


class Http2:
    """One server-side HTTP/2 connection (see the module docstring)."""

    def __init__(self, limits: Limits):
        self.limits = limits
        # h2's inbound checks run in C with the Request's fields (h2_request)
        # where the extension has them; else h2's own.
        config = h2.config.H2Configuration(client_side=False, header_encoding=None,
                                           validate_outbound_headers=False,
                                           normalize_outbound_headers=False,
                                           validate_inbound_headers=not _CHECK_BLOCKS,
                                           normalize_inbound_headers=not _CHECK_BLOCKS)
        self._h2 = conn = h2.connection.H2Connection(config=config)
        hpackcoder.install(conn)
        h2adapter.set_local_settings(conn, _settings(limits, limits.max_concurrent_streams))
        conn.decoder.max_header_list_size = limits.header_list_bytes
        conn.initiate_connection()
        # The SETTINGS frame is out with the advertised limit.  A stream over it
        # must be a stream error (RFC 9113 5.1.2), which the session gives
        # (REFUSED_STREAM); h2 would end the connection, so h2 is told a hard
        # cap of twice as many, which only a hostile client reaches.
        h2adapter.set_local_settings(conn, _settings(limits, self.hard_stream_cap))
        extra = limits.connection_window - 65535
        if extra > 0:
            conn.increment_flow_control_window(extra)
        self.failed = False
        self.highest_stream_id = 0
        # frame scanner state
        self._skip = PREFACE_BYTES      # bytes of the current frame (or preface) still to pass
        self._partial = b""             # a frame header split across reads
        self._block_bytes = 0           # of the header block being received
        self._window_start = None
        self._resets = 0
        self._control = 0
        self._data_frames_sent = 0
        self._window_updates = 0

    # -- input --------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list:
        """Events for `data`; after a `Failed`, nothing more is read."""
        if self.failed:
            return []
        verdict = self._scan(data, now)
        if verdict is not None:
            return [self.fail(ErrorCodes.ENHANCE_YOUR_CALM, verdict)]
        try:
            h2_events = self._h2.receive_data(data)
        except h2.exceptions.DenialOfServiceError:
            return [self._failed(ErrorCodes.ENHANCE_YOUR_CALM, "header list over the limit")]
        except h2.exceptions.TooManyStreamsError:
            return [self._failed(ErrorCodes.PROTOCOL_ERROR,
                                 "client opened more streams than SETTINGS_MAX_CONCURRENT_STREAMS")]
        except h2.exceptions.FlowControlError:
            return [self._failed(ErrorCodes.FLOW_CONTROL_ERROR, "flow-control window exceeded")]
        except h2.exceptions.ProtocolError as exc:
            code = getattr(exc, "error_code", ErrorCodes.PROTOCOL_ERROR)
            return [self._failed(code, _protocol_reason(exc))]
        return self._translate(h2_events)

    def _translate(self, h2_events) -> list:
        out = []
        windows = False
        for ev in h2_events:
            kind = type(ev)
            if kind is h2.events.RequestReceived:
                req = self._request(ev)
                if type(req) is str:
                    return [self.fail(ErrorCodes.PROTOCOL_ERROR, f"malformed request: {req}")]
                out.append(req)
                if ev.stream_ended is not None:
                    out.append(EndOfBody(ev.stream_id))
            elif kind is h2.events.TrailersReceived:
                fault = _CHECK_BLOCKS and native.h2_trailers(ev.headers)
                if fault:
                    return [self.fail(ErrorCodes.PROTOCOL_ERROR, f"malformed trailers: {fault}")]
                if ev.stream_ended is not None:   # trailers always end the stream
                    out.append(EndOfBody(ev.stream_id))
            elif kind is h2.events.DataReceived:
                out.append(Data(ev.stream_id, ev.data, ev.flow_controlled_length))
                if ev.stream_ended is not None:
                    out.append(EndOfBody(ev.stream_id))
            elif kind is h2.events.StreamEnded:
                pass  # reported with the event that carried END_STREAM
            elif kind is h2.events.StreamReset:
                out.append(Reset(ev.stream_id, int(ev.error_code), ev.remote_reset))
                if not ev.remote_reset and self._count_reset():
                    # The client's own stream errors make us reset (MadeYouReset,
                    # CVE-2025-8671): they count as its resets.
                    return [self.fail(ErrorCodes.ENHANCE_YOUR_CALM,
                                       "too many streams reset for the client's errors")]
            elif kind is h2.events.WindowUpdated or kind is h2.events.RemoteSettingsChanged:
                windows = True
                if kind is h2.events.WindowUpdated and ev.delta < SMALL_WINDOW_INCREMENT:
                    self._control += 1
                    if self._control > self.limits.max_control:
                        return [self.fail(ErrorCodes.ENHANCE_YOUR_CALM,
                                          "flood of tiny WINDOW_UPDATE increments")]
            elif kind is h2.events.ConnectionTerminated:
                out.append(GoingAway(ev.last_stream_id or 0))
            elif kind is h2.events.PingAckReceived:
                out.append(PingAcked(ev.ping_data))
        if windows:
            out.append(WINDOWS_CHANGED)
        return out

    def _request(self, ev):
        """The stream's Request, or (native's h2_request, which also checks
        the block as h2 would) the reason the block is malformed."""
        if _CHECK_BLOCKS:
            fields = native.h2_request(ev.headers)
            if type(fields) is str:
                return fields
            self.highest_stream_id = max(self.highest_stream_id, ev.stream_id)
            return Request(ev.stream_id, fields[0], fields[1], fields[2],
                           ev.stream_ended is not None, fields[3])
        return self._request_py(ev)

    def _request_py(self, ev) -> Request:
        """_request's Python path (h2 checked the block), and its reference."""
        method = target = authority = b""
        headers = []
        expects_continue = False
        for name, value in ev.headers:
            if name[0:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    target = value
                elif name == b":authority":
                    authority = value
                continue
            if name == b"host":
                if authority:
                    continue  # :authority wins (RFC 9113 8.3.1)
                authority = value
                continue
            if name == b"expect" and value.lower() == b"100-continue":
                expects_continue = True
            headers.append((name, value))
        if authority:
            headers.insert(0, (b"host", authority))
        self.highest_stream_id = max(self.highest_stream_id, ev.stream_id)
        return Request(ev.stream_id, method, target, headers, ev.stream_ended is not None,
                       expects_continue)

    def _scan(self, data, now: float) -> str | None:
        """Walk the frame headers in `data`; a reason to fail, or None."""
        lim = self.limits
        if self._window_start is None or now - self._window_start >= lim.window_s:
            self._window_start = now
            self._resets = self._control = self._data_frames_sent = self._window_updates = 0
        pos, n = 0, len(data)
        while pos < n:
            if self._skip:
                step = min(self._skip, n - pos)
                self._skip -= step
                pos += step
                continue
            need = FRAME_HEADER_BYTES - len(self._partial)
            if n - pos < need:
                self._partial += bytes(data[pos:])
                return None
            if self._partial:
                head = self._partial + bytes(data[pos:pos + need])
                self._partial = b""
                hi, lo, ftype, flags, sid = _FRAME_HEADER.unpack(head)
            else:
                hi, lo, ftype, flags, sid = _FRAME_HEADER.unpack_from(data, pos)
            pos += need
            length = (hi << 8) | lo
            self._skip = length
            if ftype == _HEADERS or ftype == _CONT:
                if ftype == _HEADERS:
                    self._block_bytes = 0
                self._block_bytes += length
                if self._block_bytes > lim.header_block_bytes:
                    return "header block over the limit (CONTINUATION flood?)"
            elif ftype == _RST:
                if self._owes_response(sid) and self._count_reset():
                    return "too many streams reset by the client (Rapid Reset?)"
            elif ftype == _DATA and self._closed(sid):
                # h2 answers each with RST_STREAM: work the client makes us do.
                self._control += 1
            elif ftype == _WINDOW:
                # A client opens windows as our DATA arrives: two per DATA frame
                # sent are work; any beyond that count as control frames.
                self._window_updates += 1
                if self._window_updates > 2 * self._data_frames_sent:
                    self._control += 1
            elif ftype == _PING or ftype == _PRIORITY or ftype == _SETTINGS or (
                    ftype == _DATA and length == 0 and not flags & _END_STREAM) or (
                    ftype > _CONT):
                self._control += 1
            if self._control > lim.max_control:
                return "control-frame flood"
        return None

    def _closed(self, sid: int) -> bool:
        """A client stream that h2 had closed before this read."""
        return h2adapter.closed_before(self._h2, sid)

    def _owes_response(self, sid: int) -> bool:
        """Does a RST_STREAM on `sid` cancel work?  A stream opened in this
        read, or one we have not finished sending to, yes (Rapid Reset); a
        stream that is already over, no: clients reset those routinely (h2
        answers DATA still arriving on a stream it reset with RST_STREAM)."""
        return (h2adapter.opened_later(self._h2, sid)
                or h2adapter.local_open(self._h2, sid))

    def _count_reset(self) -> bool:
        """One more stream reset for this window; True once over the cap."""
        self._resets += 1
        return self._resets > self.limits.max_resets

    def refuse(self, stream_id: int) -> bool:
        """RST_STREAM REFUSED_STREAM; True when refusals pushed the resets over
        the cap (a client that keeps opening streams it was refused)."""
        self.reset(stream_id, ErrorCodes.REFUSED_STREAM)
        return self._count_reset()

    # -- output ---------------------------------------------------------------
    def data_to_send(self) -> bytes:
        return self._h2.data_to_send() if h2adapter.output_pending(self._h2) else b""

    def window(self, stream_id: int) -> int:
        """Bytes of DATA the stream may send now (its window and the connection's)."""
        try:
            return self._h2.local_flow_control_window(stream_id)
        except h2.exceptions.StreamClosedError:
            return 0

    @property
    def peer_initial_window(self) -> int:
        """The client's SETTINGS_INITIAL_WINDOW_SIZE: the stream window it means to keep."""
        return self._h2.remote_settings.initial_window_size

    def connection_window(self) -> int:
        """Bytes of DATA the connection may send now, over all streams."""
        return self._h2.outbound_flow_control_window

    @property
    def hard_stream_cap(self) -> int:
        return 2 * self.limits.max_concurrent_streams + 16

    @property
    def max_frame(self) -> int:
        return self._h2.max_outbound_frame_size

    def head_frames(self, stream_id: int, status: int, headers, end_stream: bool) -> bytes:
        """A response head's HEADERS frames, returned: the caller puts them on
        the wire after what data_to_send() holds."""
        fields = [(b":status", b"%d" % status)]
        # 204 must not carry Content-Length; a 304 may, but h2-based clients
        # (httpx) then wait for that many DATA bytes.
        drop_length = status in NO_BODY_STATUSES
        for name, value in headers:
            name = name.lower()
            if name not in CONNECTION_SPECIFIC and not (drop_length and name == b"content-length"):
                fields.append((name, value))
        return h2adapter.headers_frames(self._h2, stream_id, fields, end_stream)

    def send_continue(self, stream_id: int) -> None:
        self._h2.send_headers(stream_id, [(b":status", b"100")])

    def data_header(self, stream_id: int, length: int, end_stream: bool) -> bytes:
        """The 9-byte header of a DATA frame whose `length` payload bytes the
        caller sends itself (bytes in memory, or a file range), accounted as
        h2's send_data would."""
        self._data_frames_sent += 1
        return h2adapter.data_header(self._h2, stream_id, length, end_stream)

    def unsend(self, length: int) -> None:
        """`length` payload bytes that `data_header()` accounted will never be
        sent (their stream was reset first): the connection's window gets them
        back."""
        h2adapter.unsend(self._h2, length)

    def ping(self, opaque: bytes) -> None:
        """A PING (8 bytes of `opaque`); its ACK comes back as PingAcked."""
        self._h2.ping(opaque)

    def end_stream(self, stream_id: int) -> None:
        self._h2.end_stream(stream_id)

    def reset(self, stream_id: int, code: int) -> None:
        try:
            self._h2.reset_stream(stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass

    def client_may_send(self, stream_id: int) -> bool:
        """True while the request side of the stream is open (its body not ended)."""
        return h2adapter.remote_open(self._h2, stream_id)

    def acknowledge(self, nbytes: int, stream_id: int) -> None:
        """`nbytes` of a stream's DATA are consumed (the app read them, or they
        were discarded): reopen the windows by as much.  A closed stream's
        bytes still reopen the connection's window."""
        if nbytes > 0 and not self.failed:
            self._h2.acknowledge_received_data(nbytes, stream_id)

    def goaway(self, code: int = ErrorCodes.NO_ERROR, last_stream_id: int | None = None) -> bytes:
        """A GOAWAY frame naming the last stream this side will answer (by
        default the highest the client opened).  With NO_ERROR (graceful):
        h2's state is left open so those streams finish; the caller ignores
        streams opened after it."""
        return h2adapter.goaway_frame(
            self.highest_stream_id if last_stream_id is None else last_stream_id, int(code))

    def fail(self, code, reason: str) -> Failed:
        """A limit hit: GOAWAY `code` is queued, nothing more is read."""
        self._h2.close_connection(error_code=code, last_stream_id=self.highest_stream_id)
        return self._failed(code, reason)

    def _failed(self, code, reason: str) -> Failed:
        self.failed = True
        return Failed(int(code), reason)


def request_verdict(req: Request):
    """(status, fixed reason) for a request HTTP/1.1 would refuse before the
    app (http1._request_verdict), or None: CONNECT is 501; a :path that is
    not origin-form (or `*` with OPTIONS) is 400."""
    if req.method == b"CONNECT":
        return 501, "CONNECT is not supported"
    target = req.target
    if target[:1] != b"/" and not (target == b"*" and req.method == b"OPTIONS"):
        return 400, "request :path is not origin-form"
    return None


def _settings(limits: Limits, max_streams: int) -> dict:
    return {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: limits.initial_window,
        h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: limits.header_list_bytes,
        h2.settings.SettingCodes.ENABLE_PUSH: 0,
    }


def _protocol_reason(exc) -> str:
    """A fixed reason for the log: h2's messages may quote header values."""
    name = type(exc).__name__
    return {"InvalidBodyLengthError": "content-length disagrees with the DATA received",
            "FrameTooLargeError": "frame over SETTINGS_MAX_FRAME_SIZE",
            "StreamClosedError": "frame on a closed stream",
            }.get(name, "protocol error (%s)" % name)
