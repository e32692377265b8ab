"""Fixtures for the TLS layer tests: certificates made once per session with
the project's own generator, plus a few deliberately broken key files."""
import os
import subprocess

import pytest

from ktlswsgi.tls.context import ServerContext
from ktlswsgi.tls.selfsigned import generate_pem


class Certs:
    def __init__(self, root):
        self.dir = str(root)
        cert_pem, key_pem = generate_pem()
        self.cert = self._write("cert.pem", cert_pem)
        self.key = self._write("key.pem", key_pem, 0o600)
        self.combined = self._write("combined.pem", cert_pem + key_pem, 0o600)
        other_cert, other_key = generate_pem()
        self.other_key = self._write("other-key.pem", other_key, 0o600)
        self.junk = self._write("junk.pem", b"this is not PEM\n")
        self.encrypted_key = os.path.join(self.dir, "key-encrypted.pem")
        self.password = "correct horse"
        subprocess.run(["openssl", "pkey", "-in", self.key, "-aes256", "-passout",
                        "pass:" + self.password, "-out", self.encrypted_key],
                       check=True, capture_output=True, timeout=30)

    def _write(self, name, data, mode=0o644):
        path = os.path.join(self.dir, name)
        with open(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode), "wb") as f:
            f.write(data)
        return path


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    return Certs(tmp_path_factory.mktemp("tls-certs"))


@pytest.fixture(scope="session")
def server_context(certs):
    return ServerContext(certs.cert, certs.key)


@pytest.fixture(scope="session")
def plain_context(certs):
    """A context without SSL_OP_ENABLE_KTLS."""
    return ServerContext(certs.cert, certs.key, ktls=False)
