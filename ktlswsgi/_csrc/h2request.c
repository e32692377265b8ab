/* An HTTP/2 request's header block: h2's inbound checks and http2.py's
 * Request fields in one pass.
 *
 * h2_request(headers) takes a decoded request block ([(name, value)] of
 * bytes, as HPACK gave it) and returns
 *     (method, target, fields, expects_continue)
 * as http2.py's Http2._request builds them (fields: the regular fields in
 * order, less Host, with ("host", authority) first when there is an
 * authority: :authority, else the Host field); or a str, the reason the
 * block is malformed, wherever h2's validate_headers (h2 4.4, RFC 9113
 * 8.2 and 8.3) raises ProtocolError for a request block:
 *   - a name with a byte in 0x00-0x20, 0x41-0x5A or 0x7F-0xFF, a ':' after
 *     its first byte, or no byte at all;
 *   - a value holding NUL, CR or LF, or starting or ending with SP or HTAB;
 *   - TE other than "trailers"; Connection, Proxy-Connection, Keep-Alive,
 *     Transfer-Encoding, Upgrade;
 *   - a pseudo-header repeated, after a regular field, or unknown; :status;
 *     no :method; without CONNECT, no :scheme or :path, or :protocol; an
 *     ordinary CONNECT with :scheme or :path; an extended CONNECT (with
 *     :protocol) without them;
 *   - two Host fields; neither :authority nor Host; both, differing; an
 *     empty :path.
 * h2_trailers(headers) returns None for an acceptable trailer block, else
 * the reason: the same per-field rules, and no pseudo-header at all.
 *
 * Anything else (an item that is not a pair of bytes) is a TypeError: HPACK
 * gives nothing else.  tests/test_native.py holds both to h2's own
 * validate_headers (and h2_request's fields to http2.py's Python path) over
 * seeded random blocks, and tests/fuzz/fuzz_native.py fuzzes them so.
 */
#include "native.h"

#include <string.h>

enum { P_METHOD = 1, P_SCHEME = 2, P_AUTHORITY = 4, P_PATH = 8, P_STATUS = 16,
       P_PROTOCOL = 32 };

static int name_is(const char *s, Py_ssize_t n, const char *lit)
{
    size_t len = strlen(lit);

    return (size_t)n == len && memcmp(s, lit, len) == 0;
}

static int pseudo_bit(const char *s, Py_ssize_t n)
{
    if (name_is(s, n, ":method"))
        return P_METHOD;
    if (name_is(s, n, ":scheme"))
        return P_SCHEME;
    if (name_is(s, n, ":authority"))
        return P_AUTHORITY;
    if (name_is(s, n, ":path"))
        return P_PATH;
    if (name_is(s, n, ":status"))
        return P_STATUS;
    if (name_is(s, n, ":protocol"))
        return P_PROTOCOL;
    return 0;
}

/* The per-field rules: NULL when the field passes, else the reason. */
static const char *field_fault(const char *name, Py_ssize_t nl, const char *value, Py_ssize_t vl)
{
    Py_ssize_t i;

    if (nl == 0)
        return "a header name with zero length";
    for (i = 0; i < nl; i++) {
        unsigned char c = (unsigned char)name[i];

        if (c >= 0x41 && c <= 0x5a)
            return "an upper-case header name";
        if (c <= 0x20 || c >= 0x7f)
            return "an illegal character in a header name";
        if (c == ':' && i > 0)
            return "an illegal character in a header name";
    }
    if (vl > 0) {
        for (i = 0; i < vl; i++) {
            unsigned char c = (unsigned char)value[i];

            if (c == 0 || c == '\n' || c == '\r')
                return "an illegal character in a header value";
        }
        if (value[0] == ' ' || value[0] == '\t' || value[vl - 1] == ' ' || value[vl - 1] == '\t')
            return "a header value surrounded by whitespace";
    }
    if (name_is(name, nl, "te") && !Ktlswsgi_lower_equals(value, vl, "trailers"))
        return "TE other than trailers";
    if (name_is(name, nl, "connection") || name_is(name, nl, "proxy-connection") ||
        name_is(name, nl, "keep-alive") || name_is(name, nl, "transfer-encoding") ||
        name_is(name, nl, "upgrade"))
        return "a connection-specific header field";
    return NULL;
}

/* Walks the block: the reason it is malformed, or NULL; the pseudo-headers
   seen in *seen, and (requests) the :method, :path, :authority and Host
   items (borrowed; NULL when absent). */
static const char *walk(PyObject *seq, int trailer, int *seen, PyObject **method,
                        PyObject **path, PyObject **authority, PyObject **host)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    int regular = 0;

    *seen = 0;
    *method = *path = *authority = *host = NULL;
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        const char *s = PyBytes_AS_STRING(name), *fault;
        Py_ssize_t nl = PyBytes_GET_SIZE(name);

        fault = field_fault(s, nl, PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value));
        if (fault != NULL)
            return fault;
        if (s[0] == ':') {
            int bit = pseudo_bit(s, nl);

            if (bit == 0)
                return "an unknown pseudo-header field";
            if (*seen & bit)
                return "a repeated pseudo-header field";
            if (regular)
                return "a pseudo-header field after a regular field";
            *seen |= bit;
            if (bit == P_METHOD)
                *method = value;
            else if (bit == P_PATH)
                *path = value;
            else if (bit == P_AUTHORITY)
                *authority = value;
        } else {
            regular = 1;
            if (!trailer && name_is(s, nl, "host")) {
                if (*host != NULL)
                    return "two Host fields";
                *host = value;
            }
        }
    }
    if (trailer)
        return *seen ? "a pseudo-header field in trailers" : NULL;
    if (!(*seen & P_METHOD))
        return "no :method";
    if (*seen & P_STATUS)
        return ":status in a request";
    if (PyBytes_GET_SIZE(*method) == 7 && memcmp(PyBytes_AS_STRING(*method), "CONNECT", 7) == 0) {
        if (*seen & P_PROTOCOL) {
            if (!(*seen & P_SCHEME) || !(*seen & P_PATH))
                return "an extended CONNECT without :scheme or :path";
        } else if (*seen & (P_SCHEME | P_PATH)) {
            return "a CONNECT with :scheme or :path";
        }
    } else {
        if (!(*seen & P_SCHEME) || !(*seen & P_PATH))
            return "no :scheme or :path";
        if (*seen & P_PROTOCOL)
            return ":protocol without CONNECT";
    }
    if (*authority == NULL && *host == NULL)
        return "neither :authority nor Host";
    if (*authority != NULL && *host != NULL) {
        Py_ssize_t al = PyBytes_GET_SIZE(*authority);

        if (al != PyBytes_GET_SIZE(*host) ||
            memcmp(PyBytes_AS_STRING(*authority), PyBytes_AS_STRING(*host), (size_t)al) != 0)
            return ":authority and Host differ";
    }
    if (*path != NULL && PyBytes_GET_SIZE(*path) == 0)
        return "an empty :path";
    return NULL;
}

static PyObject *pairs(PyObject *headers)
{
    int ok;
    PyObject *seq = Ktlswsgi_byte_pairs(headers, &ok);

    if (seq != NULL && !ok) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_TypeError, "a header block must hold (bytes, bytes) pairs");
        return NULL;
    }
    return seq;
}

PyObject *Ktlswsgi_h2_trailers(PyObject *self, PyObject *headers)
{
    PyObject *seq = pairs(headers), *m, *p, *a, *h;
    const char *fault;
    int seen;

    (void)self;
    if (seq == NULL)
        return NULL;
    fault = walk(seq, 1, &seen, &m, &p, &a, &h);
    Py_DECREF(seq);
    if (fault != NULL)
        return PyUnicode_FromString(fault);
    Py_RETURN_NONE;
}

PyObject *Ktlswsgi_h2_request(PyObject *self, PyObject *headers)
{
    PyObject *seq = pairs(headers), *method, *path, *authority, *host, *fields = NULL;
    PyObject *empty = NULL, *result = NULL, *host_name = NULL;
    const char *fault;
    Py_ssize_t n, i;
    int seen, expects_continue = 0;

    (void)self;
    if (seq == NULL)
        return NULL;
    fault = walk(seq, 0, &seen, &method, &path, &authority, &host);
    if (fault != NULL) {
        result = PyUnicode_FromString(fault);
        goto done;
    }
    /* http2.py's _request: :authority wins; an empty one gives way to Host */
    if (authority == NULL || PyBytes_GET_SIZE(authority) == 0)
        authority = host != NULL ? host : authority;
    fields = PyList_New(0);
    if (fields == NULL)
        goto done;
    if (authority != NULL && PyBytes_GET_SIZE(authority) > 0) {
        PyObject *pair;

        host_name = PyBytes_FromStringAndSize("host", 4);
        if (host_name == NULL)
            goto done;
        pair = PyTuple_Pack(2, host_name, authority);
        if (pair == NULL || PyList_Append(fields, pair) < 0) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        const char *s = PyBytes_AS_STRING(name);
        Py_ssize_t nl = PyBytes_GET_SIZE(name);

        if (s[0] == ':' || name_is(s, nl, "host"))
            continue;
        if (name_is(s, nl, "expect") && Ktlswsgi_lower_equals(
                PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), "100-continue"))
            expects_continue = 1;
        if (PyTuple_CheckExact(item)) {
            if (PyList_Append(fields, item) < 0)
                goto done;
        } else {
            PyObject *pair = PyTuple_Pack(2, name, value);

            if (pair == NULL || PyList_Append(fields, pair) < 0) {
                Py_XDECREF(pair);
                goto done;
            }
            Py_DECREF(pair);
        }
    }
    empty = PyBytes_FromStringAndSize("", 0);
    if (empty == NULL)
        goto done;
    result = Py_BuildValue("(OOOO)", method, path != NULL ? path : empty, fields,
                           expects_continue ? Py_True : Py_False);
done:
    Py_XDECREF(empty);
    Py_XDECREF(host_name);
    Py_XDECREF(fields);
    Py_DECREF(seq);
    return result;
}
