"""The plaintext guard: whatever path the file takes, every byte the server
puts on the wire is a TLS record, and the file's plaintext never appears.

A TCP relay between the client and the server records the server's bytes.
Cases: the memory transport (context WITH the kTLS option), the socket
transport on a context WITHOUT the option, and the socket transport with
the option: on this host kTLS cannot engage, so the file pump must still go
through SSL_write, never sendfile/send of plaintext; in the kTLS VM it
engages and SSL_sendfile's records are checked the same way.
"""
import os

import pytest

from ktlswsgi.tls.transports import MemoryTransport, SocketTransport

from _tlskit import (ALERT, APPLICATION_DATA, CHANGE_CIPHER_SPEC, HANDSHAKE, expected_ktls,
                     OneConnectionServer, Relay, client_context, connect_tls, parse_records,
                     recv_all_blocking, send_all, send_file_all, sha256, shutdown_all)
import ssl

FILE_BYTES = 3 * 1024 * 1024 + 5


def _capture(context, transport_cls, certs, tmp_path, version, body=b""):
    path = tmp_path / "secret.bin"
    # Recognisable plaintext: a repeated marker that would show in clear.
    marker = b"PLAINTEXT-MARKER-" + os.urandom(8).hex().encode() + b"|"
    payload = (marker * (FILE_BYTES // len(marker) + 1))[:FILE_BYTES]
    path.write_bytes(payload)
    methods = {}

    def scenario(t, deadline):
        methods["file"] = t.file_method
        methods["ktls"] = t.info()["ktls"]
        methods["tls_version"] = t.info()["tls_version"]
        if body:
            send_all(t, body, deadline)
        with open(path, "rb") as f:
            send_file_all(t, f.fileno(), FILE_BYTES, deadline)
        shutdown_all(t, deadline)

    srv = OneConnectionServer(context, transport_cls, scenario)
    relay = Relay(srv.address)
    ctx = client_context(certs.cert, minimum=version, maximum=version)
    with connect_tls(relay.address, ctx) as c:
        got = recv_all_blocking(c)
    srv.join()
    relay.join()
    assert srv.error is None, srv.error
    assert got == body + payload
    return bytes(relay.to_client), marker, payload, methods


def _assert_only_tls_records(wire, marker, payload, version):
    records = parse_records(wire)   # the whole stream splits into records
    types = [r[0] for r in records]
    assert types[0] == HANDSHAKE
    first_app = types.index(APPLICATION_DATA)
    after = types[first_app:]
    # After the handshake: only application data (and a TLS 1.2 alert for
    # close_notify, itself encrypted).
    assert set(after) <= {APPLICATION_DATA, ALERT}, set(after)
    if version == ssl.TLSVersion.TLSv1_3:
        assert set(types[:first_app]) <= {HANDSHAKE, CHANGE_CIPHER_SPEC}
    app_bytes = sum(r[2] for r in records if r[0] == APPLICATION_DATA)
    assert app_bytes >= len(payload)
    assert marker not in wire
    assert marker[:16] not in wire
    for start in (0, len(payload) // 2, len(payload) - 64):
        assert payload[start:start + 64] not in wire


CASES = [
    ("memory-transport-ktls-context", MemoryTransport, "server_context"),
    ("socket-transport-context-without-ktls", SocketTransport, "plain_context"),
    # Not engaged on this host (pread path); engaged in the kTLS VM (SSL_sendfile).
    ("socket-transport-ktls-context", SocketTransport, "server_context"),
]


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3],
                         ids=["tls12", "tls13"])
@pytest.mark.parametrize("name,transport_cls,context_fixture", CASES, ids=[c[0] for c in CASES])
def test_every_byte_on_the_wire_is_a_tls_record(request, certs, tmp_path, version,
                                                name, transport_cls, context_fixture):
    context = request.getfixturevalue(context_fixture)
    wire, marker, payload, methods = _capture(context, transport_cls, certs, tmp_path, version,
                                              body=b"HTTP/1.1 200 OK\r\n\r\n")
    assert methods["ktls"] in expected_ktls(transport_cls, context, methods["tls_version"])
    # The gate: SSL_sendfile only with kTLS TX engaged (never on this host).
    assert methods["file"] == ("ssl_sendfile" if "tx" in methods["ktls"] else "pread_ssl_write")
    _assert_only_tls_records(wire, marker, payload, version)
    assert b"HTTP/1.1 200 OK" not in wire


def test_guard_detects_plaintext(certs, tmp_path):
    """The checker itself fails on a stream carrying plaintext."""
    with pytest.raises(AssertionError):
        parse_records(b"\x16\x03\x03\x00\x01\x00" + b"PLAINTEXT-MARKER")
    with pytest.raises(AssertionError):
        _assert_only_tls_records(b"\x16\x03\x03\x00\x01\x00\x17\x03\x03\x00\x04abcd",
                                 b"abcd", b"abcd", ssl.TLSVersion.TLSv1_2)
