"""PEP 3333 on a worker thread: environ, wsgi.input, start_response, write().

Owns: turning a parsed request into an environ, running the application, and
turning what it returns into response items for the connection's outbound
queue.  Runs on pool threads only; touches no socket and no SSL object.  The
reactor reads the items (`Head`, `Chunk`, `FileRange`, `End`, `Abort`) and
frames them with the protocol driver.

Rules kept here: headers are not sent before the first non-empty body chunk;
never more bytes than the app's Content-Length (the excess is dropped with a
log line) and a short body aborts the connection; the iterable's `close()` is
called exactly once, on a pool thread, also on disconnect and app error; a
file_wrapper around a regular file becomes one `FileRange`, whose close the
reactor hands back to the pool when the transfer ends.
"""
from __future__ import annotations

import io
import logging
import os
import re
import threading
from urllib.parse import unquote_to_bytes

from .filewrapper import FileWrapper, file_range
from .forwarded import UNCHANGED, apply as apply_forwarded
from .httpdate import SERVER, date_value
from .native import native
from .outbound import Abort, Chunk, End, FileRange, Head, QueueAborted
from .responses import body_forbidden, text_answer

log = logging.getLogger("ktlswsgi.wsgi")
error_log = logging.getLogger("ktlswsgi.error")
app_log = logging.getLogger("ktlswsgi.wsgi_errors")   # what the app writes to wsgi.errors


# -- request body ---------------------------------------------------------------
class BodyError(Exception):
    """The request body cannot be read; `status` is what the server answers."""

    status = 400


class BodyTimeout(BodyError):
    status = 408


class BodyTooLarge(BodyError):
    status = 413


class ClientDisconnected(BodyError, OSError):
    status = 400


class RequestBody:
    """Bytes read ahead of the app; the reactor feeds, a worker reads.

    Bounded by `limit_bytes`: the reactor stops reading the socket while
    `space()` is 0, and the worker's read calls `on_drained` (a thread-safe
    hand-over to the reactor) when it frees room.  `on_first_read` lets the
    reactor send `100 Continue` only when the app asks for the body;
    `on_consumed(n)`, if given, hears of every read (HTTP/2 reopens the
    stream's flow-control window by what the app took).
    """

    def __init__(self, limit_bytes: int, on_drained, on_first_read, on_consumed=None):
        self._chunks: list[bytes] = []
        self._size = 0
        self._limit = limit_bytes
        self._done = False
        self._error: BodyError | None = None
        self._cond = threading.Condition(threading.Lock())
        self._on_drained = on_drained
        self._on_first_read = on_first_read
        self._on_consumed = on_consumed
        self._asked = False
        self.received_bytes = 0

    # reactor side
    def space(self) -> int:
        return self._limit - self._size

    def feed(self, data: bytes) -> None:
        with self._cond:
            self._chunks.append(data)
            self._size += len(data)
            self.received_bytes += len(data)
            self._cond.notify_all()

    def finish(self) -> None:
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BodyError) -> None:
        with self._cond:
            if not self._done:
                self._error = error
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop what is buffered and unread (the exchange is over): its size."""
        with self._cond:
            n = self._size
            self._chunks = []
            self._size = 0
            self._cond.notify_all()
        return n

    @property
    def complete(self) -> bool:
        return self._done

    # worker side
    def take(self, max_bytes: int) -> bytes:
        """Up to `max_bytes`, waiting for at least one; b"" at the end of the body."""
        with self._cond:
            if not self._asked:
                self._asked = True
                self._on_first_read()
            while self._size == 0 and not self._done and self._error is None:
                self._cond.wait()
            if self._size == 0:
                if self._error is not None:
                    raise self._error
                return b""
            was_full = self._size >= self._limit
            data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
            if max_bytes < len(data):
                self._chunks = [data[max_bytes:]]
                data = data[:max_bytes]
            else:
                self._chunks = []
            self._size -= len(data)
        if was_full:
            self._on_drained()
        if self._on_consumed is not None:
            self._on_consumed(len(data))
        return data


class WsgiInput(io.RawIOBase):
    """`wsgi.input`: read / readline / readlines / iteration over RequestBody."""

    def __init__(self, body: RequestBody | None):
        self._body = body
        self._buf = b""
        self._eof = body is None

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        if size is None:
            size = -1
        if size == 0:
            return b""
        if size < 0:
            parts = [self._buf]
            while not self._eof:
                chunk = self._body.take(1 << 20)
                if not chunk:
                    self._eof = True
                parts.append(chunk)
            self._buf = b""
            return b"".join(parts)
        parts, have = [self._buf], len(self._buf)
        while have < size and not self._eof:  # like a file: short only at the end
            chunk = self._body.take(max(size - have, 65536))
            if not chunk:
                self._eof = True
            parts.append(chunk)
            have += len(chunk)
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        data, self._buf = data[:size], data[size:]
        return data

    def readinto(self, b) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)

    def readline(self, size: int = -1) -> bytes:
        if size is None:
            size = -1
        while True:
            limit = len(self._buf) if size < 0 else min(size, len(self._buf))
            nl = self._buf.find(b"\n", 0, limit)
            if nl >= 0:
                line, self._buf = self._buf[:nl + 1], self._buf[nl + 1:]
                return line
            if 0 <= size <= len(self._buf) or self._eof:
                cut = len(self._buf) if size < 0 else size
                line, self._buf = self._buf[:cut], self._buf[cut:]
                return line
            chunk = self._body.take(65536)
            if not chunk:
                self._eof = True
            self._buf += chunk

    def readlines(self, hint: int = -1) -> list:
        lines, total = [], 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self) -> bytes:
        line = self.readline()
        if not line:
            raise StopIteration
        return line


class ErrorStream:
    """`wsgi.errors`: what the app writes goes to the error log (stderr or
    --error-logfile, with the server's own lines), a line at a time, as
    ERROR records of the "ktlswsgi.wsgi_errors" logger.  Flask's default handler
    writes its log records here.  Each thread keeps its partial line until
    its newline or flush(); a line over MAX_LINE_CHARS is written in pieces."""

    MAX_LINE_CHARS = 16 * 1024

    def __init__(self):
        self._pending = threading.local()

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"wsgi.errors takes str, got {type(text).__name__}")
        buf = getattr(self._pending, "text", "") + text
        while True:
            nl = buf.find("\n")
            if nl < 0:
                break
            self._emit(buf[:nl])
            buf = buf[nl + 1:]
        while len(buf) > self.MAX_LINE_CHARS:
            self._emit(buf[:self.MAX_LINE_CHARS])
            buf = buf[self.MAX_LINE_CHARS:]
        self._pending.text = buf
        return len(text)

    def writelines(self, lines) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        buf = getattr(self._pending, "text", "")
        if buf:
            self._pending.text = ""
            self._emit(buf)

    @staticmethod
    def _emit(line: str) -> None:
        if line.endswith("\r"):
            line = line[:-1]
        app_log.error("%s", line)


_ERRORS = ErrorStream()


# -- environ ----------------------------------------------------------------------
# The environ's first keys, in order; build_environ fills the Nones.
_ENVIRON_BASE = {
    "REQUEST_METHOD": None, "SCRIPT_NAME": "", "PATH_INFO": None, "QUERY_STRING": None,
    "RAW_URI": None, "SERVER_PROTOCOL": None, "wsgi.version": (1, 0), "wsgi.url_scheme": None,
    "wsgi.input": None, "wsgi.errors": _ERRORS, "wsgi.multithread": True,
    "wsgi.multiprocess": None, "wsgi.run_once": False, "wsgi.input_terminated": True,
    "wsgi.file_wrapper": FileWrapper,
}


def build_environ(request, *, scheme: str, server_addr, peer_addr, body: RequestBody | None,
                  multiprocess: bool, extra: dict | None = None) -> dict:
    """The request's WSGI environ: _csrc/environ.c's build_environ, or the
    Python path (its reference) where that is not built or declines."""
    environ = False if native is None else native.build_environ(
        _ENVIRON_BASE, request.method, request.target, request.http_version,
        request.headers, scheme, server_addr, peer_addr)
    if environ is False:
        environ = _environ(request, scheme, server_addr, peer_addr)
    environ["wsgi.url_scheme"] = scheme
    environ["wsgi.input"] = WsgiInput(body)
    environ["wsgi.multiprocess"] = multiprocess
    if extra:
        environ.update(extra)
    return environ


def _environ(request, scheme: str, server_addr, peer_addr) -> dict:
    """build_environ's Python path (the wsgi.* values besides the constant
    ones are the caller's to set)."""
    target = request.target
    if target.startswith((b"http://", b"https://")):  # absolute-form
        slash = target.find(b"/", target.find(b"//") + 2)
        target = target[slash:] if slash >= 0 else b"/"
    path, _, query = target.partition(b"?")
    environ = _ENVIRON_BASE.copy()
    environ["REQUEST_METHOD"] = request.method.decode("ascii")
    environ["PATH_INFO"] = unquote_to_bytes(path).decode("latin-1")
    environ["QUERY_STRING"] = query.decode("latin-1")
    environ["RAW_URI"] = request.target.decode("latin-1")
    environ["SERVER_PROTOCOL"] = "HTTP/" + request.http_version.decode("ascii")
    host_header = environ_headers(environ, request.headers)
    environ.setdefault("CONTENT_TYPE", "")
    environ.setdefault("CONTENT_LENGTH", "")
    if isinstance(server_addr, tuple):
        server_name, server_port = server_addr[0], str(server_addr[1])
    else:
        server_name, server_port = "localhost", ""
    if host_header:
        if host_header.startswith("["):
            name, _, port = host_header[1:].partition("]")
            port = port[1:]
        else:
            name, _, port = host_header.partition(":")
        server_name = name or server_name
        server_port = port or ("443" if scheme == "https" else "80")
    environ["SERVER_NAME"] = server_name
    environ["SERVER_PORT"] = server_port
    if isinstance(peer_addr, tuple):
        environ["REMOTE_ADDR"] = peer_addr[0]
        environ["REMOTE_PORT"] = str(peer_addr[1])
    else:
        environ["REMOTE_ADDR"] = ""
        environ["REMOTE_PORT"] = ""
    return environ


def environ_headers(environ: dict, headers) -> str | None:
    """The header fields into `environ` (HTTP_*, CONTENT_TYPE, CONTENT_LENGTH);
    returns the first Host value.  _csrc/environ.c does the same in C and is
    tested against this."""
    host_header = None
    joined: dict[str, list[str]] = {}
    for name, value in headers:
        if b"_" in name:
            continue  # X_Forwarded_For must not pose as X-Forwarded-For
        key = name.decode("latin-1").upper().replace("-", "_")
        text = value.decode("latin-1")
        if key == "HOST" and host_header is None:
            host_header = text
        joined.setdefault(key, []).append(text)
    for key, values in joined.items():
        value = ("; " if key == "COOKIE" else ", ").join(values)
        if key == "CONTENT_TYPE" or key == "CONTENT_LENGTH":
            environ[key] = value
        else:
            environ["HTTP_" + key] = value
    return host_header


def tls_environ(info: dict) -> dict:
    """The environ keys a TLS connection adds to each of its requests, from
    its transport's `info()`: HTTPS, SSL_PROTOCOL, SSL_CIPHER (mod_ssl's
    names) and ktlswsgi.ktls ("off", "tx", "rx" or "tx+rx")."""
    return {"HTTPS": "on", "SSL_PROTOCOL": info.get("tls_version", ""),
            "SSL_CIPHER": info.get("cipher", ""), "ktlswsgi.ktls": info.get("ktls", "off")}


class RequestFacts:
    """What each request of a connection takes from it: the app and the
    facts its environ is built from.  Made once per connection, when its
    first request can come (after the handshake and the PROXY header)."""

    __slots__ = ("app", "scheme", "server_addr", "peer_addr", "peer_ip", "forwarded_trust",
                 "tls_extra", "multiprocess")

    def __init__(self, app, scheme: str, server_addr, peer_addr, peer_ip, forwarded_trust,
                 tls_extra: dict | None, multiprocess: bool):
        self.app = app
        self.scheme = scheme
        self.server_addr = server_addr
        self.peer_addr = peer_addr
        self.peer_ip = peer_ip
        self.forwarded_trust = forwarded_trust
        self.tls_extra = tls_extra
        self.multiprocess = multiprocess


def serve_request(facts: RequestFacts, request, body: RequestBody | None, out,
                  head_only: bool, close_after: bool, inline_file_bytes: int = 0,
                  log_meta: dict | None = None) -> None:
    """One request on a pool thread: trusted forwarding headers, the environ,
    the app, its response into `out`.  Works for HTTP/1 and HTTP/2 alike.
    The client address the forwarding headers give goes into `log_meta`
    ("client"), for the access log's line."""
    scheme, peer_addr, tls_extra = facts.scheme, facts.peer_addr, facts.tls_extra
    forwarded = apply_forwarded(request.headers, facts.peer_ip, facts.forwarded_trust)
    if forwarded is not UNCHANGED:
        scheme, peer_addr, tls_extra = _forwarded_view(forwarded, scheme, peer_addr, tls_extra)
        if log_meta is not None and forwarded.remote_addr is not None:
            log_meta["client"] = forwarded.remote_addr
    environ = build_environ(request, scheme=scheme, server_addr=facts.server_addr,
                            peer_addr=peer_addr, body=body, multiprocess=facts.multiprocess,
                            extra=tls_extra)
    run_app(facts.app, environ, out, head_only=head_only, close_after=close_after,
            inline_file_bytes=inline_file_bytes)


def _forwarded_view(forwarded, scheme: str, peer, extra):
    """(scheme, peer, extra environ) of a request once trusted forwarding
    headers apply.  HTTPS follows the scheme the client used at the proxy:
    "on" for https, absent for http (SSL_* still describe our own TLS hop)."""
    if forwarded.remote_addr is not None:
        peer = (forwarded.remote_addr, forwarded.remote_port)
    if forwarded.url_scheme is not None and forwarded.url_scheme != scheme:
        scheme = forwarded.url_scheme
        extra = dict(extra) if extra else {}
        if scheme == "https":
            extra["HTTPS"] = "on"
        else:
            extra.pop("HTTPS", None)
    return scheme, peer, extra


# -- running the app -------------------------------------------------------------
class HeaderError(ValueError):
    """The app gave a response head that cannot go on the wire (answered with 500).

    The message names the header, never its value: values are often secrets
    (Set-Cookie, Authorization) and the message is logged.
    """


_TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")
# What a field value may not hold once its surrounding SP/HTAB are stripped:
# control characters other than HTAB (CR, LF and NUL among them), and any
# character beyond latin-1 (PEP 3333: header strings are latin-1).
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def _name_for_log(name) -> str:
    text = repr(name)
    return text if len(text) <= 80 else text[:77] + "..."


def _check_header(name, value) -> str:
    """The value to send (RFC 9110 5.5: surrounding whitespace is not part of it)."""
    if not isinstance(name, str):
        raise HeaderError(f"header name {_name_for_log(name)} is not a str")
    if not _TOKEN.fullmatch(name):
        raise HeaderError(f"header name {_name_for_log(name)} is not an HTTP token")
    if not isinstance(value, str):
        raise HeaderError(f"header {name!r}: the value is a {type(value).__name__}, not a str")
    value = value.strip(" \t")
    m = _BAD_VALUE.search(value)
    if m is not None:
        what = ("CR, LF or NUL" if m.group() in "\r\n\0" else
                "a control character" if m.group() <= "\x7f" else "a non-latin-1 character")
        raise HeaderError(f"header {name!r}: the value holds {what}")
    return value


_HOP_BY_HOP = {"transfer-encoding", "keep-alive", "upgrade", "proxy-connection", "te", "trailer"}


def _response_headers(headers: list) -> tuple:
    """(encoded, Content-Length or None, has Date, has Server) of the app's
    headers; raises HeaderError.  _csrc/respheaders.c's response_headers does
    the plain case the same way and is tested against this."""
    encoded = []
    content_length = None
    has_date = has_server = False
    for item in headers:
        if not isinstance(item, tuple) or len(item) != 2:
            raise HeaderError("a response header is not a (name, value) tuple")
        name, value = item
        value = _check_header(name, value)
        lower = name.lower()
        if lower in _HOP_BY_HOP:
            log.debug("dropped hop-by-hop header %r set by the app", name)
            continue
        if lower == "content-length":
            try:
                content_length = int(value)
                if content_length < 0:
                    raise ValueError
            except ValueError:
                raise HeaderError("invalid Content-Length") from None
        elif lower == "date":
            has_date = True
        elif lower == "server":
            has_server = True
        encoded.append((name.encode("latin-1"), value.encode("latin-1")))
    return encoded, content_length, has_date, has_server


class Responder:
    """start_response, write() and the body loop for one request."""

    def __init__(self, out, *, head_only: bool, close_after: bool, peer: str):
        self._out = out
        self.head_only = head_only
        self._close_after = close_after
        self._peer = peer
        self._status_reason = b""  # of the status line, once start_response ran
        self._headers = None      # encoded list
        self._content_length: int | None = None
        self.headers_sent = False
        self.body_bytes = 0
        self.status_code = 0
        self._held: list = []     # items finish() hands over with the End, in one put
        self._held_bytes = 0      # of their body bytes

    # PEP 3333 start_response
    def start_response(self, status, headers, exc_info=None):
        if exc_info:
            try:
                if self.headers_sent:
                    raise exc_info[1].with_traceback(exc_info[2])
            finally:
                exc_info = None
        elif self.status_code:
            raise AssertionError("start_response called a second time without exc_info")
        started = False if native is None else native.response_start(
            status, headers, None, SERVER)
        if started is not False:
            code, self._status_reason, self._headers, self._content_length = started
            self.status_code = code
            return self.write
        if not isinstance(status, str):
            raise TypeError(f"status must be str, got {type(status).__name__}")
        code_s, _, reason = status.partition(" ")
        if (len(code_s) != 3 or not code_s.isdigit() or code_s < "100" or not reason
                or _BAD_VALUE.search(reason)):
            raise HeaderError(f"invalid status line {status[:40]!r}")
        if not isinstance(headers, list):
            raise TypeError("headers must be a list")
        checked = False if native is None else native.response_headers(headers)
        if checked is False:
            checked = _response_headers(headers)
        encoded, content_length, has_date, has_server = checked
        if not has_date:
            encoded.append((b"Date", date_value()))
        if not has_server:
            encoded.append((b"Server", SERVER))
        self.status_code = int(code_s)
        self._status_reason = reason.encode("latin-1")
        self._headers = encoded
        self._content_length = content_length
        return self.write

    def _head(self) -> Head:
        if not self.status_code:
            raise AssertionError("the app returned a body before calling start_response")
        self.headers_sent = True
        return Head(self.status_code, self._status_reason, self._headers, self._close_after)

    def write(self, data) -> None:
        """PEP 3333 write(): send now (waits while the queue is over high water)."""
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"body chunks must be bytes, got {type(data).__name__}")
        if not data:
            return
        if self.head_only:
            if not self.headers_sent:
                self._out.put(self._head())
            return
        cl = self._content_length
        if cl is not None and self.body_bytes + len(data) > cl:
            keep = cl - self.body_bytes
            log.warning("app sent more than its Content-Length %d; %d bytes dropped",
                        cl, len(data) - keep)
            data = data[:keep]
            if not data:
                return
        self.body_bytes += len(data)
        if not self.headers_sent:
            self._out.put_many((self._head(), Chunk(data)), len(data))
        else:
            self._out.put(Chunk(data), len(data))

    def body_chunk(self, data) -> bool:
        """A chunk of the app's iterable; True once the body has its
        Content-Length: the iteration then stops (PEP 3333: "should stop
        iterating over the response when enough data has been sent").  A
        first chunk that is the whole body is held for finish(), so that the
        whole response is handed over at once (Flask's usual response)."""
        cl = self._content_length
        if cl is None:
            self.write(data)
            return False
        if (cl and not self.headers_sent and type(data) is bytes and len(data) == cl
                and not self.head_only):
            self._held += (self._head(), Chunk(data))
            self._held_bytes += cl
            self.body_bytes = cl
            return True
        self.write(data)
        return self.body_bytes >= cl

    def write_whole(self, data) -> None:
        """The whole body at once (a one-item list): head, body and end in one hand-over."""
        cl = self._content_length
        if cl is not None and len(data) != cl:
            self.write(data)  # the general path logs and enforces the mismatch
            self.finish()
            return
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"body chunks must be bytes, got {type(data).__name__}")
        head = self._head()
        self.body_bytes = len(data)
        if data:
            self._out.put_many((head, Chunk(data), End(self.status_code, len(data))), len(data))
        else:
            self._out.put_many((head, End(self.status_code, 0)))

    def file_count(self, available: int) -> int:
        """The bytes of a file to send: what it holds, within Content-Length."""
        cl = self._content_length
        return available if cl is None else min(cl - self.body_bytes, available)

    def send_file(self, fd: int, offset: int, available: int, closer) -> bool:
        """A file range as the body; True when the reactor now owns `closer`.

        The head and the range are held for finish(), which must follow:
        the whole response goes to the reactor in one hand-over."""
        if self.head_only:
            return False
        count = self.file_count(available)
        if not self.headers_sent:
            self._held.append(self._head())
        self.body_bytes += count
        self._held.append(FileRange(fd, offset, count, closer))
        return True

    def finish(self) -> None:
        items, self._held = self._held, []
        nbytes, self._held_bytes = self._held_bytes, 0
        if not self.headers_sent:
            items.append(self._head())
        cl = self._content_length
        try:
            # HEAD, 1xx, 204 and 304 have no body: their Content-Length describes
            # the representation a GET or a 200 would carry (RFC 9110 8.6).
            if (cl is not None and self.body_bytes < cl and not self.head_only
                    and not body_forbidden(self.status_code)):
                hint = ""
                if any(n.lower() in (b"x-sendfile", b"x-accel-redirect") for n, _ in self._headers):
                    hint = (" (the response names its file in X-Sendfile or X-Accel-Redirect: "
                            "--sendfile-root lets the server send it)")
                raise ShortBody(f"app sent {self.body_bytes} of its Content-Length {cl}{hint}")
            items.append(End(self.status_code, self.body_bytes))
        finally:
            if items:
                self._out.put_many(items, nbytes)


class ShortBody(Exception):
    pass


def close_iterable(result) -> None:
    """Call the app iterable's close(), if any, logging (not raising) its errors."""
    close = getattr(result, "close", None)
    if close is not None:
        try:
            close()
        except Exception:
            error_log.exception("error in the app iterable's close()")


def run_app(app, environ: dict, out, *, head_only: bool, close_after: bool,
            file_fast_path: bool = True, inline_file_bytes: int = 0) -> None:
    """Run the app for one request on this (pool) thread; queue the response.

    A file_wrapper around a regular file becomes a file range for the
    reactor, or, when it holds at most `inline_file_bytes`, bytes read here
    (filewrapper.py says why)."""
    peer = environ.get("REMOTE_ADDR", "")
    responder = Responder(out, head_only=head_only, close_after=close_after, peer=peer)
    result = None
    closer_handed_over = False
    try:
        result = app(environ, responder.start_response)
        listed = type(result) is list and len(result) <= 1
        found = (file_range(result) if file_fast_path and not head_only and not listed
                 else None)
        if head_only:
            responder.finish()  # HEAD: the body is not produced at all
        elif listed:
            responder.write_whole(result[0] if result else b"")
        elif found is not None:
            fd, offset, available = found
            count = responder.file_count(available)
            if inline_file_bytes and count <= inline_file_bytes:   # 0: never inline
                responder.write_whole(os.pread(fd, count, offset))
            else:
                closer_handed_over = responder.send_file(fd, offset, available, result)
                responder.finish()
        else:
            for chunk in result:
                if responder.body_chunk(chunk):
                    break
            responder.finish()
    except QueueAborted as exc:
        log.debug("response to %s abandoned: %s", peer, exc)
    except ShortBody as exc:
        error_log.error("%s %s: %s; closing the connection",
                        environ["REQUEST_METHOD"], environ["PATH_INFO"], exc)
        _abort(out, str(exc))
    except BodyError as exc:
        _fail(out, responder, environ, exc.status, str(exc) or type(exc).__name__, exc)
    except HeaderError as exc:
        error_log.error("%s %s: %s: 500", environ["REQUEST_METHOD"],
                        environ["PATH_INFO"], exc)
        _fail(out, responder, environ, 500, "Internal Server Error", None)
    except Exception as exc:
        _fail(out, responder, environ, 500, "Internal Server Error", exc)
    finally:
        if result is not None and not closer_handed_over:
            close_iterable(result)


def _fail(out, responder: Responder, environ: dict, status: int, text: str, exc) -> None:
    where = f"{environ['REQUEST_METHOD']} {environ.get('RAW_URI', '')}"
    if exc is None:
        pass  # the caller logged it
    elif status == 500:
        error_log.error("error handling %s", where, exc_info=exc)
    else:
        error_log.info("%s: %d %s", where, status, text)
    if responder.headers_sent:
        error_log.error("%s: app failed after headers were sent; aborting the connection", where)
        _abort(out, "app error after headers")
        return
    headers, body = text_answer(text)
    head = Head(status, b"", headers, True)
    try:
        out.put(head)
        if not responder.head_only:
            out.put(Chunk(body), len(body))
        out.put(End(status, len(body)))
    except QueueAborted:
        pass


def _abort(out, reason: str) -> None:
    try:
        out.put(Abort(reason))
    except QueueAborted:
        pass

