"""A file's descriptor belongs to its response until the last byte naming it
has left the wire or been discarded (sans-I/O: tests/sansio.py).

HTTP/2 with the zero-copy framing (a DATA frame = a 9-byte header + a file
range the pump sends from the descriptor; forced here by a transport that says
kTLS TX is on): a client resets a stream while its frames are queued and one
is half on the wire; another stream then opens another file (the kernel hands
out the lowest free descriptor number, so a closed descriptor's number is
reused at once).  The half-sent frame must complete from its own file, the
queued ones must be discarded (their window given back), the file must close
exactly once, and the connection and its other streams carry on.
"""
from __future__ import annotations

import os

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from sansio import Harness

KiB = 1024
BIG_WINDOW = 2 ** 30


class TrackedFile:
    """A real file object whose close() calls are counted."""

    def __init__(self, path):
        self.f = open(path, "rb")
        self.closes = 0

    def fileno(self):
        return self.f.fileno()

    def tell(self):
        return self.f.tell()

    def read(self, n=-1):
        return self.f.read(n)

    def close(self):
        self.closes += 1
        self.f.close()


def make_file(tmp_path, name: str, size: int, seed: int) -> str:
    path = tmp_path / name
    block = bytes((seed + i) % 251 for i in range(251))
    path.write_bytes((block * (size // 251 + 1))[:size])
    return str(path)


def file_app(paths: dict, opened: dict):
    def app(environ, start_response):
        tracked = TrackedFile(paths[environ["PATH_INFO"]])
        opened[environ["PATH_INFO"]] = tracked
        size = os.fstat(tracked.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](tracked)
    return app


class H2Client:
    """The h2 library as the client, its bytes carried by the harness."""

    def __init__(self, harness: Harness):
        self.h = harness
        cfg = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.c = h2.connection.H2Connection(cfg)
        self.c.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: BIG_WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.c.initiate_connection()
        self.c.increment_flow_control_window(BIG_WINDOW)
        self.data: dict[int, bytearray] = {}
        self.ended: set[int] = set()
        self.resets: dict[int, int] = {}
        self.status: dict[int, int] = {}
        self.raw_data: dict[int, bytearray] = {}   # DATA payloads as framed on the wire
        self._raw = bytearray()
        self.flush()

    def flush(self) -> None:
        self.h.deliver(self.c.data_to_send())
        self.read()

    def read(self) -> None:
        out = self.h.output()
        if not out:
            return
        self._raw += out
        while len(self._raw) >= 9:
            length = int.from_bytes(self._raw[:3], "big")
            if len(self._raw) < 9 + length:
                break
            ftype, sid = self._raw[3], int.from_bytes(self._raw[5:9], "big") & 0x7FFFFFFF
            if ftype == 0:
                self.raw_data.setdefault(sid, bytearray()).extend(self._raw[9:9 + length])
            del self._raw[:9 + length]
        for ev in self.c.receive_data(out):
            if isinstance(ev, h2.events.ResponseReceived):
                self.status[ev.stream_id] = int(dict(ev.headers)[b":status"])
            elif isinstance(ev, h2.events.DataReceived):
                self.data.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            elif isinstance(ev, h2.events.StreamEnded):
                self.ended.add(ev.stream_id)
            elif isinstance(ev, h2.events.StreamReset):
                self.resets[ev.stream_id] = ev.error_code
        data = self.c.data_to_send()
        if data:
            self.h.deliver(data)

    def get(self, path: str) -> int:
        sid = self.c.get_next_available_stream_id()
        self.c.send_headers(sid, [(b":method", b"GET"), (b":path", path.encode()),
                                  (b":scheme", b"https"), (b":authority", b"localhost")],
                            end_stream=True)
        self.flush()
        return sid

    def reset(self, sid: int) -> None:
        self.c.reset_stream(sid)
        self.flush()


@pytest.fixture
def files(tmp_path):
    a = make_file(tmp_path, "a.bin", 200 * KiB, seed=1)
    b = make_file(tmp_path, "b.bin", 200 * KiB, seed=77)
    return {"/a": a, "/b": b}


def read_bytes(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


def test_reset_stream_keeps_its_file_open_until_the_half_sent_frame_is_done(
        monkeypatch, files):
    opened: dict = {}
    h = Harness(file_app(files, opened), monkeypatch, alpn="h2", ktls_tx=True)
    client = H2Client(h)
    h.transport.room = 0                       # the socket takes nothing for now
    sid_a = client.get("/a")
    h.run_jobs()
    assert h.conn.session.streams[sid_a].file is not None or h.conn.pump.wire
    # Let the response head and part of the first DATA frame's payload out.
    h.transport.room = 6000
    h.writable()
    client.read()
    sent = sum(n for _, _, n in h.transport.file_sends)
    assert 0 < sent < 16 * KiB, sent          # half of the first frame's payload

    client.reset(sid_a)                        # the client cancels the download
    assert opened["/a"].closes == 0, "closed while a frame still names it"
    # Another stream opens another file now (a reused descriptor number, if
    # the first file had been closed).
    sid_b = client.get("/b")
    h.run_jobs()
    h.transport.room = None
    h.writable()
    client.read()

    a, b = read_bytes(files["/a"]), read_bytes(files["/b"])
    got_a = bytes(client.raw_data.get(sid_a, b""))
    assert got_a == a[:len(got_a)], "stream A received bytes that are not A's"
    # The half-sent frame completed; the frames queued behind it were discarded.
    assert len(got_a) == 16384 - 9
    assert client.status[sid_b] == 200 and sid_b in client.ended
    assert bytes(client.data[sid_b]) == b
    h.run_jobs()                               # close() runs on the pool
    assert opened["/a"].closes == 1 and opened["/b"].closes == 1
    assert h.state == "open", "the connection must carry on after a client cancel"
    # The discarded frames' bytes went back to the connection window: it
    # shrank by exactly the DATA the client received (it sent no WINDOW_UPDATE).
    window = h.conn.session.driver._h2.outbound_flow_control_window
    assert window == 65535 + BIG_WINDOW - len(got_a) - len(b)


def test_connection_abort_mid_frame_closes_each_file_once(monkeypatch, files):
    opened: dict = {}
    h = Harness(file_app(files, opened), monkeypatch, alpn="h2", ktls_tx=True)
    client = H2Client(h)
    h.transport.room = 0
    client.get("/a")
    client.get("/b")
    h.run_jobs()
    h.transport.room = 20000
    h.writable()
    h.deliver(eof=True)                       # the client vanished mid-transfer
    h.run_jobs()                              # clean-ups on the pool, if any
    assert h.state == "closed"
    assert opened["/a"].closes == 1 and opened["/b"].closes == 1


def test_http1_file_closes_once_after_its_last_byte(monkeypatch, files):
    opened: dict = {}
    h = Harness(file_app(files, opened), monkeypatch, tls=False)
    h.transport.room = 0
    h.deliver(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    sent = bytearray()
    while True:
        h.transport.room = 50 * KiB
        h.writable()
        sent += h.output()
        h.run_jobs()
        if opened["/a"].closes:
            break
        assert len(sent) < 300 * KiB
    body = bytes(sent).split(b"\r\n\r\n", 1)[1]
    assert body == read_bytes(files["/a"]), "closed before the last byte left"
    assert opened["/a"].closes == 1
    assert h.state == "open" and h.conn.session.state == "idle"


def test_http1_abort_mid_file_closes_it_once(monkeypatch, files):
    opened: dict = {}
    h = Harness(file_app(files, opened), monkeypatch, tls=False)
    h.transport.room = 0
    h.deliver(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
    h.run_jobs()
    h.transport.room = 30 * KiB
    h.writable()
    assert opened["/a"].closes == 0
    h.conn.abort("test")
    h.run_jobs()
    assert opened["/a"].closes == 1
