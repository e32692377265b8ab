"""HTTPS end to end: real handshakes, both transports, files, bad clients, the CLI.

On this host kTLS never engages (no CONFIG_TLS), so files take the pread +
SSL_write path; tests/ktls proves the SSL_sendfile path in a VM.
"""
from __future__ import annotations

import hashlib
import http.client
import os
import random
import re
import socket
import ssl
import struct
import subprocess
import sys
import threading
import time

import pytest

from ktlswsgi.filewrapper import INLINE_FILE_BYTES
from support import free_port, tls_client_context, wait_port

TRANSPORTS = ["memory", "socket"]
VERSIONS = ["1.2", "1.3"]


def ktls_expected(transport: str, ktls_option: bool = True) -> bool:
    """Whether kTLS TX should engage here: only the socket transport, with the
    context option, on a kernel whose probe passes (never on the CI host)."""
    from ktlswsgi.tls import ktls
    return transport == "socket" and ktls_option and ktls.probe().available


def file_counter(transport: str) -> str:
    return "bytes_ssl_sendfile" if ktls_expected(transport) else "bytes_pread_ssl_write"


def info_app(environ, start_response):
    body = " ".join(f"{k}={environ.get(k)}" for k in
                    ["wsgi.url_scheme", "HTTPS", "SSL_PROTOCOL", "SSL_CIPHER"]).encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


def file_app(directory):
    def app(environ, start_response):
        path = os.path.join(directory, environ["PATH_INFO"].lstrip("/"))
        f = open(path, "rb")
        size = os.fstat(f.fileno()).st_size
        start_response("200 OK", [("Content-Type", "application/octet-stream"),
                                  ("Content-Length", str(size))])
        return environ["wsgi.file_wrapper"](f, 8192)
    return app


def make_file(directory, name: str, size: int) -> str:
    path = os.path.join(directory, name)
    block = hashlib.sha256(name.encode()).digest() * 2048  # 64 KiB, not compressible to a pattern
    with open(path, "wb") as f:
        left = size
        while left:
            n = min(left, len(block))
            f.write(block[:n])
            left -= n
    return path


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("version", VERSIONS)
def test_python_ssl_client_environ(serve_tls, cert_pair, transport, version):
    srv = serve_tls(info_app, transport=transport)
    ctx = tls_client_context(cert_pair, version)
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
    for _ in range(3):  # keep-alive over one TLS connection
        conn.request("GET", "/")
        body = conn.getresponse().read().decode()
        assert "wsgi.url_scheme=https HTTPS=on" in body
        assert f"SSL_PROTOCOL=TLSv{version}" in body
    assert re.search(r"SSL_CIPHER=\S*(AES|CHACHA)", body)
    assert srv.counters.handshakes_ok == 1 and srv.counters.connections == 1
    assert srv.counters.ktls_tx_connections == int(ktls_expected(transport))


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("http2, offer, chosen", [
    (True, ["h2", "http/1.1"], "h2"), (True, ["http/1.1", "h2"], "h2"),
    (True, ["http/1.1"], "http/1.1"), (False, ["h2", "http/1.1"], "http/1.1")])
def test_alpn_prefers_h2_unless_turned_off(serve_tls, cert_pair, transport, http2, offer,
                                           chosen):
    srv = serve_tls(info_app, transport=transport, http2=http2)
    ctx = tls_client_context(cert_pair)
    ctx.set_alpn_protocols(offer)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            assert s.selected_alpn_protocol() == chosen


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_memory_transport_counts_its_send_and_recv_syscalls(serve_tls, cert_pair, tmp_path,
                                                            transport):
    """tls_mem_sends / tls_mem_recvs: what the bench divides TLS bytes by."""
    make_file(str(tmp_path), "f.bin", 1 << 20)
    srv = serve_tls(file_app(str(tmp_path)), transport=transport)
    ctx = tls_client_context(cert_pair)
    conn = http.client.HTTPSConnection("localhost", srv.port, context=ctx, timeout=10)
    conn.request("GET", "/f.bin", headers={"Connection": "close"})
    assert len(conn.getresponse().read()) == 1 << 20
    conn.close()
    srv.wait_idle()
    c = srv.counters
    deadline = time.monotonic() + 5
    while c.connections_closed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    if transport == "memory":
        # 1 MiB in 64 KiB pread chunks: each send syscall carries several
        # records (more sends only when the socket takes part of a chunk).
        assert 1 <= c.tls_mem_sends <= 256 and c.tls_mem_recvs >= 1
        assert (c.bytes_ssl_write + c.bytes_pread_ssl_write) / c.tls_mem_sends > 4096
    else:
        assert c.tls_mem_sends == 0 and c.tls_mem_recvs == 0


@pytest.mark.parametrize("size", [INLINE_FILE_BYTES + 5, INLINE_FILE_BYTES + 6])
def test_a_small_file_leaves_with_its_head_in_one_send(serve_tls, cert_pair, tmp_path, size):
    """Up to INLINE_FILE_BYTES the worker reads the file and the response is
    one write: one send syscall on the memory transport; the file is closed
    on a worker.  One byte more and it is a file transfer (pread + SSL_write
    after the head: two sends)."""
    from apps import raw_files
    path = make_file(str(tmp_path), "f.bin", size)
    expected = open(path, "rb").read()[5:]
    app = raw_files.file_app(path, seek=5)
    srv = serve_tls(app, transport="memory")
    c = srv.counters

    def sends_for(requests: int) -> int:
        """The memory transport's send syscalls for one connection (counted at close)."""
        before = c.snapshot()
        conn = http.client.HTTPSConnection("localhost", srv.port,
                                           context=tls_client_context(cert_pair), timeout=10)
        for _ in range(requests):
            conn.request("GET", "/")
            assert conn.getresponse().read() == expected
        conn.close()
        deadline = time.monotonic() + 5
        while c.connections_closed == before["connections_closed"] and time.monotonic() < deadline:
            time.sleep(0.01)
        return c.tls_mem_sends - before["tls_mem_sends"]

    per_request = (sends_for(3) - sends_for(1)) / 2
    srv.wait_idle()
    if size - 5 <= INLINE_FILE_BYTES:
        assert per_request == 1 and c.file_transfers == 0 and c.bytes_pread_ssl_write == 0
        assert len(app.closes) == 4 and all(n.startswith("ktlswsgi-worker-") for n in app.closes)
    else:
        assert per_request == 2 and c.file_transfers == 4
        assert c.bytes_pread_ssl_write == 4 * (size - 5)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("flag", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"])
def test_curl(serve_tls, cert_pair, transport, flag):
    srv = serve_tls(info_app, transport=transport)
    out = subprocess.run(["curl", "-s", "--cacert", cert_pair[0], *flag.split(),
                          f"https://localhost:{srv.port}/", f"https://localhost:{srv.port}/"],
                         capture_output=True, text=True, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.count("wsgi.url_scheme=https") == 2
    assert srv.counters.handshakes_ok == 1  # curl reused the connection


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("flag", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client(serve_tls, transport, flag):
    srv = serve_tls(info_app, transport=transport)
    out = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{srv.port}", flag,
                          "-alpn", "http/1.1", "-quiet"],
                         input=b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                         capture_output=True, timeout=20)
    assert out.stdout.startswith(b"HTTP/1.1 200 OK"), out.stderr[-500:]
    assert b"wsgi.url_scheme=https" in out.stdout


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("size", [0, 1, 16 * 1024, 64 * 1024, (1 << 20) + 7, (50 << 20) + 3])
def test_file_wrapper_over_tls_sha256(serve_tls, cert_pair, tmp_path, transport, size):
    path = make_file(str(tmp_path), f"f{size}.bin", size)
    srv = serve_tls(file_app(str(tmp_path)), transport=transport)
    out = subprocess.run(["curl", "-s", "--cacert", cert_pair[0],
                          f"https://localhost:{srv.port}/f{size}.bin", "-o", str(tmp_path / "got")],
                         capture_output=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert sha256_file(str(tmp_path / "got")) == sha256_file(path)
    c = srv.counters
    # curl speaks HTTP/2 here: every file size takes the file path (only
    # HTTP/1 reads small files in the worker, see the next test)
    assert c.file_transfers == 1
    assert getattr(c, file_counter(transport)) == size  # SSL_sendfile, or pread in big chunks
    assert c.bytes_sendfile == 0  # never a raw sendfile on a TLS socket


def test_flask_send_file_over_tls(serve_tls, cert_pair, tmp_path):
    flask = pytest.importorskip("flask")
    path = make_file(str(tmp_path), "flask.bin", (3 << 20) + 11)
    app = flask.Flask(__name__)

    @app.route("/f")
    def f():
        return flask.send_file(path)

    srv = serve_tls(app)
    out = subprocess.run(["curl", "-s", "--cacert", cert_pair[0], f"https://localhost:{srv.port}/f",
                          "-o", str(tmp_path / "got")], capture_output=True, timeout=60)
    assert out.returncode == 0
    assert sha256_file(str(tmp_path / "got")) == sha256_file(path)
    assert getattr(srv.counters, file_counter("memory")) == (3 << 20) + 11


# -- the plaintext guard -----------------------------------------------------------------

class Recorder:
    """A TCP relay that records every byte the server sends to the client."""

    def __init__(self, target_port: int):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.target = target_port
        self.from_server = bytearray()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        client, _ = self.listener.accept()
        server = socket.create_connection(("127.0.0.1", self.target))
        def pipe(src, dst, record):
            try:
                while True:
                    data = src.recv(65536)
                    if not data:
                        break
                    if record is not None:
                        record += data
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass
        t = threading.Thread(target=pipe, args=(client, server, None), daemon=True)
        t.start()
        pipe(server, client, self.from_server)
        t.join(5)


def tls_records(data: bytes):
    """Split a server->client byte stream into (content_type, version, length) records."""
    records, i = [], 0
    while i + 5 <= len(data):
        ctype, version, length = struct.unpack("!BHH", data[i:i + 5])
        records.append((ctype, version, length))
        i += 5 + length
    assert i == len(data), "stream does not end on a record boundary"
    return records


@pytest.mark.parametrize("ktls_option", [True, False], ids=["ktls-option-on", "ktls-option-off"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_plaintext_never_on_the_wire(serve_tls, cert_pair, tmp_path, transport, ktls_option):
    marker = b"PLAINTEXT-MARKER-" * 4096  # 68 KiB of recognisable plaintext
    (tmp_path / "m.bin").write_bytes(marker * 16)
    srv = serve_tls(file_app(str(tmp_path)), transport=transport, ktls=ktls_option)
    relay = Recorder(srv.port)
    ctx = tls_client_context(cert_pair, "1.2")
    conn = http.client.HTTPSConnection("localhost", relay.port, context=ctx, timeout=20)
    conn.request("GET", "/m.bin", headers={"Connection": "close"})
    body = conn.getresponse().read()
    conn.close()
    relay.thread.join(10)
    assert body == marker * 16
    wire = bytes(relay.from_server)
    assert b"PLAINTEXT-MARKER" not in wire
    records = tls_records(wire)
    assert {ctype for ctype, _, _ in records} <= {20, 21, 22, 23}
    assert all(version == 0x0303 for _, version, _ in records)
    assert sum(n for ctype, _, n in records if ctype == 23) > len(body)  # the body left as app data
    assert srv.counters.bytes_sendfile == 0
    assert srv.counters.bytes_ssl_sendfile == 0 or ktls_expected(transport, ktls_option)


# -- bad clients --------------------------------------------------------------------------

CLIENT_HELLO_START = bytes.fromhex("16030100c8010000c40303") + os.urandom(20)


# Garbage that no TLS record header can start with (0x00 is no content type).
GARBAGE = b"\x00" + random.Random(300).randbytes(299)


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("payload", [b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", GARBAGE,
                                     b"\x16\x03\x00\x00\x05hello"],
                         ids=["plain-http", "garbage", "sslv3-record"])
def test_bad_handshakes_close_and_server_keeps_serving(serve_tls, cert_pair, transport, payload):
    srv = serve_tls(info_app, transport=transport)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(payload)
        s.settimeout(5)
        try:
            data = s.recv(4096)
            while data and not data.startswith(b"\x15"):  # an alert, or EOF
                data = s.recv(4096)
        except ConnectionResetError:
            data = b""
        assert not data.startswith(b"HTTP/")  # never a plaintext answer on the TLS port
    deadline = time.monotonic() + 5
    while srv.counters.handshakes_failed < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert srv.counters.handshakes_failed == 1
    conn = http.client.HTTPSConnection("localhost", srv.port,
                                       context=tls_client_context(cert_pair), timeout=10)
    conn.request("GET", "/")
    assert conn.getresponse().status == 200


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_half_client_hello_times_out(serve_tls, transport):
    srv = serve_tls(info_app, transport=transport, handshake_timeout_s=0.5)
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as s:
        s.sendall(CLIENT_HELLO_START)
        t0 = time.monotonic()
        s.settimeout(5)
        try:
            assert s.recv(4096) == b""
        except ConnectionResetError:
            pass
        assert 0.4 < time.monotonic() - t0 < 3
    assert srv.counters.handshakes_failed == 1


def test_handshake_cap_sheds_the_oldest_silent_handshake(serve_tls, cert_pair):
    """At --max-handshakes the oldest unfinished handshake makes room for the
    new one (not a wait in the backlog until the silent ones time out)."""
    srv = serve_tls(info_app, max_handshakes=2, handshake_timeout_s=10.0)
    idle = [socket.create_connection(("127.0.0.1", srv.port)) for _ in range(2)]
    try:
        deadline = time.monotonic() + 5
        while srv.counters.connections < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        conn = http.client.HTTPSConnection("localhost", srv.port,
                                           context=tls_client_context(cert_pair), timeout=10)
        t0 = time.monotonic()
        conn.request("GET", "/")
        assert conn.getresponse().status == 200
        assert time.monotonic() - t0 < 2.0
        assert srv.counters.handshakes_shed == 1
    finally:
        for s in idle:
            s.close()


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_client_that_stops_reading_mid_download(serve_tls, cert_pair, tmp_path, transport):
    closed = []

    class Wrapped:
        def __init__(self, f):
            self.f = f

        def __iter__(self):
            while True:
                chunk = self.f.read(65536)
                if not chunk:
                    return
                yield chunk

        def close(self):
            closed.append(threading.current_thread().name)
            self.f.close()

    make_file(str(tmp_path), "big.bin", 50 << 20)

    def app(environ, start_response):
        start_response("200 OK", [("Content-Length", str(50 << 20))])
        if environ["PATH_INFO"] == "/gen":
            return Wrapped(open(tmp_path / "big.bin", "rb"))
        return environ["wsgi.file_wrapper"](open(tmp_path / "big.bin", "rb"))

    srv = serve_tls(app, transport=transport, write_timeout_s=1.0)
    rss0 = _rss_kib()
    for path in ["/gen", "/file"]:
        raw = socket.socket()
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
        raw.connect(("127.0.0.1", srv.port))
        s = tls_client_context(cert_pair).wrap_socket(raw, server_hostname="localhost")
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        s.recv(1024)  # headers; then stop reading
        time.sleep(2.5)
        assert _rss_kib() - rss0 < 30 * 1024
        srv.wait_idle(5)
        s.close()
    assert len(closed) == 1 and closed[0].startswith("ktlswsgi-worker")
    deadline = time.monotonic() + 5
    while srv.server.connections and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not srv.server.connections  # both closed by the write timeout


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


# -- the command line -------------------------------------------------------------------------

def _run_cli(*args, timeout=20):
    return subprocess.run([sys.executable, "-m", "ktlswsgi", *args], capture_output=True,
                          text=True, timeout=timeout)


def test_bad_certificate_paths_exit_1_with_one_line(tmp_path, cert_pair):
    other_key = tmp_path / "other.key"
    from ktlswsgi.tls.selfsigned import ensure_selfsigned
    _, key2 = ensure_selfsigned(str(tmp_path / "second"))
    other_key.write_bytes(open(key2, "rb").read())
    cases = [
        (["--certfile", str(tmp_path / "missing.pem")], "missing.pem"),
        (["--certfile", cert_pair[0], "--keyfile", str(other_key)], "does not match"),
        (["--certfile", str(other_key)], "other.key"),
    ]
    port = free_port()
    for args, needle in cases:
        r = _run_cli("ktlswsgi.demo:app", "-b", f"127.0.0.1:{port}", *args)
        assert r.returncode == 1, r.stderr
        errors = [l for l in r.stderr.splitlines() if "[ERROR]" in l]
        assert len(errors) == 1 and needle in errors[0], r.stderr
        assert "Traceback" not in r.stderr


def _encrypted_key(tmp_path, cert_pair, password="correct horse"):
    key = tmp_path / "enc.key"
    subprocess.run(["openssl", "pkey", "-in", cert_pair[1], "-aes256", "-passout",
                    "pass:" + password, "-out", str(key)], check=True, capture_output=True)
    return key


def test_encrypted_key_without_password_exits_1(tmp_path, cert_pair):
    key = _encrypted_key(tmp_path, cert_pair)
    r = _run_cli("ktlswsgi.demo:app", "-b", f"127.0.0.1:{free_port()}", "--certfile", cert_pair[0],
                 "--keyfile", str(key))
    assert r.returncode == 1
    errors = [line for line in r.stderr.splitlines() if "[ERROR]" in line]
    assert len(errors) == 1 and "enc.key" in errors[0] and "no password" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("content, needle", [
    ("wrong\n", "wrong password"),
    ("\n", "first line is empty"),
    (None, "No such file"),
], ids=["wrong", "empty", "missing"])
def test_bad_keyfile_password_file_exits_1_with_one_line(tmp_path, cert_pair, content, needle):
    key = _encrypted_key(tmp_path, cert_pair)
    pwfile = tmp_path / "pw"
    if content is not None:
        pwfile.write_text(content)
    r = _run_cli("ktlswsgi.demo:app", "-b", f"127.0.0.1:{free_port()}", "--certfile", cert_pair[0],
                 "--keyfile", str(key), "--keyfile-password-file", str(pwfile))
    assert r.returncode == 1, r.stderr
    errors = [line for line in r.stderr.splitlines() if "[ERROR]" in line or " error: " in line]
    assert len(errors) == 1 and needle in errors[0] and "Traceback" not in r.stderr, r.stderr


def test_encrypted_key_with_password_file_serves_https(tmp_path, cert_pair):
    password = "correct horse battery"
    key = _encrypted_key(tmp_path, cert_pair, password)
    pwfile = tmp_path / "pw"
    pwfile.write_text(password + "\r\n")    # a CRLF line ending is not part of the password
    pwfile.chmod(0o600)
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ktlswsgi", "ktlswsgi.demo:app", "-b",
                             f"127.0.0.1:{port}", "--certfile", cert_pair[0], "--keyfile", str(key),
                             "--keyfile-password-file", str(pwfile)],
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc=proc)
        out = subprocess.run(["curl", "-sS", "--cacert", cert_pair[0], "--resolve",
                              f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/",
                              "-o", "/dev/null", "-w", "%{http_code}"],
                             capture_output=True, text=True, timeout=20)
        assert out.stdout == "200", out.stderr
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert password not in err


def test_demo_with_generated_certificate_and_ktls_line_once(tmp_path):
    port = free_port()
    env = dict(os.environ, XDG_CACHE_HOME=str(tmp_path / "cache"))
    proc = subprocess.Popen([sys.executable, "-m", "ktlswsgi", "ktlswsgi.demo:app", "--tls",
                             "-b", f"127.0.0.1:{port}", "--access-logfile", "-"],
                            env=env, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, proc=proc)
        out = subprocess.run(["curl", "-sk", f"https://127.0.0.1:{port}/download", "-o", "/dev/null",
                              "-w", "%{http_code} %{size_download}"],
                             capture_output=True, text=True, timeout=20).stdout
        assert out == "200 4194304"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=15)
    assert proc.returncode == 0
    key = next((tmp_path / "cache").rglob("*key*.pem"))
    assert key.stat().st_mode & 0o777 == 0o600
    assert "self-signed" in err and "development" in err
    from ktlswsgi.tls import ktls
    probe = ktls.probe()
    assert err.count("kTLS: ") == 1 and probe.reason in err  # the probe line, once
    if not probe.available:
        assert "kernel has no tls ULP" in err or "unavailable" in err
    flag = "tx" if probe.available else "off"  # auto picks the socket transport there
    # curl offers h2 first, and gets it.
    assert re.search(rf'"GET /download HTTP/2" 200 4194304 .* tls=TLSv1.3/\S+ ktls={flag}', err)
    counter = "bytes_ssl_sendfile" if probe.available else "bytes_pread_ssl_write"
    assert re.search(rf"counters: .*handshakes_ok=1 .*{counter}=4194304", err)


def test_check_ktls_explains_this_host():
    from ktlswsgi.tls import ktls
    probe = ktls.probe()
    r = _run_cli("--check-ktls", timeout=120)
    text = r.stdout + r.stderr
    assert r.returncode == (0 if probe.available else 1), text
    assert probe.reason in text


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_large_upload_over_tls_never_stalls(serve_tls, cert_pair, transport):
    """Records already inside TLS are read without waiting for epoll."""
    def echo(environ, start_response):
        data = environ["wsgi.input"].read()
        digest = hashlib.sha256(data).hexdigest().encode()
        start_response("200 OK", [("Content-Length", str(len(digest)))])
        return [digest]

    srv = serve_tls(echo, transport=transport, read_timeout_s=3)
    payload = os.urandom(8 << 20)
    conn = http.client.HTTPSConnection("localhost", srv.port,
                                       context=tls_client_context(cert_pair), timeout=20)
    t0 = time.monotonic()
    conn.request("POST", "/", body=payload)
    r = conn.getresponse()
    assert r.status == 200 and r.read().decode() == hashlib.sha256(payload).hexdigest()
    assert time.monotonic() - t0 < 3


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_failed_handshake_sends_the_alert_openssl_chose(serve_tls, cert_pair, transport):
    """A client the server refuses learns why (protocol_version here), on both
    transports, instead of seeing a bare close."""
    srv = serve_tls(info_app, transport=transport, tls_min_version="1.3")
    ctx = tls_client_context(cert_pair, "1.2")
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError) as exc:
            ctx.wrap_socket(raw, server_hostname="localhost")
    assert "ALERT_PROTOCOL_VERSION" in str(exc.value), exc.value
    deadline = time.monotonic() + 5
    while srv.counters.handshakes_failed < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert srv.counters.handshakes_failed == 1
