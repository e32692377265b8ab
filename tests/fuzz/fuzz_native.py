"""Coverage-guided fuzzing of ktlswsgi._native (ktlswsgi/_csrc/) against its
Python references.

Each input: two bytes choose the four HTTP/1 limits (small, so every limit
is hit), the rest is
  - fed to two HTTP/1 drivers, `--http c` and `--http h11`, whole and again
    with a blank line appended; they must produce the same events
    (tests/test_http1_parsers.py's transcript: requests, bodies, keep-alive,
    rejections);
  - cut into header fields (lines, split at the first ":"), which
    native.environ_headers and wsgi.environ_headers must turn into the same
    environ (and, its first line a target and its second a Host value, a
    request that native.build_environ and the Python path must turn into
    the same environ, key order included), and which, as a response's headers, Http1.response_head must
    frame to the same bytes, framing and errors with native's
    scan_response_headers / serialize_head and without (and
    Http1.whole_response, with a body, with frame_whole and without);
    decoded as latin-1,
    the same fields as an app's start_response headers, which
    native.response_headers must check as wsgi._response_headers does (or
    leave to it), and native.response_start too, the first field's name and
    value its status line, as start_response's Python path does.
  - decoded as an HPACK block (twice: the second against the table the
    first left) by hpackcoder's nghttp2 decoder and the hpack package's,
    which must give the same header list or both fail; cut into header
    fields, encoded by hpackcoder's encoder, which the hpack package must
    decode back to those fields;
  - cut into an HTTP/2 header block (lines, split at the first "="), which
    native.h2_request and h2_trailers must judge as h2's validate_headers
    does;
  - sent through native.sock_send and read back with the socket's own recv,
    then sent with the socket's send and read with native.sock_recv (a read
    size from the first byte, past the 64 KiB scratch buffer for some): the
    bytes must come back as sent (gate.c's plain-TCP steps against Python's).
Any difference, and any memory error AddressSanitizer sees in the C, stops
the run with the input saved.

Run by scripts/fuzz.sh (`make fuzz`, and in CI), which builds the extension
with clang's address sanitizer and libFuzzer's coverage hooks and loads it in
place of the normal build (KTLSWSGI_NATIVE_SO), seeds the corpus from the
test corpus, and bounds the run (-max_total_time).  By hand, on the normal
build: python tests/fuzz/fuzz_native.py -runs=20000
"""
from __future__ import annotations

import os
import socket
import sys

import atheris

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
# Before ktlswsgi is imported: the sanitized build at KTLSWSGI_NATIVE_SO, if given.
import asan_native  # noqa: E402 (this directory is the script's, first on sys.path)

# Instrumented before anything else imports them: coverage of the Python
# driver guides the fuzzer too.
with atheris.instrument_imports(include=["ktlswsgi"]):
    from ktlswsgi import hpackcoder, http1, wsgi
from hpack import Decoder as RefDecoder, Encoder as RefEncoder  # noqa: E402
from hpack.exceptions import HPACKError  # noqa: E402
from test_http1_parsers import CORPUS, limits_from, transcript  # noqa: E402
from test_native import REQUESTS, _h2_accepts, checked_both, framed, whole  # noqa: E402

STATUSES = [100, 101, 200, 204, 206, 304, 404, 500, 999]


def check_parser(head: bytes, limits: tuple) -> None:
    for variant in (head, head + b"\r\n\r\n"):
        pieces = [len(variant)]
        ref = transcript("h11", variant, pieces, limits=limits)
        got = transcript("c", variant, pieces, limits=limits)
        if got != ref:
            raise AssertionError(f"--http c differs from h11 on {variant!r} with limits "
                                 f"{limits}:\nc:   {got}\nh11: {ref}")


def check_environ(data: bytes) -> None:
    headers = []
    for line in data.split(b"\n"):
        name, _, value = line.partition(b":")
        headers.append((name.lower() if len(name) % 2 else name, value))
    c_env, py_env = {"SCRIPT_NAME": ""}, {"SCRIPT_NAME": ""}
    got = wsgi.native.environ_headers(c_env, headers)
    if got is False:
        if all(max(name, default=0) < 0x80 for name, _ in headers):
            raise AssertionError(f"environ_headers refused ASCII names: {headers!r}")
        return
    ref = wsgi.environ_headers(py_env, headers)
    if (got, list(c_env.items())) != (ref, list(py_env.items())):
        raise AssertionError(f"environ_headers differs on {headers!r}:\n"
                             f"c:  {got!r} {c_env}\npy: {ref!r} {py_env}")


def check_build_environ(a: int, data: bytes) -> None:
    target, _, rest = data.partition(b"\n")
    host, _, rest = rest.partition(b"\n")
    headers = [(b"host", host)] + [line.partition(b":")[::2] for line in rest.split(b"\n")[:4]]
    req = http1.Request(b"GET", target, b"1.1", headers)
    kw = dict(scheme="https" if a & 1 else "http", body=None, multiprocess=False,
              server_addr=("::1", 8443, 0, 0) if a & 2 else "/run/x.sock",
              peer_addr=("10.0.0.1", 5) if a & 4 else "")
    try:
        got = wsgi.build_environ(req, **kw)
    except UnicodeDecodeError:
        got = "UnicodeDecodeError"
    c = wsgi.native
    wsgi.native = None
    try:
        want = wsgi.build_environ(req, **kw)
    except UnicodeDecodeError:
        want = "UnicodeDecodeError"
    finally:
        wsgi.native = c
    for env in (got, want):
        if type(env) is dict:
            env["wsgi.input"] = type(env["wsgi.input"])
    if got != want or (type(got) is dict and list(got) != list(want)):
        raise AssertionError(f"build_environ differs on {req!r}:\nc:  {got}\npy: {want}")


def _with_and_without_c(fn, args):
    """fn(*args) with http1's C, then with its Python path."""
    c = http1.native
    got = fn(*args)
    http1.native = None
    try:
        return got, fn(*args)
    finally:
        http1.native = c


def check_framing(a: int, b: int, data: bytes) -> None:
    headers = [line.partition(b":")[::2] for line in data.split(b"\n")]
    args = (REQUESTS[a % len(REQUESTS)], STATUSES[b % len(STATUSES)], headers,
            b"" if a & 4 else b"Fine", bool(a & 8))
    got, ref = _with_and_without_c(framed, args)
    if got != ref:
        raise AssertionError(f"response_head differs on {args!r}:\nc:  {got}\npy: {ref}")
    # The same response whole, its body a Content-Length's worth when the
    # headers name one it can be (else a few bytes).
    length = next((v for n, v in headers if n.lower() == b"content-length"), b"")
    body = b"x" * int(length) if length.isdigit() and len(length) < 4 else data[:3]
    args = args + (body,)
    got, ref = _with_and_without_c(whole, args)
    if got != ref:
        raise AssertionError(f"whole_response differs on {args!r}:\nc:  {got}\npy: {ref}")


def check_response_headers(data: bytes) -> None:
    headers = [(n.decode("latin-1"), v.decode("latin-1"))
               for n, _, v in (line.partition(b":") for line in data.split(b"\n"))]
    c, py = checked_both(headers)
    if c is not False and c != py:
        raise AssertionError(f"response_headers differs on {headers!r}:\nc:  {c}\npy: {py}")
    # The first field's name and value as a status line, the rest as its headers.
    status = "%s %s" % headers[0]
    started = wsgi.native.response_start(status, headers[1:], b"D", b"S")
    if started is False:
        return
    code_s, _, reason = status.partition(" ")
    py = wsgi._response_headers(headers[1:])
    want = (int(code_s), reason.encode("latin-1"),
            py[0] + [(b"Date", b"D")] * (not py[2]) + [(b"Server", b"S")] * (not py[3]), py[1])
    if (len(code_s) != 3 or not code_s.isdigit() or code_s < "100" or not reason
            or wsgi._BAD_VALUE.search(reason) or started != want):
        raise AssertionError(f"response_start differs on {status!r} {headers[1:]!r}:\n"
                             f"c:  {started}\npy: {want}")


_PAIR = []


def check_socket_gate(size_byte: int, data: bytes) -> None:
    if not _PAIR:
        _PAIR.extend(socket.socketpair())
        for sock in _PAIR:
            sock.setblocking(False)
    a, b = _PAIR
    native = http1.native
    sent = native.sock_send(a.fileno(), data) if data else 0
    got = b.recv(len(data) + 1) if sent > 0 else b""
    if got != data[:sent] or (data and sent <= 0):
        raise AssertionError(f"sock_send: sent {sent} of {len(data)}, read back {len(got)}")
    max_bytes = 1 + size_byte * 300
    if data:
        b.sendall(data)
    back = b""
    while len(back) < len(data):
        piece = native.sock_recv(a.fileno(), max_bytes)
        if not piece or len(piece) > max_bytes:
            raise AssertionError(f"sock_recv({max_bytes}) gave {piece!r:.40} after {len(back)}")
        back += piece
    if back != data or native.sock_recv(a.fileno(), max_bytes) is not None:
        raise AssertionError("sock_recv: the bytes sent did not come back, exactly")


def _decoded(decoder, block: bytes, bound: int):
    decoder.max_header_list_size = bound
    try:
        return [tuple(h) for h in decoder.decode(block, raw=True)]
    except HPACKError:
        return "error"


def check_hpack(bound_byte: int, data: bytes) -> None:
    if not hpackcoder.AVAILABLE:
        return
    bound = 40 + bound_byte * 64
    ours, ref = hpackcoder.Decoder(), RefDecoder()
    for _ in range(2):    # the second time against the table the first left
        got, want = _decoded(ours, data, bound), _decoded(ref, data, bound)
        if got != want:
            raise AssertionError(f"HPACK decoding differs on {data.hex()} (bound {bound}):\n"
                                 f"nghttp2: {got!r:.300}\nhpack:   {want!r:.300}")
        if got == "error":
            break
    headers = [line.partition(b":")[::2] for line in data.split(b"\n")]
    enc, back = hpackcoder.Encoder(), RefDecoder(max_header_list_size=1 << 30)
    for _ in range(2):
        if back.decode(enc.encode(headers), raw=True) != headers:
            raise AssertionError(f"HPACK encoding of {headers!r:.300} does not decode back")


def check_h2_blocks(data: bytes) -> None:
    block = [line.partition(b"=")[::2] for line in data.split(b"\n") if line]
    for trailer in (False, True):
        got = (wsgi.native.h2_trailers(block) is None if trailer
               else type(wsgi.native.h2_request(block)) is not str)
        if got != _h2_accepts(block, trailer):
            raise AssertionError(f"h2_{'trailers' if trailer else 'request'} judges {block!r} "
                                 f"{'acceptable' if got else 'malformed'}; h2 does not")


def check(data: bytes) -> None:
    if len(data) < 2:
        return
    check_parser(data[2:], limits_from(data[0], data[1]))
    check_environ(data[2:])
    check_build_environ(data[0], data[2:])
    check_framing(data[0], data[1], data[2:])
    check_response_headers(data[2:])
    check_socket_gate(data[0], data[2:])
    check_hpack(data[1], data[2:])
    check_h2_blocks(data[2:])


def write_seeds(directory: str) -> None:
    os.makedirs(directory, exist_ok=True)
    for i, data in enumerate(CORPUS):
        with open(os.path.join(directory, f"corpus-{i:04d}"), "wb") as f:
            f.write(b"\xff\xff" + data)
    for i, data in enumerate(CORPUS[:40]):   # HPACK blocks of the corpus's heads
        block = RefEncoder().encode([line.partition(b":")[::2] for line in data.split(b"\n")])
        with open(os.path.join(directory, f"hpack-{i:04d}"), "wb") as f:
            f.write(b"\xff\xff" + block)


def main() -> None:
    print(f"fuzz_native: the extension under test is {asan_native.loaded or 'the normal build'}",
          file=sys.stderr)
    assert asan_native.loaded in (None, http1.native.__file__), "ktlswsgi loaded another build"
    assert http1.parser_name("c") == "c"
    seeds = os.environ.get("KTLSWSGI_FUZZ_SEEDS")
    if seeds:
        write_seeds(seeds)
    atheris.Setup(sys.argv, check)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
