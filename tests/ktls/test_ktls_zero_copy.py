"""Zero copies: the real command line (``python -m ktlswsgi ... --tls-transport
socket``) under ``strace -f -C -e trace=sendfile,pread64,read,write,sendto,sendmsg``
serves a 100 MiB file over kTLS.  The body must move by sendfile(2) (OpenSSL's
SSL_sendfile), never through pread64/read into userspace, and the server's own
counters line at shutdown must say the same."""
import re
import shutil

import pytest

from _ktlskit import CliServer, counters_line, fetch, file_url
from ktlswsgi.tls.transports import SENDFILE_MAX_CHUNK_BYTES

MiB = 1 << 20
SIZE = 100 * MiB
TRACED = ("sendfile", "pread64", "read", "write", "sendto", "sendmsg")

_CALL = re.compile(r"^(?:\[pid\s+)?\d+\]?\s+(?:<\.\.\. (\w+) resumed>|(\w+)\().*\)\s+=\s+(-?\d+)")
_SUMMARY = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def parse_strace(text: str):
    """-> ({syscall: bytes returned}, {syscall: calls from the summary}, summary lines)."""
    returned = dict.fromkeys(TRACED, 0)
    calls = dict.fromkeys(TRACED, 0)
    summary = []
    in_summary = False
    for line in text.splitlines():
        if line.startswith("% time"):
            in_summary = True
        if in_summary:
            summary.append(line)
            m = _SUMMARY.match(line)
            if m and m.group(2) in calls:
                calls[m.group(2)] = int(m.group(1))
            continue
        m = _CALL.match(line)
        if m:
            name = m.group(1) or m.group(2)
            if name in returned and int(m.group(3)) > 0:
                returned[name] += int(m.group(3))
    return returned, calls, summary


def traced_server(cert_pair, tmp_path, *args):
    """-> (CliServer with the socket transport (and `args`) under strace -f -C,
    the trace's path)."""
    strace = shutil.which("strace")
    assert strace, "strace is not installed (the kTLS VM sees the host's /usr/bin/strace)"
    trace = str(tmp_path / "strace.txt")
    server = CliServer(cert_pair, "--tls-transport", "socket", *args,
                       wrapper=[strace, "-f", "--seccomp-bpf", "-C", "-o", trace,
                                "-e", "trace=" + ",".join(TRACED)])
    return server, trace


@pytest.mark.timeout(500)
def test_100mib_download_moves_by_sendfile_not_through_userspace(cert_pair, ktls_files, tmp_path,
                                                                 ktls_report):
    path, _ = ktls_files.get(SIZE)
    server, trace = traced_server(cert_pair, tmp_path)
    try:
        # (the sha256 of the same 100 MiB is checked in test_ktls_sendfile)
        r = fetch(server.port, cert_pair, file_url(path), "1.3", digest=False,
                  client_kw={"timeout": 60})
    finally:
        rc, err = server.stop()
    assert r.status == 200 and r.length == SIZE
    assert rc == 0, err[-3000:]
    with open(trace) as f:
        returned, calls, summary = parse_strace(f.read())

    title = "zero copy: strace -f -C of the server for one 100 MiB kTLS download"
    for line in summary:
        ktls_report.note(title, line)
    ktls_report.note(title, "bytes returned: " + ", ".join("%s=%d" % kv for kv in returned.items()))
    counters = counters_line(err)
    ktls_report.note(title, "server: " + " ".join(
        "%s=%d" % (k, counters[k]) for k in ("ktls_tx_connections", "bytes_ssl_sendfile",
                                             "bytes_pread_ssl_write", "bytes_ssl_write")))

    assert err.count("kTLS: available") == 1, err[-3000:]
    # The kernel read the file: sendfile(2) carried exactly the body, in chunks.
    assert returned["sendfile"] == SIZE, returned
    assert calls["sendfile"] >= SIZE // SENDFILE_MAX_CHUNK_BYTES, calls
    # Nothing near the body went through userspace: what read/pread64 saw is
    # Python's start-up (modules, certificates), not the file.
    assert returned["pread64"] + returned["read"] < SIZE // 10, returned
    assert returned["write"] + returned["sendto"] + returned["sendmsg"] < MiB, returned
    assert counters["bytes_ssl_sendfile"] == SIZE and counters["bytes_pread_ssl_write"] == 0
    assert counters["ktls_tx_connections"] == 1
