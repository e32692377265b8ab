"""One request's life inside a connection, HTTP/1 or HTTP/2 alike.

Owns what both protocols share about one request: admission (a
Content-Length over --max-body is 413, a full worker queue is 503), the body
buffered ahead of the app, its --max-body bound and its minimum arrival rate,
the job on the worker pool (dispatched only once a small body is complete, so
a slow sender holds no thread; never started once the exchange is abandoned),
the response's status and bytes as they leave, and the metrics and access-log
line when it ends, completely sent or aborted (then with `aborted`
and the status the caller gives, 499 when the client left).

Runs on the reactor thread; the job it submits runs on the pool.  What
differs by protocol (framing, keep-alive on HTTP/1, flow control on HTTP/2)
stays with the connection and its protocol session.
"""
from __future__ import annotations

import logging
import threading
import time

from .accesslog import log_response
from .outbound import FileRange, OutboundQueue
from .wsgi import BodyTooLarge, ClientDisconnected, RequestBody, serve_request

log = logging.getLogger("ktlswsgi.connection")


# The life of an exchange's job on the pool.
_NO_JOB, _PREPARED, _QUEUED, _RUNNING, _DONE, _CANCELLED = (
    "no-job", "prepared", "queued", "running", "done", "cancelled")


class Exchange:
    """One request: see the module docstring.  `conn` is the owning connection
    (its peer, server address, TLS facts and shared server state).

    The job's life: prepared (admitted; a request body may still be arriving)
    -> queued (on the pool) -> running -> done; or cancelled before it runs
    (the stream was reset, the connection closed): a cancelled job never
    calls the app.  `stop_job()` says whether it is running at that moment;
    then `on_end` is called (on the worker thread) when it returns.
    """

    __slots__ = ("conn", "request", "started", "status", "bytes_sent", "body", "out",
                 "body_stopped", "ended", "_job", "_job_state", "_job_lock", "_on_job_end",
                 "last_data", "_rate_since", "_rate_base", "response_headers", "_log_meta")

    def __init__(self, conn, request):
        self.conn = conn
        self.request = request
        self.started = time.monotonic()
        self.status = 0             # of the response head once framed, 0 before
        self.response_headers = None  # of the response head once framed (the access log's)
        self._log_meta: dict = {}   # the worker's findings for the log line (the client)
        self.bytes_sent = 0         # body bytes handed to the transport
        self.body: RequestBody | None = None
        self.out: OutboundQueue | None = None
        self.body_stopped = False   # no more body goes to the app (failed, refused, over)
        self.ended = False          # metrics and log line done
        self._job = None
        self._job_state = _NO_JOB
        self._job_lock = None
        self._on_job_end = None
        # the request body's arrival: its last byte, and the minimum-rate clock
        self.last_data = self._rate_since = self.started
        self._rate_base = 0
        shared = conn.s
        shared.counters.requests += 1
        if shared.on_request is not None:
            shared.on_request()

    def admit(self, length: int | None, has_body: bool, *, on_output, high_water: int,
              low_water: int, on_drained, on_first_read, on_consumed=None,
              head_only: bool, close_after: bool, inline_file_bytes: int = 0) -> int:
        """Prepare the app's job: 0 when prepared (`dispatch()` queues it),
        else 413 (a Content-Length over --max-body), answered without the app."""
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
        # What the job needs besides its connection's `request_facts`.
        self._job = (head_only, close_after, inline_file_bytes)
        self._job_state = _PREPARED
        return 0

    @property
    def dispatched(self) -> bool:
        """The job was handed to the pool (or has no job at all)."""
        return self._job_state != _PREPARED

    def ready_to_dispatch(self, prebuffer_bytes: int) -> bool:
        """Hand the job to the pool now?  Not while a small body is still
        arriving: a slow sender must not hold a worker thread.  A body that
        is complete, or has `prebuffer_bytes` buffered, is ready."""
        body = self.body
        return (body is None or body.complete or body.received_bytes >= prebuffer_bytes
                or self.body_stopped)

    def dispatch(self) -> bool:
        """Queue the prepared job on the pool; False when the pool's queue is
        full (the caller answers 503 without the app)."""
        if self._job_state != _PREPARED:
            return True
        conn = self.conn
        shared = conn.s
        self._job_lock = threading.Lock()
        self._job_state = _QUEUED
        if not shared.pool.submit(self._run_job):
            shared.counters.responses_503 += 1
            log.warning("%s: worker queue full (%d queued): 503", conn.peer_text,
                        shared.pool.queued)
            self._job_state = _CANCELLED
            self._job = None
            self.out = None
            self.body = None
            return False
        return True

    def _run_job(self) -> None:
        """On a worker thread: the job, unless it was cancelled before it started."""
        lock = self._job_lock
        with lock:
            if self._job_state == _CANCELLED:
                return
            self._job_state = _RUNNING
        try:
            serve_request(self.conn.request_facts, self.request, self.body, self.out,
                          *self._job, self._log_meta)
        finally:
            with lock:
                self._job_state = _DONE
                on_end = self._on_job_end
            self._job = None
            if on_end is not None:
                on_end()

    def stop_job(self, on_end=None) -> bool:
        """The exchange will not complete: a job that has not started never
        will; True when it is running now (`on_end`, if given, is then called
        from the worker thread when the app returns)."""
        lock = self._job_lock
        if lock is None:   # never queued
            self._job_state = _CANCELLED
            self._job = None
            return False
        with lock:
            if self._job_state == _QUEUED:
                self._job_state = _CANCELLED
                self._job = None
                return False
            if self._job_state == _RUNNING:
                if on_end is not None:
                    self._on_job_end = on_end
                return True
            return False

    def chunk_sent(self, nbytes: int) -> None:
        """`nbytes` of the app's body bytes are on the wire: count them and
        give the producer room (the outbound queue counted them)."""
        self.bytes_sent += nbytes
        if self.out is not None:
            self.out.sent(nbytes)

    # -- the request body (reactor side) -----------------------------------------
    def feed(self, data) -> bool:
        """Hand body bytes to the app; False once the body went over --max-body
        (the app's read then raises the 413 error)."""
        body = self.body
        self.last_data = time.monotonic()
        max_body = self.conn.cfg.max_body_bytes
        if body.received_bytes + len(data) > max_body:
            log.info("%s: request body over --max-body %d: 413", self.conn.peer_text, max_body)
            self.fail_body(BodyTooLarge("request body too large"))
            return False
        body.feed(data)
        return True

    def body_deadline(self) -> float | None:
        """When the request body times out if no more of it arrives, or None
        when nothing is awaited from the client (complete, stopped, or the
        buffer is full and the app has not read).  The earlier of: a stall
        of --read-timeout, and the minimum rate: --read-timeout plus one
        second per --body-min-rate bytes received since the clock last
        started (Apache mod_reqtimeout's MinRate)."""
        body = self.body
        if body is None or body.complete or self.body_stopped or body.space() <= 0:
            return None
        cfg = self.conn.cfg
        stall = self.last_data + cfg.read_timeout_s
        rate = cfg.body_min_rate
        if not rate:
            return stall
        received = body.received_bytes - self._rate_base
        return min(stall, self._rate_since + cfg.read_timeout_s + received / rate)

    def body_timeout_reason(self, now: float) -> str:
        """Why body_deadline() passed, for the log (numbers only)."""
        cfg = self.conn.cfg
        if now - self.last_data >= cfg.read_timeout_s:
            return "request body stalled for %.1fs" % (now - self.last_data)
        return ("request body too slow: %d bytes in %.1fs (--body-min-rate %d)"
                % (self.body.received_bytes, now - self.started, cfg.body_min_rate))

    def body_resumed(self) -> None:
        """The app freed room after the buffer was full: the client was held
        back by us, so its rate clock starts again."""
        self._rate_since = time.monotonic()
        if self.body is not None:
            self._rate_base = self.body.received_bytes

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
        log_response(self._log_meta.get("client", conn.peer_text), self.request, status,
                     body_bytes, self.started, conn.tls_info,
                     response_headers=self.response_headers)

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
            log_response(self._log_meta.get("client", conn.peer_text), self.request, status,
                         self.bytes_sent, self.started, conn.tls_info, aborted=True,
                         response_headers=self.response_headers)
        self.stop_job()
        if self.body is not None:
            self.body.fail(ClientDisconnected("connection closed"))
        left = []
        if self.out is not None:
            left = [item for item in self.out.abort("connection closed")
                    if type(item) is FileRange]
        return left


def body_framing(headers) -> tuple:
    """A request's (Content-Length or None, whether Transfer-Encoding is
    present), on either protocol: its driver checked both."""
    length = None
    chunked = False
    for name, value in headers:
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = True
    return length, chunked
