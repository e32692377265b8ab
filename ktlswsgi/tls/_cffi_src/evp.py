"""EVP keys and digests: enough to make an EC P-256 key and sign with SHA-256."""

INCLUDES = """
#include <openssl/evp.h>
"""

TYPES = """
typedef ... EVP_PKEY;
typedef ... EVP_PKEY_CTX;
typedef ... EVP_MD;
typedef ... EVP_CIPHER;
typedef ... OSSL_LIB_CTX;
"""

FUNCTIONS = """
EVP_PKEY_CTX *EVP_PKEY_CTX_new_from_name(OSSL_LIB_CTX *, const char *,
                                         const char *);
void EVP_PKEY_CTX_free(EVP_PKEY_CTX *);
int EVP_PKEY_keygen_init(EVP_PKEY_CTX *);
int EVP_PKEY_CTX_set_group_name(EVP_PKEY_CTX *, const char *);
int EVP_PKEY_generate(EVP_PKEY_CTX *, EVP_PKEY **);
void EVP_PKEY_free(EVP_PKEY *);
const EVP_MD *EVP_sha256(void);
"""

CUSTOMIZATIONS = """
"""
