"""Range requests and --static under kTLS: a 206 of 40 MB from the middle of a
100 MiB file, over HTTP/1 and HTTP/2, moves by sendfile(2) and never through
userspace.

The real command line under ``strace -f`` (test_ktls_zero_copy's harness)
with ``--static /s=DIR``; per protocol two 206 responses of the same range:
one from Werkzeug's send_file (the shape Flask sends: _RangeWrapper around
our file_wrapper), one from the --static mount.  The client checks each
range's sha256 against the file's bytes; the trace shows sendfile returned
exactly the two ranges and read/pread64 nothing near them; the server's
counters say bytes_ssl_sendfile = the two ranges.
"""
import hashlib
import os

import pytest

from _ktlskit import Client, counters_line
from test_ktls_h2 import H2Client
from test_ktls_zero_copy import parse_strace, traced_server

MiB = 1 << 20
SIZE = 100 * MiB          # the zero-copy test's file (made once per session)
START = 30 * MiB
LENGTH = 40 * 1000 * 1000


def range_sha(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(START)
        return hashlib.sha256(f.read(LENGTH)).hexdigest()


@pytest.mark.timeout(500)
@pytest.mark.parametrize("protocol", ["http/1.1", "h2"])
def test_40mb_range_moves_by_sendfile(cert_pair, ktls_files, tmp_path, ktls_report, protocol):
    path, _ = ktls_files.get(SIZE)
    want = range_sha(path)
    rng = "bytes=%d-%d" % (START, START + LENGTH - 1)
    directory, name = os.path.split(path)
    targets = ["/range?path=" + path, "/s/" + name]
    server, trace = traced_server(cert_pair, tmp_path, "--static", "/s=" + directory)
    got = []
    try:
        if protocol == "h2":
            client = H2Client(server.port, cert_pair, "1.3")
            try:
                for target in targets:
                    status, length, digest, _, _ = client.get(target, headers=[("range", rng)])
                    got.append((status, length, digest))
            finally:
                client.close()
        else:
            client = Client(server.port, cert_pair, "1.3", timeout=120)
            try:
                for target in targets:
                    r = client.get(target, headers={"Range": rng})
                    assert r.headers["content-range"] == "bytes %d-%d/%d" % (
                        START, START + LENGTH - 1, SIZE)
                    got.append((r.status, r.length, r.sha256))
            finally:
                client.close()
    finally:
        rc, err = server.stop()
    assert rc == 0, err[-3000:]
    assert got == [(206, LENGTH, want)] * 2, got
    with open(trace) as f:
        returned, calls, summary = parse_strace(f.read())
    counters = counters_line(err)
    title = "Range under kTLS: strace -f -C of the server, two 206 of 40 MB over " + protocol
    for line in summary:
        ktls_report.note(title, line)
    ktls_report.note(title, "bytes returned: " + ", ".join("%s=%d" % kv for kv in returned.items()))
    ktls_report.note(title, "server: " + " ".join("%s=%d" % (k, counters[k]) for k in (
        "ktls_tx_connections", "bytes_ssl_sendfile", "bytes_pread_ssl_write", "bytes_ssl_write")))
    assert counters["ktls_tx_connections"] == 1
    assert counters["bytes_ssl_sendfile"] == 2 * LENGTH and counters["bytes_pread_ssl_write"] == 0
    assert returned["sendfile"] == 2 * LENGTH, returned
    # What read/pread64 saw is Python's start-up (modules, certificates:
    # about 5 MB), not the ranges.
    assert returned["pread64"] + returned["read"] < 2 * LENGTH // 10, returned
