"""A TLS 1.3 KeyUpdate from the client on a kTLS TX connection (OpenSSL
issue #16307: OpenSSL 3.0 cannot rekey the kernel's TX key).  ``openssl
s_client``'s command ``K`` sends one asking for ours (Python cannot).  The
connection must either keep working or be closed with a clear log line, and
the server must keep serving.  What happened is printed at the end of the run."""
import logging
import subprocess
import threading
import time

from _ktlskit import fetch, file_url, only_connection, wait_until
from test_tls_server import Recorder, tls_records
import ktls_apps

TITLE = "TLS 1.3 KeyUpdate from the client on a kTLS TX connection"
REQUEST = b"GET /dyn?n=64 HTTP/1.1\nHost: localhost\n\n"   # s_client -crlf makes CRLF


class SClient:
    def __init__(self, port, cafile):
        self.proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", "127.0.0.1:%d" % port, "-tls1_3",
             "-servername", "localhost", "-CAfile", cafile, "-crlf", "-msg"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.out = bytearray()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        for chunk in iter(lambda: self.proc.stdout.read1(65536), b""):
            self.out += chunk

    def send(self, data: bytes) -> bool:
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
            return True
        except (BrokenPipeError, OSError):
            return False

    def responses(self) -> int:
        return bytes(self.out).count(b"HTTP/1.1 200 OK")

    def finish(self, timeout=20):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)
        self.thread.join(10)
        return bytes(self.out)


def test_client_key_update_on_ktls_tx(serve_tls, cert_pair, ktls_files, caplog, ktls_report):
    caplog.set_level(logging.DEBUG, logger="ktlswsgi")
    srv = serve_tls(ktls_apps.app, transport="socket", tls_min_version="1.3")
    relay = Recorder(srv.port)                   # what the server sends after the KeyUpdate
    s = SClient(relay.port, cert_pair[0])
    try:
        wait_until(lambda: srv.counters.handshakes_ok == 1, 60, "the s_client handshake")
        assert s.send(REQUEST)
        wait_until(lambda: s.responses() == 1, 30, "the first response")
        conn = only_connection(srv)
        assert conn.transport.ktls_tx and conn.tls_info["tls_version"] == "TLSv1.3"
        sent_before = len(relay.from_server)
        t0 = time.monotonic()
        assert s.send(b"K\n")                    # KeyUpdate, update_requested
        time.sleep(1.0)
        s.send(REQUEST)                          # does the connection still work?
        wait_until(lambda: s.responses() == 2 or not srv.server.connections, 30,
                   "a second response or the connection's end")
        time.sleep(0.5)
        outcome = "kept working" if s.responses() == 2 else "closed by the server"
        elapsed = time.monotonic() - t0
        gone = not srv.server.connections
    finally:
        out = s.finish()
    relay.thread.join(10)
    after = tls_records(bytes(relay.from_server)[sent_before:])
    lines = [(r.levelname, r.getMessage()) for r in caplog.records if "KeyUpdate" in r.getMessage()]
    tail = [line for line in out.decode("latin-1").splitlines()
            if "KeyUpdate" in line or "KEYUPDATE" in line or "alert" in line.lower()
            or "closed" in line or "errno" in line or "eof" in line]

    # And the server goes on serving, over kTLS.
    path, sha = ktls_files.get(64 << 10)
    r = fetch(srv.port, cert_pair, file_url(path), "1.3")

    ktls_report.note(TITLE, "outcome: %s (%.1fs after 'K'); second request answered: %s; "
                     "TLS records the server sent after the KeyUpdate: %d"
                     % (outcome, elapsed, s.responses() == 2, len(after)))
    for level, msg in lines:
        ktls_report.note(TITLE, "server log [%s]: %s" % (level, msg))
    for line in tail[-8:]:
        ktls_report.note(TITLE, "s_client: " + line.strip())
    ktls_report.note(TITLE, "a new connection afterwards: HTTP %d, sha256 %s" % (
        r.status, "ok" if r.sha256 == sha else "MISMATCH"))

    assert b"KEYUPDATE" in out                   # s_client took 'K' as its command
    assert b"bad_record_mac" not in out          # never a record under a stale key
    # (s_client answers the server's bare close with its own "fatal decode_error" alert
    # and "unexpected eof while reading": the client's side, not a server record.)
    assert r.status == 200 and r.sha256 == sha
    if outcome == "closed by the server":
        assert lines, "the connection closed without any log line about the KeyUpdate"
        visible = [m for level, m in lines if logging.getLevelName(level) >= logging.INFO]
        assert visible, ("the KeyUpdate close is logged only at DEBUG, invisible at the "
                         "default --log-level info: %r" % lines)
        assert any("KeyUpdate requested" in m and "closing" in m for m in visible), visible
        assert gone
        assert after == [], "records sent after the KeyUpdate (stale kernel key): %r" % after
    else:
        assert s.responses() == 2
