"""The plaintext guard: where kTLS TX must not engage (the memory transport;
a context without SSL_OP_ENABLE_KTLS), it never does -- the transport says
so, the kernel has no TLS state on the socket, /proc/net/tls_stat does not
move -- and every file still leaves encrypted (no plaintext marker on the
wire, only well-formed TLS records) and arrives intact."""
import pytest

from _ktlskit import (Client, TlsStat, file_url, kernel_view, marker_file, only_connection,
                      wait_no_connections)
from test_tls_server import Recorder, tls_records
import ktls_apps

CASES = [(transport, option, version) for transport, option in (("memory", True), ("socket", False))
         for version in ("1.2", "1.3")]


@pytest.mark.parametrize("transport,ktls_option,version", CASES,
                         ids=["%s-ktls-option-%s-tls%s" % (t, "on" if o else "off", v)
                              for t, o, v in CASES])
def test_tx_never_engages_and_files_leave_encrypted(serve_tls, cert_pair, tmp_path, transport,
                                                    ktls_option, version):
    path, content = marker_file(str(tmp_path))
    srv = serve_tls(ktls_apps.app, transport=transport, ktls=ktls_option)
    relay = Recorder(srv.port)
    stat = TlsStat()
    client = Client(relay.port, cert_pair, version)
    try:
        r = client.get(file_url(path), keep_body=True)
        conn = only_connection(srv)
        kernel = kernel_view(conn.sock)
        during = stat.delta()
        d = client.get("/dyn?n=100000", keep_body=True)
    finally:
        client.close()
    relay.thread.join(20)
    wait_no_connections(srv)

    assert r.status == 200 and r.body == content
    assert d.status == 200 and d.body == ktls_apps.dyn_body(100000)
    assert conn.transport.ktls_tx is False and conn.transport.ktls_rx is False
    assert conn.tls_info["ktls"] == "off" and conn.tls_info["tls_version"] == "TLSv" + version
    assert kernel == {"tx": None, "rx": None}
    assert all(v == 0 for v in during.values()), during
    assert all(v == 0 for v in stat.delta().values()), stat.delta()
    c = srv.counters
    assert c.ktls_tx_connections == 0 and c.ktls_rx_connections == 0
    assert c.bytes_ssl_sendfile == 0 and c.bytes_sendfile == 0
    assert c.bytes_pread_ssl_write == len(content)

    wire = bytes(relay.from_server)
    assert b"PLAINTEXT-MARKER" not in wire
    records = tls_records(wire)
    assert {ctype for ctype, _, _ in records} <= {20, 21, 22, 23}
    assert sum(n for ctype, _, n in records if ctype == 23) > len(content) + 100000
