"""`wsgi.file_wrapper`: a file-like wrapped so the server can send it itself.

Owns: the FileWrapper class (PEP 3333 "Optional Platform-Specific File
Handling") and the test of whether the server may take the fast path.  The
wrapper iterates like any WSGI body, so middleware that consumes it works; the
server recognises its own wrappers around regular files and queues a file range
instead (sendfile / SSL_sendfile / pread, chosen by the transport).

On HTTP/1, a file of at most INLINE_FILE_BYTES is read by the worker
instead and leaves with its response head in one write (one TLS record, one
send), unless kTLS TX is engaged, where SSL_sendfile keeps files out of
userspace whatever their size.  HTTP/2 streams keep the file path, whose
preadv fills framed DATA directly without h2's per-frame Python (inlined, a
16 KiB file measured 4004 -> 3313 req/CPU-s).  Measured with bench/ab.sh
(userspace TLS, server on one core): a 1-byte file costs a quarter less CPU
that way, a 16 KiB one a tenth less; at 64 KiB the copy loses.
"""
from __future__ import annotations

import io
import os
import stat

INLINE_FILE_BYTES = 16 * 1024
_PLAIN_FILES = (io.BufferedReader, io.FileIO)


class FileWrapper:
    def __init__(self, filelike, blksize: int = 8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, "close"):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def __getitem__(self, key):  # the PEP's pre-iterator protocol, kept for old callers
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise IndexError

    # Werkzeug's _RangeWrapper seeks a seekable body instead of reading and
    # discarding the bytes before a range (waitress issue #359).
    def seekable(self) -> bool:
        seekable = getattr(self.filelike, "seekable", None)
        try:
            return bool(seekable()) if seekable is not None else False
        except (OSError, ValueError):
            return False

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return self.filelike.seek(offset, whence)

    def tell(self) -> int:
        return self.filelike.tell()


def file_range(result):
    """(fd, offset, available) when the response iterable `result` is exactly
    one of the known shapes of "bytes of a regular file", else None:

    - our FileWrapper around a file: from the file's current position to its
      end (PEP 3333: transmission starts there); Django's FileResponse;
    - our FileWrapper around whitenoise's SlicedFile (its 206): the slice;
    - Werkzeug's _RangeWrapper around our FileWrapper, not yet iterated
      (Flask's and Werkzeug's send_file with Range: 206): its byte range.

    Types are matched exactly (no subclasses, no duck typing): any other
    iterable is iterated as the app gave it.  `available` is what the file
    holds of the range now; the caller bounds it by Content-Length.
    """
    kind = type(result)
    if kind is FileWrapper:
        f = result.filelike
        if _is_type(f, "whitenoise.responders", "SlicedFile"):
            remaining = getattr(f, "remaining", None)
            if type(remaining) is not int or remaining < 0:
                return None
            return _regular_file_range(getattr(f, "fileobj", None), None, remaining)
        return _regular_file_range(f, None, None)
    if _is_type(result, "werkzeug.wsgi", "_RangeWrapper"):
        inner = getattr(result, "iterable", None)
        start, length = getattr(result, "start_byte", None), getattr(result, "byte_range", None)
        if (type(inner) is not FileWrapper or getattr(result, "seekable", None) is not True
                or getattr(result, "read_length", None) != 0 or result.end_reached
                or type(start) is not int or start < 0
                or not (length is None or (type(length) is int and length >= 0))):
            return None
        return _regular_file_range(inner.filelike, start, length)
    return None


def _is_type(obj, module: str, qualname: str) -> bool:
    kind = type(obj)
    return kind.__qualname__ == qualname and kind.__module__ == module


def _regular_file_range(f, offset, count):
    """(fd, offset, available) of `f` if it is a regular file: from `offset`
    (None: its current position), at most `count` bytes (None: to its end)."""
    fileno = getattr(f, "fileno", None)
    if fileno is None:
        return None
    try:
        fd = fileno()
        st = os.fstat(fd)
    except (OSError, ValueError, AttributeError, TypeError):
        return None
    if not isinstance(fd, int) or not stat.S_ISREG(st.st_mode):
        return None
    if offset is None:
        try:
            tell = getattr(f, "tell", None)
            offset = tell() if tell is not None else os.lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError):
            return None
    available = max(0, st.st_size - offset)
    return fd, offset, available if count is None else min(count, available)


def closes_only_a_file(closer) -> bool:
    """True when `closer.close()` is just open()'s own file object closing:
    our wrapper (or Werkzeug's _RangeWrapper around it), a plain file, and
    nobody re-pointed either close at app code (Django sets `file.close =
    response.close`, which fires request_finished)."""
    if _is_type(closer, "werkzeug.wsgi", "_RangeWrapper"):
        closer = getattr(closer, "iterable", None)
    if type(closer) is not FileWrapper:
        return False
    f = closer.filelike
    return (type(f) in _PLAIN_FILES and "close" not in getattr(f, "__dict__", ())
            and closer.close == f.close)
