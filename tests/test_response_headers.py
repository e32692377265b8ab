"""Response heads: what the server does with the headers an app hands it.

RFC 9110 5.5: whitespace around a field value is not part of it (Django's
cookies start with a space); a name that is not a token or a value with CR,
LF, NUL or another control character is an app error, answered 500 with one
log line naming the header (never its value).  Every response carries `Date`
and `Server` unless the app set its own.  No header value from a request or a
response ever reaches a log, on any error path.  Real Django (admin login,
`set_cookie`) over TLS and plain HTTP through the CLI.
"""
from __future__ import annotations

import email.utils
import logging
import socket
import subprocess
import sys
import time

import pytest

from support import free_port, read_response, recv_until_closed, response_reader, wait_port
from test_cli import cli_env, curl, stop, TESTS_DIR

MARKER = "ktlsSECRETmarker7f3a"


@pytest.fixture
def start_cli():
    """Start `python -m ktlswsgi ... APP`; every process is stopped at the end,
    also when the test fails half-way."""
    procs = []

    def start(app: str, *args):
        port = free_port()
        proc = subprocess.Popen(
            [sys.executable, "-m", "ktlswsgi", "-b", f"127.0.0.1:{port}", *args, app],
            cwd=TESTS_DIR, env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True)
        procs.append(proc)
        proc.port = port
        wait_port(port, proc=proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=10)


def raw_exchange(port: int, data: bytes, timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        return recv_until_closed(s, timeout)


def get(port: int, path: str, extra: bytes = b"") -> bytes:
    return raw_exchange(port, b"GET " + path.encode() + b" HTTP/1.1\r\nHost: x\r\n"
                        b"Cookie: sessionid=" + MARKER.encode() + b"\r\n"
                        b"Authorization: Bearer " + MARKER.encode() + b"\r\n"
                        b"X-Secret: " + MARKER.encode() + b"\r\n"
                        + extra + b"Connection: close\r\n\r\n")


# -- in-process: the head the client sees ------------------------------------------------

def test_surrounding_whitespace_is_stripped_from_values(serve):
    from apps.header_apps import app
    srv = serve(app)
    with srv.connect() as s:
        s.sendall(b"GET /leading-space-cookie HTTP/1.1\r\nHost: x\r\nX-Secret: abc\r\n\r\n")
        status, headers, body = read_response(response_reader(s))
    assert status == 200 and body == b"ok"
    assert headers["set-cookie"] == "sessionid=abc; Path=/"
    assert headers["x-padded"] == "padded"


@pytest.mark.parametrize("path", ["/crlf-in-cookie", "/nul-in-value", "/ctl-in-value", "/bad-name",
                                  "/bytes-value", "/non-latin1-value"])
def test_invalid_header_is_500_with_one_line_naming_it(serve, caplog, path):
    from apps.header_apps import app
    srv = serve(app)
    with caplog.at_level(logging.INFO, logger="ktlswsgi"):
        with srv.connect() as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nX-Secret: {MARKER}\r\n\r\n".encode())
            reader = response_reader(s)
            status, headers, body = read_response(reader)
            assert status == 500 and b"never sent" not in body and "x-injected" not in headers
            assert "date" in headers and headers["server"] == "ktlswsgi"
        srv.wait_idle()
    errors = [r for r in caplog.records if r.name == "ktlswsgi.error"]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    line = errors[0].getMessage()
    assert path in line and "500" in line and errors[0].exc_info is None, line
    name = "X Bad:Name" if path == "/bad-name" else (
        "Authorization" if path == "/nul-in-value" else "Set-Cookie")
    assert repr(name) in line, line
    assert MARKER not in caplog.text


def test_date_and_server_on_every_response(serve):
    from apps.header_apps import app
    srv = serve(app, queue_size=1)
    with srv.connect() as s:
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = read_response(response_reader(s))
    assert status == 200 and headers["server"] == "ktlswsgi"
    sent = email.utils.parsedate_to_datetime(headers["date"])
    assert abs(sent.timestamp() - time.time()) < 5 and headers["date"].endswith(" GMT")
    # a response the server writes itself (400) carries them too
    reply = raw_exchange(srv.port, b"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n")
    assert reply.startswith(b"HTTP/1.1 400 ") and b"\r\nDate: " in reply and b"\r\nServer: ktlswsgi" in reply


def test_app_server_and_date_headers_are_kept_not_doubled(serve):
    from apps.header_apps import app
    srv = serve(app)
    reply = raw_exchange(srv.port, b"GET /own-server-and-date HTTP/1.1\r\nHost: x\r\n"
                                   b"Connection: close\r\n\r\n")
    head = reply.split(b"\r\n\r\n")[0].lower()
    assert head.count(b"\r\nserver: ") == 1 and b"server: custom/1.0" in head
    assert head.count(b"\r\ndate: ") == 1 and b"date: mon, 01 jan 2024" in head


def test_access_log_time_runs_to_the_last_byte(serve, caplog, tmp_path):
    """A client that waits before reading: the logged time covers the transfer."""
    path = tmp_path / "big.bin"
    path.write_bytes(b"\0" * (32 << 20))

    def app(environ, start_response):
        f = open(path, "rb")
        start_response("200 OK", [("Content-Length", str(32 << 20))])
        return environ["wsgi.file_wrapper"](f)

    srv = serve(app)
    caplog.set_level(logging.INFO, logger="ktlswsgi.access")
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    s.connect((srv.host, srv.port))
    s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    withheld_s = 1.0
    time.sleep(withheld_s)          # the client does not read: the scenario under test
    got = len(recv_until_closed(s, 30))
    s.close()
    assert got > 32 << 20
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "GET /big" not in caplog.text:
        time.sleep(0.02)
    line = next(r.getMessage() for r in caplog.records if "GET /big" in r.getMessage())
    assert float(line.split('"')[-1].split()[0]) >= withheld_s * 0.9, line


# -- through the CLI: every error path, no secret in any log --------------------------------

def test_no_header_value_reaches_any_log_on_any_error_path(start_cli):
    proc = start_cli("apps.header_apps:app", "--log-level", "debug", "--access-logfile", "-",
                     "--read-timeout", "1", "--limit-request-field_size", "4096")
    port = proc.port
    expect = {
        "/leading-space-cookie": b"HTTP/1.1 200 ",
        "/crlf-in-cookie": b"HTTP/1.1 500 ", "/nul-in-value": b"HTTP/1.1 500 ",
        "/ctl-in-value": b"HTTP/1.1 500 ", "/bad-name": b"HTTP/1.1 500 ",
        "/bytes-value": b"HTTP/1.1 500 ", "/non-latin1-value": b"HTTP/1.1 500 ",
        "/raise-before-body": b"HTTP/1.1 500 ",
        "/raise-after-body": b"HTTP/1.1 200 ", "/short-body": b"HTTP/1.1 200 ",
    }
    for path, status in expect.items():
        reply = get(port, path)
        assert reply.startswith(status), (path, reply[:100])
    m = MARKER.encode()
    bad_requests = {
        "nul-in-cookie": b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=" + m + b"\0\r\n\r\n",
        "ctl-in-auth": b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: " + m + b"\x01\r\n\r\n",
        "no-colon": b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization " + m + b"\r\n\r\n",
        "obs-fold": b"GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n " + m + b"\r\n\r\n",
        "431": b"GET / HTTP/1.1\r\nHost: x\r\nCookie: " + m * 400 + b"\r\n\r\n",
        "te-and-cl": b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: " + m + b"\r\n"
                     b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "bad-host": b"GET / HTTP/1.1\r\nHost: " + m + b" x\r\n\r\n",
        "bad-chunk": b"POST /read-body HTTP/1.1\r\nHost: x\r\nCookie: " + m + b"\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n" + m + b"\r\n",
        "bad-content-length": b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " + m + b"\r\n\r\n",
    }
    for name, data in bad_requests.items():
        reply = raw_exchange(port, data)
        assert reply[:12] in (b"HTTP/1.1 400", b"HTTP/1.1 431"), (name, reply[:100])
    # a body that stalls (408) and a client that leaves mid-request
    reply = raw_exchange(port, b"POST /read-body HTTP/1.1\r\nHost: x\r\nCookie: " + m +
                         b"\r\nContent-Length: 10\r\n\r\nab")
    assert reply.startswith(b"HTTP/1.1 408 "), reply[:100]
    with socket.create_connection(("127.0.0.1", port)) as s:
        s.sendall(b"POST /read-body HTTP/1.1\r\nHost: x\r\nCookie: " + m +
                  b"\r\nContent-Length: 10\r\n\r\nab")
    assert b"\r\n\r\n5\r\nhello\r\n" in get(port, "/")
    code, _, out, err = stop(proc)
    assert code == 0, err
    assert MARKER not in out and MARKER not in err, [
        line for line in (out + err).splitlines() if MARKER in line]
    # every request that reached the app has its access-log line
    for path in expect:
        assert f'"GET {path} HTTP/1.1" ' in err, path
    assert "X Bad:Name" in err and "'Set-Cookie': the value holds CR, LF or NUL" in err


# -- real Django -------------------------------------------------------------------------------

@pytest.mark.parametrize("proto", ["https-h2", "https-h1", "http"])
def test_django_admin_login_and_set_cookie(proto, tmp_path, start_cli):
    tls = proto.startswith("https")
    args = ["--tls"] if tls else []
    proc = start_cli("apps.django_site:application", "--access-logfile", "-", *args)
    base = f"{'https' if tls else 'http'}://127.0.0.1:{proc.port}"
    version = "--http2" if proto == "https-h2" else "--http1.1"
    status_line = "HTTP/2 200 " if proto == "https-h2" else "HTTP/1.1 200 "
    # HTTP/2 field names are lower-case on the wire (curl prints them so).
    set_cookie = "set-cookie" if proto == "https-h2" else "Set-Cookie"
    jar = tmp_path / "jar"
    r = curl("-k", version, "-D", "-", "-o", "/dev/null", "-c", str(jar), f"{base}/admin/login/")
    head = r.stdout.decode("latin-1")
    assert head.startswith(status_line), head
    assert f"\r\n{set_cookie}: csrftoken=" in head
    r = curl("-k", version, "-D", "-", "-c", str(jar), f"{base}/set-cookie?value={MARKER}")
    head = r.stdout.decode("latin-1")
    assert head.startswith(status_line) and f"\r\n{set_cookie}: sessionid={MARKER}; " in head
    assert r.stdout.endswith(b"cookie set\n")
    r = curl("-k", version, "-b", str(jar), f"{base}/echo-cookie")
    assert r.stdout == MARKER.encode()
    code, _, out, err = stop(proc)
    assert code == 0, err
    protocol = "HTTP/2" if proto == "https-h2" else "HTTP/1.1"
    assert err.count(f'"GET /admin/login/ {protocol}" 200') == 1
    assert "cannot frame" not in err and MARKER not in err.replace(f"value={MARKER}", "")
