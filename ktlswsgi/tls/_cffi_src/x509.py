"""X.509 certificates: build, extend, sign, inspect validity."""

INCLUDES = """
#include <time.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>
#include <openssl/asn1.h>
"""

TYPES = """
typedef ... X509;
typedef ... X509_NAME;
typedef ... X509_EXTENSION;
typedef ... ASN1_TIME;
typedef ... ASN1_INTEGER;
typedef ... CONF;
typedef struct { ...; } X509V3_CTX;
typedef int... time_t;

static const int MBSTRING_ASC;
static const int NID_subject_alt_name;
static const int NID_basic_constraints;
static const int NID_key_usage;
static const int NID_ext_key_usage;
static const int NID_subject_key_identifier;
static const int NID_authority_key_identifier;
"""

FUNCTIONS = """
X509 *X509_new(void);
void X509_free(X509 *);
int X509_set_version(X509 *, long);
ASN1_INTEGER *X509_get_serialNumber(X509 *);
int ASN1_INTEGER_set_uint64(ASN1_INTEGER *, uint64_t);
ASN1_TIME *X509_getm_notBefore(const X509 *);
ASN1_TIME *X509_getm_notAfter(const X509 *);
const ASN1_TIME *X509_get0_notAfter(const X509 *);
ASN1_TIME *X509_gmtime_adj(ASN1_TIME *, long);
int X509_cmp_time(const ASN1_TIME *, time_t *);
int X509_set_pubkey(X509 *, EVP_PKEY *);
X509_NAME *X509_get_subject_name(const X509 *);
int X509_set_issuer_name(X509 *, const X509_NAME *);
int X509_NAME_add_entry_by_txt(X509_NAME *, const char *, int,
                               const unsigned char *, int, int, int);
void X509V3_set_ctx(X509V3_CTX *, X509 *, X509 *, void *, void *, int);
X509_EXTENSION *X509V3_EXT_conf_nid(void *, X509V3_CTX *, int, const char *);
int X509_add_ext(X509 *, X509_EXTENSION *, int);
void X509_EXTENSION_free(X509_EXTENSION *);
int X509_sign(X509 *, EVP_PKEY *, const EVP_MD *);
int X509_check_private_key(const X509 *, const EVP_PKEY *);
"""

CUSTOMIZATIONS = """
"""
