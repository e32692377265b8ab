"""wsgi.file_wrapper over kTLS goes through SSL_sendfile: the counter of bytes
sent by SSL_sendfile equals the body, nothing goes through pread + SSL_write,
and the client's sha256 matches, for every size; also through a slow reader
(EAGAIN and partial sends), on one keep-alive connection mixing SSL_write and
SSL_sendfile responses, and for Flask send_file / Django FileResponse."""
import pytest

from _ktlskit import Client, TlsStat, fetch, file_url, only_connection, wait_no_connections
from ktlswsgi.tls.transports import SENDFILE_MAX_CHUNK_BYTES, SocketTransport
from ktlswsgi.transport import WANT_READ, WANT_WRITE
import ktls_apps

MiB = 1 << 20
SIZES = [0, 1, 16 << 10, 64 << 10, MiB + 7, 100 * MiB]
CASES = [(v, s) for v in ("1.2", "1.3") for s in SIZES if s < 100 * MiB or v == "1.3"]


def _check_sendfile_only(srv, *sizes):
    c = srv.counters
    assert c.ktls_tx_connections == c.handshakes_ok >= 1
    assert c.file_transfers == len(sizes)
    assert c.bytes_ssl_sendfile == sum(sizes)
    assert c.bytes_pread_ssl_write == 0 and c.bytes_sendfile == 0


@pytest.mark.timeout(400)
@pytest.mark.parametrize("version,size", CASES,
                         ids=["tls%s-%dB" % (v, s) for v, s in CASES])
def test_file_wrapper_uses_ssl_sendfile(serve_tls, cert_pair, ktls_files, version, size):
    path, sha = ktls_files.get(size)
    srv = serve_tls(ktls_apps.app, transport="socket")
    r = fetch(srv.port, cert_pair, file_url(path), version, headers={"Connection": "close"},
              client_kw={"timeout": 60})
    assert r.status == 200 and int(r.headers["content-length"]) == size
    assert r.length == size and r.sha256 == sha
    wait_no_connections(srv)
    _check_sendfile_only(srv, size)


@pytest.fixture
def sendfile_spy(monkeypatch):
    """Every SSL_sendfile call of the server: (bytes asked, result)."""
    calls = []
    real = SocketTransport._ssl_sendfile

    def spy(self, fd, offset, count):
        result = real(self, fd, offset, count)
        calls.append((min(count, SENDFILE_MAX_CHUNK_BYTES), result))
        return result

    monkeypatch.setattr(SocketTransport, "_ssl_sendfile", spy)
    return calls


# Larger than what the server's socket takes at once (loopback's 64 KiB MSS
# autotunes SO_SNDBUF to ~2.5 MiB, tcp_wmem caps it at 4 MiB), so SSL_sendfile
# must meet EAGAIN; small enough for TCG (~3 MB/s end to end).
SLOW_FILE = 8 * MiB + 5


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_slow_reader_eagain_and_partial_sends(serve_tls, cert_pair, ktls_files, sendfile_spy,
                                              ktls_report, version):
    path, sha = ktls_files.get(SLOW_FILE)
    srv = serve_tls(ktls_apps.app, transport="socket", write_timeout_s=20)
    client = Client(srv.port, cert_pair, version, rcvbuf=8192, timeout=30)
    try:
        r = client.get(file_url(path), read=4096, delay=0.001, deadline_s=120)
        again = client.get("/dyn?n=100")   # the connection is still in step
    finally:
        client.close()
    assert r.status == 200 and r.length == SLOW_FILE and r.sha256 == sha
    assert again.status == 200 and again.body is None and again.length == 100
    wait_no_connections(srv)
    _check_sendfile_only(srv, SLOW_FILE)
    # The kernel's EAGAIN shows as a short count (the send buffer filled during
    # the call; the pump then waits for EPOLLOUT and resumes from the offset) or,
    # when the socket was full at the call, as WANT_WRITE.
    short = [(asked, res) for asked, res in sendfile_spy if isinstance(res, int) and 0 < res < asked]
    wants = [res for _, res in sendfile_spy if res in (WANT_WRITE, WANT_READ)]
    ktls_report.note("slow reader (SO_RCVBUF 8 KiB, 4 KiB reads, 1 ms apart)",
                     "TLSv%s %d B: %d SSL_sendfile calls, %d short counts, %d WANT_WRITE, sha256 ok"
                     % (version, SLOW_FILE, len(sendfile_spy), len(short), len(wants)))
    assert len(short) + len(wants) >= 3, "the reader never held the server back: %r" % sendfile_spy
    assert sum(res for _, res in sendfile_spy if isinstance(res, int)) == SLOW_FILE


@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_keep_alive_mixes_ssl_write_and_ssl_sendfile(serve_tls, cert_pair, ktls_files, version):
    srv = serve_tls(ktls_apps.app, transport="socket")
    files = [ktls_files.get(s) for s in (64 << 10, 0, MiB + 7, 1, 16 << 10)]
    dyn = [5, 100000, 0, 300000, 17]
    stat = TlsStat()
    client = Client(srv.port, cert_pair, version)
    try:
        for (path, sha), n in zip(files, dyn):
            r = client.get(file_url(path), keep_body=False)
            assert r.status == 200 and r.sha256 == sha
            d = client.get("/dyn?n=%d" % n, keep_body=True)
            assert d.status == 200 and d.body == ktls_apps.dyn_body(n)
        conn = only_connection(srv)
        assert conn.transport.ktls_tx
    finally:
        client.close()
    wait_no_connections(srv)
    c = srv.counters
    assert c.connections == 1 and c.handshakes_ok == 1 and c.requests == 10
    _check_sendfile_only(srv, *(s for s in (64 << 10, 0, MiB + 7, 1, 16 << 10)))
    assert c.bytes_ssl_write > sum(dyn)          # heads + the dynamic bodies
    assert stat.delta()["TlsTxSw"] == 1          # one kTLS socket for all ten


def test_flask_send_file(serve_tls, cert_pair, ktls_files):
    pytest.importorskip("flask")
    from apps.flask_files import app
    _framework_file(serve_tls, cert_pair, ktls_files, app)


def test_django_file_response(serve_tls, cert_pair, ktls_files):
    pytest.importorskip("django")
    from apps.django_files import application
    _framework_file(serve_tls, cert_pair, ktls_files, application)


def _framework_file(serve_tls, cert_pair, ktls_files, app):
    sizes = [MiB + 7, 64 << 10]
    srv = serve_tls(app, transport="socket")
    client = Client(srv.port, cert_pair)
    try:
        for size in sizes:
            path, sha = ktls_files.get(size)
            r = client.get("/file?path=" + path)
            assert r.status == 200 and r.length == size and r.sha256 == sha
    finally:
        client.close()
    wait_no_connections(srv)
    _check_sendfile_only(srv, *sizes)
