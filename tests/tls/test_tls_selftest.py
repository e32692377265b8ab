"""What `ktlswsgi --check-ktls` runs.  On this host (no tls ULP): the probe
line, a loopback transfer per TLS version through the pread fallback,
verified by sha256, and exit code 1 with the reason.  In the kTLS VM:
TX engaged for both versions, SSL_sendfile verified, exit code 0."""
import io
import subprocess
import sys

from ktlswsgi.tls import ktls, selftest

AVAILABLE = ktls.probe().available


def test_run_check_explains_this_host():
    out = io.StringIO()
    code = selftest.run_check(out=out)
    text = out.getvalue()
    lines = text.splitlines()
    assert lines[0] == ktls.probe().reason
    if AVAILABLE:
        assert code == 0, text
        assert text.count("via SSL_sendfile: sha256 verified by the client") == 2, text
        assert lines[-1].startswith("result: OK"), text
        return
    assert code == 1
    assert lines[0].startswith("kTLS: unavailable: ")
    for version in ("TLSv1.2", "TLSv1.3"):
        assert any(line.startswith("self-test TLS %s: %s " % (version[4:], version))
                   and "kTLS TX not engaged" in line for line in lines), text
    assert text.count("via pread + SSL_write fallback (kTLS TX not engaged): "
                      "sha256 verified by the client") == 2, text
    assert lines[-1] == "result: FAIL: " + ktls.probe().reason


def test_module_entry_point_exit_code():
    proc = subprocess.run([sys.executable, "-m", "ktlswsgi.tls.selftest"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == (0 if AVAILABLE else 1), proc.stdout + proc.stderr
    assert proc.stdout.startswith("kTLS: available" if AVAILABLE else "kTLS: unavailable")
    assert ("result: OK" if AVAILABLE else "result: FAIL") in proc.stdout
