/* The C callbacks OpenSSL calls during a handshake or a read.  They run on
   the reactor thread inside an SSL call and never call back into Python. */
#include <string.h>
#include <openssl/ssl.h>

#include "ktlswsgi_tls.h"

/* Never prompts on a terminal: without a password it fails at once (and
   records that it was asked, so Python can say "the key is encrypted"). */
int Ktlswsgi_password_cb(char *buf, int size, int rwflag, void *userdata)
{
    Ktlswsgi_password *pw = (Ktlswsgi_password *)userdata;
    (void)rwflag;
    if (pw == NULL)
        return -1;
    pw->called = 1;
    if (pw->password == NULL || pw->length < 0)
        return -1;
    if (pw->length > size) {
        pw->too_long = 1;
        return -1;
    }
    memcpy(buf, pw->password, (size_t)pw->length);
    return pw->length;
}

/* Server preference order; no overlap is a fatal no_application_protocol
   alert (RFC 7301 section 3.2); a client without ALPN is not called here. */
int Ktlswsgi_alpn_select_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                            const unsigned char *in, unsigned int inlen, void *arg)
{
    Ktlswsgi_alpn *alpn = (Ktlswsgi_alpn *)arg;
    unsigned char *selected = NULL;
    unsigned char selected_len = 0;
    (void)ssl;
    if (alpn == NULL || alpn->length == 0)
        return SSL_TLSEXT_ERR_NOACK;
    if (SSL_select_next_proto(&selected, &selected_len, alpn->protos, alpn->length,
                              in, inlen) != OPENSSL_NPN_NEGOTIATED)
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
static void msg_cb(int write_p, int version, int content_type, const void *buf, size_t len,
                   SSL *ssl, void *arg)
{
    const unsigned char *msg = (const unsigned char *)buf;
    int *flag = (int *)arg;
    (void)version;
    (void)ssl;
    if (flag == NULL || write_p || content_type != SSL3_RT_HANDSHAKE || len < 5)
        return;
    if (msg[0] == SSL3_MT_KEY_UPDATE && msg[4] == SSL_KEY_UPDATE_REQUESTED)
        *flag = 1;
}

void Ktlswsgi_watch_key_update(SSL *ssl, int *flag)
{
    SSL_set_msg_callback_arg(ssl, flag);
    SSL_set_msg_callback(ssl, flag != NULL ? msg_cb : NULL);
}
