"""Fallback: the boot with module_blacklist=tls (run by `make ktls-smoke` with
KTLSWSGI_EXPECT_KTLS=unavailable; skipped everywhere else).  As root a
TCP_ULP setsockopt would autoload tls.ko, so only the blacklist makes kTLS
really unavailable.  The probe must say so, the server must log the
"kTLS: unavailable" line exactly once, and serve files correctly over
userspace TLS (pread + SSL_write), never putting plaintext on the wire."""
import pytest

from _ktlskit import (PROBE, CliServer, Client, counters_line, fetch, file_url, kernel_view, marker_file,
                      only_connection, wait_no_connections)
from ktlswsgi.tls import ktls
from test_tls_server import Recorder, tls_records
import ktls_apps

TITLE = "fallback boot (module_blacklist=tls)"
MiB = 1 << 20


def test_probe_says_unavailable(ktls_report):
    ktls_report.note(TITLE, "probe: " + PROBE.reason)
    assert not PROBE.available
    assert PROBE.reason == ("kTLS: unavailable: kernel has no tls ULP "
                            "(load it with 'modprobe tls'; CONFIG_TLS)"), PROBE.reason
    assert ktls.read_tls_stat() is None          # tls.ko never loaded


@pytest.mark.parametrize("transport", ["socket", "memory"])
@pytest.mark.parametrize("version", ["1.2", "1.3"])
def test_files_over_userspace_tls(serve_tls, cert_pair, tmp_path, transport, version):
    path, content = marker_file(str(tmp_path))
    srv = serve_tls(ktls_apps.app, transport=transport)
    relay = Recorder(srv.port)
    client = Client(relay.port, cert_pair, version)
    try:
        r = client.get(file_url(path), keep_body=True)
        conn = only_connection(srv)
        kernel = kernel_view(conn.sock)
    finally:
        client.close()
    relay.thread.join(20)
    wait_no_connections(srv)
    assert r.status == 200 and r.body == content
    assert conn.transport.ktls_tx is False and kernel == {"tx": None, "rx": None}
    c = srv.counters
    assert c.ktls_tx_connections == 0 and c.bytes_ssl_sendfile == 0 and c.bytes_sendfile == 0
    assert c.bytes_pread_ssl_write == len(content)
    wire = bytes(relay.from_server)
    assert b"PLAINTEXT-MARKER" not in wire
    assert sum(n for ctype, _, n in tls_records(wire) if ctype == 23) > len(content)


@pytest.mark.timeout(400)
def test_cli_logs_unavailable_once_and_serves(cert_pair, ktls_files, ktls_report):
    size = 4 * MiB + 3
    path, sha = ktls_files.get(size)
    server = CliServer(cert_pair, "--tls-transport", "socket")
    try:
        for version in ("1.2", "1.3"):
            r = fetch(server.port, cert_pair, file_url(path), version)
            assert r.status == 200 and r.length == size and r.sha256 == sha
    finally:
        rc, err = server.stop()
    lines = [line for line in err.splitlines() if "kTLS: " in line]
    for line in lines:
        ktls_report.note(TITLE, "server log: " + line)
    counters = counters_line(err)
    ktls_report.note(TITLE, "server: " + " ".join("%s=%d" % (k, counters[k]) for k in (
        "ktls_tx_connections", "bytes_ssl_sendfile", "bytes_pread_ssl_write")))
    assert rc == 0, err[-3000:]
    assert err.count("kTLS: unavailable") == 1, err
    assert len(lines) == 1 and lines[0].endswith(PROBE.reason), lines
    assert counters["ktls_tx_connections"] == 0 and counters["bytes_ssl_sendfile"] == 0
    assert counters["bytes_pread_ssl_write"] == 2 * size
