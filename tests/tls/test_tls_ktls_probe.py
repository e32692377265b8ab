"""The kTLS probe on this host (kernel without CONFIG_TLS): unavailable,
with the reason, logged once per process."""
import errno
import io
import logging
import os
import socket

import pytest

from ktlswsgi.tls import ktls
from ktlswsgi.tls.binding import HAS_KTLS

ULPS = ktls.read_available_ulps() or ()
no_tls_here = pytest.mark.skipif("tls" in ULPS, reason="this kernel has the tls ULP")


@pytest.fixture(autouse=True)
def fresh_probe():
    ktls._reset_for_tests()
    yield
    ktls._reset_for_tests()


@no_tls_here
def test_probe_says_unavailable_with_the_reason():
    result = ktls.probe()
    assert result.available is False
    assert result.kernel_tls is False
    assert result.reason == ("kTLS: unavailable: kernel has no tls ULP "
                             "(load it with 'modprobe tls'; CONFIG_TLS)")
    assert "ENOENT" in result.detail and "mptcp" in result.detail
    assert result.library_ktls is HAS_KTLS
    assert result.autoloaded is False


@pytest.mark.skipif("tls" not in ULPS and not ktls.probe().available,
                    reason="this kernel has no tls ULP")
def test_probe_says_available_where_the_kernel_has_tls():
    result = ktls.probe()
    assert result.available is True and result.kernel_tls is True
    assert result.reason.startswith("kTLS: available (kernel tls ULP, ")
    assert result.reason.endswith(" with KTLS)")
    assert ("loaded by this probe" in result.reason) is result.autoloaded


def test_probe_is_memoized():
    assert ktls.probe() is ktls.probe()


def test_unconnected_socket_would_say_enotconn():
    """Why the probe needs a connected pair."""
    s = socket.socket()
    try:
        with pytest.raises(OSError) as exc:
            s.setsockopt(socket.IPPROTO_TCP, ktls.TCP_ULP, b"tls")
        # ENOTCONN where the kernel has the ULP; ENOENT first where it has none.
        assert exc.value.errno in (errno.ENOTCONN, errno.ENOENT)
    finally:
        s.close()


def _capture_logger(name):
    stream = io.StringIO()
    logger = logging.getLogger(name)
    logger.handlers[:] = [logging.StreamHandler(stream)]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return logger, stream


def test_log_once_logs_exactly_once_per_process():
    logger, stream = _capture_logger("ktlswsgi.test.probe")
    for _ in range(3):
        ktls.log_once(logger)
    lines = stream.getvalue().splitlines()
    assert lines == [ktls.probe().reason]
    assert lines[0].startswith("kTLS: ")


def test_a_forked_child_logs_its_own_line_once():
    logger, stream = _capture_logger("ktlswsgi.test.probe.fork")
    ktls.log_once(logger)
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        try:
            os.close(r)
            logger.handlers[:] = [logging.StreamHandler(os.fdopen(w, "w"))]
            ktls.log_once(logger)
            ktls.log_once(logger)
            logger.handlers[0].flush()
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        child_lines = f.read().splitlines()
    os.waitpid(pid, 0)
    ktls.log_once(logger)
    assert child_lines == [ktls.probe().reason]
    assert stream.getvalue().splitlines() == [ktls.probe().reason]


def test_kernel_view_of_a_plain_socket_is_empty():
    a, b = socket.socketpair()
    try:
        assert ktls.kernel_tls_state(a) == {"tx": None, "rx": None}
    finally:
        a.close()
        b.close()
