"""Range requests (206) the way frameworks answer them, on the zero-copy path.

Flask's send_file wraps our wsgi.file_wrapper in Werkzeug's _RangeWrapper;
whitenoise hands the wrapper its SlicedFile; both must leave as a file range
(sendfile on plain TCP, pread + SSL_write over userspace TLS; SSL_sendfile
under kTLS: tests/ktls), never iterated in Python.  The file counters say
which path carried the bytes: a range iterated in Python would count under
bytes_send / bytes_ssl_write instead.  Over HTTP/1 (plain and TLS) and
HTTP/2.
"""
from __future__ import annotations

import os

import httpx
import pytest

from support import tls_client_context, wait_until

KiB, MiB = 1024, 1024 * 1024
SIZE = 3 * MiB + 17

# (range header, slice of the file it names)
RANGES = [
    ("bytes=100000-299999", slice(100000, 300000)),        # single range
    ("bytes=2000000-", slice(2000000, SIZE)),              # open-ended
    ("bytes=-70000", slice(SIZE - 70000, SIZE)),           # suffix
]

FILE_COUNTER = {"http": "bytes_sendfile", "https": "bytes_pread_ssl_write",
                "h2": "bytes_pread_ssl_write"}


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("ranges") / "big.bin")
    data = os.urandom(SIZE)
    with open(path, "wb") as f:
        f.write(data)
    return path, data


@pytest.fixture(params=["http", "https", "h2"])
def client_to(request, serve, serve_tls, cert_pair):
    """client_to(app) -> (server, httpx.Client) for the parametrised protocol."""
    clients = []

    def start(app):
        if request.param == "http":
            srv = serve(app)
            client = httpx.Client(base_url=f"http://127.0.0.1:{srv.port}", timeout=30)
        else:
            srv = serve_tls(app)
            client = httpx.Client(base_url=f"https://localhost:{srv.port}", timeout=30,
                                  http2=request.param == "h2",
                                  verify=tls_client_context(cert_pair))
        clients.append(client)
        client.protocol_name = request.param
        return srv, client

    yield start
    for c in clients:
        c.close()


def flask_app(path):
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)

    @app.get("/f")
    def f():
        return flask.send_file(path, mimetype="application/octet-stream")

    return app


def file_bytes(srv, client) -> int:
    return getattr(srv.counters, FILE_COUNTER[client.protocol_name])


def assert_file_bytes(srv, client, n: int) -> None:
    """Exactly `n` bytes left by the file path (the reactor counts a send
    just after the client may have seen its bytes: wait for it)."""
    wait_until(lambda: file_bytes(srv, client) >= n, 5, f"{n} file bytes counted")
    srv.wait_idle()
    assert file_bytes(srv, client) == n


# -- Flask / Werkzeug -----------------------------------------------------------------------
@pytest.mark.parametrize("header,part", RANGES, ids=["single", "open-ended", "suffix"])
def test_flask_send_file_range_is_zero_copy(client_to, big_file, header, part):
    path, data = big_file
    srv, client = client_to(flask_app(path))
    r = client.get("/f", headers={"Range": header})
    assert r.status_code == 206
    want = data[part]
    assert r.content == want
    assert r.headers["content-range"] == f"bytes {part.start}-{part.stop - 1}/{SIZE}"
    assert r.headers["content-length"] == str(len(want))
    assert_file_bytes(srv, client, len(want))
    assert srv.counters.file_transfers == 1
    if client.protocol_name == "h2":
        assert r.http_version == "HTTP/2"


def test_flask_range_out_of_bounds_is_416(client_to, big_file):
    path, _ = big_file
    srv, client = client_to(flask_app(path))
    r = client.get("/f", headers={"Range": f"bytes={SIZE}-"})
    assert r.status_code == 416
    assert r.headers["content-range"] == f"bytes */{SIZE}"
    assert_file_bytes(srv, client, 0)
    # The connection goes on serving.
    assert client.get("/f", headers={"Range": "bytes=0-99999"}).status_code == 206


def test_flask_if_range_match_and_mismatch(client_to, big_file):
    path, data = big_file
    srv, client = client_to(flask_app(path))
    etag = client.head("/f").headers["etag"]
    r = client.get("/f", headers={"Range": "bytes=500000-599999", "If-Range": etag})
    assert r.status_code == 206 and r.content == data[500000:600000]
    r = client.get("/f", headers={"Range": "bytes=500000-599999", "If-Range": '"other"'})
    assert r.status_code == 200 and r.content == data
    assert_file_bytes(srv, client, 100000 + SIZE)


def test_small_range_is_correct(client_to, big_file):
    """A range small enough for HTTP/1's inline path (read with its head)."""
    path, data = big_file
    srv, client = client_to(flask_app(path))
    r = client.get("/f", headers={"Range": "bytes=1000-1999"})
    assert r.status_code == 206 and r.content == data[1000:2000]


def test_werkzeug_seeks_our_wrapper_instead_of_reading(big_file):
    """Middleware that iterates the range itself: Werkzeug seeks our wrapper
    (seekable/seek/tell) rather than reading and discarding what precedes it."""
    from werkzeug.wsgi import _RangeWrapper

    from ktlswsgi.filewrapper import FileWrapper

    path, data = big_file
    with open(path, "rb") as f:
        reads = []
        real_read = f.read

        class Counting:
            def read(self, n):
                reads.append(n)
                return real_read(n)
            seekable, seek, tell, fileno = f.seekable, f.seek, f.tell, f.fileno

        body = b"".join(_RangeWrapper(FileWrapper(Counting(), 64 * KiB), 2 * MiB, 1000))
    assert body == data[2 * MiB:2 * MiB + 1000]
    assert sum(reads) <= 64 * KiB


def test_unknown_iterables_are_not_taken_for_files(big_file):
    """Recognition is exact: a subclass of Werkzeug's wrapper, or one already
    iterated, goes through Python as the app gave it."""
    from werkzeug.wsgi import _RangeWrapper

    from ktlswsgi.filewrapper import FileWrapper, file_range

    path, _ = big_file

    class Sub(_RangeWrapper):
        pass

    with open(path, "rb") as f:
        assert file_range(_RangeWrapper(FileWrapper(f), 10, 20))[1:] == (10, 20)
        assert file_range(Sub(FileWrapper(f), 10, 20)) is None
        started = _RangeWrapper(FileWrapper(f), 10, 20)
        next(started)
        assert file_range(started) is None
        assert file_range(_RangeWrapper(iter([b"x"]), 0, 1)) is None
        assert file_range(_RangeWrapper(FileWrapper(f), SIZE - 5, None))[1:] == (SIZE - 5, 5)


# -- whitenoise under Django -----------------------------------------------------------------
@pytest.fixture
def django_static(big_file):
    """(Django WSGI app with whitenoise, name of big.bin under /static/)."""
    pytest.importorskip("whitenoise")
    from apps import django_files

    path, data = big_file
    name = f"big-{os.getpid()}.bin"
    target = os.path.join(django_files.STATIC_DIR, name)
    if not os.path.exists(target):
        with open(target, "wb") as f:
            f.write(data)
    return django_files.application, name


def test_whitenoise_range_is_zero_copy(client_to, big_file, django_static):
    _, data = big_file
    app, name = django_static
    srv, client = client_to(app)
    r = client.get(f"/static/{name}", headers={"Range": "bytes=1000000-1199999"})
    assert r.status_code == 206
    assert r.content == data[1000000:1200000]
    assert r.headers["content-range"] == f"bytes 1000000-1199999/{SIZE}"
    assert_file_bytes(srv, client, 200000)
    r = client.get(f"/static/{name}")
    assert r.status_code == 200 and r.content == data
    assert_file_bytes(srv, client, 200000 + SIZE)


def test_whitenoise_precompressed_range(client_to, django_static, tmp_path):
    """A .gz sidecar: whitenoise picks it by Accept-Encoding and ranges the
    compressed bytes; both leave on the file path."""
    import gzip

    from apps import django_files

    app, _ = django_static
    name = f"text-{os.getpid()}.txt"
    plain = b"".join(b"line %d of a compressible file\n" % i for i in range(200000))
    packed = gzip.compress(plain, 9)
    for suffix, content in (("", plain), (".gz", packed)):
        with open(os.path.join(django_files.STATIC_DIR, name + suffix), "wb") as f:
            f.write(content)
    srv, client = client_to(app)
    r = client.get(f"/static/{name}", headers={"Accept-Encoding": "gzip",
                                               "Range": "bytes=0-"})
    assert r.status_code == 206
    assert r.headers["content-encoding"] == "gzip"
    assert r.headers["vary"].lower() == "accept-encoding"
    assert r.content == plain   # httpx decodes the gzip it received
    assert_file_bytes(srv, client, len(packed))
