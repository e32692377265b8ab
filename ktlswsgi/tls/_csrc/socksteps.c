/* The socket transport's steps: SSL_read_ex / SSL_write_ex on the SSL's own
   (non-blocking, possibly kTLS) socket, with the error queue cleared before
   and the failure's SSL_get_error, return value and errno recorded in the
   step, for Python's classify_error().  The queue is left as the failure
   left it: Python drains it into the reason. */
#include "ktlswsgi_tls.h"

#include <errno.h>
#include <openssl/err.h>

static void failed(SSL *ssl, int rc, Ktlswsgi_step *st)
{
    st->sys_errno = errno;
    st->ssl_error = SSL_get_error(ssl, rc);
    st->rc = rc;
    st->outcome = KTLSWSGI_STEP_SSL_FAILED;
}

/* Up to `max` decrypted bytes into buf: their count (outcome DONE), or 0
   with the outcome SSL_FAILED. */
size_t Ktlswsgi_ssl_read(SSL *ssl, unsigned char *buf, size_t max, Ktlswsgi_step *st)
{
    size_t got = 0;
    int rc;

    ERR_clear_error();
    rc = SSL_read_ex(ssl, buf, max, &got);
    if (rc == 1) {
        st->outcome = KTLSWSGI_STEP_DONE;
        return got;
    }
    failed(ssl, rc, st);
    return 0;
}

/* SSL_write_ex data[off:len] until done (outcome DONE) or a call fails
   (SSL_FAILED); returns the new offset. */
size_t Ktlswsgi_ssl_write(SSL *ssl, const unsigned char *data, size_t len, size_t off,
                          Ktlswsgi_step *st)
{
    while (off < len) {
        size_t written = 0;
        int rc;

        ERR_clear_error();
        rc = SSL_write_ex(ssl, data + off, len - off, &written);
        if (rc != 1) {
            failed(ssl, rc, st);
            return off;
        }
        off += written;
    }
    st->outcome = KTLSWSGI_STEP_DONE;
    return off;
}
