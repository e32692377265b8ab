"""The access log: one line per response, gunicorn-like combined format.

Owns: the line format and the non-blocking hand-off to a writer thread (a
QueueHandler), so the reactor never waits on a log file.

Format: ``remote - - [time] "request line" status bytes "referer" "user-agent"
request_time_s`` followed by ``tls=VERSION/CIPHER ktls=tx,rx|tx|off`` on TLS
connections, and `` aborted`` when the connection ended before the response
did.  request_time_s runs from the complete request head to the last byte
handed to the kernel (not to the app's return: a file is sent after that);
`bytes` counts body bytes sent.  Header values other than Referer and
User-Agent (the combined format's) are never written.
"""
from __future__ import annotations

import logging
import time

access_log = logging.getLogger("ktlswsgi.access")


def _quote(value: bytes | str | None) -> str:
    if not value:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value.replace("\\", "\\\\").replace('"', '\\"')


def log_response(peer: str, request, status: int, body_bytes: int, started: float,
                 tls_info: dict | None, aborted: bool = False) -> None:
    if not access_log.isEnabledFor(logging.INFO):
        return
    referer = ua = None
    for name, value in request.headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            ua = value
    line = (f"{request.method.decode('latin-1')} {request.target.decode('latin-1')} "
            f"HTTP/{request.http_version.decode('latin-1')}")
    stamp = time.strftime("%d/%b/%Y:%H:%M:%S %z")
    text = (f'{peer} - - [{stamp}] "{_quote(line)}" {status} {body_bytes} '
            f'"{_quote(referer)}" "{_quote(ua)}" {time.monotonic() - started:.6f}')
    if tls_info:
        text += (f" tls={tls_info.get('tls_version', '-')}/{tls_info.get('cipher', '-')}"
                 f" ktls={tls_info.get('ktls', 'off')}")
    if aborted:
        text += " aborted"
    access_log.info(text)
