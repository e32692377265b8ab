/* The memory transport's engine (MemoryTransport in transports.py): OpenSSL
   works on a BIO pair, and these functions move ciphertext between the
   pair's network end and a non-blocking socket around each SSL call.  Each
   step is one call from Python: every cffi call releases and re-takes the
   GIL, and a reactor that gives the GIL up ten times per request hands the
   core to a worker ten times.

   Every function reports through a Ktlswsgi_step: its outcome, and on
   failure the SSL error, return code and errno Python classifies.  Lengths
   handed to BIO_nread/BIO_nwrite never exceed what BIO_nread0/BIO_nwrite0
   offered; a step never blocks and never sleeps. */
#include <errno.h>
#include <limits.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#include "ktlswsgi_tls.h"

/* Send held ciphertext until the pair is empty or the socket is full.
   Returns the bytes sent (0: nothing held, or the socket took nothing), or
   -1 with outcome SOCKET_FAILED and sys_errno. */
ssize_t Ktlswsgi_mem_send_out(BIO *net, int fd, Ktlswsgi_step *st)
{
    ssize_t total = 0;
    char *p;
    for (;;) {
        int n = BIO_nread0(net, &p);
        if (n <= 0)
            return total;
        ssize_t sent = send(fd, p, (size_t)n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return total;
            st->sys_errno = errno;
            st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
            return -1;
        }
        st->sends++;
        BIO_nread(net, &p, (int)sent);   /* sent <= n <= INT_MAX */
        total += sent;
        if (sent < n)
            return total;
    }
}

/* Read ciphertext from the socket into the pair.  Returns the bytes read;
   0 at EOF (the pair's write side is then shut, so OpenSSL sees it); -1
   with outcome WANT_READ (nothing now), INBUF_FULL or SOCKET_FAILED. */
ssize_t Ktlswsgi_mem_fill_in(BIO *net, int fd, Ktlswsgi_step *st)
{
    if (st->eof_in)
        return 0;
    char *p;
    int room = BIO_nwrite0(net, &p);
    if (room <= 0) {
        st->outcome = KTLSWSGI_STEP_INBUF_FULL;
        return -1;
    }
    ssize_t n;
    do {
        n = recv(fd, p, (size_t)room, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            st->outcome = KTLSWSGI_STEP_WANT_READ;
        } else {
            st->sys_errno = errno;
            st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
        }
        return -1;
    }
    st->recvs++;
    if (n == 0) {
        st->eof_in = 1;
        BIO_ctrl(net, BIO_C_SHUTDOWN_WR, 0, NULL);
        return 0;
    }
    BIO_nwrite(net, &p, (int)n);   /* n <= room */
    return n;
}

/* Send what the pair holds: 1 when nothing is left, 0 when the socket is
   full or failed (outcome DONE or SOCKET_FAILED). */
int Ktlswsgi_mem_flush(BIO *net, int fd, Ktlswsgi_step *st)
{
    st->outcome = KTLSWSGI_STEP_DONE;
    if (Ktlswsgi_mem_send_out(net, fd, st) < 0)
        return 0;
    return BIO_ctrl_pending(net) == 0;
}

/* SSL_read_ex, feeding the pair from the socket while OpenSSL wants input.
   Returns the bytes read (outcome DONE), or 0 with the outcome set. */
size_t Ktlswsgi_mem_read(SSL *ssl, BIO *net, int fd, unsigned char *buf, size_t max,
                         Ktlswsgi_step *st)
{
    size_t got = 0;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_read_ex(ssl, buf, max, &got);
        if (rc == 1) {
            if (BIO_ctrl_pending(net) > 0)
                (void)Ktlswsgi_mem_send_out(net, fd, st);   /* e.g. a KeyUpdate answer */
            st->outcome = KTLSWSGI_STEP_DONE;
            return got;
        }
        int err = SSL_get_error(ssl, rc);
        st->sys_errno = errno;
        if (err == SSL_ERROR_WANT_WRITE) {
            ssize_t sent = Ktlswsgi_mem_send_out(net, fd, st);
            if (sent < 0)
                return 0;
            if (BIO_ctrl_pending(net) > 0) {
                st->outcome = KTLSWSGI_STEP_WANT_WRITE;
                return 0;
            }
            continue;
        }
        if (err != SSL_ERROR_WANT_READ) {
            st->outcome = KTLSWSGI_STEP_SSL_FAILED;
            st->ssl_error = err;
            st->rc = rc;
            return 0;
        }
        if (st->eof_in) {   /* OpenSSL was shown the EOF and still wants input */
            st->outcome = KTLSWSGI_STEP_PEER_GONE;
            return 0;
        }
        if (Ktlswsgi_mem_fill_in(net, fd, st) < 0) {
            if (st->outcome == KTLSWSGI_STEP_WANT_READ)
                (void)Ktlswsgi_mem_send_out(net, fd, st);   /* fails as SOCKET_FAILED */
            return 0;
        }
    }
}

/* SSL_write_ex data[off:len], draining the pair to the socket as it fills.
   Returns the new offset; outcome DONE (all written, and sent as far as the
   socket took it), WANT_WRITE or WANT_READ (blocked), or a failure. */
size_t Ktlswsgi_mem_write(SSL *ssl, BIO *net, int fd, const unsigned char *data,
                          size_t len, size_t off, Ktlswsgi_step *st)
{
    size_t written = 0;
    while (off < len) {
        ERR_clear_error();
        int rc = SSL_write_ex(ssl, data + off, len - off, &written);
        if (rc == 1) {
            off += written;
            continue;
        }
        int err = SSL_get_error(ssl, rc);
        st->sys_errno = errno;
        if (err == SSL_ERROR_WANT_WRITE) {
            ssize_t sent = Ktlswsgi_mem_send_out(net, fd, st);
            if (sent < 0)
                return off;
            if (BIO_ctrl_pending(net) == 0)
                continue;
            st->outcome = KTLSWSGI_STEP_WANT_WRITE;
            return off;
        }
        if (err == SSL_ERROR_WANT_READ) {
            st->outcome = KTLSWSGI_STEP_WANT_READ;   /* Python's path feeds the pair */
            return off;
        }
        st->outcome = KTLSWSGI_STEP_SSL_FAILED;
        st->ssl_error = err;
        st->rc = rc;
        return off;
    }
    if (Ktlswsgi_mem_send_out(net, fd, st) < 0)
        return off;
    st->outcome = KTLSWSGI_STEP_DONE;
    return off;
}

/* pread + Ktlswsgi_mem_write of up to `count` bytes of file `ffd` from
   `offset`, one `bufsize` chunk at a time through `buf`.  Returns the file
   bytes SSL_write took.  Outcome DONE: all of them (fewer when the file
   ended early); WANT_WRITE / WANT_READ / a failure: blocked inside the last
   chunk, of which st->chunk_len bytes are in buf and st->chunk_off were
   taken; FILE_FAILED: pread failed (sys_errno). */
size_t Ktlswsgi_mem_pread_write(SSL *ssl, BIO *net, int fd, int ffd, int64_t offset,
                                size_t count, unsigned char *buf, size_t bufsize,
                                Ktlswsgi_step *st)
{
    size_t taken = 0;
    st->chunk_len = st->chunk_off = 0;
    if (offset < 0 || bufsize == 0) {
        st->sys_errno = EINVAL;
        st->outcome = KTLSWSGI_STEP_FILE_FAILED;
        return 0;
    }
    while (taken < count) {
        size_t want = count - taken < bufsize ? count - taken : bufsize;
        ssize_t n;
        do {
            n = pread(ffd, buf, want, (off_t)(offset + (int64_t)taken));
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            st->sys_errno = errno;
            st->outcome = KTLSWSGI_STEP_FILE_FAILED;
            return taken;
        }
        if (n == 0)
            break;   /* the file ended early */
        size_t off = Ktlswsgi_mem_write(ssl, net, fd, buf, (size_t)n, 0, st);
        taken += off;
        if (st->outcome != KTLSWSGI_STEP_DONE) {
            st->chunk_len = (size_t)n;
            st->chunk_off = off;
            return taken;
        }
    }
    st->outcome = KTLSWSGI_STEP_DONE;
    return taken;
}

/* Decrypted bytes, or ciphertext read from the socket but not yet by OpenSSL. */
int Ktlswsgi_mem_has_pending(SSL *ssl)
{
    return SSL_has_pending(ssl) || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0;
}
