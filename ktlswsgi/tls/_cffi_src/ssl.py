"""libssl: the server context, per-connection SSL objects, and the two C
callbacks (certificate-key password, ALPN selection) that run inside the
handshake without calling back into Python."""

INCLUDES = """
#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
"""

TYPES = """
static const long Cryptography_HAS_SSL_SENDFILE;
static const long Cryptography_HAS_IGNORE_UNEXPECTED_EOF;

typedef ... SSL_METHOD;
typedef ... SSL_CTX;
typedef ... SSL;
typedef ... SSL_CIPHER;
typedef ... SSL_SESSION;

typedef int... ossl_ssize_t;
typedef int... off_t;

static const uint64_t SSL_OP_ENABLE_KTLS;
static const uint64_t SSL_OP_IGNORE_UNEXPECTED_EOF;
static const uint64_t SSL_OP_NO_COMPRESSION;
static const uint64_t SSL_OP_NO_RENEGOTIATION;
static const uint64_t SSL_OP_CIPHER_SERVER_PREFERENCE;
static const uint64_t SSL_OP_NO_TICKET;
static const uint64_t SSL_OP_ALL;

static const long SSL_MODE_ENABLE_PARTIAL_WRITE;
static const long SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER;
static const long SSL_MODE_RELEASE_BUFFERS;

static const long SSL_SESS_CACHE_OFF;
static const long SSL_SESS_CACHE_SERVER;

static const int SSL_ERROR_NONE;
static const int SSL_ERROR_SSL;
static const int SSL_ERROR_WANT_READ;
static const int SSL_ERROR_WANT_WRITE;
static const int SSL_ERROR_WANT_X509_LOOKUP;
static const int SSL_ERROR_SYSCALL;
static const int SSL_ERROR_ZERO_RETURN;
static const int SSL_ERROR_WANT_CONNECT;
static const int SSL_ERROR_WANT_ACCEPT;

static const int SSL_FILETYPE_PEM;
static const int TLS1_2_VERSION;
static const int TLS1_3_VERSION;
static const int TLSEXT_NAMETYPE_host_name;
static const int SSL_SENT_SHUTDOWN;
static const int SSL_RECEIVED_SHUTDOWN;

/* What the C password callback reads; owned by the Python context object. */
typedef struct {
    const char *password;
    int length;
    int called;
    int too_long;
} Ktlswsgi_password;

/* The server's ALPN offer in wire format (length-prefixed names). */
typedef struct {
    const unsigned char *protos;
    unsigned int length;
} Ktlswsgi_alpn;

/* One step of the memory transport, done in C (one call, one GIL release):
   the outcome, and what Python needs to classify an error and count. */
typedef struct {
    int outcome;        /* KTLSWSGI_STEP_* */
    int ssl_error;      /* SSL_get_error() when outcome is SSL_FAILED */
    int rc;             /* the failed call's return value */
    int sys_errno;      /* errno after the failed call or syscall */
    int eof_in;         /* the socket said EOF (kept across calls) */
    unsigned long sends;
    unsigned long recvs;
    size_t chunk_len;   /* Ktlswsgi_mem_pread_write blocked: bytes of the last chunk in buf */
    size_t chunk_off;   /* ... and how many of them SSL_write took */
} Ktlswsgi_step;

static const int KTLSWSGI_STEP_DONE;
static const int KTLSWSGI_STEP_WANT_READ;
static const int KTLSWSGI_STEP_WANT_WRITE;
static const int KTLSWSGI_STEP_SSL_FAILED;
static const int KTLSWSGI_STEP_SOCKET_FAILED;
static const int KTLSWSGI_STEP_PEER_GONE;
static const int KTLSWSGI_STEP_INBUF_FULL;
static const int KTLSWSGI_STEP_FILE_FAILED;
"""

FUNCTIONS = """
const SSL_METHOD *TLS_server_method(void);
SSL_CTX *SSL_CTX_new(const SSL_METHOD *);
void SSL_CTX_free(SSL_CTX *);
uint64_t SSL_CTX_set_options(SSL_CTX *, uint64_t);
uint64_t SSL_CTX_clear_options(SSL_CTX *, uint64_t);
uint64_t SSL_CTX_get_options(const SSL_CTX *);
long SSL_CTX_set_mode(SSL_CTX *, long);
long SSL_CTX_get_mode(SSL_CTX *);
int SSL_CTX_set_min_proto_version(SSL_CTX *, int);
int SSL_CTX_set_max_proto_version(SSL_CTX *, int);
int SSL_CTX_use_certificate_chain_file(SSL_CTX *, const char *);
int SSL_CTX_use_PrivateKey_file(SSL_CTX *, const char *, int);
int SSL_CTX_check_private_key(const SSL_CTX *);
void SSL_CTX_set_default_passwd_cb(SSL_CTX *, pem_password_cb *);
void SSL_CTX_set_default_passwd_cb_userdata(SSL_CTX *, void *);
int SSL_CTX_set_cipher_list(SSL_CTX *, const char *);
int SSL_CTX_set_ciphersuites(SSL_CTX *, const char *);
long SSL_CTX_set_session_cache_mode(SSL_CTX *, long);
int SSL_CTX_set_session_id_context(SSL_CTX *, const unsigned char *, unsigned int);
int SSL_CTX_set_num_tickets(SSL_CTX *, size_t);
size_t SSL_CTX_get_num_tickets(const SSL_CTX *);

SSL *SSL_new(SSL_CTX *);
void SSL_free(SSL *);
int SSL_set_fd(SSL *, int);
void SSL_set_bio(SSL *, BIO *, BIO *);
BIO *SSL_get_rbio(const SSL *);
BIO *SSL_get_wbio(const SSL *);
void SSL_set_accept_state(SSL *);
uint64_t SSL_clear_options(SSL *, uint64_t);
uint64_t SSL_get_options(const SSL *);
int SSL_do_handshake(SSL *);
int SSL_is_init_finished(const SSL *);
int SSL_read_ex(SSL *, void *, size_t, size_t *);
int SSL_write_ex(SSL *, const void *, size_t, size_t *);
ossl_ssize_t SSL_sendfile(SSL *, int, off_t, size_t, int);
int SSL_shutdown(SSL *);
int SSL_get_shutdown(const SSL *);
int SSL_get_error(const SSL *, int);
int SSL_has_pending(const SSL *);
int SSL_pending(const SSL *);
const char *SSL_get_version(const SSL *);
int SSL_version(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
void SSL_get0_alpn_selected(const SSL *, const unsigned char **, unsigned int *);
const char *SSL_get_servername(const SSL *, const int);
int SSL_session_reused(const SSL *);

/* C callbacks defined in CUSTOMIZATIONS, installed from Python. */
int Ktlswsgi_password_cb(char *, int, int, void *);
int Ktlswsgi_alpn_select_cb(SSL *, const unsigned char **, unsigned char *,
                            const unsigned char *, unsigned int, void *);
void Ktlswsgi_CTX_set_alpn_select(SSL_CTX *, Ktlswsgi_alpn *);
void Ktlswsgi_watch_key_update(SSL *, int *);

size_t Ktlswsgi_mem_read(SSL *, BIO *, int, unsigned char *, size_t, Ktlswsgi_step *);
size_t Ktlswsgi_mem_write(SSL *, BIO *, int, const unsigned char *, size_t, size_t,
                          Ktlswsgi_step *);
int Ktlswsgi_mem_flush(BIO *, int, Ktlswsgi_step *);
size_t Ktlswsgi_mem_pread_write(SSL *, BIO *, int, int, int64_t, size_t, unsigned char *,
                                size_t, Ktlswsgi_step *);
int Ktlswsgi_mem_has_pending(SSL *);
"""

CUSTOMIZATIONS = """
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static const long Cryptography_HAS_SSL_SENDFILE = 1;
#else
static const long Cryptography_HAS_SSL_SENDFILE = 0;
typedef ssize_t ossl_ssize_t;
static ossl_ssize_t SSL_sendfile(SSL *s, int fd, off_t offset, size_t size,
                                 int flags) { return -1; }
#endif

#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
static const long Cryptography_HAS_IGNORE_UNEXPECTED_EOF = 1;
#else
static const long Cryptography_HAS_IGNORE_UNEXPECTED_EOF = 0;
#define SSL_OP_IGNORE_UNEXPECTED_EOF 0
#endif

#ifndef SSL_OP_ENABLE_KTLS
#define SSL_OP_ENABLE_KTLS 0
#endif

typedef struct {
    const char *password;
    int length;
    int called;
    int too_long;
} Ktlswsgi_password;

typedef struct {
    const unsigned char *protos;
    unsigned int length;
} Ktlswsgi_alpn;

/* Never prompts on a terminal: without a password it fails at once (and
   records that it was asked, so Python can say "the key is encrypted"). */
int Ktlswsgi_password_cb(char *buf, int size, int rwflag, void *userdata)
{
    Ktlswsgi_password *pw = (Ktlswsgi_password *)userdata;
    if (pw == NULL)
        return -1;
    pw->called = 1;
    if (pw->password == NULL)
        return -1;
    if (pw->length > size) {
        pw->too_long = 1;
        return -1;
    }
    memcpy(buf, pw->password, (size_t)pw->length);
    return pw->length;
}

/* Server preference order; no overlap is a fatal no_application_protocol
   alert (RFC 7301 section 3.2), a client without ALPN is not called here. */
int Ktlswsgi_alpn_select_cb(SSL *ssl, const unsigned char **out,
                            unsigned char *outlen, const unsigned char *in,
                            unsigned int inlen, void *arg)
{
    Ktlswsgi_alpn *alpn = (Ktlswsgi_alpn *)arg;
    unsigned char *selected = NULL;
    unsigned char selected_len = 0;
    if (alpn == NULL || alpn->length == 0)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto(&selected, &selected_len, alpn->protos,
                              alpn->length, in, inlen)
            != OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL;
    *out = selected;
    *outlen = selected_len;
    return SSL_TLSEXT_ERR_OK;
}

void Ktlswsgi_CTX_set_alpn_select(SSL_CTX *ctx, Ktlswsgi_alpn *alpn)
{
    SSL_CTX_set_alpn_select_cb(ctx, Ktlswsgi_alpn_select_cb, alpn);
}

/* Sets *flag to 1 when the peer sends a TLS 1.3 KeyUpdate asking us to
   update our sending key (handshake type 24, request_update = 1).  OpenSSL
   3.0 does not rekey kernel TLS TX (openssl#16307): the transport must stop
   writing on such a connection. */
static void Ktlswsgi_msg_cb(int write_p, int version, int content_type,
                            const void *buf, size_t len, SSL *ssl, void *arg)
{
    const unsigned char *msg = (const unsigned char *)buf;
    int *flag = (int *)arg;
    if (flag == NULL || write_p || content_type != SSL3_RT_HANDSHAKE || len < 5)
        return;
    if (msg[0] == SSL3_MT_KEY_UPDATE && msg[4] == SSL_KEY_UPDATE_REQUESTED)
        *flag = 1;
}

void Ktlswsgi_watch_key_update(SSL *ssl, int *flag)
{
    SSL_set_msg_callback_arg(ssl, flag);
    SSL_set_msg_callback(ssl, flag != NULL ? Ktlswsgi_msg_cb : NULL);
}

/* -- the memory transport's steps ----------------------------------------
   The same loops as the Python code they replace (MemoryTransport.recv,
   _write_loop, _write_through, has_pending), in one call each: every cffi
   call releases and re-takes the GIL, and a reactor that gives the GIL up
   ten times per request hands the core to a worker ten times. */
typedef struct {
    int outcome;
    int ssl_error;
    int rc;
    int sys_errno;
    int eof_in;
    unsigned long sends;
    unsigned long recvs;
    size_t chunk_len;
    size_t chunk_off;
} Ktlswsgi_step;

#define KTLSWSGI_STEP_DONE 0
#define KTLSWSGI_STEP_WANT_READ 1
#define KTLSWSGI_STEP_WANT_WRITE 2
#define KTLSWSGI_STEP_SSL_FAILED 3
#define KTLSWSGI_STEP_SOCKET_FAILED 4
#define KTLSWSGI_STEP_PEER_GONE 5
#define KTLSWSGI_STEP_INBUF_FULL 6
#define KTLSWSGI_STEP_FILE_FAILED 7

/* Send held ciphertext: 1 all of it left, 0 the socket is full, -1 error. */
static int ktlswsgi_send_out(BIO *net, int fd, Ktlswsgi_step *st)
{
    char *p;
    for (;;) {
        int n = BIO_nread0(net, &p);
        if (n <= 0)
            return 1;
        ssize_t sent = send(fd, p, (size_t)n, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return 0;
            st->sys_errno = errno;
            return -1;
        }
        st->sends++;
        BIO_nread(net, &p, (int)sent);
        if (sent < n)
            return 0;
    }
}

int Ktlswsgi_mem_flush(BIO *net, int fd, Ktlswsgi_step *st)
{
    int r = ktlswsgi_send_out(net, fd, st);
    if (r < 0) {
        st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
        return 0;
    }
    st->outcome = KTLSWSGI_STEP_DONE;
    return BIO_ctrl_pending(net) == 0;
}

/* SSL_read_ex, feeding the pair from the socket while OpenSSL wants input.
   Returns the bytes read (st->outcome DONE), or 0 with the outcome set. */
size_t Ktlswsgi_mem_read(SSL *ssl, BIO *net, int fd, unsigned char *buf, size_t max,
                         Ktlswsgi_step *st)
{
    size_t got = 0;
    for (;;) {
        ERR_clear_error();
        int rc = SSL_read_ex(ssl, buf, max, &got);
        if (rc == 1) {
            if (BIO_ctrl_pending(net) > 0)
                (void)ktlswsgi_send_out(net, fd, st);  /* e.g. a KeyUpdate answer */
            st->outcome = KTLSWSGI_STEP_DONE;
            return got;
        }
        int err = SSL_get_error(ssl, rc);
        st->sys_errno = errno;
        if (err == SSL_ERROR_WANT_WRITE) {
            int r = ktlswsgi_send_out(net, fd, st);
            if (r < 0) {
                st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
                return 0;
            }
            if (r == 0) {
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
        char *p;
        int room = BIO_nwrite0(net, &p);
        if (room <= 0) {
            st->outcome = KTLSWSGI_STEP_INBUF_FULL;
            return 0;
        }
        ssize_t n;
        do {
            n = recv(fd, p, (size_t)room, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (ktlswsgi_send_out(net, fd, st) < 0) {
                    st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
                    return 0;
                }
                st->outcome = KTLSWSGI_STEP_WANT_READ;
                return 0;
            }
            st->sys_errno = errno;
            st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
            return 0;
        }
        st->recvs++;
        if (n == 0) {
            st->eof_in = 1;
            BIO_ctrl(net, BIO_C_SHUTDOWN_WR, 0, NULL);
            continue;
        }
        BIO_nwrite(net, &p, (int)n);
    }
}

/* SSL_write_ex data[off:len], draining the pair to the socket as it fills.
   Returns the new offset; st->outcome DONE (all written and flushed as far
   as the socket took it), WANT_WRITE or WANT_READ (blocked), or a failure. */
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
            int r = ktlswsgi_send_out(net, fd, st);
            if (r < 0) {
                st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
                return off;
            }
            if (r > 0)
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
    if (ktlswsgi_send_out(net, fd, st) < 0) {
        st->outcome = KTLSWSGI_STEP_SOCKET_FAILED;
        return off;
    }
    st->outcome = KTLSWSGI_STEP_DONE;
    return off;
}

/* pread + Ktlswsgi_mem_write of up to `count` bytes of file `ffd` from
   `offset`, one `bufsize` chunk at a time through `buf`.  Returns the file
   bytes SSL_write took.  st->outcome DONE: all of them (fewer when the file
   ended early); WANT_WRITE / WANT_READ / a failure: blocked inside the last
   chunk, of which st->chunk_len bytes are in buf and st->chunk_off were
   taken; FILE_FAILED: pread failed (st->sys_errno). */
size_t Ktlswsgi_mem_pread_write(SSL *ssl, BIO *net, int fd, int ffd, int64_t offset,
                                size_t count, unsigned char *buf, size_t bufsize,
                                Ktlswsgi_step *st)
{
    size_t taken = 0;
    st->chunk_len = st->chunk_off = 0;
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

int Ktlswsgi_mem_has_pending(SSL *ssl)
{
    return SSL_has_pending(ssl) || BIO_ctrl_pending(SSL_get_rbio(ssl)) > 0;
}
"""
