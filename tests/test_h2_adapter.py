"""The h2 adapter's contract (ktlswsgi/h2adapter.py), on every h2 release the
project allows.

`contract()` drives two h2 server connections side by side through the same
exchange with a client: one frames DATA with h2's public `send_data`, the
other with the adapter's `data_header` (the payload sent by the caller), and
response heads with `send_headers` and the adapter's `headers_frames`; after
every frame their bytes on the wire, both flow-control windows and the
stream states must be equal, and each client must see the same events.  It
also holds the adapter's other reaches into h2 (settings, GOAWAY, stream
states) to what h2 does.  A release that changes those internals fails here.

It runs in this interpreter (the installed h2) and, in a subprocess, against
the lowest and the highest h2 release of pyproject.toml's range, installed
with pip into a cache directory.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The lowest and the highest release of the range in pyproject.toml (and
# h2adapter.VERSIONS): h2>=4.1,<4.5.
RANGE_ENDS = ("4.1.0", "4.4.1")


def contract() -> list:
    """Mismatches between the adapter and h2's own framing (empty: none)."""
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
    import hpack
    from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame

    from ktlswsgi import h2adapter

    problems = []

    def check(what, a, b):
        if a != b:
            problems.append(f"{what}: send_data {a!r} != adapter {b!r}")

    def connected(max_streams=100):
        server = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=False, header_encoding=None))
        h2adapter.set_local_settings(server, {
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: max_streams,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
        server.initiate_connection()
        client = h2.connection.H2Connection(h2.config.H2Configuration(
            client_side=True, header_encoding=None))
        client.initiate_connection()
        server.receive_data(client.data_to_send())
        client.receive_data(server.data_to_send())
        server.receive_data(client.data_to_send())
        return server, client

    def request(server, client, sid):
        client.send_headers(sid, [(b":method", b"GET"), (b":path", b"/"),
                                  (b":scheme", b"https"), (b":authority", b"x")],
                            end_stream=True)
        server.receive_data(client.data_to_send())
        server.send_headers(sid, [(b":status", b"200")])
        client.receive_data(server.data_to_send())

    def state(conn, sid):
        stream = conn.streams.get(sid)
        return (stream.open if stream else None, stream.closed if stream else None,
                h2adapter.remote_open(conn, sid), h2adapter.local_open(conn, sid))

    a_server, a_client = connected()
    b_server, b_client = connected()
    for sid in (1, 3):
        request(a_server, a_client, sid)
        request(b_server, b_client, sid)
    sends = [(1, 100, False), (3, 16384, False), (1, 16384, False), (3, 5, True),
             (1, 20000 - 16384 - 100 + 4000, False), (1, 7, True)]
    for n, (sid, length, end) in enumerate(sends):
        payload = bytes([n + 1]) * length
        a_server.send_data(sid, payload, end_stream=end)
        a_bytes = a_server.data_to_send()
        header = h2adapter.data_header(b_server, sid, length, end)
        b_bytes = header + payload + b_server.data_to_send()
        check(f"frame {n} bytes", a_bytes, b_bytes)
        check(f"frame {n} stream {sid} window", a_server.local_flow_control_window(sid)
              if not a_server.streams[sid].closed else None,
              b_server.local_flow_control_window(sid)
              if not b_server.streams[sid].closed else None)
        check(f"frame {n} connection window", a_server.outbound_flow_control_window,
              b_server.outbound_flow_control_window)
        check(f"frame {n} stream {sid} state", state(a_server, sid), state(b_server, sid))
        a_events = [type(e).__name__ for e in a_client.receive_data(a_bytes)]
        b_events = [type(e).__name__ for e in b_client.receive_data(b_bytes)]
        check(f"frame {n} client events", a_events, b_events)

    # headers_frames against send_headers: a response head, an informational
    # one first, one over the frame size (CONTINUATION), with and without
    # END_STREAM; the connections are configured as http2.py's.
    def head_exchange(sid, fields, end, via_adapter, server, client):
        client.send_headers(sid, [(b":method", b"GET"), (b":path", b"/"),
                                  (b":scheme", b"https"), (b":authority", b"x")],
                            end_stream=True)
        server.receive_data(client.data_to_send())
        if via_adapter:
            out = server.data_to_send() + h2adapter.headers_frames(server, sid, fields, end)
        else:
            server.send_headers(sid, fields, end_stream=end)
            out = server.data_to_send()
        return out

    def as_http2py():
        server, client = connected()
        for conn in (server,):
            conn.config.validate_outbound_headers = False
            conn.config.normalize_outbound_headers = False
        return server, client

    a_server, a_client = as_http2py()
    b_server, b_client = as_http2py()
    big = [(b"x-%d" % i, b"v" * 300) for i in range(80)]     # a block over 16 KiB
    heads = [(1, [(b":status", b"200"), (b"content-length", b"0")], True),
             (3, [(b":status", b"100")], False),
             (5, [(b":status", b"404"), (b"set-cookie", b"a=1")] + big, False),
             (7, [(b":status", b"204")] + big, True)]
    for sid, fields, end in heads:
        a = head_exchange(sid, fields, end, False, a_server, a_client)
        b = head_exchange(sid, fields, end, True, b_server, b_client)
        check(f"stream {sid} head bytes", a, b)
        check(f"stream {sid} state", state(a_server, sid), state(b_server, sid))
        check(f"stream {sid} request_method", a_server.streams[sid].request_method,
              b_server.streams[sid].request_method)
        a_events = [(type(e).__name__, getattr(e, "headers", None)) for e in a_client.receive_data(a)]
        b_events = [(type(e).__name__, getattr(e, "headers", None)) for e in b_client.receive_data(b)]
        check(f"stream {sid} client events", a_events, b_events)
    for via_adapter, server in ((False, a_server), (True, b_server)):
        try:
            if via_adapter:
                h2adapter.headers_frames(server, 3, [(b":status", b"103")], True)
            else:
                server.send_headers(3, [(b":status", b"103")], end_stream=True)
            problems.append(f"END_STREAM on a 1xx head accepted ({'adapter' if via_adapter else 'h2'})")
        except h2.exceptions.ProtocolError:
            pass

    # unsend: the connection window gets back exactly what was accounted.
    server, client = connected()
    request(server, client, 1)
    before = server.outbound_flow_control_window
    h2adapter.data_header(server, 1, 1000, False)
    h2adapter.unsend(server, 1000)
    check("unsend restores the connection window", before, server.outbound_flow_control_window)

    # A GOAWAY the adapter builds: a valid frame, and h2's state stays open.
    server, client = connected()
    request(server, client, 1)
    frame, length = Frame.parse_frame_header(memoryview(h2adapter.goaway_frame(2 ** 31 - 1, 0)[:9]))
    frame.parse_body(memoryview(h2adapter.goaway_frame(2 ** 31 - 1, 0)[9:9 + length]))
    check("goaway frame", (type(frame), frame.last_stream_id, frame.error_code),
          (GoAwayFrame, 2 ** 31 - 1, 0))
    try:
        server.send_data(1, b"after goaway", end_stream=True)
    except h2.exceptions.ProtocolError as exc:
        problems.append(f"h2 refused DATA after the adapter's GOAWAY: {exc}")

    # set_local_settings after initiate_connection: what h2 enforces, no frame sent.
    server, client = connected(max_streams=2)
    h2adapter.set_local_settings(server, {
        h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 4,
        h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: 65535})
    check("no SETTINGS frame for the enforced cap", server.data_to_send(), b"")
    # Hand-built HEADERS (the client's own h2 keeps to the advertised 2).
    encoder = hpack.Encoder()
    block = [(b":method", b"GET"), (b":path", b"/"), (b":scheme", b"https"),
             (b":authority", b"x")]
    opened = 0
    try:
        for sid in (1, 3, 5, 7, 9):
            server.receive_data(HeadersFrame(sid, data=encoder.encode(block),
                                             flags=["END_HEADERS"]).serialize())
            opened += 1
    except h2.exceptions.TooManyStreamsError:
        pass
    check("streams accepted up to the enforced cap, and no more", opened, 4)

    # output_pending: whether data_to_send() would return bytes.
    server, client = connected()
    check("nothing pending after the handshake", (h2adapter.output_pending(server),
                                                  server.data_to_send()), (False, b""))
    server.ping(b"12345678")
    check("a PING pending", h2adapter.output_pending(server), True)
    check("taken", (len(server.data_to_send()), h2adapter.output_pending(server)), (17, False))

    # Stream states as the HTTP/2 limits read them.
    server, client = connected()
    check("a stream not opened yet", (h2adapter.opened_later(server, 1),
                                      h2adapter.closed_before(server, 1)), (True, False))
    request(server, client, 1)        # the client ended its side
    check("half-closed (remote)", (h2adapter.remote_open(server, 1),
                                   h2adapter.local_open(server, 1),
                                   h2adapter.opened_later(server, 1)), (False, True, False))
    server.send_data(1, b"x", end_stream=True)
    check("closed", (h2adapter.local_open(server, 1), h2adapter.closed_before(server, 1)),
          (False, True))
    return problems


def test_the_adapter_matches_h2_here():
    import h2
    problems = contract()
    assert not problems, f"h2 {h2.__version__}: " + "; ".join(problems)


def _h2_release(version: str) -> str:
    """A directory holding h2 `version` (and the hpack/hyperframe it needs)."""
    cache = os.path.join(os.path.expanduser("~"), ".cache", "ktlswsgi", "h2-releases", version)
    if not os.path.exists(os.path.join(cache, "h2", "__init__.py")):
        r = subprocess.run([sys.executable, "-m", "pip", "install", "-q",
                            "--disable-pip-version-check", "--target", cache,
                            f"h2=={version}"], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, f"cannot install h2 {version}: {r.stderr[-2000:]}"
    return cache


@pytest.mark.parametrize("version", RANGE_ENDS)
def test_the_adapter_matches_h2_on_the_range_ends(version):
    target = _h2_release(version)
    code = ("import sys, h2; from test_h2_adapter import contract; p = contract(); "
            "print(h2.__version__); print('; '.join(p)); sys.exit(1 if p else 0)")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [target, ROOT, os.path.join(ROOT, "tests")]))
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=env)
    lines = r.stdout.splitlines()
    assert lines and lines[0] == version, (r.stdout, r.stderr[-2000:])
    assert r.returncode == 0, f"h2 {version}: {r.stdout} {r.stderr[-2000:]}"


def test_pyproject_range_is_the_adapters():
    from ktlswsgi import h2adapter
    with open(os.path.join(ROOT, "pyproject.toml")) as f:
        text = f.read()
    spec = "h2" + ",".join(h2adapter.VERSIONS)
    assert f'"{spec}"' in text, spec
    assert '"hyperframe' in text
