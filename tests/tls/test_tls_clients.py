"""Real third-party clients against the transports: openssl s_client and curl."""
import shutil
import subprocess
import time

import pytest

from ktlswsgi.tls.transports import MemoryTransport, SocketTransport, TLSTransportError

from _tlskit import OneConnectionServer, drive, expected_ktls, send_all, shutdown_all

TRANSPORTS = [SocketTransport, MemoryTransport]
IDS = ["socket", "memory"]
BODY = b"hello from the TLS layer\n" * 100


def http_like(t, deadline):
    """Read one request head, answer a fixed response, close_notify."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = drive(t, lambda: t.recv(4096), deadline)
        assert chunk, "EOF before the end of the request head"
        head += chunk
        assert len(head) < 65536
    send_all(t, b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
             % len(BODY) + BODY, deadline)
    shutdown_all(t, deadline)
    return head


@pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")
@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
@pytest.mark.parametrize("version", ["--tlsv1.2 --tls-max 1.2", "--tlsv1.3"], ids=["tls12", "tls13"])
def test_curl(certs, server_context, transport_cls, version):
    srv = OneConnectionServer(server_context, transport_cls, http_like)
    cmd = ["curl", "-sS", "--max-time", "10", "--cacert", certs.cert, *version.split(),
           "--http1.1", "https://localhost:%d/x" % srv.port]
    proc = subprocess.run(cmd, capture_output=True, timeout=20)
    srv.join()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == BODY
    assert srv.error is None, srv.error
    assert srv.result.startswith(b"GET /x HTTP/1.1\r\n")
    assert srv.info["alpn"] == "http/1.1"
    assert srv.info["sni"] == "localhost"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"], ids=["tls12", "tls13"])
def test_openssl_s_client(certs, server_context, transport_cls, version):
    srv = OneConnectionServer(server_context, transport_cls, http_like)
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, version,
           "-servername", "localhost", "-alpn", "http/1.1", "-CAfile", certs.cert,
           "-verify_return_error", "-ign_eof"]
    proc = subprocess.run(cmd, input=b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
                          capture_output=True, timeout=20)
    srv.join()
    assert srv.error is None, srv.error
    out = proc.stdout
    assert b"Verify return code: 0 (ok)" in out
    assert b"ALPN protocol: http/1.1" in out
    assert BODY in out
    expected = b"TLSv1.2" if version == "-tls1_2" else b"TLSv1.3"
    assert expected in out


@pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
@pytest.mark.parametrize("transport_cls", TRANSPORTS, ids=IDS)
def test_tls13_key_update_from_the_client(certs, server_context, transport_cls):
    """s_client's 'K' command sends a KeyUpdate asking for ours.  Userspace
    TLS (this host, the memory transport) keeps working.  With kTLS TX
    engaged (the kTLS VM) OpenSSL 3.0 cannot rekey the kernel: the transport
    must fail the connection with a clear reason instead of sending records
    under a stale key (the client would see bad_record_mac)."""
    ktls_tx = "tx" in next(iter(expected_ktls(transport_cls, server_context, "TLSv1.3")))

    def scenario(t, deadline):
        seen = b""
        while seen.count(b"ping") < 2:
            chunk = drive(t, lambda: t.recv(4096), deadline)
            assert chunk, "EOF after %r" % seen
            seen += chunk
        send_all(t, b"pong\n", deadline)
        shutdown_all(t, deadline)
        return seen

    srv = OneConnectionServer(server_context, transport_cls, scenario)
    # No -ign_eof: it disables s_client's commands; stdin stays open instead.
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % srv.port, "-tls1_3", "-msg"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        for _ in range(100):        # s_client reads stdin only after its handshake
            if srv.info is not None:
                break
            time.sleep(0.05)
        time.sleep(0.2)
        for line in (b"ping\n", b"K\n", b"ping\n"):
            try:
                proc.stdin.write(line)
                proc.stdin.flush()
            except BrokenPipeError:   # s_client is gone: the server closed
                break
            time.sleep(0.2)
        srv.join()
        time.sleep(0.1)
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
        proc.stdin = None
        out, err = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    assert b"KEYUPDATE" in out + err
    if ktls_tx:
        assert isinstance(srv.error, TLSTransportError), srv.error
        assert "KeyUpdate" in str(srv.error)
        assert b"bad_record_mac" not in out
        return
    assert srv.error is None, srv.error
    assert srv.result == b"ping\nping\n"          # 'K' was a command, not data
    assert out.count(b"KeyUpdate") >= 2             # theirs, and ours in answer
    assert b"pong" in out
