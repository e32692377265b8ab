"""One request's life inside a connection, HTTP/1 or HTTP/2 alike.

Owns what both protocols share about one request: admission (a
Content-Length over --max-body is 413, a full worker queue is 503), the body
buffered ahead of the app and its --max-body bound, the job on the worker
pool, the response's status and bytes as they leave, and the metrics and
access-log line when it ends, completely sent or aborted (then with `aborted`
and the status the caller gives, 499 when the client left).

Runs on the reactor thread; the job it submits runs on the pool.  What
differs by protocol (framing, keep-alive on HTTP/1, flow control on HTTP/2)
stays with the connection and its protocol session.
"""
from __future__ import annotations

import functools
import logging
import time

from .accesslog import log_response
from .outbound import FileRange, OutboundQueue
from .wsgi import BodyTooLarge, ClientDisconnected, RequestBody, serve_request

log = logging.getLogger("ktlswsgi.connection")


class Exchange:
    """One request: see the module docstring.  `conn` is the owning connection
    (its peer, server address, TLS facts and shared server state)."""

    __slots__ = ("conn", "request", "started", "status", "bytes_sent", "body", "out",
                 "body_stopped", "ended")

    def __init__(self, conn, request):
        self.conn = conn
        self.request = request
        self.started = time.monotonic()
        self.status = 0             # of the response head once framed, 0 before
        self.bytes_sent = 0         # body bytes handed to the transport
        self.body: RequestBody | None = None
        self.out: OutboundQueue | None = None
        self.body_stopped = False   # no more body goes to the app (failed, refused, over)
        self.ended = False          # metrics and log line done
        shared = conn.s
        shared.counters.requests += 1
        if shared.on_request is not None:
            shared.on_request()

    def admit(self, length: int | None, has_body: bool, *, on_output, high_water: int,
              low_water: int, on_drained, on_first_read, on_consumed=None,
              head_only: bool, close_after: bool, inline_file_bytes: int = 0) -> int:
        """Queue the app's job: 0 when it is queued, else the status to answer
        without the app (413 body too large, 503 worker queue full)."""
        conn = self.conn
        shared, cfg = conn.s, conn.cfg
        if length is not None and length > cfg.max_body_bytes:
            log.info("%s: Content-Length %d over --max-body %d: 413", conn.peer_text,
                     length, cfg.max_body_bytes)
            self.body_stopped = True
            return 413
        if has_body:
            self.body = RequestBody(cfg.body_buffer_bytes, on_drained, on_first_read,
                                    on_consumed)
        self.out = OutboundQueue(high_water, low_water, on_output)
        job = functools.partial(
            serve_request, shared.app, self.request, scheme=shared.scheme,
            server_addr=conn.server_addr, peer_addr=conn.peer, peer_ip=conn.peer_ip,
            forwarded_trust=conn.forwarded_trust, tls_extra=conn.tls_environ,
            body=self.body, out=self.out, multiprocess=shared.multiprocess,
            head_only=head_only, close_after=close_after,
            inline_file_bytes=inline_file_bytes)
        if not shared.pool.submit(job):
            shared.counters.responses_503 += 1
            log.warning("%s: worker queue full (%d queued): 503", conn.peer_text,
                        shared.pool.queued)
            self.out = None
            self.body = None
            return 503
        return 0

    # -- the request body (reactor side) -----------------------------------------
    def feed(self, data) -> bool:
        """Hand body bytes to the app; False once the body went over --max-body
        (the app's read then raises the 413 error)."""
        body = self.body
        max_body = self.conn.cfg.max_body_bytes
        if body.received_bytes + len(data) > max_body:
            log.info("%s: request body over --max-body %d: 413", self.conn.peer_text, max_body)
            self.fail_body(BodyTooLarge("request body too large"))
            return False
        body.feed(data)
        return True

    def fail_body(self, error) -> None:
        if self.body is not None:
            self.body.fail(error)
        self.body_stopped = True

    # -- the end ------------------------------------------------------------------
    def finish(self, status: int, body_bytes: int) -> None:
        """The response was completely handed to the kernel."""
        if self.ended:
            return
        self.ended = True
        conn = self.conn
        conn.s.counters.record_response(self.request.method, status,
                                        time.monotonic() - self.started)
        log_response(conn.peer_text, self.request, status, body_bytes, self.started,
                     conn.tls_info)

    def abandon(self, unsent_status: int = 499) -> list:
        """The response will not complete (client gone, reset, server error):
        log it as aborted, stop the app's producer and reader.  Returns the
        file ranges still queued, whose closers the caller hands to the pool."""
        if not self.ended:
            self.ended = True
            conn = self.conn
            status = self.status or unsent_status
            conn.s.counters.record_response(self.request.method, status,
                                            time.monotonic() - self.started)
            log_response(conn.peer_text, self.request, status, self.bytes_sent,
                         self.started, conn.tls_info, aborted=True)
        if self.body is not None:
            self.body.fail(ClientDisconnected("connection closed"))
        left = []
        if self.out is not None:
            left = [item for item in self.out.abort("connection closed")
                    if type(item) is FileRange]
        return left
