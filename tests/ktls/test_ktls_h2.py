"""HTTP/2 file responses under kTLS: DATA frames whose payload never enters userspace.

- A 50 MB wsgi.file_wrapper download over h2 (TLS 1.2 and 1.3), the server
  under ``strace -f``: sendfile(2) carries the body, nothing near it is read
  into userspace, the server's counters say ``bytes_ssl_sendfile`` = the body,
  the client's sha256 matches.
- The record layout of those frames, measured from the client's side of the
  wire (an HTTP/2 client over a memory BIO counts the TLS records it gets):
  "merged" (header with MSG_MORE, 16384 - 9 payload bytes: one record per
  frame) against "separate" (header by SSL_write, its own record, payload of
  the peer's max frame size).  The numbers go to the kTLS report.
"""
import hashlib
import socket
import ssl
import time

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest

from _ktlskit import TlsStat, counters_line, file_url, wait_no_connections
from support import tls_client_context
from test_ktls_zero_copy import parse_strace, traced_server
import ktls_apps
from ktlswsgi import h2session as streams

MiB = 1 << 20
BIG = 50 * 1000 * 1000
_WINDOW = 2 ** 31 - 1


class H2Client:
    """One HTTP/2 connection over Python's ssl with a memory BIO, so every TLS
    record the server sends is seen (and counted) before it is decrypted."""

    def __init__(self, port: int, cert_pair, version=None, timeout: float = 120.0):
        ctx = tls_client_context(cert_pair, version)
        ctx.set_alpn_protocols(["h2"])
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.inc, self.outb = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.inc, self.outb, server_hostname="localhost")
        self._pending = b""          # ciphertext not yet split into records
        self.records = 0             # TLS records received
        self.wire_bytes = 0          # ciphertext bytes received
        while True:
            try:
                self.tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                self._flush()
                self._recv()
        self._flush()
        assert self.tls.selected_alpn_protocol() == "h2"
        self.h2 = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        self.h2.local_settings = h2.settings.Settings(client=True, initial_values={
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _WINDOW,
            h2.settings.SettingCodes.ENABLE_PUSH: 0})
        self.h2.initiate_connection()
        self.h2.increment_flow_control_window(_WINDOW - 65535)
        self._send_h2()

    def _flush(self):
        data = self.outb.read()
        if data:
            self.sock.sendall(data)

    def _recv(self):
        data = self.sock.recv(1 << 18)
        if not data:
            raise ConnectionError("server closed the connection")
        self.wire_bytes += len(data)
        buf = self._pending + data
        pos = 0
        while len(buf) - pos >= 5:
            length = int.from_bytes(buf[pos + 3:pos + 5], "big")
            if len(buf) - pos < 5 + length:
                break
            self.records += 1
            pos += 5 + length
        self._pending = buf[pos:]
        self.inc.write(data)

    def _send_h2(self):
        data = self.h2.data_to_send()
        if data:
            self.tls.write(data)
            self._flush()

    def _events(self):
        self._recv()
        out = []
        while True:
            try:
                plain = self.tls.read(1 << 20)
            except ssl.SSLWantReadError:
                break
            if not plain:
                break
            out.extend(self.h2.receive_data(plain))
        self._send_h2()
        return out

    def get(self, path: str, deadline_s: float = 600.0, headers=()):
        """-> (status, body length, sha256, DATA frames with payload, largest payload)."""
        sid = self.h2.get_next_available_stream_id()
        self.h2.send_headers(sid, [(":method", "GET"), (":scheme", "https"),
                                   (":authority", "localhost"), (":path", path), *headers],
                             end_stream=True)
        self._send_h2()
        status, length, frames, largest = None, 0, 0, 0
        digest = hashlib.sha256()
        end = time.monotonic() + deadline_s
        while True:
            assert time.monotonic() < end, "no complete response in %.0fs" % deadline_s
            for ev in self._events():
                if isinstance(ev, h2.events.ResponseReceived) and ev.stream_id == sid:
                    status = int(dict(ev.headers)[b":status"])
                elif isinstance(ev, h2.events.DataReceived) and ev.stream_id == sid:
                    if ev.data:
                        frames += 1
                        largest = max(largest, len(ev.data))
                        length += len(ev.data)
                        digest.update(ev.data)
                    self.h2.acknowledge_received_data(ev.flow_controlled_length, sid)
                elif isinstance(ev, h2.events.StreamEnded) and ev.stream_id == sid:
                    self._send_h2()
                    return status, length, digest.hexdigest(), frames, largest
                elif isinstance(ev, (h2.events.StreamReset, h2.events.ConnectionTerminated)):
                    raise AssertionError("server ended the stream: %r" % ev)
            self._send_h2()

    def close(self):
        self.h2.close_connection()
        self._send_h2()
        self.sock.close()


@pytest.mark.timeout(500)
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_h2_50mb_file_moves_by_sendfile_not_through_userspace(cert_pair, ktls_files, tmp_path,
                                                             ktls_report, version):
    path, sha = ktls_files.get(BIG)
    server, trace = traced_server(cert_pair, tmp_path)
    try:
        client = H2Client(server.port, cert_pair, version)
        try:
            status, length, digest, frames, largest = client.get(file_url(path))
        finally:
            client.close()
    finally:
        rc, err = server.stop()
    assert rc == 0, err[-3000:]
    assert status == 200 and length == BIG and digest == sha
    with open(trace) as f:
        returned, calls, summary = parse_strace(f.read())
    counters = counters_line(err)
    title = "HTTP/2 zero copy: strace -f -C of the server, one 50 MB h2 download, TLS " + version
    for line in summary:
        ktls_report.note(title, line)
    ktls_report.note(title, "bytes returned: " + ", ".join("%s=%d" % kv for kv in returned.items()))
    ktls_report.note(title, "server: " + " ".join("%s=%d" % (k, counters[k]) for k in (
        "h2_streams", "ktls_tx_connections", "bytes_ssl_sendfile", "bytes_pread_ssl_write",
        "bytes_ssl_write")) + "; DATA frames %d, largest payload %d" % (frames, largest))
    assert counters["h2_connections"] == 1 and counters["h2_streams"] == 1
    assert counters["ktls_tx_connections"] == 1
    assert counters["bytes_ssl_sendfile"] == BIG and counters["bytes_pread_ssl_write"] == 0
    assert returned["sendfile"] == BIG, returned
    # What read/pread64 saw is Python's start-up, not the file; what was
    # written from userspace is frame headers and control frames.
    assert returned["pread64"] + returned["read"] < BIG // 10, returned
    assert returned["write"] + returned["sendto"] + returned["sendmsg"] < 9 * frames + MiB
    assert largest <= 16384


@pytest.mark.timeout(400)
@pytest.mark.parametrize("layout", ["merged", "separate"])
def test_h2_data_frame_record_layout(serve_tls, cert_pair, ktls_files, ktls_report, monkeypatch,
                                     layout):
    """Records per DATA frame and bytes on the wire for 8 MiB over h2, TLS 1.3."""
    size = 8 * MiB
    path, sha = ktls_files.get(size)
    monkeypatch.setattr(streams, "ZERO_COPY_LAYOUT", layout)
    stat = TlsStat()
    srv = serve_tls(ktls_apps.app, transport="socket")
    client = H2Client(srv.port, cert_pair, "1.3")
    try:
        client.get(file_url(path))  # warm the page cache and the windows
        records0, wire0 = client.records, client.wire_bytes
        status, length, digest, frames, largest = client.get(file_url(path))
        records, wire = client.records - records0, client.wire_bytes - wire0
    finally:
        client.close()
    wait_no_connections(srv)
    assert status == 200 and length == size and digest == sha
    c = srv.counters
    assert c.ktls_tx_connections == 1 and c.bytes_ssl_sendfile == 2 * size
    per_frame = records / frames
    overhead = (wire - size) / size
    tls_stat = stat.delta()
    ktls_report.note("HTTP/2 DATA frame layout under kTLS TX (8 MiB, TLS 1.3, client-side count)",
                     "%-8s frames %5d, largest payload %5d, records %5d, records/frame %.3f, "
                     "wire bytes %d (+%.2f%% over the body), tls_stat %s"
                     % (layout, frames, largest, records, per_frame, wire, 100 * overhead,
                        tls_stat))
    if layout == "merged":
        # One record per frame (plus a few for HEADERS and WINDOW_UPDATE acks).
        assert largest == 16384 - 9
        assert per_frame < 1.05, (records, frames)
    else:
        assert largest == 16384
        assert per_frame >= 1.9, (records, frames)  # a 9-byte record before each payload


@pytest.mark.timeout(400)
def test_h2_reset_mid_file_under_ktls_receives_only_its_own_file(serve_tls, cert_pair, tmp_path):
    """A client resets a zero-copy download (SSL_sendfile frames queued, one
    half on the wire) while another connection keeps opening another file:
    every DATA byte it got is its own file's, and its connection carries on."""
    from test_http2_limits import H2Wire
    from test_http2_resets import files_app, reset_mid_file_rounds

    conns = []

    def h2(port, **kw):
        c = H2Wire(port, cert_pair, timeout=60, **kw)
        conns.append(c)
        return c

    srv = serve_tls(files_app(str(tmp_path)), transport="socket")
    try:
        reset_mid_file_rounds(srv, h2, cert_pair, tmp_path, rounds=3)
    finally:
        for c in conns:
            c.close()
    c = srv.counters
    assert c.ktls_tx_connections >= 2, counters_line(c)
    assert c.bytes_ssl_sendfile > 0 and c.bytes_pread_ssl_write == 0, counters_line(c)
