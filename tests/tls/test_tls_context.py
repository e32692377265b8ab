"""ServerContext: configuration, options, and one-line errors."""
import re

import pytest

from ktlswsgi.tls.binding import HAS_KTLS, TLSError, ffi, lib
from ktlswsgi.tls.context import ServerContext, TLSConfigError, alpn_wire


def options(ctx):
    return lib.SSL_CTX_get_options(ctx.ctx)


def one_line(exc):
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_options_for_a_nonblocking_ktls_server(server_context):
    opts = options(server_context)
    for name in ("SSL_OP_NO_COMPRESSION", "SSL_OP_NO_RENEGOTIATION",
                 "SSL_OP_CIPHER_SERVER_PREFERENCE", "SSL_OP_IGNORE_UNEXPECTED_EOF"):
        assert opts & getattr(lib, name), name
    assert bool(opts & lib.SSL_OP_ENABLE_KTLS) == HAS_KTLS
    mode = lib.SSL_CTX_get_mode(server_context.ctx)
    assert mode & lib.SSL_MODE_ENABLE_PARTIAL_WRITE
    assert mode & lib.SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER


def test_context_without_ktls_option_has_no_ktls_bit(plain_context):
    assert not options(plain_context) & lib.SSL_OP_ENABLE_KTLS
    assert plain_context.ktls is False


def test_key_in_the_certfile_is_accepted(certs):
    ServerContext(certs.combined)


def test_missing_certfile_names_file_and_reason(certs, tmp_path):
    path = str(tmp_path / "nope" / "cert.pem")
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(path, certs.key)
    text = one_line(exc)
    assert path in text and "No such file or directory" in text
    assert isinstance(exc.value, TLSError)


def test_missing_keyfile_names_file_and_reason(certs, tmp_path):
    path = str(tmp_path / "key.pem")
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, path)
    text = one_line(exc)
    assert "keyfile" in text and path in text and "No such file or directory" in text


def test_junk_certfile_says_no_pem(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.junk, certs.key)
    text = one_line(exc)
    assert certs.junk in text and "no start line" in text


def test_certfile_without_a_key_says_so(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert)     # the key was to be in the same PEM
    text = one_line(exc)
    assert text == ("TLS: cannot load keyfile %r: no private key found in it "
                    "(give --keyfile, or put the key in the PEM)" % certs.cert)


@pytest.mark.parametrize("content", ["certificate", "junk", "empty"])
def test_keyfile_without_a_key_says_so(certs, tmp_path, content):
    path = str(tmp_path / "key.pem")
    with open(path, "wb") as f:
        f.write({"certificate": open(certs.cert, "rb").read(),
                 "junk": b"this is not PEM\n", "empty": b""}[content])
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, path)
    text = one_line(exc)
    assert text == "TLS: cannot load keyfile %r: no private key found in it" % path


def test_key_not_matching_the_cert(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, certs.other_key)
    text = one_line(exc)
    assert certs.other_key in text and "does not match" in text
    assert exc.value.reason == "key values mismatch" or "key values mismatch" in text


def test_encrypted_key_without_password_fails_at_once(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, certs.encrypted_key)   # must not prompt on a tty
    text = one_line(exc)
    assert certs.encrypted_key in text and "encrypted and no password" in text


def test_encrypted_key_with_wrong_password(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, certs.encrypted_key, password="wrong")
    text = one_line(exc)
    # OpenSSL's own reason follows in parentheses. Which one depends on the
    # garbage the wrong key produces: usually the padding check fails ("bad
    # decrypt"), but about 1 time in 256 the padding happens to look valid and
    # the DER parser fails instead ("unsupported", an ASN.1 reason, ...).
    assert certs.encrypted_key in text
    assert re.search(r"wrong password \([^)]+\)", text), text


def test_encrypted_key_with_password(certs):
    ServerContext(certs.cert, certs.encrypted_key, password=certs.password)
    ServerContext(certs.cert, certs.encrypted_key, password=certs.password.encode())


def test_bad_cipher_list_and_suites(certs):
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, certs.key, ciphers="NO-SUCH-CIPHER")
    assert "no cipher match" in one_line(exc)
    with pytest.raises(TLSConfigError) as exc:
        ServerContext(certs.cert, certs.key, tls13_ciphersuites="TLS_NOPE")
    assert "TLS_NOPE" in one_line(exc)


def test_bad_min_version(certs):
    with pytest.raises(TLSConfigError):
        ServerContext(certs.cert, certs.key, min_version="1.1")


def test_alpn_wire_format():
    assert alpn_wire(["h2", "http/1.1"]) == b"\x02h2\x08http/1.1"
    with pytest.raises(TLSConfigError):
        alpn_wire([""])


def test_error_queue_is_empty_after_a_failure(certs, tmp_path):
    with pytest.raises(TLSConfigError):
        ServerContext(str(tmp_path / "missing.pem"))
    assert lib.ERR_peek_error() == 0


def test_feature_constants_exposed():
    assert lib.Ktlswsgi_HAS_KTLS in (0, 1)
    assert lib.Ktlswsgi_HAS_SSL_SENDFILE == 1
    assert lib.BIO_CTRL_GET_KTLS_SEND == 73 and lib.BIO_CTRL_GET_KTLS_RECV == 76
    assert ffi.string(lib.OpenSSL_version(lib.OPENSSL_VERSION)).startswith(b"OpenSSL 3.")
