"""Process counters: what this process served and by which path.

Owns: the counter names, the per-response record (responses by method and
status, the request-duration histogram) and its bounds: the method labels
and the duration buckets.  Updated on the reactor thread only (plain integer
adds, no lock, no allocation beyond one small tuple); read by the access log,
tests (in-process access or the shutdown log line), `--check-ktls`, and
`metrics.WorkerExporter`, which copies a snapshot out once a second on the
same thread.

Must not: format or export anything (that is `metrics.py`), take a lock, or
store a client-chosen value (a method outside `METHOD_LABELS` is "OTHER"; a
status is the app's three-digit code or the server's own, so at most 1000).
"""
from __future__ import annotations

from bisect import bisect_left

FIELDS = (
    "connections", "requests", "responses_503", "bad_requests",
    "handshakes_ok", "handshakes_failed", "handshakes_shed", "ktls_tx_connections", "ktls_rx_connections",
    "bytes_send", "bytes_ssl_write", "bytes_sendfile", "bytes_ssl_sendfile",
    "bytes_pread_ssl_write", "file_transfers", "aborted_connections",
    "connections_closed", "h2_connections", "h2_streams",
    # send/recv syscalls of the memory transport (added when a connection closes):
    # TLS bytes per syscall = (bytes_ssl_write + bytes_pread_ssl_write) / tls_mem_sends.
    "tls_mem_sends", "tls_mem_recvs",
)

# The request methods that get their own label; any other is "OTHER", so a
# client cannot grow the table (h11 accepts any token as a method).
METHOD_LABELS = {m.encode(): m for m in (
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH")}
OTHER_METHOD = "OTHER"

# Upper bounds (`le`, seconds) of the request-duration buckets; one more
# bucket (+Inf) follows.  Sub-millisecond bounds: a tiny response takes a few
# hundred microseconds here, and that is the range worth seeing move.
DURATION_BOUNDS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_EXTRA = ("responses", "duration_buckets", "duration_sum_s")


class Counters:
    __slots__ = FIELDS + _EXTRA

    def __init__(self):
        for name in FIELDS:
            setattr(self, name, 0)
        # {(method label, status): responses}; bounded as the module says.
        self.responses: dict = {}
        # Per-bucket (not cumulative) counts; the last one is +Inf.
        self.duration_buckets: list = [0] * (len(DURATION_BOUNDS_S) + 1)
        self.duration_sum_s = 0.0

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def record_response(self, method: bytes, status: int, duration_s: float,
                        _labels=METHOD_LABELS, _bounds=DURATION_BOUNDS_S,
                        _bisect=bisect_left) -> None:
        """One response ended (completely sent, or aborted): ~0.3 us.

        `duration_s` runs from the complete request head to the last byte
        handed to the kernel, the access log's request_time.  The defaults
        bind module globals as locals: this runs on the reactor per request.
        """
        key = (_labels.get(method, OTHER_METHOD), status)
        responses = self.responses
        responses[key] = responses.get(key, 0) + 1
        # bisect_left: the first bound >= duration, i.e. Prometheus's `le`.
        self.duration_buckets[_bisect(_bounds, duration_s)] += 1
        self.duration_sum_s += duration_s

    @property
    def open_connections(self) -> int:
        """Accepted and not yet closed (handshaking ones included)."""
        return self.connections - self.connections_closed

    def snapshot(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.snapshot().items())
