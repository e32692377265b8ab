/* ktlswsgi's own C for the OpenSSL binding: the types, constants and
   functions shared by the cffi module (ktlswsgi/tls/_build.py) and the two
   C files beside this header.

   callbacks.c     the C callbacks OpenSSL calls: key password, ALPN, the
                   TLS 1.3 KeyUpdate watch (none may call back into Python)
   memtransport.c  the memory transport's engine: SSL_read / SSL_write /
                   pread + SSL_write over a BIO pair and a non-blocking
                   socket, one call per step (one GIL release)
   socksteps.c     the socket transport's SSL_read / SSL_write steps, the
                   failure recorded for Python as memtransport.c's are
*/
#ifndef KTLSWSGI_TLS_H
#define KTLSWSGI_TLS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <openssl/ssl.h>

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

/* One step of the memory transport: its outcome, and what Python needs to
   classify an error and count. */
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

#define KTLSWSGI_STEP_DONE 0
#define KTLSWSGI_STEP_WANT_READ 1
#define KTLSWSGI_STEP_WANT_WRITE 2
#define KTLSWSGI_STEP_SSL_FAILED 3
#define KTLSWSGI_STEP_SOCKET_FAILED 4
#define KTLSWSGI_STEP_PEER_GONE 5
#define KTLSWSGI_STEP_INBUF_FULL 6
#define KTLSWSGI_STEP_FILE_FAILED 7

/* callbacks.c */
int Ktlswsgi_password_cb(char *buf, int size, int rwflag, void *userdata);
int Ktlswsgi_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned int inlen, void *arg);
void Ktlswsgi_CTX_set_alpn_select(SSL_CTX *ctx, Ktlswsgi_alpn *alpn);
void Ktlswsgi_watch_key_update(SSL *ssl, int *flag);

/* memtransport.c */
ssize_t Ktlswsgi_mem_send_out(BIO *net, int fd, Ktlswsgi_step *st);
ssize_t Ktlswsgi_mem_fill_in(BIO *net, int fd, Ktlswsgi_step *st);
int Ktlswsgi_mem_flush(BIO *net, int fd, Ktlswsgi_step *st);
size_t Ktlswsgi_mem_read(SSL *ssl, BIO *net, int fd, unsigned char *buf, size_t max,
                         Ktlswsgi_step *st);
size_t Ktlswsgi_mem_write(SSL *ssl, BIO *net, int fd, const unsigned char *data,
                          size_t len, size_t off, Ktlswsgi_step *st);
size_t Ktlswsgi_mem_pread_write(SSL *ssl, BIO *net, int fd, int ffd, int64_t offset,
                                size_t count, unsigned char *buf, size_t bufsize,
                                Ktlswsgi_step *st);
int Ktlswsgi_mem_has_pending(SSL *ssl);

/* socksteps.c */
size_t Ktlswsgi_ssl_read(SSL *ssl, unsigned char *buf, size_t max, Ktlswsgi_step *st);
size_t Ktlswsgi_ssl_write(SSL *ssl, const unsigned char *data, size_t len, size_t off,
                          Ktlswsgi_step *st);

#endif
