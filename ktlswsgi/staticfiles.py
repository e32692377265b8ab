"""Files the server finds itself: `--static` mounts and X-Sendfile / X-Accel-Redirect.

Owns: opening a file beneath a root so that no request can leave it
(openat2 with RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS where the kernel has
it; else a walk that opens each component with O_NOFOLLOW, so every symlink
is refused), the URL-path rules of a mount (dotfiles and `..` refused, no
directory listing, no index files), precompressed sidecars (.br, .zst, .gz)
chosen by Accept-Encoding, Cache-Control by name, and answering a file
(fileanswer.py) as our FileWrapper, so the response takes the zero-copy
path like any other file (sendfile, SSL_sendfile under kTLS, pread).

Runs on the worker threads: open() and stat() may wait on a cold disk, the
reactor never does.  Each root directory is opened once at start (a deploy
that swaps the directory behind a path takes effect on reload).  Logs fixed
reasons only: never a path from a header.
"""
from __future__ import annotations

import ctypes
import errno
import logging
import os
import re
import stat

from . import fileanswer
from .filewrapper import FileWrapper
from .wsgi import close_iterable

log = logging.getLogger("ktlswsgi.files")

_SYS_OPENAT2 = 437            # the same number on every Linux architecture (5.6+)
_RESOLVE_NO_MAGICLINKS = 0x02
_RESOLVE_BENEATH = 0x08
_OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY | os.O_NONBLOCK
_SIDECARS = (("br", ".br"), ("zstd", ".zst"), ("gzip", ".gz"))
_HASHED = re.compile(r".+\.[0-9a-f]{8,32}\.[^./]+")   # app.3f2a9c1d.js (whitenoise's test)
_IMMUTABLE = "public, max-age=31536000, immutable"
_COMPRESSIBLE = re.compile(r"text/|application/(javascript|json|xml|wasm)|image/svg")
_FROM_APP_DROPPED = {"content-length", "content-range", "accept-ranges", "etag", "last-modified",
                     "content-encoding", "x-sendfile", "x-accel-redirect", "transfer-encoding"}


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64),
                ("resolve", ctypes.c_uint64)]


_libc = ctypes.CDLL(None, use_errno=True)
_openat2_works: bool | None = None   # probed on first use


class Refused(Exception):
    """The path may not be opened (outside the root, a symlink out, a dotfile)."""


def _openat2(dirfd: int, path: bytes) -> int:
    how = _OpenHow(_OPEN_FLAGS, 0, _RESOLVE_BENEATH | _RESOLVE_NO_MAGICLINKS)
    fd = _libc.syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dirfd), ctypes.c_char_p(path),
                       ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))
    return fd


def _walk_open(dirfd: int, parts: list) -> int:
    """The fallback: each directory opened with O_NOFOLLOW beneath the last."""
    fds = []
    try:
        cur = dirfd
        for part in parts[:-1]:
            cur = os.open(part, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=cur)
            fds.append(cur)
        return os.open(parts[-1], _OPEN_FLAGS | os.O_NOFOLLOW, dir_fd=cur)
    finally:
        for fd in fds:
            os.close(fd)


def open_beneath(dirfd: int, parts: list):
    """(fd, stat) of the regular file at the path components `parts` beneath
    the directory `dirfd`.  Raises Refused for a path that would leave it
    (`..`, an absolute path, a symlink out), FileNotFoundError when nothing
    regular is there, PermissionError when it cannot be read."""
    global _openat2_works
    if not parts or any(not p or p in (b".", b"..") or b"\0" in p or b"/" in p for p in parts):
        raise Refused("not a path beneath the root")
    fd = -1
    if _openat2_works is not False:
        try:
            fd = _openat2(dirfd, b"/".join(parts))
            _openat2_works = True
        except OSError as exc:
            if exc.errno in (errno.ENOSYS, errno.EPERM) and _openat2_works is None:
                _openat2_works = False    # no openat2 here (old kernel, seccomp)
                log.info("openat2 unavailable (%s): files are opened component by "
                         "component and symlinks are refused", errno.errorcode.get(exc.errno))
            elif exc.errno == errno.EXDEV:
                raise Refused("the path leaves the root") from None
            elif exc.errno in (errno.ENOENT, errno.ENOTDIR):
                raise FileNotFoundError() from None
            elif exc.errno == errno.EACCES:
                raise PermissionError() from None
            elif exc.errno == errno.ELOOP:
                raise Refused("too many symlinks") from None
            else:
                raise
    if fd < 0:
        try:
            fd = _walk_open(dirfd, parts)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Refused("a symlink on the path") from None
            if exc.errno in (errno.ENOENT, errno.ENOTDIR):   # ENOTDIR: also a symlinked dir
                raise FileNotFoundError() from None
            if exc.errno == errno.EACCES:
                raise PermissionError() from None
            raise
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise FileNotFoundError()
    return fd, st


def _open_dir(path: str) -> int:
    return os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)


def file_response(fd: int, st, name: str, environ: dict, start_response, headers=()):
    """Answer the request with the open file `fd` (its stat `st`; `name` gives
    the Content-Type when `headers` has none): a WSGI response whose body is
    our FileWrapper at the range's offset, or empty (304, 412, 416, HEAD)."""
    if not any(n.lower() == "content-type" for n, _ in headers):
        headers = [("Content-Type", fileanswer.content_type(name)), *headers]
    a = fileanswer.answer(environ, st, headers)
    start_response(a.status, a.headers)
    if a.count == 0 or environ.get("REQUEST_METHOD") == "HEAD":
        os.close(fd)
        return []
    f = os.fdopen(fd, "rb")
    f.seek(a.offset)
    return FileWrapper(f)


def _accepted(environ: dict) -> set:
    """The codings of Accept-Encoding with a non-zero q."""
    out = set()
    for item in environ.get("HTTP_ACCEPT_ENCODING", "").split(","):
        coding, _, params = item.partition(";")
        q = params.strip().lower()
        if q.startswith("q=") and q[2:].strip() in ("0", "0.0", "0.00", "0.000"):
            continue
        out.add(coding.strip().lower())
    return out


class Static:
    """The `--static PREFIX=DIR` mounts in front of the app (a WSGI app)."""

    def __init__(self, mounts, app, max_age_s: int):
        self.app = app
        self.max_age = f"public, max-age={max_age_s}"
        # Longest prefix first: /static/img/ wins over /static/.
        self.mounts = sorted(((prefix.rstrip("/") + "/", _open_dir(d)) for prefix, d in mounts),
                             key=lambda m: -len(m[0]))

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, dirfd in self.mounts:
            if path.startswith(prefix):
                found = self._find(dirfd, path[len(prefix):], environ)
                if found is not None:
                    return self._answer(found, environ, start_response)
                break
        return self.app(environ, start_response)

    def _find(self, dirfd: int, rel: str, environ: dict):
        # PATH_INFO is the decoded path as latin-1 (PEP 3333): back to bytes.
        parts = [p for p in rel.encode("latin-1").split(b"/") if p]
        if not parts or any(p.startswith(b".") for p in parts):
            return None   # a dotfile, `..`, or the mount's directory itself
        try:
            fd, st = open_beneath(dirfd, parts)
        except (Refused, FileNotFoundError, PermissionError, NotADirectoryError):
            return None
        name = parts[-1].decode("latin-1")
        coding = None
        kind = fileanswer.content_type(name)
        if _COMPRESSIBLE.match(kind):
            accepted = _accepted(environ)
            for token, suffix in _SIDECARS:
                if token not in accepted:
                    continue
                try:
                    side_fd, side_st = open_beneath(dirfd, parts[:-1] + [parts[-1] + suffix.encode()])
                except (Refused, FileNotFoundError, PermissionError, NotADirectoryError):
                    continue
                os.close(fd)
                fd, st, coding = side_fd, side_st, token
                break
        return fd, st, name, kind, coding

    def _answer(self, found, environ, start_response):
        fd, st, name, kind, coding = found
        method = environ.get("REQUEST_METHOD")
        if method not in ("GET", "HEAD"):
            os.close(fd)
            start_response("405 Method Not Allowed",
                           [("Allow", "GET, HEAD"), ("Content-Length", "0")])
            return []
        headers = [("Content-Type", kind),
                   ("Cache-Control", _IMMUTABLE if _HASHED.fullmatch(name) else self.max_age)]
        if _COMPRESSIBLE.match(kind):
            headers.append(("Vary", "Accept-Encoding"))
        if coding is not None:
            headers.append(("Content-Encoding", coding))
        return file_response(fd, st, name, environ, start_response, headers)


class SendfileRoots:
    """`--sendfile-root`: where X-Sendfile paths and X-Accel-Redirect URLs may point."""

    def __init__(self, entries):
        self.roots = []        # (directory path with a trailing /, dirfd): X-Sendfile
        self.locations = []    # (URL prefix with a trailing /, dirfd): X-Accel-Redirect
        for entry in entries:
            prefix, eq, directory = entry.partition("=")
            if eq:
                self.locations.append((prefix.rstrip("/") + "/", _open_dir(directory)))
            else:
                # Apps name files by the path they were given (Flask joins its
                # root_path) or by the resolved one: either prefix matches.
                dirfd = _open_dir(entry)
                for spelling in {os.path.abspath(entry), os.path.realpath(entry)}:
                    self.roots.append((spelling.rstrip("/") + "/", dirfd))
        self.locations.sort(key=lambda m: -len(m[0]))
        self.roots.sort(key=lambda m: -len(m[0]))

    def resolve(self, header: str, value: str):
        """(dirfd, path components) the header names, or raise Refused."""
        if header == "x-accel-redirect":
            from urllib.parse import unquote_to_bytes
            path = unquote_to_bytes(value.split("?", 1)[0])
            table = self.locations
        else:
            path = value.encode("utf-8", "surrogateescape")
            table = self.roots
        for prefix, dirfd in table:
            p = prefix.encode("utf-8", "surrogateescape")
            if path.startswith(p):
                return dirfd, [c for c in path[len(p):].split(b"/") if c]
        raise Refused("not beneath a --sendfile-root")

    def respond(self, header: str, value: str, app_headers, environ, start_response):
        """The file the app's X-Sendfile / X-Accel-Redirect names, answered in
        full (Range, ETag/304) with the app's other headers; 403/404 with a
        log line when it cannot be (the reason, never the path)."""
        try:
            dirfd, parts = self.resolve(header, value)
            fd, st = open_beneath(dirfd, parts)
        except Refused as exc:
            return _refuse(environ, start_response, 403, f"{header}: {exc}")
        except PermissionError:
            return _refuse(environ, start_response, 403, f"{header}: the file is not readable")
        except (FileNotFoundError, NotADirectoryError):
            return _refuse(environ, start_response, 404, f"{header}: no such regular file")
        kept = [(n, v) for n, v in app_headers if n.lower() not in _FROM_APP_DROPPED]
        return file_response(fd, st, parts[-1].decode("latin-1"), environ, start_response, kept)


def _refuse(environ, start_response, status: int, reason: str):
    log.warning("%s %s: %s: %d", environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"),
                reason, status)
    body = b"Not Found\n" if status == 404 else b"Forbidden\n"
    start_response("404 Not Found" if status == 404 else "403 Forbidden",
                   [("Content-Type", "text/plain; charset=utf-8"),
                    ("Content-Length", str(len(body)))])
    return [body]


class Sendfile:
    """`--sendfile-root` in front of the app: a response carrying X-Sendfile
    or X-Accel-Redirect is replaced by the file it names (the app's body,
    empty by that contract, is closed unread; its other headers are kept)."""

    def __init__(self, roots: SendfileRoots, app):
        self.roots = roots
        self.app = app

    def __call__(self, environ, start_response):
        named = []
        returned = []

        def capture(status, headers, exc_info=None):
            # An app that calls start_response only once iterated (a
            # generator) is past replacing: its headers go out as they are.
            if not exc_info and not returned:
                for name, value in headers:
                    low = name.lower()
                    if low in ("x-sendfile", "x-accel-redirect"):
                        named.append((low, value, headers))
                        return _no_write
            return start_response(status, headers, exc_info)

        result = self.app(environ, capture)
        returned.append(True)
        if not named:
            return result
        close_iterable(result)
        low, value, headers = named[-1]
        return self.roots.respond(low, value, headers, environ, start_response)


def _no_write(data) -> None:
    """write() of a response that becomes a file: its bytes are dropped."""


def wrap(app, config):
    """The app behind `--sendfile-root` and `--static`, when they are set."""
    if config.sendfile_root:
        app = Sendfile(SendfileRoots(config.sendfile_root), app)
    if config.static:
        app = Static([entry.split("=", 1) for entry in config.static], app,
                     config.static_max_age_s)
    return app
