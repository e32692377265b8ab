"""libssl: the server context, per-connection SSL objects, and the cdefs of
ktlswsgi's own C (``_csrc/``: the password, ALPN and KeyUpdate callbacks and
the memory transport's engine).  CUSTOMIZATIONS holds only feature flags and
shims for what a libssl lacks."""

INCLUDES = """
#include <errno.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>
#include <sys/socket.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include "ktlswsgi_tls.h"
"""

TYPES = """
static const long Ktlswsgi_HAS_SSL_SENDFILE;
static const long Ktlswsgi_HAS_IGNORE_UNEXPECTED_EOF;

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
void SSL_set_read_ahead(SSL *, int);
int SSL_pending(const SSL *);
const char *SSL_get_version(const SSL *);
int SSL_version(const SSL *);
const SSL_CIPHER *SSL_get_current_cipher(const SSL *);
const char *SSL_CIPHER_get_name(const SSL_CIPHER *);
void SSL_get0_alpn_selected(const SSL *, const unsigned char **, unsigned int *);
const char *SSL_get_servername(const SSL *, const int);
int SSL_session_reused(const SSL *);

/* _csrc/callbacks.c: installed from Python, never call back into it. */
int Ktlswsgi_password_cb(char *, int, int, void *);
int Ktlswsgi_alpn_select_cb(SSL *, const unsigned char **, unsigned char *,
                            const unsigned char *, unsigned int, void *);
void Ktlswsgi_CTX_set_alpn_select(SSL_CTX *, Ktlswsgi_alpn *);
void Ktlswsgi_watch_key_update(SSL *, int *);

/* _csrc/memtransport.c */
ssize_t Ktlswsgi_mem_send_out(BIO *, int, Ktlswsgi_step *);
ssize_t Ktlswsgi_mem_fill_in(BIO *, int, Ktlswsgi_step *);
size_t Ktlswsgi_mem_read(SSL *, BIO *, int, unsigned char *, size_t, Ktlswsgi_step *);
size_t Ktlswsgi_mem_write(SSL *, BIO *, int, const unsigned char *, size_t, size_t,
                          Ktlswsgi_step *);
int Ktlswsgi_mem_flush(BIO *, int, Ktlswsgi_step *);
size_t Ktlswsgi_mem_pread_write(SSL *, BIO *, int, int, int64_t, size_t, unsigned char *,
                                size_t, Ktlswsgi_step *);
int Ktlswsgi_mem_has_pending(SSL *);

/* _csrc/socksteps.c */
size_t Ktlswsgi_ssl_read(SSL *, unsigned char *, size_t, Ktlswsgi_step *);
size_t Ktlswsgi_ssl_write(SSL *, const unsigned char *, size_t, size_t, Ktlswsgi_step *);
"""

CUSTOMIZATIONS = """
/* SSL_sendfile is OpenSSL 3.0's (crypto.py refuses anything older). */
static const long Ktlswsgi_HAS_SSL_SENDFILE = 1;

#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
static const long Ktlswsgi_HAS_IGNORE_UNEXPECTED_EOF = 1;
#else
static const long Ktlswsgi_HAS_IGNORE_UNEXPECTED_EOF = 0;
#define SSL_OP_IGNORE_UNEXPECTED_EOF 0
#endif

#ifndef SSL_OP_ENABLE_KTLS
#define SSL_OP_ENABLE_KTLS 0
#endif
"""
