"""The TLS transports: the interface of ``ktlswsgi.transport`` over OpenSSL.

Owns: one ``SSL`` object per connection, the single mapping of
``SSL_get_error`` to {done, want read, want write, closed, fatal}, the file
pump over TLS (``SSL_sendfile`` when kTLS TX engaged, else ``pread`` +
``SSL_write_ex``), and for the memory transport the movement of ciphertext
between the socket and the BIO pair.

Must not: block, sleep or wait (every call does what the socket allows now
and says what it waits for); know HTTP; ever hand plaintext to the socket.
The only gate for ``SSL_sendfile`` is ``BIO_get_ktls_send`` on the SSL's
write BIO, read once after the handshake (docs/ktls-facts.md: a raw sendfile on a
socket whose kTLS TX did not engage puts the file on the wire in clear).
An ``SSL`` object is used by one thread only (the reactor's).

Write contract shared by both transports (and compatible with OpenSSL's
"retry with the same buffer" rule): ``send``/``send_file`` return how many
bytes they *took*.  When the socket refuses a record half-way, the transport
keeps its own copy of that record's plaintext and finishes it in ``flush()``
(or at the start of the next ``send``/``send_file``/``shutdown``), so the
caller never has to repeat a call with the same arguments.  ``flush()``
returns False while anything is held back: wait for EPOLLOUT and call
``flush()`` again.
"""
from __future__ import annotations

import os
import socket

from ktlswsgi.transport import WANT_READ, WANT_WRITE, TransportError

from ktlswsgi.native import native as _native

from .binding import TLSError, drain_errors, ffi, lib
from .context import ServerContext

DONE = "done"
CLOSED = "closed"
FATAL = "fatal"

# A record OpenSSL holds for retry covers at most this much plaintext
# (16 KiB records; AES-CBC "multiblock" writes up to 8 records at once).
RETRY_MAX_BYTES = 8 * 16384
# 64 KiB: plaintext, ciphertext and the BIO pair stay in L2 between pread,
# encryption and send (measured, 1 MiB over the memory transport, req per
# server-CPU-second: 256 KiB 504-521, 128 KiB 535-608, 64 KiB 541-594, 32 KiB 508).
FILE_BUFFER_BYTES = 64 * 1024
# Bound on one SSL_sendfile call: the disk wait of a cold file is bounded by
# what one call may read (nginx's sendfile_max_chunk default).
SENDFILE_MAX_CHUNK_BYTES = 2 * 1024 * 1024
# kTLS TX: at most this much of a mutable caller buffer is copied per send().
KTLS_COPY_MAX_BYTES = 256 * 1024

# Memory transport BIO pair: ciphertext out (one pread chunk of records plus
# their headers and tags fits, so one send syscall carries ~16 records) and
# ciphertext in (several maximal records per recv syscall).
MEMORY_OUT_BYTES = FILE_BUFFER_BYTES + 16 * 1024
MEMORY_IN_BYTES = 64 * 1024

_alloc_uninitialised = ffi.new_allocator(should_clear_after_alloc=False)


def _address(cdata) -> int:
    return int(ffi.cast("uintptr_t", cdata))


def _bind_gate():
    """ktlswsgi._native's gate.c, given the TLS transports' steps: they are
    then called without releasing the GIL (None: not built, cffi calls)."""
    if _native is None:
        return None
    _native.tls_bind(*(_address(ffi.addressof(lib, name)) for name in (
        "Ktlswsgi_mem_read", "Ktlswsgi_mem_write", "Ktlswsgi_mem_flush",
        "Ktlswsgi_mem_has_pending", "Ktlswsgi_ssl_read", "Ktlswsgi_ssl_write")))
    return _native


_GATE = _bind_gate()
_STEP_DONE = lib.KTLSWSGI_STEP_DONE

_REASON_HINTS = {
    "http request": "plaintext HTTP on the TLS port",
    "https proxy request": "plaintext proxy request on the TLS port",
    "wrong version number": "not TLS, or a version this server does not speak",
    "unsupported protocol": "client offers only TLS versions below the minimum",
    "no shared cipher": "no cipher in common",
    "no application protocol": "no ALPN protocol in common",
}


class TLSTransportError(TransportError, TLSError):
    """A fatal TLS condition on one connection.  ``reason`` is OpenSSL's
    reason string (or errno text); ``phase`` is handshake/read/write/sendfile.
    The message is one short line, fit for a debug log."""

    def __init__(self, phase: str, reason: str, errors=()):
        hint = _REASON_HINTS.get(reason)
        text = "TLS %s failed: %s" % (phase, reason)
        if hint:
            text += " (%s)" % hint
        TLSError.__init__(self, text, errors, reason)
        self.phase = phase


def classify(ssl, rc: int):
    """THE interpretation of ``SSL_get_error``: -> (outcome, reason, entries).

    outcome is DONE, WANT_READ, WANT_WRITE, CLOSED or FATAL; entries is the
    drained error queue (empty unless FATAL/CLOSED by an error).  Call it right
    after the SSL call (the error queue was cleared before that call).  An EOF
    without close_notify is CLOSED, like a close_notify (SSL_OP_IGNORE_
    UNEXPECTED_EOF makes OpenSSL say ZERO_RETURN; older behaviour is mapped
    here too).  Fatal outcomes drain the queue into the reason.
    """
    err = lib.SSL_get_error(ssl, rc)
    return classify_error(err, rc, ffi.errno)


def classify_error(err: int, rc: int, saved_errno: int):
    """classify() for an SSL_get_error code already taken (by a C step)."""
    if err == lib.SSL_ERROR_NONE:
        return DONE, "", ()
    if err == lib.SSL_ERROR_WANT_READ:
        return WANT_READ, "", ()
    if err == lib.SSL_ERROR_WANT_WRITE:
        return WANT_WRITE, "", ()
    if err == lib.SSL_ERROR_ZERO_RETURN:
        return CLOSED, "close_notify", ()
    entries = drain_errors()
    reason = entries[0].reason if entries else ""
    if err == lib.SSL_ERROR_SYSCALL:
        if entries:
            return FATAL, reason, entries
        if saved_errno == 0 or rc == 0:
            return CLOSED, "eof", ()
        return FATAL, os.strerror(saved_errno), entries
    if err == lib.SSL_ERROR_SSL:
        if reason == "unexpected eof while reading":
            return CLOSED, "eof", entries
        return FATAL, reason or "SSL error", entries
    return FATAL, "SSL_get_error() = %d" % err, entries


class _TLSTransport:
    """What both TLS transports share; see the module docstring."""

    send_method = "ssl_write"
    file_method = "pread_ssl_write"

    def __init__(self, context: ServerContext, sock: socket.socket):
        if not isinstance(context, ServerContext):
            raise TypeError("context must be a ServerContext")
        self.context = context
        self.sock = sock
        sock.setblocking(False)
        self.fd = sock.fileno()
        lib.ERR_clear_error()
        ssl = lib.SSL_new(context.ctx)
        if ssl == ffi.NULL:
            raise TLSTransportError("setup", "SSL_new failed", drain_errors())
        self._ssl = ffi.gc(ssl, lib.SSL_free)
        lib.SSL_set_accept_state(ssl)
        self._size = ffi.new("size_t *")
        # handshaking -> open -> shut -> closed; failed after a fatal error.
        self.state = "handshaking"
        self.ktls_tx = False
        self.ktls_rx = False
        self._info = None
        self._read_eof = False
        self._close_notify_sent = False
        self._retry = None        # plaintext of a record OpenSSL holds for retry
        self._retry_off = 0
        self._file_buf = None     # bytearray, lazily, up to FILE_BUFFER_BYTES
        self._file_view = None
        self._held = None         # unsent tail of the last pread chunk
        self._held_fd = -1
        self._held_offset = -1
        # Per-connection counters (plaintext bytes).
        self.bytes_received = 0
        self.bytes_ssl_write = 0
        self.bytes_ssl_sendfile = 0
        self.bytes_pread = 0

    # -- hooks the two transports differ in -----------------------------
    def _pump(self, want: str, flush_first: bool = False):
        """OpenSSL wants I/O: do what moves it forward now.  None means
        "retry the SSL call"; otherwise the WANT to hand to the caller."""
        return want

    def _write_through(self) -> bool:
        return True

    def _outbound_held(self) -> bool:
        return False

    def _after_handshake(self) -> None:
        pass

    # -- helpers ---------------------------------------------------------
    def _fail(self, phase: str, reason: str, entries=()):
        self.state = "failed"
        return TLSTransportError(phase, reason, entries)

    def _check_open(self, phase: str):
        if self.state == "open" or self.state == "shut" and phase == "read":
            return
        if self.state == "handshaking":
            raise TransportError("TLS %s before the handshake finished" % phase)
        raise TransportError("TLS %s on a %s connection" % (phase, self.state))

    # -- the interface -------------------------------------------------
    def handshake(self):
        """None when done, else WANT_READ / WANT_WRITE; fatal -> TLSTransportError."""
        if self.state == "open":
            return None if self._write_through() else WANT_WRITE
        if self.state != "handshaking":
            raise TransportError("TLS handshake on a %s connection" % self.state)
        ssl = self._ssl
        while True:
            lib.ERR_clear_error()
            rc = lib.SSL_do_handshake(ssl)
            if rc == 1:
                break
            result = classify(ssl, rc)
            outcome = result[0]
            if outcome == WANT_READ or outcome == WANT_WRITE:
                nxt = self._pump(outcome, flush_first=True)
                if nxt is None:
                    continue
                return nxt
            if outcome == CLOSED:
                raise self._fail("handshake", "peer closed the connection during the handshake")
            raise self._fail("handshake", result[1], result[2])
        self.state = "open"
        self.ktls_tx = lib.BIO_ctrl(lib.SSL_get_wbio(ssl), lib.BIO_CTRL_GET_KTLS_SEND, 0, ffi.NULL) > 0
        self.ktls_rx = lib.BIO_ctrl(lib.SSL_get_rbio(ssl), lib.BIO_CTRL_GET_KTLS_RECV, 0, ffi.NULL) > 0
        self._after_handshake()
        return None if self._write_through() else WANT_WRITE

    def recv(self, max_bytes: int):
        """bytes (b"" = clean EOF: close_notify or EOF without it), or a WANT."""
        self._check_open("read")
        if self._read_eof:
            return b""
        ssl = self._ssl
        buf = _alloc_uninitialised("unsigned char[]", max_bytes)
        while True:
            lib.ERR_clear_error()
            rc = lib.SSL_read_ex(ssl, buf, max_bytes, self._size)
            if rc == 1:
                n = self._size[0]
                self.bytes_received += n
                if self._outbound_held():
                    self._write_through()   # e.g. a KeyUpdate answer; best effort
                return ffi.buffer(buf, n)[:]
            result = classify(ssl, rc)
            outcome = result[0]
            if outcome == WANT_READ or outcome == WANT_WRITE:
                nxt = self._pump(outcome)
                if nxt is None:
                    continue
                return nxt
            if outcome == CLOSED:
                self._read_eof = True
                return b""
            raise self._fail("read", result[1], result[2])

    def send(self, view):
        """int > 0 (bytes of ``view`` taken), or a WANT when nothing was taken."""
        self._check_open("write")
        if len(view) == 0:
            return 0
        taken = self._write(view, owned=False)
        if taken is WANT_READ or taken is WANT_WRITE:
            return taken
        self.bytes_ssl_write += taken
        self._write_through()
        return taken

    def send_more(self, view):
        """Like send(), for bytes the next write continues (a frame header
        whose payload send_file() sends next).  kTLS TX engaged: straight to the
        kernel with MSG_MORE, which holds them and starts the next record with
        them, so header and sendfile payload share one record.  The kernel
        encrypts them: this is only done on a socket whose kTLS TX is on."""
        if not self.ktls_tx or self._retry is not None:
            return self.send(view)
        self._check_open("write")
        try:
            n = self.sock.send(view, socket.MSG_MORE)
        except (BlockingIOError, InterruptedError):
            return WANT_WRITE
        self.bytes_ssl_write += n
        return n

    def send_file(self, fd: int, offset: int, count: int):
        """Bytes of the file taken (0: the file ended early), or a WANT.

        ``count`` is what remains of this transfer; the caller resumes from
        its own offset.  kTLS TX engaged: SSL_sendfile; else pread into one
        reusable 64 KiB buffer and SSL_write_ex (the unsent tail of a chunk
        is kept, so a resumed call does not read the file again).
        """
        self._check_open("write")
        if count <= 0:
            return 0
        if self._retry is not None:
            nxt = self._finish_retry()
            if nxt is not None:
                return nxt
        if self.ktls_tx:
            return self._ssl_sendfile(fd, offset, count)
        return self._pread_write(fd, offset, count)

    def send_alert(self) -> None:
        """After a failed handshake: put the alert OpenSSL queued on the wire
        (one non-blocking attempt; the connection closes next either way), so
        that the client learns why (protocol_version, handshake_failure, ...)
        instead of seeing a bare close."""
        if self._ssl is None:
            return
        try:
            self._write_through()
        except (TransportError, OSError):
            pass

    def has_pending(self) -> bool:
        """True when decrypted or buffered input waits that epoll will not announce."""
        return bool(lib.SSL_has_pending(self._ssl)) if self._ssl is not None else False

    def flush(self) -> bool:
        """True when nothing is held back for the socket; False: arm EPOLLOUT
        and call flush() again when writable."""
        if self.state not in ("open", "shut", "handshaking"):
            return True
        if self._retry is not None:
            if self._finish_retry() is not None:
                return False
        return self._write_through()

    def shutdown(self):
        """Send close_notify (once), then half-close; None when done, else a WANT."""
        if self.state != "open":
            return None
        if self._retry is not None:
            nxt = self._finish_retry()
            if nxt is not None:
                return nxt
        ssl = self._ssl
        # OpenSSL marks SENT_SHUTDOWN before the alert left: call again until
        # SSL_shutdown says 0/1, it is what dispatches a held alert.
        while not self._close_notify_sent:
            lib.ERR_clear_error()
            rc = lib.SSL_shutdown(ssl)
            if rc >= 0:
                self._close_notify_sent = True
                break
            result = classify(ssl, rc)
            if result[0] == WANT_WRITE:
                nxt = self._pump(WANT_WRITE)
                if nxt is None:
                    continue
                return nxt
            self._close_notify_sent = True   # peer gone or broken: nothing more to say
        if not self._write_through():
            return WANT_WRITE
        self.state = "shut"
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        return None

    def info(self) -> dict:
        """tls_version, cipher, alpn, sni, ktls ("tx,rx" | "tx" | "rx" | "off")."""
        if self._info is not None:
            return dict(self._info)
        if self._ssl is None:
            return {}
        ssl = self._ssl
        sni = lib.SSL_get_servername(ssl, lib.TLSEXT_NAMETYPE_host_name)
        info = {"sni": ffi.string(sni).decode("utf-8", "replace") if sni != ffi.NULL else None}
        if self.state == "handshaking":
            return info
        version = lib.SSL_get_version(ssl)
        cipher = lib.SSL_get_current_cipher(ssl)
        data = ffi.new("const unsigned char **")
        length = ffi.new("unsigned int *")
        lib.SSL_get0_alpn_selected(ssl, data, length)
        parts = [p for p, on in (("tx", self.ktls_tx), ("rx", self.ktls_rx)) if on]
        info.update({
            "tls_version": ffi.string(version).decode() if version != ffi.NULL else None,
            "cipher": ffi.string(lib.SSL_CIPHER_get_name(cipher)).decode()
            if cipher != ffi.NULL else None,
            "alpn": ffi.buffer(data[0], length[0])[:].decode("ascii", "replace")
            if length[0] else None,
            "ktls": ",".join(parts) or "off",
            "session_reused": bool(lib.SSL_session_reused(ssl)),
        })
        self._info = info
        return dict(info)

    def release_file_buffer(self) -> None:
        """Drop the pread buffer (the transfer ended or was abandoned)."""
        # A pending retry keeps its view of the old buffer, and with it the
        # buffer (OpenSSL may point into it); nothing writes that buffer again.
        self._held = None
        self._held_fd = self._held_offset = -1
        self._file_view = None
        self._file_buf = None

    def close(self) -> None:
        """Free the SSL object (exactly once) and close the socket. No close_notify:
        call shutdown() first for a clean close."""
        if self.state == "closed":
            return
        self.state = "closed"
        self.release_file_buffer()
        self._retry = None
        if self._ssl is not None:
            ffi.release(self._ssl)
            self._ssl = None
        self._close_extra()
        self.sock.close()

    def _close_extra(self) -> None:
        pass

    # -- the write engine -----------------------------------------------
    def _write(self, data, owned: bool):
        """SSL_write_ex as much of ``data`` as goes now -> int taken, or a WANT.

        On a WANT after OpenSSL built a record, that record's plaintext
        becomes ``self._retry`` and counts as taken; flush() finishes it.
        ``self._retry`` is always memory that stays alive and unchanged until
        then: a view of ``data`` when it is pinned (the transport's own
        buffer, or read-only bytes it keeps a reference to), else a copy.

        kTLS TX: OpenSSL 3.0 does not copy the plaintext of a record into its
        own buffer; a pending write keeps pointing into the caller's memory
        and is retried FROM THERE whatever pointer the retry passes.  So on a
        kTLS socket a mutable caller buffer is copied before SSL_write
        (measured in the kTLS VM: without this, a caller that reuses its
        buffer after send() put the new bytes on the wire).
        """
        if self._retry is not None:
            nxt = self._finish_retry()
            if nxt is not None:
                return nxt
        pinned = owned
        if not owned and self.ktls_tx:
            view = memoryview(data)
            data = view if view.readonly else bytes(view[:KTLS_COPY_MAX_BYTES])
            pinned = True
        total, want = self._write_loop(data, 0)
        if want is not None:
            total = self._keep_for_retry(data, total, pinned)
        return total

    def _send_open(self, view, pinned: bool):
        """send() once the caller checked the usual case: open, no record
        held for a retry, and `view` safe to write as it is (`pinned`: it
        cannot change before a retry, as _write's kTLS rule wants)."""
        if not len(view):
            return 0
        total, want = self._write_loop(view, 0)
        if want is not None:
            total = self._keep_for_retry(view, total, pinned)
        self.bytes_ssl_write += total
        return total

    def _keep_for_retry(self, data, total: int, pinned: bool) -> int:
        """After a write blocked at ``data[total:]``: the next record's
        plaintext becomes ``self._retry`` (a view when ``data`` is pinned,
        else a copy) and counts as taken.  Returns the new total."""
        k = min(len(data) - total, RETRY_MAX_BYTES)
        chunk = memoryview(data)[total:total + k]
        self._retry = chunk if pinned else bytes(chunk)
        self._retry_off = 0
        return total + k

    def _write_loop(self, data, off: int):
        """SSL_write_ex `data` from `off` until done or blocked.

        -> (new offset, None) when all is written, or (offset, WANT) when the
        socket blocks; fatal conditions raise.
        """
        ssl = self._ssl
        n = len(data)
        written = self._size
        with ffi.from_buffer(data) as base:
            while off < n:
                lib.ERR_clear_error()
                rc = lib.SSL_write_ex(ssl, base + off, n - off, written)
                if rc == 1:
                    off += written[0]
                    continue
                result = classify(ssl, rc)
                outcome = result[0]
                if outcome == WANT_READ or outcome == WANT_WRITE:
                    nxt = self._pump(outcome)
                    if nxt is None:
                        continue
                    return off, nxt
                if outcome == CLOSED:
                    raise self._fail("write", "peer closed the connection")
                raise self._fail("write", result[1], result[2])
        return off, None

    def _finish_retry(self):
        """Finish the record OpenSSL holds -> None when done, else a WANT."""
        self._retry_off, want = self._write_loop(self._retry, self._retry_off)
        if want is not None:
            return want
        self._retry = None
        self._retry_off = 0
        return None

    def _ssl_sendfile(self, fd: int, offset: int, count: int):
        ssl = self._ssl
        lib.ERR_clear_error()
        n = lib.SSL_sendfile(ssl, fd, offset, min(count, SENDFILE_MAX_CHUNK_BYTES), 0)
        if n >= 0:
            self.bytes_ssl_sendfile += n
            return n   # 0: the file ended early (shrank under us)
        result = classify(ssl, -1)
        if result[0] == WANT_WRITE or result[0] == WANT_READ:
            return result[0]
        if result[0] == CLOSED:
            raise self._fail("sendfile", "peer closed the connection")
        raise self._fail("sendfile", result[1], result[2])

    def _pread_write(self, fd: int, offset: int, count: int):
        if self._held is not None and self._held_fd == fd and self._held_offset == offset:
            data = self._held
        else:
            self._ensure_file_buffer(count)
            want = min(count, len(self._file_buf))
            got = os.preadv(fd, [self._file_view[:want]], offset)
            if got == 0:
                self.release_file_buffer()
                return 0
            self.bytes_pread += got
            data = self._file_view[:got]
        if len(data) > count:
            data = data[:count]
        taken = self._write(data, owned=True)
        if taken is WANT_READ or taken is WANT_WRITE:
            self._held, self._held_fd, self._held_offset = data, fd, offset
            return taken
        self.bytes_ssl_write += taken
        self._hold_tail(data[taken:], fd, offset + taken)
        self._write_through()
        if taken == count:
            self.release_file_buffer()   # the transfer is complete
        return taken

    def _ensure_file_buffer(self, count: int) -> None:
        if self._file_buf is None:
            # Sized to the transfer (count is what is left of it): a small
            # file must not pay for a whole buffer.
            self._file_buf = bytearray(min(FILE_BUFFER_BYTES, max(count, 4096)))
            self._file_view = memoryview(self._file_buf)

    def _hold_tail(self, rest, fd: int, offset: int) -> None:
        """Keep a chunk's unsent tail (file bytes from ``offset``) for the next call."""
        if len(rest):
            self._held, self._held_fd, self._held_offset = rest, fd, offset
        else:
            self._held = None
            self._held_fd = self._held_offset = -1


KEY_UPDATE_REASON = ("TLS 1.3 KeyUpdate requested by the peer on a kernel-TLS "
                     "connection: OpenSSL cannot rekey kTLS TX (openssl#16307); closing")


class SocketTransport(_TLSTransport):
    """OpenSSL on the socket itself (``SSL_set_fd``); with a context made with
    ``ktls=True`` OpenSSL promotes the socket to kTLS after the handshake
    when the kernel and cipher allow.  After ``handshake()`` returned None,
    ``ktls_tx`` / ``ktls_rx`` say what engaged (``BIO_get_ktls_send`` /
    ``BIO_get_ktls_recv``) and ``file_method`` is ``ssl_sendfile`` or
    ``pread_ssl_write``.  Every record costs one syscall here."""

    kind = "tls-socket"
    # gate.c (SSL_read / SSL_write without a GIL release), or None: cffi calls.
    _gate = _GATE

    def __init__(self, context: ServerContext, sock: socket.socket):
        super().__init__(context, sock)
        if not lib.SSL_set_fd(self._ssl, self.fd):
            err = drain_errors()
            self.close()
            raise TLSTransportError("setup", "SSL_set_fd failed", err)
        self._step = ffi.new("Ktlswsgi_step *")
        # For _gate: (SSL, step) addresses, valid while _ssl is set (close()
        # clears it).
        self._gate_at = (_address(self._ssl), _address(self._step))

    _key_update_flag = None

    def _after_handshake(self) -> None:
        self.file_method = "ssl_sendfile" if self.ktls_tx else "pread_ssl_write"
        if not self.ktls_rx:
            # OpenSSL reads TLS records from the socket itself: without
            # read-ahead every record costs two reads (its 5-byte header,
            # then its body).  Not with kTLS RX, which wants whole records
            # left in the kernel (and set only now: OpenSSL enables kTLS RX
            # at the handshake's key change only if nothing is read ahead).
            lib.SSL_set_read_ahead(self._ssl, 1)
        if self.ktls_tx and lib.SSL_version(self._ssl) >= lib.TLS1_3_VERSION:
            # The kernel would go on encrypting with the old key after we
            # answer a KeyUpdate: the client then sees bad_record_mac.
            self._key_update_flag = ffi.new("int *")
            lib.Ktlswsgi_watch_key_update(self._ssl, self._key_update_flag)

    def send(self, view):
        """As the base class's send(): the usual case (open, no record held
        for a retry; with kTLS TX only bytes, which cannot change under
        OpenSSL's pending record) in one gate step, without its checks."""
        if (self._gate is None or self.state != "open" or self._retry is not None
                or (self.ktls_tx and type(view) is not bytes)):
            return super().send(view)
        return self._send_open(view, self.ktls_tx)

    def recv(self, max_bytes: int):
        gate = self._gate
        if gate is not None and self.state == "open" and not self._read_eof and self._ssl:
            ssl_at, step_at = self._gate_at
            result = gate.ssl_read(ssl_at, step_at, max_bytes)
            if self._step.outcome == _STEP_DONE:
                self.bytes_received += len(result)
            else:
                result = self._read_failed()
        else:
            result = super().recv(max_bytes)
        flag = self._key_update_flag
        if flag is not None and flag[0]:
            # Nothing more may be written with the stale kernel key, not
            # even close_notify: the caller closes the socket.
            err = self._fail("read", KEY_UPDATE_REASON)
            err.notable = True
            raise err
        return result

    def has_pending(self) -> bool:
        """As the base class's, through the gate: records read ahead, or
        decrypted bytes, wait that epoll will not announce."""
        gate = self._gate
        if gate is not None and self._ssl:
            return gate.has_pending(self._gate_at[0])
        return super().has_pending()

    def _read_failed(self):
        """The gated read's failure, as the base class's recv() takes it."""
        st = self._step
        result = classify_error(st.ssl_error, st.rc, st.sys_errno)
        outcome = result[0]
        if outcome == WANT_READ or outcome == WANT_WRITE:
            return outcome
        if outcome == CLOSED:
            self._read_eof = True
            return b""
        raise self._fail("read", result[1], result[2])

    def _write_loop(self, data, off: int):
        gate = self._gate
        if gate is None:
            return super()._write_loop(data, off)
        ssl_at, step_at = self._gate_at
        off = gate.ssl_write(ssl_at, step_at, data, off)
        st = self._step
        if st.outcome == _STEP_DONE:
            return off, None
        result = classify_error(st.ssl_error, st.rc, st.sys_errno)
        outcome = result[0]
        if outcome == WANT_READ or outcome == WANT_WRITE:
            return off, outcome
        if outcome == CLOSED:
            raise self._fail("write", "peer closed the connection")
        raise self._fail("write", result[1], result[2])


class MemoryTransport(_TLSTransport):
    """OpenSSL over a BIO pair; this transport moves ciphertext between the
    socket and the pair itself (no kTLS ever: the SSL never sees the socket).
    Records written by one send()/send_file() call leave in as few send
    syscalls as the socket allows (one pread chunk = ~16 records = one send).
    Both BIO buffers are bounded (``out_bytes``, ``in_bytes``)."""

    kind = "tls-memory"
    # gate.c (the steps without a GIL release), or None: cffi calls.
    _gate = _GATE

    def __init__(self, context: ServerContext, sock: socket.socket, *,
                 out_bytes: int = MEMORY_OUT_BYTES, in_bytes: int = MEMORY_IN_BYTES):
        super().__init__(context, sock)
        self._net = None
        # The C engine's outcome and counters (eof_in, syscall counts).
        self._step = ffi.new("Ktlswsgi_step *")
        lib.SSL_clear_options(self._ssl, lib.SSL_OP_ENABLE_KTLS)
        internal = ffi.new("BIO **")
        network = ffi.new("BIO **")
        lib.ERR_clear_error()
        if not lib.BIO_new_bio_pair(internal, out_bytes, network, in_bytes):
            err = drain_errors()
            self.close()
            raise TLSTransportError("setup", "BIO_new_bio_pair failed", err)
        self._net = ffi.gc(network[0], lib.BIO_free)
        lib.SSL_set_bio(self._ssl, internal[0], internal[0])   # the SSL owns it
        # For _gate: (SSL, network BIO, step) addresses, valid while _net is
        # set (close() clears it first).
        self._gate_at = (_address(self._ssl), _address(self._net), _address(self._step))

    def _close_extra(self) -> None:
        if self._net is not None:
            ffi.release(self._net)
            self._net = None

    @property
    def _eof_in(self) -> bool:
        return bool(self._step.eof_in)

    @property
    def socket_sends(self) -> int:
        return self._step.sends

    @property
    def socket_recvs(self) -> int:
        return self._step.recvs

    def send(self, view):
        """As the base class's send(): the usual case (open, no record held
        for a retry) without its checks, and without a second flush (the
        write step ends by sending what it encrypted)."""
        if self.state != "open" or self._retry is not None or self._net is None:
            return super().send(view)
        return self._send_open(view, False)

    def has_pending(self) -> bool:
        """Decrypted bytes, or ciphertext read from the socket but not yet by OpenSSL."""
        if self._net is None:
            return self._ssl is not None and bool(lib.Ktlswsgi_mem_has_pending(self._ssl))
        gate = self._gate
        if gate is not None:
            return gate.has_pending(self._gate_at[0])
        return bool(lib.Ktlswsgi_mem_has_pending(self._ssl))

    # -- the hot paths, one C call each (Ktlswsgi_mem_* in _csrc/memtransport.c) --
    def recv(self, max_bytes: int):
        if self.state != "open" or self._net is None:
            return super().recv(max_bytes)   # its checks and errors
        if self._read_eof:
            return b""
        st = self._step
        gate = self._gate
        if gate is not None:
            ssl_at, net_at, step_at = self._gate_at
            data = gate.mem_read(ssl_at, net_at, step_at, self.fd, max_bytes)
            if st.outcome == _STEP_DONE:
                self.bytes_received += len(data)
                return data
        else:
            buf = _alloc_uninitialised("unsigned char[]", max_bytes)
            n = lib.Ktlswsgi_mem_read(self._ssl, self._net, self.fd, buf, max_bytes, st)
            if st.outcome == _STEP_DONE:
                self.bytes_received += n
                return ffi.buffer(buf, n)[:]
        want = self._step_outcome("read")
        if want is CLOSED:
            self._read_eof = True
            return b""
        return want

    def _write_loop(self, data, off: int):
        st = self._step
        gate = self._gate
        if gate is not None:
            ssl_at, net_at, step_at = self._gate_at
            off = gate.mem_write(ssl_at, net_at, step_at, self.fd, data, off)
        else:
            with ffi.from_buffer("unsigned char[]", data) as base:
                off = lib.Ktlswsgi_mem_write(self._ssl, self._net, self.fd, base, len(data),
                                             off, st)
        if st.outcome == _STEP_DONE:
            return off, None
        want = self._step_outcome("write")
        if want is CLOSED:
            raise self._fail("write", "peer closed the connection")
        if want == WANT_READ:
            # OpenSSL wants input in the middle of a write: feed the pair.
            nxt = self._pump(WANT_READ)
            if nxt is None:
                return self._write_loop(data, off)
            return off, nxt
        return off, want

    # At most this much of a file per C step: with the pump's own budget,
    # other connections still get the reactor within a turn.
    _PREAD_STEP_BYTES = 4 * FILE_BUFFER_BYTES

    def _pread_write(self, fd: int, offset: int, count: int):
        """The base class's pread + SSL_write, as one C call for whole chunks.

        Where the base class would hold something (a record OpenSSL must
        retry, an unsent tail of a chunk), its own path runs, so the retry
        rules live in one place; a chunk blocked half-way here is left in
        exactly the state that path expects."""
        if (self._net is None or self._retry is not None
                or (self._held is not None and self._held_fd == fd
                    and self._held_offset == offset)):
            return super()._pread_write(fd, offset, count)
        self._ensure_file_buffer(count)
        buf = self._file_buf
        st = self._step
        with ffi.from_buffer("unsigned char[]", buf) as base:
            taken = lib.Ktlswsgi_mem_pread_write(
                self._ssl, self._net, self.fd, fd, offset,
                min(count, self._PREAD_STEP_BYTES), base, len(buf), st)
        outcome = st.outcome
        if outcome == lib.KTLSWSGI_STEP_DONE:
            self.bytes_pread += taken
            self.bytes_ssl_write += taken
            self._hold_tail(b"", fd, -1)
            if taken == 0 or taken == count:
                self.release_file_buffer()   # the file ended early, or the transfer is done
            return taken
        if outcome == lib.KTLSWSGI_STEP_FILE_FAILED:
            raise OSError(st.sys_errno, os.strerror(st.sys_errno))
        want = self._step_outcome("write")   # raises on the fatal outcomes
        if want is CLOSED:
            raise self._fail("write", "peer closed the connection")
        # Blocked inside the last chunk: as _write() after a blocked
        # _write_loop, the next record's plaintext becomes the retry and
        # counts as taken; the rest of the chunk is held for the next call.
        n, off = st.chunk_len, st.chunk_off
        self.bytes_pread += taken - off + n
        data = self._file_view[:n]
        done_in_chunk = self._keep_for_retry(data, off, pinned=True)
        taken += done_in_chunk - off
        self.bytes_ssl_write += taken
        self._hold_tail(data[done_in_chunk:], fd, offset + taken)
        return taken

    def _step_outcome(self, phase: str):
        """WANT_READ / WANT_WRITE / CLOSED from a C step that did not finish;
        raises TLSTransportError for the fatal ones."""
        st = self._step
        outcome = st.outcome
        if outcome == lib.KTLSWSGI_STEP_WANT_READ:
            return WANT_READ
        if outcome == lib.KTLSWSGI_STEP_WANT_WRITE:
            return WANT_WRITE
        if outcome == lib.KTLSWSGI_STEP_SSL_FAILED:
            result = classify_error(st.ssl_error, st.rc, st.sys_errno)
            if result[0] == WANT_READ or result[0] == WANT_WRITE:
                return result[0]
            if result[0] == CLOSED:
                return CLOSED
            raise self._fail(phase, result[1], result[2])
        if outcome == lib.KTLSWSGI_STEP_SOCKET_FAILED:
            raise self._fail(phase, self._socket_reason())
        if outcome == lib.KTLSWSGI_STEP_PEER_GONE:
            raise self._fail(phase, "peer closed the connection")
        raise self._fail(phase, "inbound TLS buffer full")

    def _outbound_held(self) -> bool:
        return self._net is not None and lib.BIO_ctrl_pending(self._net) > 0

    def _send_out(self) -> int:
        """Send held ciphertext; -> bytes sent (stops when the socket is full)."""
        sent = lib.Ktlswsgi_mem_send_out(self._net, self.fd, self._step)
        if sent < 0:
            raise self._fail("write", self._socket_reason())
        return sent

    def _socket_reason(self) -> str:
        errno = self._step.sys_errno
        return os.strerror(errno) if errno else "socket error"

    def _write_through(self) -> bool:
        if self._net is None:
            return True
        st = self._step
        gate = self._gate
        if gate is not None:
            _, net_at, step_at = self._gate_at
            if gate.mem_flush(net_at, step_at, self.fd):
                return True
        elif lib.Ktlswsgi_mem_flush(self._net, self.fd, st):
            return True
        if st.outcome == lib.KTLSWSGI_STEP_SOCKET_FAILED:
            raise self._fail("write", self._socket_reason())
        return False

    def _fill_in(self):
        """Read ciphertext from the socket into the pair -> bytes read, 0 at
        EOF (the pair is then shut so OpenSSL sees it), None when the socket
        has nothing now."""
        st = self._step
        got = lib.Ktlswsgi_mem_fill_in(self._net, self.fd, st)
        if got >= 0:
            return got
        if st.outcome == lib.KTLSWSGI_STEP_WANT_READ:
            return None
        if st.outcome == lib.KTLSWSGI_STEP_INBUF_FULL:
            raise self._fail("read", "inbound TLS buffer full")
        raise self._fail("read", self._socket_reason())

    def _pump(self, want: str, flush_first: bool = False):
        if want == WANT_WRITE:
            # The pair's outbound side is full: make room on the socket.
            return None if self._send_out() > 0 else WANT_WRITE
        if flush_first and not self._write_through():
            return WANT_WRITE   # the peer waits for our flight first
        if self._eof_in:
            # OpenSSL was shown the EOF and still wants input: never spin.
            raise self._fail("read", "peer closed the connection")
        got = self._fill_in()
        if got is None:
            self._write_through()
            return WANT_READ
        return None   # new bytes (or EOF now visible): retry the SSL call
