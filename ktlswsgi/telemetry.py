"""Process counters: what this process served and by which path.

Owns: the counter names.  Updated on the reactor thread only (plain integer
adds, no lock); read by the access log, tests (over /proc-free in-process
access or the shutdown log line) and `--check-ktls`.
"""
from __future__ import annotations

FIELDS = (
    "connections", "requests", "responses_503", "bad_requests",
    "handshakes_ok", "handshakes_failed", "ktls_tx_connections", "ktls_rx_connections",
    "bytes_send", "bytes_ssl_write", "bytes_sendfile", "bytes_ssl_sendfile",
    "bytes_pread_ssl_write", "file_transfers", "aborted_connections",
)


class Counters:
    __slots__ = FIELDS

    def __init__(self):
        for name in FIELDS:
            setattr(self, name, 0)

    def add(self, name: str, n: int = 1) -> None:
        setattr(self, name, getattr(self, name) + n)

    def snapshot(self) -> dict:
        return {name: getattr(self, name) for name in FIELDS}

    def summary(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.snapshot().items())
