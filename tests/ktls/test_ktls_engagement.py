"""The engagement matrix, per connection, seen three ways: the server's own
telemetry (transport.ktls_tx/rx, counters), /proc/net/tls_stat deltas, and
the kernel's view of the server's socket (getsockopt SOL_TLS, 4 bytes).

Expected (docs/ktls-facts.md): TLS 1.2 AES-128-GCM, AES-256-GCM and
CHACHA20-POLY1305 -> TX and RX; TLS 1.3 (all three suites) -> TX, and RX only
from OpenSSL 3.2.  A cipher left in userspace because a kernel module is
missing fails here with the missing module named.  The measured matrix is
printed at the end of the run.
"""
import hashlib
import os

import pytest

from _ktlskit import (OPENSSL, TLS13_RX, Client, TlsStat, file_url, kernel_view,
                      module_diagnosis, only_connection, wait_no_connections)
import ktls_apps

CASES = [
    # (TLS version, OpenSSL cipher name, the kernel's cipher)
    ("1.2", "ECDHE-ECDSA-AES128-GCM-SHA256", "AES-GCM-128"),
    ("1.2", "ECDHE-ECDSA-AES256-GCM-SHA384", "AES-GCM-256"),
    ("1.2", "ECDHE-ECDSA-CHACHA20-POLY1305", "CHACHA20-POLY1305"),
    ("1.3", "TLS_AES_128_GCM_SHA256", "AES-GCM-128"),
    ("1.3", "TLS_AES_256_GCM_SHA384", "AES-GCM-256"),
    ("1.3", "TLS_CHACHA20_POLY1305_SHA256", "CHACHA20-POLY1305"),
]
TITLE = "kTLS engagement matrix (OpenSSL %d.%d, kernel %s)" % (OPENSSL + (os.uname().release,))
HEADER = ["TLS", "cipher", "expected", "server telemetry", "kernel SOL_TLS TX", "kernel SOL_TLS RX",
          "tls_stat TxSw/RxSw/CurrTxSw/CurrRxSw", "file via", "verdict"]
FILE_SIZE = (256 << 10) + 7
UPLOAD = os.urandom(256 << 10)


@pytest.mark.parametrize("version,cipher,kcipher", CASES, ids=[c[1] for c in CASES])
def test_engagement(serve_tls, cert_pair, ktls_files, ktls_report, version, cipher, kcipher):
    want_tx, want_rx = True, version == "1.2" or TLS13_RX
    want = ",".join(p for p, on in (("tx", want_tx), ("rx", want_rx)) if on) or "off"
    stat = TlsStat()
    if version == "1.2":
        srv = serve_tls(ktls_apps.app, transport="socket", ciphers=cipher)
        client = Client(srv.port, cert_pair, "1.2", ciphers=cipher)
    else:
        srv = serve_tls(ktls_apps.app, transport="socket", tls13_ciphersuites=cipher,
                        tls_min_version="1.3")
        client = Client(srv.port, cert_pair, "1.3")
    path, sha = ktls_files.get(FILE_SIZE)
    try:
        up = client.request("POST", "/upload", body=UPLOAD, keep_body=True)
        dyn = client.get("/dyn?n=70000")
        got = client.get(file_url(path))
        conn = only_connection(srv)
        t = conn.transport
        info = t.info()
        kernel = kernel_view(conn.sock)
        during = stat.delta()
    finally:
        client.close()
    wait_no_connections(srv)
    after = stat.delta()
    c = srv.counters
    telemetry = info["ktls"]
    via = "SSL_sendfile" if c.bytes_ssl_sendfile == FILE_SIZE else (
        "pread+SSL_write" if c.bytes_pread_ssl_write == FILE_SIZE else "?")
    deltas = "%+d/%+d/%+d/%+d" % (during["TlsTxSw"], during["TlsRxSw"], during["TlsCurrTxSw"],
                                  during["TlsCurrRxSw"])
    kname = "%s/%s" % (version, kcipher)
    ok = (telemetry == want and kernel["tx"] == (kname if want_tx else None)
          and kernel["rx"] == (kname if want_rx else None))
    ktls_report.row(TITLE, HEADER, ["TLSv" + version, cipher, want, telemetry, kernel["tx"] or "-",
                                    kernel["rx"] or "-", deltas, via, "ok" if ok else "MISMATCH"])

    # Correct bytes whatever engaged.
    assert up.status == 200 and up.body.decode() == hashlib.sha256(UPLOAD).hexdigest()
    assert dyn.status == 200 and dyn.length == 70000
    assert got.status == 200 and got.length == FILE_SIZE and got.sha256 == sha
    assert info["tls_version"] == "TLSv" + version and info["cipher"] == cipher, info

    # The server's telemetry.
    if want_tx and not t.ktls_tx:
        pytest.fail("kTLS TX did not engage for TLSv%s %s (%s)"
                    % (version, cipher, module_diagnosis(kcipher)), pytrace=False)
    assert telemetry == want, (telemetry, module_diagnosis(kcipher))
    assert (t.ktls_tx, t.ktls_rx) == (want_tx, want_rx)
    assert conn.tls_info["ktls"] == want
    assert c.ktls_tx_connections == int(want_tx) and c.ktls_rx_connections == int(want_rx)
    assert c.handshakes_ok == 1 and c.connections == 1

    # The kernel's own view of the server's socket: version and cipher, per direction.
    assert kernel == {"tx": kname if want_tx else None, "rx": kname if want_rx else None}

    # /proc/net/tls_stat: this one socket, while open and after it closed.
    assert during == {"TlsTxSw": int(want_tx), "TlsRxSw": int(want_rx),
                      "TlsCurrTxSw": int(want_tx), "TlsCurrRxSw": int(want_rx),
                      "TlsDecryptError": 0}, during
    assert after == {"TlsTxSw": int(want_tx), "TlsRxSw": int(want_rx),
                     "TlsCurrTxSw": 0, "TlsCurrRxSw": 0, "TlsDecryptError": 0}, after

    # The file went through SSL_sendfile, the rest through SSL_write.
    assert c.bytes_ssl_sendfile == FILE_SIZE and c.bytes_pread_ssl_write == 0
    assert c.bytes_ssl_write > 70000
