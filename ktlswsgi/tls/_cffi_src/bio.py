"""BIOs: the memory BIO (PEM in and out), the BIO pair of the memory
transport, and the kTLS queries on a socket BIO."""

INCLUDES = """
#include <openssl/bio.h>
"""

TYPES = """
typedef ... BIO;
typedef ... BIO_METHOD;
static const int BIO_CTRL_GET_KTLS_SEND;
static const int BIO_CTRL_GET_KTLS_RECV;
static const int BIO_C_SHUTDOWN_WR;
static const int BIO_CTRL_PENDING;
static const int BIO_CTRL_WPENDING;
"""

FUNCTIONS = """
const BIO_METHOD *BIO_s_mem(void);
BIO *BIO_new(const BIO_METHOD *);
BIO *BIO_new_mem_buf(const void *, int);
int BIO_free(BIO *);
long BIO_ctrl(BIO *, int, long, void *);
int BIO_read(BIO *, void *, int);
int BIO_write(BIO *, const void *, int);
size_t BIO_ctrl_pending(BIO *);
size_t BIO_ctrl_wpending(BIO *);
size_t BIO_ctrl_get_write_guarantee(BIO *);

int BIO_new_bio_pair(BIO **, size_t, BIO **, size_t);
int BIO_nread0(BIO *, char **);
int BIO_nread(BIO *, char **, int);
int BIO_nwrite0(BIO *, char **);
int BIO_nwrite(BIO *, char **, int);
"""

CUSTOMIZATIONS = """
/* The kTLS queries are macros over BIO_ctrl (73 / 76) that compare > 0;
   without KTLS in the library the controls are unknown and return 0. */
#ifndef BIO_CTRL_GET_KTLS_SEND
#define BIO_CTRL_GET_KTLS_SEND 73
#endif
#ifndef BIO_CTRL_GET_KTLS_RECV
#define BIO_CTRL_GET_KTLS_RECV 76
#endif
"""
