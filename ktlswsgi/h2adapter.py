"""The one place that reaches into the h2 library's private state.

h2 frames DATA only from bytes it is handed (`send_data`).  The zero-copy
path sends a frame's payload from a file descriptor (SSL_sendfile), and the
copied file path reads several payloads with one preadv into a buffer with
gaps for their headers: in both, the 9-byte header is made here and h2's
state must account the frame as `send_data` would (connection and stream
state machines, both flow-control windows).  Bytes in memory go the same
way (their header here, the payload not copied into a frame object), and
so do response heads (`headers_frames`: h2's `send_headers` costs a tenth
of a tiny request in frame objects, generators and checks of headers the
session has already normalised).  A graceful GOAWAY must leave
h2's state open (h2's own close_connection() ends it), the advertised stream
limit differs from the one h2 enforces, and the HTTP/2 limits need a
stream's state.  Everything else uses h2's public API (http2.py).

Tested against the h2 releases in VERSIONS (pyproject.toml's range) by
tests/test_h2_adapter.py: it drives this adapter and `send_data` side by
side on two connections and compares their state and their bytes after
every frame, so a release that changes these internals fails that test
instead of corrupting a connection.
"""
from __future__ import annotations

import struct

import h2.exceptions
import h2.settings
from h2.connection import ConnectionInputs
from h2.stream import StreamInputs, StreamState
from hyperframe.frame import GoAwayFrame

# The h2 releases this adapter was tested with (pyproject.toml: h2>=4.1,<4.5).
VERSIONS = (">=4.1", "<4.5")

FRAME_HEADER = struct.Struct(">HBBBI")   # length (24 bits as H+B), type, flags, stream id
_DATA, _HEADERS, _CONTINUATION = 0x0, 0x1, 0x9
_END_STREAM, _END_HEADERS = 0x1, 0x4
_REMOTE_OPEN = (StreamState.OPEN, StreamState.HALF_CLOSED_LOCAL)
_LOCAL_OPEN = (StreamState.OPEN, StreamState.HALF_CLOSED_REMOTE)


def data_header(conn, stream_id: int, length: int, end_stream: bool) -> bytes:
    """The 9-byte header of a DATA frame whose `length` payload bytes the
    caller sends itself, accounted in `conn` (an h2 H2Connection) exactly as
    `conn.send_data(stream_id, payload, end_stream)` would account it."""
    conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
    stream = conn._get_stream_by_id(stream_id)
    stream.state_machine.process_input(StreamInputs.SEND_DATA)
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
    stream.outbound_flow_control_window -= length
    conn.outbound_flow_control_window -= length
    return FRAME_HEADER.pack(length >> 8, length & 0xFF, _DATA,
                             _END_STREAM if end_stream else 0, stream_id)


def headers_frames(conn, stream_id: int, fields: list, end_stream: bool) -> bytes:
    """The HEADERS (and CONTINUATION) frames of a response head on a client's
    stream, accounted in `conn` exactly as `conn.send_headers(stream_id,
    fields, end_stream)` would, and returned instead of queued (`fields`:
    (bytes, bytes), lower-case names, `:status` first, as h2 sends them)."""
    conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    stream = conn._get_stream_by_id(stream_id)
    informational = fields[0][1][:1] == b"1"
    if informational and end_stream:
        raise h2.exceptions.ProtocolError("Cannot set END_STREAM on informational responses.")
    stream.state_machine.process_input(
        StreamInputs.SEND_INFORMATIONAL_HEADERS if informational else StreamInputs.SEND_HEADERS)
    block = conn.encoder.encode(fields)
    if end_stream:
        stream.state_machine.process_input(StreamInputs.SEND_END_STREAM)
    size = conn.max_outbound_frame_size
    frames = []
    flags = _END_STREAM if end_stream else 0
    kind = _HEADERS
    for at in range(0, max(len(block), 1), size):
        piece = block[at:at + size]
        last = at + size >= len(block)
        frames.append(FRAME_HEADER.pack(len(piece) >> 8, len(piece) & 0xFF, kind,
                                        flags | (_END_HEADERS if last else 0), stream_id))
        frames.append(piece)
        kind, flags = _CONTINUATION, 0
    return b"".join(frames)


def output_pending(conn) -> bool:
    """h2 holds frames for the wire (`conn.data_to_send()` would return some
    bytes); asked before taking them, since taking none still allocates."""
    return bool(conn._data_to_send)


def unsend(conn, length: int) -> None:
    """DATA frames `data_header` accounted that will never be sent (their
    stream was reset first): the peer never counted them, so the connection's
    window gets them back."""
    conn.outbound_flow_control_window += length


def remote_open(conn, stream_id: int) -> bool:
    """The client may still send on the stream (its request is not ended)."""
    stream = conn.streams.get(stream_id)
    return stream is not None and stream.state_machine.state in _REMOTE_OPEN


def local_open(conn, stream_id: int) -> bool:
    """This side has not ended the stream (a response is still owed)."""
    stream = conn.streams.get(stream_id)
    return stream is not None and stream.state_machine.state in _LOCAL_OPEN


def closed_before(conn, stream_id: int) -> bool:
    """A client stream that h2 has closed (or forgotten) by now."""
    if stream_id == 0 or stream_id > conn.highest_inbound_stream_id:
        return False
    stream = conn.streams.get(stream_id)
    return stream is None or stream.closed


def opened_later(conn, stream_id: int) -> bool:
    """A client stream id h2 has not seen yet."""
    return stream_id > conn.highest_inbound_stream_id


def set_local_settings(conn, values: dict) -> None:
    """Replace this side's settings as h2 enforces them, without a SETTINGS
    frame: before initiate_connection() they are what it advertises; after,
    what h2 enforces (the session advertises a stream limit it answers with
    REFUSED_STREAM, a stream error, while h2 only ends the connection at a
    higher cap)."""
    conn.local_settings = h2.settings.Settings(client=False, initial_values=values)


def goaway_frame(last_stream_id: int, code: int) -> bytes:
    """A GOAWAY frame h2's state does not see, so the streams at or below
    `last_stream_id` go on (h2's close_connection() would end them all)."""
    frame = GoAwayFrame(0)
    frame.last_stream_id = last_stream_id
    frame.error_code = code
    return frame.serialize()
