"""--static mounts and --sendfile-root (X-Sendfile, X-Accel-Redirect), end to end.

Real clients against a real server: what a mount serves (validators, 304,
Range, sidecars, Cache-Control), what it refuses (traversal in every
spelling, symlinks out of the root, dotfiles, directories: the request
falls through to the app), and files named by the app's X-Sendfile (Flask
USE_X_SENDFILE) or X-Accel-Redirect (django-sendfile2's nginx backend),
both on the zero-copy path (the file counters say so).
"""
from __future__ import annotations

import gzip
import logging
import os
import socket

import httpx
import pytest

from support import tls_client_context, wait_until
from ktlswsgi import staticfiles

KiB = 1024


def app_404(environ, start_response):
    body = b"from the app: " + environ["PATH_INFO"].encode("latin-1")
    start_response("404 Not Found", [("Content-Type", "text/plain"),
                                     ("Content-Length", str(len(body)))])
    return [body]


@pytest.fixture
def tree(tmp_path):
    """public/ (the mount) next to secret.txt (outside it)."""
    public = tmp_path / "public"
    (public / "css").mkdir(parents=True)
    (public / "css" / "site.css").write_bytes(b"body { color: red }\n" * 4000)
    (public / "css" / "site.css.gz").write_bytes(gzip.compress((public / "css" / "site.css").read_bytes()))
    (public / "app.3f2a9c1d.js").write_bytes(b"console.log(1)\n")
    (public / "big.bin").write_bytes(os.urandom(700 * KiB))
    (public / ".env").write_bytes(b"SECRET=1\n")
    (tmp_path / "secret.txt").write_bytes(b"top secret\n")
    os.symlink(tmp_path / "secret.txt", public / "out-link.txt")
    os.symlink("big.bin", public / "in-link.bin")   # relative: it stays beneath
    return tmp_path


def static_server(serve, tree, **kw):
    return serve(app_404, static=[f"/static={tree / 'public'}"], **kw)


def raw_get(port: int, target: bytes) -> bytes:
    """One request with the target exactly as given (no client normalisation)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        out = b""
        while chunk := s.recv(65536):
            out += chunk
    return out


# -- --static --------------------------------------------------------------------------------
def test_static_serves_a_file_zero_copy_with_validators(serve, tree):
    srv = static_server(serve, tree)
    data = (tree / "public" / "big.bin").read_bytes()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
        r = c.get("/static/big.bin")
        assert r.status_code == 200 and r.content == data
        assert r.headers["accept-ranges"] == "bytes"
        assert r.headers["cache-control"] == "public, max-age=60"
        assert r.headers["content-type"] == "application/octet-stream"
        etag, modified = r.headers["etag"], r.headers["last-modified"]
        assert c.get("/static/big.bin", headers={"If-None-Match": etag}).status_code == 304
        assert c.get("/static/big.bin", headers={"If-Modified-Since": modified}).status_code == 304
        r = c.get("/static/big.bin", headers={"Range": "bytes=100000-299999", "If-Range": etag})
        assert r.status_code == 206 and r.content == data[100000:300000]
        r = c.head("/static/big.bin")
        assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(data))
        assert c.get("/static/big.bin", headers={"Range": f"bytes={len(data)}-"}).status_code == 416
    wait_until(lambda: srv.counters.bytes_sendfile >= len(data) + 200000, 5, "file bytes counted")
    assert srv.counters.bytes_sendfile == len(data) + 200000


def test_static_cache_control_and_sidecars(serve, tree):
    srv = static_server(serve, tree, static_max_age_s=300)
    css = (tree / "public" / "css" / "site.css").read_bytes()
    gz = (tree / "public" / "css" / "site.css.gz").read_bytes()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
        r = c.get("/static/app.3f2a9c1d.js")
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["content-type"].startswith("text/javascript")
        r = c.get("/static/css/site.css", headers={"Accept-Encoding": "identity"})
        assert r.headers["cache-control"] == "public, max-age=300"
        assert "content-encoding" not in r.headers and r.content == css
        assert r.headers["vary"] == "Accept-Encoding"
        r = c.get("/static/css/site.css", headers={"Accept-Encoding": "br;q=0, gzip"})
        assert r.headers["content-encoding"] == "gzip" and r.headers["vary"] == "Accept-Encoding"
        assert r.headers["content-length"] == str(len(gz)) and r.content == css
        assert r.headers["content-type"] == "text/css; charset=utf-8"
        r = c.get("/static/css/site.css", headers={"Accept-Encoding": "gzip;q=0"})
        assert "content-encoding" not in r.headers


@pytest.mark.parametrize("fallback", [False, True], ids=["openat2", "component-walk"])
def test_static_refuses_everything_outside_and_falls_through(serve, tree, monkeypatch, fallback):
    if fallback:
        monkeypatch.setattr(staticfiles, "_openat2_works", False)
    srv = static_server(serve, tree)
    for target in (b"/static/../secret.txt", b"/static/%2e%2e/secret.txt",
                   b"/static/%2E%2E%2Fsecret.txt", b"/static/css/../../secret.txt",
                   b"/static//etc/passwd", b"/static/out-link.txt", b"/static/.env",
                   b"/static/css", b"/static/", b"/static/nothing-here"):
        out = raw_get(srv.port, target)
        assert b"top secret" not in out and b"SECRET=1" not in out and b"root:" not in out, target
        assert out.startswith(b"HTTP/1.1 404 "), (target, out[:60])
        assert b"from the app" in out, target
    # A symlink that stays beneath the root: openat2 allows it, the walk refuses every symlink.
    out = raw_get(srv.port, b"/static/in-link.bin")
    assert out.startswith(b"HTTP/1.1 404 " if fallback else b"HTTP/1.1 200 "), out[:40]


def test_static_other_methods_and_http2(serve_tls, cert_pair, tree):
    srv = serve_tls(app_404, static=[f"/static={tree / 'public'}"])
    data = (tree / "public" / "big.bin").read_bytes()
    with httpx.Client(base_url=f"https://localhost:{srv.port}", http2=True,
                      verify=tls_client_context(cert_pair)) as c:
        r = c.get("/static/big.bin", headers={"Range": "bytes=-1000"})
        assert r.http_version == "HTTP/2" and r.status_code == 206 and r.content == data[-1000:]
        r = c.get("/static/big.bin")
        assert r.status_code == 200 and r.content == data
        r = c.post("/static/big.bin", content=b"x")
        assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
    wait_until(lambda: srv.counters.bytes_pread_ssl_write >= len(data) + 1000, 5, "file bytes")


# -- X-Sendfile / X-Accel-Redirect -------------------------------------------------------------
def flask_sendfile_app(directory):
    flask = pytest.importorskip("flask")
    app = flask.Flask(__name__)
    app.config["USE_X_SENDFILE"] = True

    @app.get("/dl/<name>")
    def dl(name):
        return flask.send_file(os.path.join(directory, name), as_attachment=True)

    @app.get("/raw")
    def raw():
        return "", 200, {"X-Sendfile": flask.request.args["path"]}

    return app


def test_flask_x_sendfile_is_served_by_the_server(serve, tree, caplog):
    public = tree / "public"
    srv = serve(flask_sendfile_app(str(public)), sendfile_root=[str(public)])
    data = (public / "big.bin").read_bytes()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
        r = c.get("/dl/big.bin")
        assert r.status_code == 200 and r.content == data
        assert "x-sendfile" not in r.headers
        assert r.headers["content-disposition"] == "attachment; filename=big.bin"
        r = c.get("/dl/big.bin", headers={"Range": "bytes=1000-1999"})
        assert r.status_code == 206 and r.content == data[1000:2000]
        assert r.headers["content-range"] == f"bytes 1000-1999/{len(data)}"
        etag = r.headers["etag"]
        assert c.get("/dl/big.bin", headers={"If-None-Match": etag}).status_code == 304
        with caplog.at_level(logging.WARNING, logger="ktlswsgi.files"):
            secret = str(tree / "secret.txt")
            for path, status in ((secret, 403), (str(public / ".." / "secret.txt"), 403),
                                 (str(public / "out-link.txt"), 403),
                                 (str(public / "missing.bin"), 404), ("relative.txt", 403)):
                r = c.get("/raw", params={"path": path})
                assert r.status_code == status, path
                assert b"top secret" not in r.content and "x-sendfile" not in r.headers
    assert caplog.records and all(secret not in rec.getMessage() for rec in caplog.records)
    wait_until(lambda: srv.counters.bytes_sendfile >= len(data), 5, "file bytes counted")


def test_sendfile_root_given_through_a_symlink(serve, tree):
    """A root given as a symlinked path (a release directory): X-Sendfile may
    name files by that path or by the resolved one."""
    link = tree / "current"
    os.symlink(tree / "public", link)
    srv = serve(flask_sendfile_app(str(link)), sendfile_root=[str(link)])
    data = (tree / "public" / "big.bin").read_bytes()
    with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
        for named in (link / "big.bin", tree / "public" / "big.bin"):
            r = c.get("/raw", params={"path": str(named)})
            assert r.status_code == 200 and r.content == data, named
        assert c.get("/raw", params={"path": str(tree / "secret.txt")}).status_code == 403


def test_x_sendfile_without_sendfile_root_says_what_is_missing(serve, tree, caplog):
    """Not configured, the header passes through; Flask's Content-Length then
    promises the file the body does not carry: the connection closes and the
    log says which setting was missing."""
    srv = serve(flask_sendfile_app(str(tree / "public")))
    with caplog.at_level(logging.ERROR, logger="ktlswsgi"):
        with httpx.Client(base_url=f"http://127.0.0.1:{srv.port}") as c:
            with c.stream("GET", "/dl/big.bin") as r:
                assert r.headers["x-sendfile"].endswith("big.bin")
                with pytest.raises(httpx.RemoteProtocolError):
                    r.read()
        wait_until(lambda: any("--sendfile-root" in rec.getMessage() for rec in caplog.records),
                   5, "the log line")


def test_django_sendfile2_x_accel_redirect(serve_tls, cert_pair):
    pytest.importorskip("django_sendfile")
    from apps import django_files

    name = "naïve file.bin"
    data = os.urandom(300 * KiB)
    with open(os.path.join(django_files.PROTECTED_DIR, name), "wb") as f:
        f.write(data)
    srv = serve_tls(django_files.application,
                    sendfile_root=[f"/protected={django_files.PROTECTED_DIR}"])
    for http2 in (False, True):
        with httpx.Client(base_url=f"https://localhost:{srv.port}", http2=http2,
                          verify=tls_client_context(cert_pair)) as c:
            r = c.get("/protected-file", params={"name": name})
            assert r.status_code == 200 and r.content == data
            assert "x-accel-redirect" not in r.headers
            assert r.headers["content-disposition"].startswith("attachment")
            r = c.get("/protected-file", params={"name": name}, headers={"Range": "bytes=-10"})
            assert r.status_code == 206 and r.content == data[-10:]
            # sendfile2 itself refuses a name that leaves SENDFILE_ROOT (404).
            r = c.get("/protected-file", params={"name": "../../etc/passwd"})
            assert r.status_code == 404 and b"root:" not in r.content
    wait_until(lambda: srv.counters.bytes_pread_ssl_write >= 2 * len(data), 5, "file bytes")
