"""Behind proxies, end to end: PROXY protocol v1/v2 headers before HTTP and TLS
(both transports), trusted X-Forwarded-* / Forwarded headers, and the flags.

Real sockets and clients: a raw socket sends the PROXY header, then the HTTP
request, or Python's ssl takes the same socket over for the handshake.
"""
from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import time

import pytest

from ktlswsgi import cli
from ktlswsgi.proxyproto import V2_SIGNATURE, build_v1, build_v2
from support import read_response, recv_until_closed, response_reader, tls_client_context, wait_until

TRANSPORTS = ["memory", "socket"]
KEYS = ["REMOTE_ADDR", "REMOTE_PORT", "SERVER_NAME", "SERVER_PORT", "wsgi.url_scheme",
        "HTTPS", "HTTP_X_FORWARDED_FOR"]
# The first bytes of a TLS ClientHello record.
CLIENT_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(range(32))
# A marker the malformed headers carry: it must never reach a log line.
MARKER = "Zq9MARKERq9Z"


def environ_app(environ, start_response):
    body = json.dumps({k: environ.get(k) for k in KEYS}).encode()
    start_response("200 OK", [("Content-Type", "application/json"),
                              ("Content-Length", str(len(body)))])
    return [body]


def flask_app():
    from flask import Flask, jsonify, request
    app = Flask(__name__)

    @app.get("/")
    def index():
        return jsonify(scheme=request.scheme, remote_addr=request.remote_addr,
                       url=request.url, is_secure=request.is_secure,
                       x_forwarded_for=request.headers.get("X-Forwarded-For"))
    return app


@contextlib.contextmanager
def captured(logger_name: str):
    """Records of one logger at INFO, whatever propagation other tests left set."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    logger = logging.getLogger(logger_name)
    handler, old_level = Keep(logging.DEBUG), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


def messages(records) -> list[str]:
    return [r.getMessage() for r in records]


def request_bytes(path: str = "/", headers=(), version: str = "1.0") -> bytes:
    lines = [f"GET {path} HTTP/{version}"]
    if version == "1.1":
        lines.append("Host: example.test")
    lines += [f"{k}: {v}" for k, v in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def http_environ(srv, first: bytes = b"", headers=(), source: str | None = None) -> dict:
    """Send `first` (a PROXY header) and a request on one connection -> the app's environ."""
    with socket.socket() as sock:
        sock.settimeout(10)
        if source:
            sock.bind((source, 0))
        sock.connect((srv.host, srv.port))
        sock.sendall(first + request_bytes(headers=headers))
        status, _, body = read_response(response_reader(sock))
    assert status == 200
    return json.loads(body)


def assert_still_serving(srv, source: str | None = None) -> None:
    env = http_environ(srv, build_v1(("192.0.2.44", 1044), ("192.0.2.1", 80)), source=source)
    assert env["REMOTE_ADDR"] == "192.0.2.44"


def assert_closed_unanswered(sock: socket.socket, timeout_s: float = 5.0) -> None:
    assert recv_until_closed(sock, timeout_s) == b""


def connection_in_state(srv, state: str):
    """The server's only connection, once it is in `state` (else None)."""
    for conn in list(srv.server.connections):
        if conn.state == state:
            return conn
    return None


# -- PROXY protocol on plain TCP --------------------------------------------------------

HEADERS = {
    "v1-tcp4": (build_v1(("203.0.113.7", 4242), ("198.51.100.1", 8443)),
                "203.0.113.7", "4242", "198.51.100.1", "8443"),
    "v1-tcp6": (build_v1(("2001:db8::7", 4243), ("2001:db8::1", 443)),
                "2001:db8::7", "4243", "2001:db8::1", "443"),
    "v2-tcp4": (build_v2(("203.0.113.8", 4244), ("198.51.100.1", 80)),
                "203.0.113.8", "4244", "198.51.100.1", "80"),
    "v2-tcp6-tlvs-crc": (build_v2(("2001:db8::8", 4245), ("2001:db8::1", 443),
                                  tlvs={0x05: b"unique-id"}, crc=True),
                         "2001:db8::8", "4245", "2001:db8::1", "443"),
    "v2-mapped-ipv4": (build_v2(("::ffff:203.0.113.9", 4246), ("::ffff:198.51.100.1", 80)),
                       "203.0.113.9", "4246", "198.51.100.1", "80"),
}


@pytest.mark.parametrize("name", list(HEADERS))
def test_proxy_header_sets_the_peer(serve, name):
    header, addr, port, server_name, server_port = HEADERS[name]
    srv = serve(environ_app, proxy_protocol=True)
    with captured("ktlswsgi.access") as access:
        env = http_environ(srv, header)   # header and request in one send
        wait_until(lambda: access, what="the access log line")
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == (addr, port)
    # An HTTP/1.0 request without Host: the server address is the header's.
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == (server_name, server_port)
    assert env["wsgi.url_scheme"] == "http" and env["HTTPS"] is None
    assert access[0].getMessage().startswith(f"{addr} - - [")


@pytest.mark.parametrize("header", [build_v2(None, None, command="LOCAL"), build_v1(None, None),
                                    build_v2(None, None)], ids=["v2-local", "v1-unknown",
                                                                "v2-unspec"])
def test_local_and_unknown_keep_the_real_addresses(serve, header):
    srv = serve(environ_app, proxy_protocol=True)
    env = http_environ(srv, header)
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["REMOTE_PORT"] != ""
    assert (env["SERVER_NAME"], env["SERVER_PORT"]) == ("127.0.0.1", str(srv.port))


def test_keep_alive_after_the_header(serve):
    srv = serve(environ_app, proxy_protocol=True)
    with srv.connect() as sock:
        sock.sendall(build_v2(("203.0.113.5", 5555), ("192.0.2.1", 80)))
        reader = response_reader(sock)
        for _ in range(3):
            sock.sendall(request_bytes(version="1.1"))
            status, _, body = read_response(reader)
            assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "203.0.113.5"
    assert srv.counters.connections == 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_split_across_sends_with_pauses(serve, version):
    srv = serve(environ_app, proxy_protocol=True)
    header = (build_v1(("203.0.113.10", 1010), ("192.0.2.1", 80)) if version == "v1"
              else build_v2(("203.0.113.10", 1010), ("192.0.2.1", 80)))
    # Cut inside the signature / the "PROXY " prefix, then inside the addresses.
    cuts = [3, 14, len(header) - 2]
    with srv.connect() as sock:
        sent = 0
        for cut in cuts:
            sock.sendall(header[sent:cut])
            sent = cut
            # The server took every byte so far and still waits for the rest.
            wait_until(lambda: (c := connection_in_state(srv, "proxy")) is not None
                     and c._proxy_reader.parser.bytes_received == sent, what=f"{sent} bytes consumed")
            time.sleep(0.05)  # pacing: a slow load balancer
        sock.sendall(header[sent:] + request_bytes())
        status, _, body = read_response(response_reader(sock))
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "203.0.113.10"


# -- PROXY protocol before TLS, both transports ------------------------------------------

@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_proxy_header_before_tls(serve_tls, cert_pair, transport, version):
    srv = serve_tls(environ_app, transport=transport, proxy_protocol=True)
    src, dst = ("198.51.100.20", 2020), ("192.0.2.1", 443)
    header = build_v1(src, dst) if version == "v1" else build_v2(src, dst)
    ctx = tls_client_context(cert_pair)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        raw.sendall(header)
        with ctx.wrap_socket(raw, server_hostname="localhost") as tls:
            reader = response_reader(tls)
            for _ in range(2):  # keep-alive over the one TLS connection
                tls.sendall(request_bytes(version="1.1"))
                status, _, body = read_response(reader)
                env = json.loads(body)
                assert status == 200
                assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("198.51.100.20", "2020")
                assert env["wsgi.url_scheme"] == "https" and env["HTTPS"] == "on"
    assert srv.counters.handshakes_ok == 1


class MemoryTLSClient:
    """Python's ssl over BIOs, so the test decides what each send() carries."""

    def __init__(self, sock: socket.socket, ctx: ssl.SSLContext):
        self.sock = sock
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = ctx.wrap_bio(self.incoming, self.outgoing, server_hostname="localhost")

    def handshake(self, prefix: bytes) -> None:
        """Handshake; `prefix` goes out in the same send() as the ClientHello."""
        while True:
            try:
                self.tls.do_handshake()
                done = True
            except ssl.SSLWantReadError:
                done = False
            out = prefix + self.outgoing.read()
            prefix = b""
            if out:
                self.sock.sendall(out)
            if done:
                return
            self._fill()

    def _fill(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.incoming.write_eof()
        else:
            self.incoming.write(data)

    def request_until_close(self, data: bytes) -> bytes:
        self.tls.write(data)
        self.sock.sendall(self.outgoing.read())
        got = []
        while True:
            try:
                chunk = self.tls.read(65536)
            except ssl.SSLWantReadError:
                self._fill()
                continue
            except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
                break
            if not chunk:
                break
            got.append(chunk)
        return b"".join(got)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", ["v1", "v2"])
def test_header_and_client_hello_in_one_send(serve_tls, cert_pair, transport, version):
    """The bytes after the header stay in the socket for OpenSSL (the socket
    transport reads the fd itself): the ClientHello rides in the same segment."""
    srv = serve_tls(environ_app, transport=transport, proxy_protocol=True)
    src, dst = ("2001:db8::30", 3030), ("2001:db8::1", 443)
    header = build_v1(src, dst) if version == "v1" else build_v2(src, dst)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        client = MemoryTLSClient(raw, tls_client_context(cert_pair))
        client.handshake(prefix=header)
        reply = client.request_until_close(request_bytes())
    head, _, body = reply.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ")
    env = json.loads(body)
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"], env["HTTPS"]) == ("2001:db8::30", "3030", "on")


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_split_header_before_tls(serve_tls, cert_pair, transport):
    srv = serve_tls(environ_app, transport=transport, proxy_protocol=True)
    header = build_v2(("203.0.113.40", 4040), ("192.0.2.1", 443), tlvs={0x01: b"http/1.1"})
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        for piece in (header[:5], header[5:20], header[20:]):
            raw.sendall(piece)
            time.sleep(0.05)  # pacing
        # The whole header is taken, the connection moves on to the handshake.
        wait_until(lambda: connection_in_state(srv, "handshake"), what="the handshake state")
        with tls_client_context(cert_pair).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request_bytes())
            status, _, body = read_response(response_reader(tls))
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "203.0.113.40"


# -- connections without a valid header are closed; the server keeps serving ------------

def test_untrusted_direct_peer_is_closed_unread(serve):
    srv = serve(environ_app, proxy_protocol=True, proxy_allow_from="10.9.9.9,127.0.0.2")
    with captured("ktlswsgi.connection") as records:
        with srv.connect() as sock:   # from 127.0.0.1: not listed
            sock.sendall(build_v1(("203.0.113.66", 6666), ("192.0.2.1", 80)) + request_bytes())
            assert_closed_unanswered(sock)
        wait_until(lambda: records, what="the log line")
    assert messages(records) == [
        "127.0.0.1: peer not in --proxy-allow-from, PROXY header not accepted; closing"]
    assert records[0].levelno == logging.INFO
    assert_still_serving(srv, source="127.0.0.2")   # a listed peer
    assert srv.counters.requests == 1


MALFORMED = {
    "http-without-header": (request_bytes(path="/" + MARKER), "not a PROXY protocol header"),
    "tls-without-header": (CLIENT_HELLO, "not a PROXY protocol header"),
    "v1-bad-port": (f"PROXY TCP4 192.0.2.1 192.0.2.2 0{MARKER} 80\r\n".encode(),
                    "v1 source port is not a decimal 0-65535 without leading zeros"),
    "v1-no-crlf": (("PROXY TCP4 " + MARKER * 20).encode(),
                   "v1 line without CRLF in its first 107 bytes"),
    "v1-control-byte": (b"PROXY TCP4 192.0.2.1\x00 " + MARKER.encode(),
                        "v1 line with a control or non-ASCII byte"),
    "v2-over-the-bound": (V2_SIGNATURE + b"\x21\x11" + (2000).to_bytes(2, "big"),
                          "v2 header of 2016 bytes, over the limit of 1040"),
    "v2-bad-version": (V2_SIGNATURE + b"\x31\x11\x00\x0c" + bytes(12), "v2 version 3, only 2 is defined"),
}


@pytest.mark.parametrize("name", list(MALFORMED))
def test_malformed_header_is_closed_with_its_reason(serve, name):
    data, reason = MALFORMED[name]
    srv = serve(environ_app, proxy_protocol=True)
    with captured("ktlswsgi.connection") as records:
        with srv.connect() as sock:
            sock.sendall(data)
            assert_closed_unanswered(sock)
        wait_until(lambda: records, what="the log line")
    assert messages(records) == [f"127.0.0.1: no valid PROXY header ({reason}); closing"]
    assert records[0].levelno == logging.INFO
    assert all(MARKER not in m for m in messages(records))
    assert_still_serving(srv)
    assert srv.counters.requests == 1


@pytest.mark.parametrize("partial", [b"", b"PROXY TCP4 192.0.2.1", V2_SIGNATURE[:7]],
                         ids=["nothing", "half-v1", "half-v2"])
def test_silent_client_is_closed_by_the_deadline(serve, partial):
    srv = serve(environ_app, proxy_protocol=True, proxy_header_timeout_s=0.3)
    with captured("ktlswsgi.connection") as records:
        with srv.connect() as sock:
            started = time.monotonic()
            sock.sendall(partial)
            assert_closed_unanswered(sock, timeout_s=5)
            waited_s = time.monotonic() - started
        wait_until(lambda: records, what="the log line")
    assert 0.25 <= waited_s < 3
    assert messages(records) == ["127.0.0.1: no complete PROXY header in 0.3s; closing"]
    assert_still_serving(srv)


@pytest.mark.parametrize("partial,reason", [
    (b"", "closed before a PROXY header"),
    (b"PROXY TCP4 192.0.2.1 ", "closed after 21 bytes of an incomplete PROXY header"),
])
def test_client_closing_before_the_end_of_the_header(serve, partial, reason):
    srv = serve(environ_app, proxy_protocol=True)
    with captured("ktlswsgi.connection") as records:
        with srv.connect() as sock:
            sock.sendall(partial)
            sock.shutdown(socket.SHUT_WR)
            assert_closed_unanswered(sock)
        wait_until(lambda: records, what="the log line")
    assert messages(records) == [f"127.0.0.1: no valid PROXY header ({reason}); closing"]
    assert_still_serving(srv)


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_tls_client_without_header_is_closed(serve_tls, cert_pair, transport):
    srv = serve_tls(environ_app, transport=transport, proxy_protocol=True)
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        with pytest.raises((ssl.SSLError, OSError)):
            tls_client_context(cert_pair).wrap_socket(raw, server_hostname="localhost")
    with socket.create_connection((srv.host, srv.port), timeout=10) as raw:
        raw.sendall(build_v1(("192.0.2.50", 5050), ("192.0.2.1", 443)))
        with tls_client_context(cert_pair).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request_bytes())
            status, _, body = read_response(response_reader(tls))
    assert status == 200 and json.loads(body)["REMOTE_ADDR"] == "192.0.2.50"


# -- X-Forwarded-* and Forwarded ----------------------------------------------------------

FORWARDED_HTTPS = [("X-Forwarded-Proto", "https"), ("X-Forwarded-For", "203.0.113.77")]


def flask_get(srv, headers) -> dict:
    with srv.connect() as sock:
        sock.sendall(request_bytes(headers=headers, version="1.1"))
        status, _, body = read_response(response_reader(sock))
    assert status == 200
    return json.loads(body)


def test_trusted_proxy_headers_reach_flask(serve):
    srv = serve(flask_app())   # default --forwarded-allow-ips: 127.0.0.1,::1
    got = flask_get(srv, FORWARDED_HTTPS)
    assert got["scheme"] == "https" and got["is_secure"] is True
    assert got["remote_addr"] == "203.0.113.77"
    assert got["url"] == "https://example.test/"


def test_untrusted_peer_headers_do_not_reach_flask(serve):
    srv = serve(flask_app(), forwarded_allow_ips="10.0.0.0/8")
    got = flask_get(srv, FORWARDED_HTTPS)
    assert got["scheme"] == "http" and got["is_secure"] is False
    assert got["remote_addr"] == "127.0.0.1"
    assert got["x_forwarded_for"] == "203.0.113.77"   # still there, unapplied


@pytest.mark.parametrize("headers,spec,client", [
    # The client wrote the left entry; its proxy appended what it saw.
    ([("X-Forwarded-For", "6.6.6.6, 203.0.113.7")], "127.0.0.1", "203.0.113.7"),
    ([("X-Forwarded-For", "127.0.0.1"), ("X-Forwarded-For", "203.0.113.7")], "127.0.0.1",
     "203.0.113.7"),
    # Two proxies: the inner one's address is trusted, the client's is not.
    ([("X-Forwarded-For", "6.6.6.6, 203.0.113.7, 10.1.1.1")], "127.0.0.1,10.0.0.0/8",
     "203.0.113.7"),
    # A spoofed trusted-looking entry left of the real client does not win either.
    ([("X-Forwarded-For", "10.2.2.2, 203.0.113.7")], "127.0.0.1,10.0.0.0/8", "203.0.113.7"),
])
def test_spoofed_leftmost_x_forwarded_for_does_not_win(serve, headers, spec, client):
    srv = serve(environ_app, forwarded_allow_ips=spec)
    env = http_environ(srv, headers=headers)
    assert env["REMOTE_ADDR"] == client and env["REMOTE_PORT"] == ""


def test_forwarded_scheme_sets_and_removes_https(serve, serve_tls, cert_pair):
    plain = serve(environ_app)
    env = http_environ(plain, headers=[("X-Forwarded-Proto", "https")])
    assert (env["wsgi.url_scheme"], env["HTTPS"], env["REMOTE_ADDR"]) == ("https", "on", "127.0.0.1")
    tls_srv = serve_tls(environ_app, transport="memory")
    with socket.create_connection((tls_srv.host, tls_srv.port), timeout=10) as raw:
        with tls_client_context(cert_pair).wrap_socket(raw, server_hostname="localhost") as tls:
            tls.sendall(request_bytes(headers=[("X-Forwarded-Proto", "http")], version="1.1"))
            env = json.loads(read_response(response_reader(tls))[2])
    assert env["wsgi.url_scheme"] == "http" and env["HTTPS"] is None
    assert env["SERVER_PORT"] == "80"   # Host without a port, as the client's scheme says


def test_rfc7239_forwarded_header(serve):
    srv = serve(environ_app, forwarded_header="forwarded")
    env = http_environ(srv, headers=[("Forwarded", 'for="[2001:db8::9]:4711";proto=https'),
                                     ("X-Forwarded-For", "6.6.6.6")])
    assert (env["REMOTE_ADDR"], env["REMOTE_PORT"]) == ("2001:db8::9", "4711")
    assert env["wsgi.url_scheme"] == "https"
    env = http_environ(srv, headers=[("X-Forwarded-For", "6.6.6.6"),
                                     ("X-Forwarded-Proto", "https")])
    assert env["REMOTE_ADDR"] == "127.0.0.1" and env["wsgi.url_scheme"] == "http"


def test_proxy_client_is_the_peer_forwarded_trust_judges(serve):
    srv = serve(environ_app, proxy_protocol=True, forwarded_allow_ips="10.0.0.0/8")
    xff = [("X-Forwarded-For", "198.51.100.4"), ("X-Forwarded-Proto", "https")]
    # An end client behind an L4 balancer: its own X-Forwarded-For is ignored
    # (the balancer at 127.0.0.1 is trusted for PROXY, not for these headers).
    env = http_environ(srv, build_v1(("203.0.113.9", 999), ("192.0.2.1", 80)), xff)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("203.0.113.9", "http")
    # An L7 proxy in 10/8 behind the balancer: its headers apply.
    env = http_environ(srv, build_v1(("10.1.2.3", 999), ("192.0.2.1", 80)), xff)
    assert (env["REMOTE_ADDR"], env["wsgi.url_scheme"]) == ("198.51.100.4", "https")


# -- flags ----------------------------------------------------------------------------------

def test_flags_defaults_and_environment(monkeypatch):
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    _, cfg = cli.parse(["m:app"])
    assert (cfg.forwarded_allow_ips, cfg.proxy_allow_from) == ("127.0.0.1,::1", "127.0.0.1,::1")
    assert (cfg.proxy_protocol, cfg.forwarded_header, cfg.proxy_header_timeout_s) == (
        False, "x-forwarded", 10.0)
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    assert cli.parse(["m:app"])[1].forwarded_allow_ips == "10.0.0.0/8"
    _, cfg = cli.parse(["m:app", "--forwarded-allow-ips", "*", "--proxy-protocol",
                        "--proxy-allow-from", "192.0.2.0/24", "--forwarded-header", "forwarded",
                        "--proxy-header-timeout", "2.5"])
    assert cfg.forwarded_allow_ips == "*" and cfg.proxy_protocol
    assert cfg.proxy_allow_from == "192.0.2.0/24" and cfg.forwarded_header == "forwarded"
    assert cfg.proxy_header_timeout_s == 2.5
    forwarded, proxy = cfg.proxy_trust()
    assert forwarded.trust_all and forwarded.source == "forwarded"
    assert proxy.trusts("192.0.2.9") and not proxy.trusts("127.0.0.1")


def test_config_file_names_over_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.0/8")
    path = tmp_path / "conf.py"
    path.write_text('forwarded_allow_ips = "192.0.2.7"\nproxy_allow_ips = "*"\n'
                    'proxy_protocol = True\n')
    _, cfg = cli.parse(["-c", str(path), "m:app"])
    assert cfg.forwarded_allow_ips == "192.0.2.7"
    assert cfg.proxy_allow_from == "*" and cfg.proxy_protocol


@pytest.mark.parametrize("args,line", [
    (["--forwarded-allow-ips", "10.0.0.1/8"],
     "ktlswsgi: error: --forwarded-allow-ips entry '10.0.0.1/8': host bits set, "
     "did you mean 10.0.0.0/8?"),
    (["--proxy-allow-from", "127.0.0.1,lb.internal"],
     "ktlswsgi: error: --proxy-allow-from entry 'lb.internal': not an IP address or network"),
])
def test_bad_entry_is_one_line_and_exit_1(args, line, capsys):
    assert cli.main(["m:app", *args]) == 1
    assert capsys.readouterr().err == line + "\n"


def test_a_bad_flag_value_is_one_line_and_exit_1(capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(["m:app", "--proxy-header-timeout", "0"])
    assert exc.value.code == 1
    assert capsys.readouterr().err == ("ktlswsgi: error: argument --proxy-header-timeout: 0.0: "
                                       "must be > 0 (see ktlswsgi --help)\n")


def test_bad_entry_from_the_command_line(ktlswsgi_cli):
    proc = ktlswsgi_cli("m:app", "--forwarded-allow-ips", "127.0.0.1,bogus", wait=False)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert err == ("ktlswsgi: error: --forwarded-allow-ips entry 'bogus': "
                   "not an IP address or network\n")
