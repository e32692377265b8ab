"""A self-signed development certificate, made through the project's own
libcrypto binding (no ``openssl`` command, no extra dependency).

Owns: key and certificate generation (EC P-256, SANs DNS:localhost,
IP:127.0.0.1, IP:::1, about one year), the per-user cache
($XDG_CACHE_HOME or ~/.cache, then ktlswsgi/selfsigned/; directory 0700,
key 0600), reuse of a cached pair until it is near expiry, the fallback when
that cache cannot be written (a fresh pair in a private temporary directory,
removed once loaded), and which listening addresses the certificate does not
cover.  It is for development only: the caller prints that warning.
"""
from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass

from .binding import TLSError, drain_errors, errors_from_queue, ffi, lib

VALIDITY_DAYS = 365
RENEW_BEFORE_DAYS = 7
SUBJECT_ALT_NAME = "DNS:localhost,IP:127.0.0.1,IP:::1"
COVERED_NAMES = "localhost, 127.0.0.1 and ::1"   # SUBJECT_ALT_NAME, for messages
CERT_NAME = "localhost-cert.pem"
KEY_NAME = "localhost-key.pem"


def default_cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "ktlswsgi", "selfsigned")


def _check(ok, what: str):
    if not ok or ok == ffi.NULL:
        raise errors_from_queue("self-signed certificate: %s failed" % what)
    return ok


def _bio_text(bio) -> bytes:
    n = lib.BIO_ctrl_pending(bio)
    buf = ffi.new("char[]", n)
    got = lib.BIO_read(bio, buf, n)
    return ffi.buffer(buf, max(got, 0))[:]


def generate_pem(common_name: str = "localhost", days: int = VALIDITY_DAYS,
                 san: str = SUBJECT_ALT_NAME):
    """-> (cert_pem, key_pem) bytes: a fresh EC P-256 key and its self-signed cert."""
    lib.ERR_clear_error()
    kctx = _check(lib.EVP_PKEY_CTX_new_from_name(ffi.NULL, b"EC", ffi.NULL), "EC key context")
    kctx = ffi.gc(kctx, lib.EVP_PKEY_CTX_free)
    _check(lib.EVP_PKEY_keygen_init(kctx) == 1, "keygen init")
    _check(lib.EVP_PKEY_CTX_set_group_name(kctx, b"P-256") == 1, "P-256 group")
    pkey_out = ffi.new("EVP_PKEY **")
    _check(lib.EVP_PKEY_generate(kctx, pkey_out) == 1, "key generation")
    pkey = ffi.gc(pkey_out[0], lib.EVP_PKEY_free)

    x509 = ffi.gc(_check(lib.X509_new(), "X509_new"), lib.X509_free)
    _check(lib.X509_set_version(x509, 2), "version")   # v3
    serial = int.from_bytes(os.urandom(8), "big") >> 1 or 1
    _check(lib.ASN1_INTEGER_set_uint64(lib.X509_get_serialNumber(x509), serial), "serial")
    _check(lib.X509_gmtime_adj(lib.X509_getm_notBefore(x509), -3600), "notBefore")
    _check(lib.X509_gmtime_adj(lib.X509_getm_notAfter(x509), days * 86400), "notAfter")
    _check(lib.X509_set_pubkey(x509, pkey), "public key")
    name = lib.X509_get_subject_name(x509)
    for field, value in (("O", "ktlswsgi development"), ("CN", common_name)):
        _check(lib.X509_NAME_add_entry_by_txt(name, field.encode(), lib.MBSTRING_ASC,
                                              value.encode(), -1, -1, 0), "subject " + field)
    _check(lib.X509_set_issuer_name(x509, name), "issuer")

    v3 = ffi.new("X509V3_CTX *")
    lib.X509V3_set_ctx(v3, x509, x509, ffi.NULL, ffi.NULL, 0)
    for nid, value in (
        (lib.NID_basic_constraints, "critical,CA:FALSE"),
        (lib.NID_key_usage, "critical,digitalSignature"),
        (lib.NID_ext_key_usage, "serverAuth"),
        (lib.NID_subject_key_identifier, "hash"),
        (lib.NID_authority_key_identifier, "keyid:always"),
        (lib.NID_subject_alt_name, san),
    ):
        ext = _check(lib.X509V3_EXT_conf_nid(ffi.NULL, v3, nid, value.encode()), "extension " + value)
        ok = lib.X509_add_ext(x509, ext, -1)
        lib.X509_EXTENSION_free(ext)
        _check(ok, "adding extension " + value)
    _check(lib.X509_sign(x509, pkey, lib.EVP_sha256()) > 0, "signing")

    bio = ffi.gc(_check(lib.BIO_new(lib.BIO_s_mem()), "BIO_new"), lib.BIO_free)
    _check(lib.PEM_write_bio_X509(bio, x509), "PEM certificate")
    cert_pem = _bio_text(bio)
    _check(lib.PEM_write_bio_PrivateKey(bio, pkey, ffi.NULL, ffi.NULL, 0, ffi.NULL, ffi.NULL),
           "PEM key")
    key_pem = _bio_text(bio)
    return cert_pem, key_pem


def _usable(cert_path: str, key_path: str) -> bool:
    """Both files present, key private to the user, cert valid for a while."""
    try:
        st = os.stat(key_path)
        if st.st_mode & 0o077:
            return False
        with open(cert_path, "rb") as f:
            pem = f.read()
    except OSError:
        return False
    lib.ERR_clear_error()
    bio = lib.BIO_new_mem_buf(pem, len(pem))
    if bio == ffi.NULL:
        drain_errors()
        return False
    bio = ffi.gc(bio, lib.BIO_free)
    x509 = lib.PEM_read_bio_X509(bio, ffi.NULL, ffi.NULL, ffi.NULL)
    if x509 == ffi.NULL:
        drain_errors()
        return False
    x509 = ffi.gc(x509, lib.X509_free)
    horizon = ffi.new("time_t *", int(time.time()) + RENEW_BEFORE_DAYS * 86400)
    return lib.X509_cmp_time(lib.X509_get0_notAfter(x509), horizon) > 0


def _write_private(path: str, data: bytes, mode: int) -> None:
    """Atomically write ``data`` to ``path`` with ``mode`` from the start."""
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def ensure_selfsigned(cache_dir: str | None = None):
    """-> (certfile, keyfile): the cached development pair, made on first use.

    Safe against concurrent callers (a lock file in the cache directory).
    Raises ``TLSError`` if the pair cannot be made, ``OSError`` if the cache
    directory cannot be written.
    """
    cache_dir = cache_dir or default_cache_dir()
    os.makedirs(cache_dir, mode=0o700, exist_ok=True)
    cert_path = os.path.join(cache_dir, CERT_NAME)
    key_path = os.path.join(cache_dir, KEY_NAME)
    try:
        lock = open(os.path.join(cache_dir, ".lock"), "a")
    except OSError:
        # A read-only cache (say, an image built with the pair in it) still
        # serves a pair that needs no renewal.
        if _usable(cert_path, key_path):
            return cert_path, key_path
        raise
    with lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        if not _usable(cert_path, key_path):
            cert_pem, key_pem = generate_pem()
            _write_private(key_path, key_pem, 0o600)
            _write_private(cert_path, cert_pem, 0o644)
    return cert_path, key_path


@dataclass(frozen=True)
class DevelopmentPair:
    """The files of the development pair, and whether they are cached.

    ``cache_error`` is None for the cached pair; otherwise it says why
    ``cache_dir`` could not be written, and the pair is a fresh one whose
    files vanish when the ``development_pair`` block ends.
    """

    certfile: str
    keyfile: str
    cache_dir: str
    cache_error: str | None = None


def _os_reason(exc: OSError) -> str:
    if exc.strerror and exc.filename:
        return "%s: %r" % (exc.strerror, exc.filename)
    return exc.strerror or str(exc)


@contextlib.contextmanager
def development_pair(cache_dir: str | None = None):
    """Yield a ``DevelopmentPair``; load the files inside the ``with`` block.

    The cached pair (``ensure_selfsigned``) when the cache directory can be
    written.  When it cannot (a container with a read-only root, ``HOME=/``
    and no XDG_CACHE_HOME; a cache path under a file), a fresh pair goes to a
    private directory (0700, under ``tempfile.gettempdir()``) that is removed
    when the block ends: the SSL context holds the certificate and key in
    memory once loaded, so the key stays on disk only while it is read.
    Raises ``TLSError`` if no pair can be made, ``OSError`` if neither the
    cache nor a temporary directory can be written.
    """
    cache_dir = cache_dir or default_cache_dir()
    try:
        cert_path, key_path = ensure_selfsigned(cache_dir)
    except OSError as exc:
        cache_error = _os_reason(exc)
    else:
        yield DevelopmentPair(cert_path, key_path, cache_dir)
        return
    cert_pem, key_pem = generate_pem()
    tmp_dir = tempfile.mkdtemp(prefix="ktlswsgi-selfsigned-")   # mode 0700
    try:
        key_path = os.path.join(tmp_dir, KEY_NAME)
        cert_path = os.path.join(tmp_dir, CERT_NAME)
        _write_private(key_path, key_pem, 0o600)
        _write_private(cert_path, cert_pem, 0o644)
        yield DevelopmentPair(cert_path, key_path, cache_dir, cache_error)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)


def _is_loopback(host: str) -> bool:
    # Resolved as bind_sockets does (the first answer is the address bound).
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        address = ipaddress.ip_address(infos[0][4][0].partition("%")[0])
    except (OSError, IndexError, ValueError):
        return False
    mapped = getattr(address, "ipv4_mapped", None)   # ::ffff:127.0.0.1
    return (mapped or address).is_loopback


def uncovered_binds(binds) -> list:
    """The TCP binds (``config.Bind``) clients may reach by a name or address
    the certificate does not hold: every non-loopback address (0.0.0.0, ::, a
    LAN address).  Unix sockets and loopback addresses are covered."""
    return [b for b in binds if b.family != "unix" and not _is_loopback(b.host)]


__all__ = ["ensure_selfsigned", "development_pair", "DevelopmentPair", "generate_pem",
           "default_cache_dir", "uncovered_binds", "COVERED_NAMES", "TLSError"]
