"""Library identity and version: which OpenSSL is loaded, was it built with kTLS."""

INCLUDES = """
#include <openssl/opensslv.h>
#include <openssl/crypto.h>
"""

TYPES = """
static const long OPENSSL_VERSION_NUMBER;
static const int OPENSSL_VERSION;
static const long Ktlswsgi_HAS_KTLS;
static const long Ktlswsgi_HAS_OPENSSL3;
"""

FUNCTIONS = """
unsigned long OpenSSL_version_num(void);
const char *OpenSSL_version(int);
"""

CUSTOMIZATIONS = """
#if defined(OPENSSL_NO_KTLS)
static const long Ktlswsgi_HAS_KTLS = 0;
#else
static const long Ktlswsgi_HAS_KTLS = 1;
#endif

#if OPENSSL_VERSION_NUMBER >= 0x30000000L
static const long Ktlswsgi_HAS_OPENSSL3 = 1;
#else
#error "ktlswsgi needs OpenSSL 3.0 or newer (SSL_sendfile, SSL_OP_ENABLE_KTLS)"
#endif
"""
