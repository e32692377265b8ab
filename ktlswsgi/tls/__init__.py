"""TLS for ktlswsgi: a cffi binding over the system libssl/libcrypto and the
two transports that implement ``ktlswsgi.transport``'s interface.

Owns nothing of HTTP or WSGI.  Modules:
  binding     compiled binding (``_openssl``), TLSError, the error-queue helper
  context     ServerContext: one SSL_CTX, made once before any fork
  transports  SocketTransport (SSL_set_fd; kTLS when OpenSSL engages it),
              MemoryTransport (BIO pair; batches records per syscall),
              classify(): the one reading of SSL_get_error
  ktls        probe() / log_once(): can this host do kTLS at all
  selfsigned  ensure_selfsigned(): the cached development certificate
  selftest    run_check(): what ``ktlswsgi --check-ktls`` prints
  factory     tls_transport_factory(config): the context from the settings, the
              transport for each accepted socket
Build: ``pip install .`` compiles ``_openssl`` (gcc + OpenSSL 3 headers).
"""
from .binding import TLSConfigError, TLSError
from .context import ServerContext
from .factory import TLSSetupError, tls_transport_factory
from .transports import MemoryTransport, SocketTransport, TLSTransportError

__all__ = ["ServerContext", "SocketTransport", "MemoryTransport", "TLSError",
           "TLSConfigError", "TLSTransportError", "TLSSetupError", "tls_transport_factory"]
