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

    def file_range(self):
        """(fd, offset, size_left) when this wraps a regular file, else None.

        The offset is the file's current position (PEP 3333: transmission
        starts there); size_left is what the file holds from there now.
        """
        fileno = getattr(self.filelike, "fileno", None)
        if fileno is None:
            return None
        try:
            fd = fileno()
            st = os.fstat(fd)
        except (OSError, ValueError, AttributeError, TypeError):
            return None
        if not isinstance(fd, int) or not stat.S_ISREG(st.st_mode):
            return None
        try:
            tell = getattr(self.filelike, "tell", None)
            offset = tell() if tell is not None else os.lseek(fd, 0, os.SEEK_CUR)
        except (OSError, ValueError):
            return None
        return fd, offset, max(0, st.st_size - offset)


def closes_only_a_file(closer) -> bool:
    """True when `closer.close()` is just open()'s own file object closing:
    our wrapper, a plain file, and nobody re-pointed either close at app code
    (Django sets `file.close = response.close`, which fires request_finished)."""
    if type(closer) is not FileWrapper:
        return False
    f = closer.filelike
    return (type(f) in _PLAIN_FILES and "close" not in getattr(f, "__dict__", ())
            and closer.close == f.close)
