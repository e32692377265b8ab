"""Aborts during SSL_sendfile: a file truncated under the transfer aborts that
connection with an error line ("file ended ... early"); a client that resets
(SO_LINGER 0) mid-transfer frees the connection and the worker.  The server
keeps serving after both."""
import http.client
import logging
import socket
import ssl
import struct

from _ktlskit import Client, fetch, file_url, only_connection, wait_no_connections, wait_until
from test_tls_server import make_file
import ktls_apps

MiB = 1 << 20
BIG = 16 * MiB


def _start_download(srv, cert_pair, path):
    """A client that asked for ``path`` and read 64 KiB of it, then stopped."""
    client = Client(srv.port, cert_pair, "1.3", rcvbuf=16384, timeout=30)
    client.http.request("GET", file_url(path))
    r = client.http.getresponse()
    assert r.status == 200 and int(r.headers["content-length"]) == BIG
    first = r.read(64 << 10)
    assert len(first) == 64 << 10
    conn = only_connection(srv)
    assert conn.transport.ktls_tx
    # The server fills the socket buffers and waits for EPOLLOUT mid-file.
    wait_until(lambda: srv.counters.bytes_ssl_sendfile > len(first), 30, "SSL_sendfile")
    return client, r


def _still_serving(srv, cert_pair, ktls_files):
    path, sha = ktls_files.get(64 << 10)
    r = fetch(srv.port, cert_pair, file_url(path), "1.2")
    assert r.status == 200 and r.sha256 == sha


def test_file_truncated_during_ssl_sendfile(serve_tls, cert_pair, ktls_files, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="ktlswsgi")
    path = make_file(str(tmp_path), "shrinks.bin", BIG)
    srv = serve_tls(ktls_apps.app, transport="socket", write_timeout_s=30)
    client, r = _start_download(srv, cert_pair, path)
    got = 64 << 10
    try:
        with open(path, "r+b") as f:
            f.truncate(MiB)
        try:
            for chunk in iter(lambda: r.read(65536), b""):
                got += len(chunk)
        except (http.client.IncompleteRead, ssl.SSLError, OSError):
            pass
    finally:
        client.close()
    assert got < BIG
    errors = wait_until(lambda: [rec for rec in caplog.records if "file ended" in rec.getMessage()],
                        30, "the 'file ended early' log line")
    assert errors[0].levelno == logging.ERROR and "early" in errors[0].getMessage()
    wait_no_connections(srv)
    c = srv.counters
    assert c.aborted_connections == 1
    assert c.bytes_ssl_sendfile < BIG and c.bytes_pread_ssl_write == 0
    _still_serving(srv, cert_pair, ktls_files)


def test_client_reset_mid_sendfile_frees_worker_and_connection(serve_tls, cert_pair, ktls_files,
                                                                tmp_path):
    path = make_file(str(tmp_path), "big.bin", BIG)
    del ktls_apps.opened[:]
    srv = serve_tls(ktls_apps.app, transport="socket", write_timeout_s=60)
    client, r = _start_download(srv, cert_pair, path)
    client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    r.close()                                   # the response's reader holds the fd open
    client.close()                              # RST, not FIN
    assert client.sock.fileno() == -1
    wait_no_connections(srv, 20)                # long before the 60 s write timeout
    srv.wait_idle(10)
    wait_until(lambda: ktls_apps.opened and all(f.closed for f in ktls_apps.opened), 10,
               "the app's file to be closed")
    c = srv.counters
    assert c.aborted_connections == 1
    assert c.bytes_ssl_sendfile < BIG
    _still_serving(srv, cert_pair, ktls_files)
