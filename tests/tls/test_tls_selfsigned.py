"""The self-signed development certificate: made through our own libcrypto
binding, verified by Python's ssl for localhost / 127.0.0.1 / ::1, cached
with a 0600 key, reused on the next call; a fresh pair in a private temporary
directory when the cache cannot be written; which binds it covers."""
import errno
import os
import socket
import ssl
import stat
import tempfile

import pytest

from ktlswsgi.sockets import Bind
from ktlswsgi.tls import selfsigned
from ktlswsgi.tls.context import ServerContext
from ktlswsgi.tls.transports import SocketTransport

from _tlskit import OneConnectionServer, connect_tls


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    return tmp_path / "xdg" / "ktlswsgi" / "selfsigned"


def test_generated_once_with_private_key_and_reused(cache):
    cert, key = selfsigned.ensure_selfsigned()
    assert os.path.dirname(cert) == str(cache)
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(cache).st_mode) == 0o700
    before = (open(cert, "rb").read(), open(key, "rb").read(), os.stat(key).st_ino)
    again = selfsigned.ensure_selfsigned()
    assert again == (cert, key)
    assert (open(cert, "rb").read(), open(key, "rb").read(), os.stat(key).st_ino) == before


def test_regenerated_when_the_key_became_readable_by_others(cache):
    cert, key = selfsigned.ensure_selfsigned()
    old = open(cert, "rb").read()
    os.chmod(key, 0o644)
    selfsigned.ensure_selfsigned()
    assert open(cert, "rb").read() != old
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600


def test_home_cache_dir_without_xdg(monkeypatch, tmp_path):
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert selfsigned.default_cache_dir() == str(tmp_path / ".cache" / "ktlswsgi" / "selfsigned")


def test_certificate_content(cache):
    cert, key = selfsigned.ensure_selfsigned()
    decoded = ssl._ssl._test_decode_cert(cert)
    assert ("DNS", "localhost") in decoded["subjectAltName"]
    assert ("IP Address", "127.0.0.1") in decoded["subjectAltName"]
    assert any(kind == "IP Address" and value.rstrip("\n") in ("0:0:0:0:0:0:0:1", "::1")
               for kind, value in decoded["subjectAltName"])
    lifetime = ssl.cert_time_to_seconds(decoded["notAfter"]) - ssl.cert_time_to_seconds(
        decoded["notBefore"])
    assert 360 * 86400 <= lifetime <= 370 * 86400
    assert "BEGIN PRIVATE KEY" in open(key).read()   # unencrypted PKCS#8 (EC)


@pytest.mark.parametrize("host,family,name", [
    ("127.0.0.1", socket.AF_INET, "localhost"),
    ("127.0.0.1", socket.AF_INET, "127.0.0.1"),
    ("::1", socket.AF_INET6, "::1"),
])
def test_python_ssl_verifies_it(cache, host, family, name):
    if family == socket.AF_INET6 and not socket.has_ipv6:
        pytest.skip("no IPv6")
    cert, key = selfsigned.ensure_selfsigned()
    try:
        srv = OneConnectionServer(ServerContext(cert, key), SocketTransport, family=family,
                                  host=host)
    except OSError as exc:
        pytest.skip("cannot bind %s: %s" % (host, exc))
    ctx = ssl.create_default_context(cafile=cert)   # verification and hostname check on
    with connect_tls(srv.address, ctx, server_hostname=name) as c:
        assert c.getpeercert()["subject"]
    srv.join()
    assert srv.error is None, srv.error


def test_a_different_name_is_refused(cache):
    cert, key = selfsigned.ensure_selfsigned()
    srv = OneConnectionServer(ServerContext(cert, key), SocketTransport)
    ctx = ssl.create_default_context(cafile=cert)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect_tls(srv.address, ctx, server_hostname="example.com")
    srv.join()


# -- a cache that cannot be written ------------------------------------------------------------
@pytest.fixture
def unwritable_cache(tmp_path, monkeypatch):
    """XDG_CACHE_HOME under a regular file: ENOTDIR, for root too."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker / "cache"))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    return blocker / "cache", tmp


def test_unwritable_cache_gives_a_fresh_pair_in_a_private_temporary_directory(unwritable_cache):
    cache, tmp = unwritable_cache
    with pytest.raises(OSError):
        selfsigned.ensure_selfsigned()
    with selfsigned.development_pair() as pair:
        assert pair.cache_dir == str(cache / "ktlswsgi" / "selfsigned")
        assert "Not a directory" in pair.cache_error and str(cache) in pair.cache_error
        directory = os.path.dirname(pair.certfile)
        assert os.path.dirname(directory) == str(tmp)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        assert stat.S_IMODE(os.stat(pair.keyfile).st_mode) == 0o600
        ServerContext(pair.certfile, pair.keyfile)
    assert os.listdir(tmp) == []   # removed once loaded


def test_temporary_directory_is_removed_when_loading_fails(unwritable_cache):
    _, tmp = unwritable_cache
    with pytest.raises(RuntimeError):
        with selfsigned.development_pair():
            raise RuntimeError("loading failed")
    assert os.listdir(tmp) == []


def test_writable_cache_gives_the_cached_pair(cache):
    with selfsigned.development_pair() as pair:
        assert pair.cache_error is None and os.path.dirname(pair.certfile) == str(cache)
    assert os.path.exists(pair.certfile) and os.path.exists(pair.keyfile)


def test_read_only_cache_with_a_usable_pair_is_used(cache, monkeypatch):
    cert, key = selfsigned.ensure_selfsigned()
    real_open = open

    def read_only_open(path, mode="r", *args, **kwargs):
        if any(c in mode for c in "wax+"):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), path)
        return real_open(path, mode, *args, **kwargs)

    monkeypatch.setattr(selfsigned, "open", read_only_open, raising=False)
    with selfsigned.development_pair() as pair:
        assert (pair.certfile, pair.keyfile, pair.cache_error) == (cert, key, None)


# -- which binds the certificate covers --------------------------------------------------------
@pytest.mark.parametrize("text,covered", [
    ("127.0.0.1:8000", True), ("localhost:8000", True), ("[::1]:8000", True),
    ("[::ffff:127.0.0.1]:8000", True), ("unix:/run/app.sock", True),
    ("0.0.0.0:443", False), ("[::]:443", False), ("192.168.1.10:443", False),
    ("10.0.0.1:443", False),
])
def test_uncovered_binds(text, covered):
    bind = Bind.parse(text)
    assert selfsigned.uncovered_binds([bind]) == ([] if covered else [bind])
