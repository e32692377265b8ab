"""What `ktlswsgi --check-ktls` runs, on this host (no tls ULP): the probe
line, a loopback transfer per TLS version through the pread fallback,
verified by sha256, and exit code 1 with the reason."""
import io
import subprocess
import sys

import pytest

from ktlswsgi.tls import ktls, selftest

ULPS = ktls.read_available_ulps() or ()
pytestmark = pytest.mark.skipif("tls" in ULPS, reason="this kernel has the tls ULP")


def test_run_check_explains_this_host():
    out = io.StringIO()
    code = selftest.run_check(out=out)
    text = out.getvalue()
    lines = text.splitlines()
    assert code == 1
    assert lines[0] == ktls.probe().reason
    assert lines[0].startswith("kTLS: unavailable: kernel has no tls ULP")
    for version in ("TLSv1.2", "TLSv1.3"):
        assert any(line.startswith("self-test TLS %s: %s " % (version[4:], version))
                   and "kTLS TX not engaged" in line for line in lines), text
    assert text.count("via pread + SSL_write fallback (kTLS TX not engaged): "
                      "sha256 verified by the client") == 2, text
    assert lines[-1] == "result: FAIL: " + ktls.probe().reason


def test_module_entry_point_exit_code():
    proc = subprocess.run([sys.executable, "-m", "ktlswsgi.tls.selftest"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout.startswith("kTLS: unavailable")
    assert "result: FAIL" in proc.stdout
