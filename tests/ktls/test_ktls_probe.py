"""The probe says "available" in the kTLS VM, and `ktlswsgi --check-ktls`
(probe + loopback SSL_sendfile self-test for TLS 1.2 and 1.3) exits 0."""
import subprocess
import sys

from _ktlskit import PROBE


def test_probe_says_available():
    assert PROBE.available, PROBE.reason
    assert PROBE.kernel_tls and PROBE.library_ktls
    assert PROBE.reason.startswith("kTLS: available (kernel tls ULP"), PROBE.reason


def test_check_ktls_exits_0(ktls_report):
    proc = subprocess.run([sys.executable, "-m", "ktlswsgi", "--check-ktls"],
                          capture_output=True, text=True, timeout=240)
    text = proc.stdout + proc.stderr
    assert proc.returncode == 0, text
    assert text.startswith("kTLS: available"), text
    assert text.count("via SSL_sendfile: sha256 verified by the client") == 2, text
    for line in proc.stdout.splitlines():
        ktls_report.note("ktlswsgi --check-ktls (exit %d)" % proc.returncode, line)
