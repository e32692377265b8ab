"""The access log: one line per response, in gunicorn's atoms.

Owns: the atoms and what each means, parsing and checking a format
(`--access-logformat`, once, at start), rendering a line, and handing it to
the writer thread that `logs.py` starts, so the reactor never waits on a log
file.

The default line (no format given) is the combined format plus the seconds
taken, then ``tls=VERSION/CIPHER ktls=tx,rx|tx|off`` on TLS connections and
`` aborted`` when the connection ended before the response did::

    %(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(B)s "%(f)s" "%(a)s" %(L)s

The time atoms (T, M, D, L) run from the complete request head to the last
byte handed to the kernel (not to the app's return: a file is sent after
that); B and b count body bytes sent.

Header atoms, gunicorn's ``%({Name}i)s`` (request) and ``%({Name}o)s``
(response), write a header's value (X-Request-Id, traceparent), except for
credentials: Authorization, Proxy-Authorization, Cookie, Set-Cookie and the
names in --access-log-hide-header always log as ``-``, whatever the format
asks, since a log file is kept for months and read by more people than the
app's secrets should be.  Environ atoms ``%({NAME}e)s`` are refused at start
(the environ, with HTTP_COOKIE in it, is the worker's, not the log's).

``h`` is the client address the forwarded rules computed (--forwarded-allow-ips:
X-Forwarded-For or Forwarded from a trusted proxy), else the connection's
peer (the PROXY header's source, if any).

``--access-logformat json`` writes one JSON object per line instead (fields:
JSON_FIELDS), built by the json module, so no value can break out of its
string.

Cost: a line is built on the reactor thread, once per response.  A format is
compiled once into a %-template and the atoms it uses; a line computes only
those, and the time stamp is formatted at most once per second.  The default
line has its own hand-written renderer.  The finished line goes straight onto
the writer's queue: no LogRecord on the reactor (measured, default line: 1.9 us
per response in all, against 11.5 us with a logger call and a QueueHandler).
"""
from __future__ import annotations

import json
import logging
import os
import re
import time

access_log = logging.getLogger("ktlswsgi.access")

# Each atom and its meaning (docs/logs.md; the error for an unknown atom lists them).
ATOMS = {
    "h": "client address (from a trusted proxy's forwarding headers, else the peer)",
    "l": "'-'",
    "u": "user name: always '-' (it would come from a header)",
    "t": "time the line is written, [10/Oct/2026:13:55:36 +0000]",
    "r": "request line, GET /path?q HTTP/1.1",
    "m": "request method",
    "U": "path, as sent (percent-encoding kept)",
    "q": "query string without '?', '-' if none",
    "H": "protocol, HTTP/1.1",
    "s": "status",
    "B": "body bytes sent",
    "b": "body bytes sent, '-' for 0",
    "f": "Referer, '-' if none",
    "a": "User-Agent, '-' if none",
    "T": "time taken, whole seconds",
    "M": "time taken, whole milliseconds",
    "D": "time taken, whole microseconds",
    "L": "time taken, decimal seconds (6 places)",
    "p": "process id, <1234> (gunicorn's spelling)",
    "tls": "TLS version/cipher, TLSv1.3/TLS_AES_128_GCM_SHA256; '-' on plain TCP",
    "ktls": "kTLS engaged: tx, tx,rx or off; '-' on plain TCP",
    "aborted": "'aborted' if the connection ended before the response did, else '-'",
    "{Name}i": "request header Name ('-' if absent, and for credentials)",
    "{Name}o": "response header Name ('-' if absent, and for credentials)",
}

# Headers whose value is never written, whatever a format asks (plus
# --access-log-hide-header).
HIDDEN_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie"))
JSON_FORMAT = "json"
# The fields of a JSON line, in order (null when there is no value).
JSON_FIELDS = ("time", "remote_addr", "method", "target", "protocol", "status", "body_bytes",
               "duration_s", "referer", "user_agent", "request_id", "traceparent", "tls",
               "ktls", "aborted", "pid")

DEFAULT_FORMAT = '%(h)s %(l)s %(u)s %(t)s "%(r)s" %(s)s %(B)s "%(f)s" "%(a)s" %(L)s'

# Atoms whose value never changes: folded into the template when it is compiled.
_CONSTANT = {"l": "-", "u": "-"}

# `%%` (a literal %), an atom `%(name)s`, or any other `%` (refused: gunicorn
# would fail on it at every request instead of once at start).
_TOKEN = re.compile(r"%%|%\((?P<name>[^()]*)\)s|%")


class FormatError(ValueError):
    """An access log format that cannot be used; one line for the operator."""


def _referer_and_agent(headers) -> tuple:
    """(Referer, User-Agent) values of a request, None when absent: the only
    header values the access log writes (the combined format's)."""
    referer = ua = None
    for name, value in headers:
        if name == b"referer":
            referer = value
        elif name == b"user-agent":
            ua = value
    return referer, ua


_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f]")


def _quote(value: bytes | str | None) -> str:
    """A value for a quoted field: '-' when empty, `\\` and `"` escaped, a
    control character as \\xHH (a value can never end the line)."""
    if not value:
        return "-"
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    value = value.replace("\\", "\\\\").replace('"', '\\"')
    if _UNPRINTABLE.search(value):
        value = _UNPRINTABLE.sub(lambda m: "\\x%02x" % ord(m.group()), value)
    return value


def _header(headers, name: bytes, hidden) -> str:
    """A header's value for the log: '-' if absent or hidden; repeated ones
    joined with ', '."""
    if name in hidden:
        return "-"
    values = [v for n, v in headers if n.lower() == name] if headers else []
    return _quote(b", ".join(values)) if values else "-"


def _parse(fmt: str) -> list:
    """[(literal text, atom name or None)], or FormatError naming what is wrong.
    A header atom's name is kept as `{name}i` / `{name}o`, lower-cased."""
    if not fmt:
        raise FormatError("empty format (leave out --access-logfile to log nothing)")
    pieces = []
    literal = []
    pos = 0
    for m in _TOKEN.finditer(fmt):
        literal.append(fmt[pos:m.start()])
        pos = m.end()
        token, name = m.group(), m.group("name")
        if token == "%%":
            literal.append("%")
            continue
        if name is None:
            raise FormatError(f"{fmt[m.start():m.start() + 12]!r} at offset {m.start()} is not "
                              f"an atom: write %(NAME)s, or %% for a literal %")
        if name.startswith("{") and name.endswith(("}i", "}o", "}e")):
            header = name[1:-2]
            if name[-1] == "e":
                raise FormatError(f"%({name})s: environ values are never logged (the "
                                  f"environ holds cookies and credentials); log the request "
                                  f"header with %({{{header}}}i)s")
            if not header or not re.fullmatch(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+", header):
                raise FormatError(f"%({name})s: {header!r} is not a header name")
            pieces.append(("".join(literal), "{%s}%s" % (header.lower(), name[-1])))
            literal = []
            continue
        if name not in ATOMS or name.startswith("{"):
            raise FormatError(f"unknown atom %({name})s (atoms: {' '.join(ATOMS)})")
        pieces.append(("".join(literal), name))
        literal = []
    literal.append(fmt[pos:])
    pieces.append(("".join(literal), None))
    return pieces


# The time stamp, formatted at most once per second: (second, text), replaced
# whole, so several reactors in one process (tests) never see a torn pair.
_stamp = (0, "")


def _now_bracketed() -> str:
    global _stamp
    now_s = int(time.time())
    second, text = _stamp
    if second != now_s:
        text = time.strftime("[%d/%b/%Y:%H:%M:%S %z]", time.localtime(now_s))
        _stamp = (now_s, text)
    return text


def compile_format(fmt: str | None, clock_s=time.monotonic, hide=()):
    """A function (peer, request, status, body_bytes, started, tls_info, aborted,
    response_headers) -> line.

    `fmt` None is the default line (DEFAULT_FORMAT and its TLS and aborted
    suffixes); "json" the JSON line.  `clock_s` is the clock `started` was read
    from (seconds); `hide`, header names logged as '-' besides HIDDEN_HEADERS.
    Raises FormatError for a format that cannot be used.
    """
    hidden = frozenset(HIDDEN_HEADERS | {h.lower() for h in hide})
    hidden_b = frozenset(h.encode("latin-1") for h in hidden)
    if fmt is None:
        return _default_line(clock_s)
    if fmt == JSON_FORMAT:
        return _json_line(clock_s, hidden_b)
    pieces = _parse(fmt)
    used = {name for _, name in pieces if name is not None}
    header_atoms = [(name, name[1:-2].encode("latin-1"), name[-1] == "o")
                    for name in sorted(used) if name.startswith("{")]
    keys = {name: f"hdr{i}" for i, (name, _, _) in enumerate(header_atoms)}
    template = "".join(
        text.replace("%", "%%") + ("" if name is None
                                   else _CONSTANT[name] if name in _CONSTANT
                                   else f"%({keys.get(name, name)})s")
        for text, name in pieces)
    (want_h, want_t, want_r, want_m, want_U, want_q, want_H, want_s, want_B, want_b,
     want_f, want_a, want_T, want_M, want_D, want_L, want_p, want_tls, want_ktls,
     want_aborted) = (name in used for name in (
        "h", "t", "r", "m", "U", "q", "H", "s", "B", "b", "f", "a", "T", "M", "D", "L", "p",
        "tls", "ktls", "aborted"))
    want_target = want_U or want_q
    want_headers = want_f or want_a
    want_took = want_T or want_M or want_D or want_L

    def render(peer: str, request, status: int, body_bytes: int, started: float,
               tls_info: dict | None, aborted: bool, response_headers=None) -> str:
        v = {}
        for name, header, response in header_atoms:
            v[keys[name]] = _header(response_headers if response else request.headers,
                                    header, hidden_b)
        if want_h:
            v["h"] = peer
        if want_t:
            v["t"] = _now_bracketed()
        if want_r:
            v["r"] = _quote(b"%s %s HTTP/%s" % (request.method, request.target,
                                                 request.http_version))
        if want_m:
            v["m"] = request.method.decode("latin-1")
        if want_target:
            path, _, query = request.target.partition(b"?")
            if want_U:
                v["U"] = _quote(path)
            if want_q:
                v["q"] = _quote(query)
        if want_H:
            v["H"] = f"HTTP/{request.http_version.decode('latin-1')}"
        if want_s:
            v["s"] = status
        if want_B:
            v["B"] = body_bytes
        if want_b:
            v["b"] = body_bytes or "-"
        if want_headers:
            referer, ua = _referer_and_agent(request.headers)
            if want_f:
                v["f"] = _quote(referer)
            if want_a:
                v["a"] = _quote(ua)
        if want_took:
            took_s = clock_s() - started
            if want_T:
                v["T"] = int(took_s)
            if want_M:
                v["M"] = int(took_s * 1e3)
            if want_D:
                v["D"] = int(took_s * 1e6)
            if want_L:
                v["L"] = f"{took_s:.6f}"
        if want_tls:
            v["tls"] = (f"{tls_info.get('tls_version', '-')}/{tls_info.get('cipher', '-')}"
                        if tls_info else "-")
        if want_ktls:
            v["ktls"] = tls_info.get("ktls", "off") if tls_info else "-"
        if want_p:
            v["p"] = f"<{os.getpid()}>"   # at render time: the line's process, after fork
        if want_aborted:
            v["aborted"] = "aborted" if aborted else "-"
        return template % v

    return render


def _default_line(clock_s):
    """The default line: DEFAULT_FORMAT and its suffixes, written out by hand
    because most servers log it (about 0.8 us less per line than the general
    renderer; tests check that both give the same line)."""

    def default_line(peer: str, request, status: int, body_bytes: int, started: float,
                     tls_info: dict | None, aborted: bool, response_headers=None) -> str:
        referer, ua = _referer_and_agent(request.headers)
        request_line = b"%s %s HTTP/%s" % (request.method, request.target, request.http_version)
        line = (f'{peer} - - {_now_bracketed()} "{_quote(request_line)}" {status} {body_bytes} '
                f'"{_quote(referer)}" "{_quote(ua)}" {clock_s() - started:.6f}')
        if tls_info:
            line += (f" tls={tls_info.get('tls_version', '-')}/{tls_info.get('cipher', '-')}"
                     f" ktls={tls_info.get('ktls', 'off')}")
        if aborted:
            line += " aborted"
        return line

    return default_line


def _json_line(clock_s, hidden_b):
    """One JSON object per line (JSON_FIELDS); json.dumps escapes every value."""
    def text(value):
        return None if value is None else value.decode("latin-1")

    def json_line(peer: str, request, status: int, body_bytes: int, started: float,
                  tls_info: dict | None, aborted: bool, response_headers=None) -> str:
        referer, ua = _referer_and_agent(request.headers)
        request_id = traceparent = None
        for name, value in request.headers:
            if name == b"x-request-id":
                request_id = value
            elif name == b"traceparent":
                traceparent = value
        return json.dumps({
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "remote_addr": peer,
            "method": text(request.method),
            "target": text(request.target),
            "protocol": "HTTP/" + text(request.http_version),
            "status": status,
            "body_bytes": body_bytes,
            "duration_s": round(clock_s() - started, 6),
            "referer": text(referer),
            "user_agent": text(ua),
            "request_id": None if b"x-request-id" in hidden_b else text(request_id),
            "traceparent": None if b"traceparent" in hidden_b else text(traceparent),
            "tls": (f"{tls_info.get('tls_version', '-')}/{tls_info.get('cipher', '-')}"
                    if tls_info else None),
            "ktls": tls_info.get("ktls", "off") if tls_info else None,
            "aborted": aborted,
            "pid": os.getpid(),
        }, ensure_ascii=True, separators=(",", ":"))

    return json_line


_render = compile_format(None)
# Where finished lines go when logs.py started the writer thread: its queue's
# put (a LogRecord per line would cost the reactor about 10 us; the writer
# makes it).  None: through the "ktlswsgi.access" logger, if it is enabled
# (servers run in-process, e.g. by tests).
_put_line = None


def set_format(fmt: str | None, hide=()) -> None:
    """Use `fmt` (None: the default line) from the next response on; `hide`:
    more header names never logged."""
    global _render
    _render = compile_format(fmt, hide=hide)


def set_writer(put) -> None:
    """Send finished lines to `put` (a queue's put), or None for the logger."""
    global _put_line
    _put_line = put


def log_response(peer: str, request, status: int, body_bytes: int, started: float,
                 tls_info: dict | None, aborted: bool = False, response_headers=None) -> None:
    put = _put_line
    if put is None:
        if not access_log.isEnabledFor(logging.INFO):
            return
        put = access_log.info
    put(_render(peer, request, status, body_bytes, started, tls_info, aborted,
                response_headers))
