/* A request's WSGI environ (PEP 3333), as wsgi.py's Python path builds it,
 * which is the reference.
 *
 * build_environ(base, method, target, version, headers, scheme, server_addr,
 * peer_addr) returns a copy of `base` (wsgi.py's template: every key of the
 * environ's first part, in order) with the request's keys set: REQUEST_METHOD,
 * PATH_INFO (percent-decoded, as latin-1), QUERY_STRING, RAW_URI,
 * SERVER_PROTOCOL, the header fields (below), CONTENT_TYPE and CONTENT_LENGTH
 * ("" when absent), SERVER_NAME / SERVER_PORT (the Host field's, else the
 * listening address's), REMOTE_ADDR / REMOTE_PORT; or False, building
 * nothing, wherever the Python path must (below, and shapes it alone takes).
 *
 * The header fields, environ_headers(environ, headers):
 *
 *   - a field whose name holds "_" is left out (X_Forwarded_For must not
 *     pose as X-Forwarded-For);
 *   - the key is the name upper-cased with "-" as "_", "HTTP_" before it
 *     except for CONTENT_TYPE and CONTENT_LENGTH; the value is the bytes as
 *     latin-1;
 *   - repeated fields join in order with ", " ("; " for Cookie), at the
 *     place of the first;
 *   - the result is the first Host value (str), or None.
 *
 * environ_headers(environ, headers) returns False, having changed nothing,
 * when a name holds a byte above 0x7F or an item is not a pair of bytes:
 * str.upper() does more than ASCII there, and the Python path takes it.
 */
#include "native.h"

#include <string.h>

/* Made once (Ktlswsgi_environ_init): the environ's keys and common values,
   and the keys of common header fields, so that a request does not make
   and hash them again. */
enum { K_REQUEST_METHOD, K_PATH_INFO, K_QUERY_STRING, K_RAW_URI, K_SERVER_PROTOCOL,
       K_CONTENT_TYPE, K_CONTENT_LENGTH, K_SERVER_NAME, K_SERVER_PORT, K_REMOTE_ADDR,
       K_REMOTE_PORT, N_KEYS };
static const char *const key_names[N_KEYS] = {
    "REQUEST_METHOD", "PATH_INFO", "QUERY_STRING", "RAW_URI", "SERVER_PROTOCOL",
    "CONTENT_TYPE", "CONTENT_LENGTH", "SERVER_NAME", "SERVER_PORT", "REMOTE_ADDR",
    "REMOTE_PORT"};
static PyObject *keys[N_KEYS];

enum { V_EMPTY, V_GET, V_POST, V_HEAD, V_HTTP_10, V_HTTP_11, V_HTTP_2, V_443, V_80,
       V_LOCALHOST, N_VALUES };
static const char *const value_texts[N_VALUES] = {
    "", "GET", "POST", "HEAD", "HTTP/1.0", "HTTP/1.1", "HTTP/2", "443", "80", "localhost"};
static PyObject *values[N_VALUES];

/* lower-case field names and their environ keys */
static const char *const common_fields[][2] = {
    {"host", "HTTP_HOST"}, {"user-agent", "HTTP_USER_AGENT"}, {"accept", "HTTP_ACCEPT"},
    {"accept-encoding", "HTTP_ACCEPT_ENCODING"}, {"accept-language", "HTTP_ACCEPT_LANGUAGE"},
    {"cookie", "HTTP_COOKIE"}, {"connection", "HTTP_CONNECTION"},
    {"content-type", "CONTENT_TYPE"}, {"content-length", "CONTENT_LENGTH"},
    {"referer", "HTTP_REFERER"}, {"cache-control", "HTTP_CACHE_CONTROL"},
    {"origin", "HTTP_ORIGIN"}, {"authorization", "HTTP_AUTHORIZATION"},
    {"x-forwarded-for", "HTTP_X_FORWARDED_FOR"}, {"x-forwarded-proto", "HTTP_X_FORWARDED_PROTO"},
    {"x-real-ip", "HTTP_X_REAL_IP"}, {"if-none-match", "HTTP_IF_NONE_MATCH"},
    {"if-modified-since", "HTTP_IF_MODIFIED_SINCE"}, {"pragma", "HTTP_PRAGMA"},
    {"upgrade-insecure-requests", "HTTP_UPGRADE_INSECURE_REQUESTS"},
};
#define N_COMMON ((int)(sizeof(common_fields) / sizeof(common_fields[0])))
static PyObject *common_keys[N_COMMON];

int Ktlswsgi_environ_init(void)
{
    int i;

    for (i = 0; i < N_KEYS; i++)
        if ((keys[i] = PyUnicode_InternFromString(key_names[i])) == NULL)
            return -1;
    for (i = 0; i < N_VALUES; i++)
        if ((values[i] = PyUnicode_InternFromString(value_texts[i])) == NULL)
            return -1;
    for (i = 0; i < N_COMMON; i++)
        if ((common_keys[i] = PyUnicode_InternFromString(common_fields[i][1])) == NULL)
            return -1;
    return 0;
}

static PyObject *value(int which)
{
    Py_INCREF(values[which]);
    return values[which];
}

static int ascii_only(const char *s, Py_ssize_t n)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++)
        if ((unsigned char)s[i] > 0x7f)
            return 0;
    return 1;
}

/* The environ key for a field name (ASCII, no "_"): a new str, or NULL. */
static PyObject *environ_key(const char *name, Py_ssize_t n, int *is_host, int *is_cookie)
{
    static const char prefix[] = "HTTP_";
    Py_ssize_t skip, i;
    PyObject *key;
    Py_UCS1 *d;

    int k;

    *is_host = n == 4 && PyOS_strnicmp(name, "host", 4) == 0;
    *is_cookie = n == 6 && PyOS_strnicmp(name, "cookie", 6) == 0;
    for (k = 0; k < N_COMMON; k++) {
        const char *known = common_fields[k][0];

        if (known[0] == name[0] && (Py_ssize_t)strlen(known) == n &&
            memcmp(known, name, (size_t)n) == 0) {
            Py_INCREF(common_keys[k]);
            return common_keys[k];
        }
    }
    if ((n == 12 && PyOS_strnicmp(name, "content-type", 12) == 0) ||
        (n == 14 && PyOS_strnicmp(name, "content-length", 14) == 0))
        skip = 0;
    else
        skip = 5;
    if (n > PY_SSIZE_T_MAX - skip)
        return PyErr_NoMemory();
    key = PyUnicode_New(skip + n, 127);
    if (key == NULL)
        return NULL;
    d = PyUnicode_1BYTE_DATA(key);
    memcpy(d, prefix, (size_t)skip);
    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c >= 'a' && c <= 'z')
            c -= 'a' - 'A';
        else if (c == '-')
            c = '_';
        d[skip + i] = c;
    }
    return key;
}

/* environ_headers' work: the first Host value, None, False (the Python
   path must do it; nothing changed) or NULL with an exception.  `fresh`:
   `environ` holds no key a field can make (build_environ's template), so a
   key already there was set by an earlier field. */
static PyObject *fill_headers(PyObject *environ, PyObject *headers, int fresh)
{
    PyObject *seq, *seen = NULL, *host = NULL, *result = NULL;
    Py_ssize_t n, i;
    int pairs;

    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq == NULL)
        return NULL;
    if (!pairs)
        goto python_path;
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *name = PyTuple_GET_ITEM(PySequence_Fast_GET_ITEM(seq, i), 0);

        if (!ascii_only(PyBytes_AS_STRING(name), PyBytes_GET_SIZE(name)))
            goto python_path;
    }
    if (!fresh && (seen = PySet_New(NULL)) == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);
        const char *s = PyBytes_AS_STRING(name);
        Py_ssize_t len = PyBytes_GET_SIZE(name);
        PyObject *key, *text;
        int is_host, is_cookie, known, rc;

        if (memchr(s, '_', (size_t)len) != NULL)
            continue;
        key = environ_key(s, len, &is_host, &is_cookie);
        if (key == NULL)
            goto done;
        text = PyUnicode_DecodeLatin1(PyBytes_AS_STRING(value), PyBytes_GET_SIZE(value), NULL);
        if (text == NULL) {
            Py_DECREF(key);
            goto done;
        }
        if (is_host && host == NULL) {
            Py_INCREF(text);
            host = text;
        }
        if (fresh) {
            known = PyDict_Contains(environ, key);
        } else {
            known = PySet_Contains(seen, key);
            if (known == 0 && PySet_Add(seen, key) < 0)
                known = -1;
        }
        if (known == 1) {
            PyObject *before = PyDict_GetItemWithError(environ, key);
            PyObject *sep, *joined = NULL;

            if (before != NULL) {
                sep = PyUnicode_FromString(is_cookie ? "; " : ", ");
                if (sep != NULL) {
                    PyObject *left = PyUnicode_Concat(before, sep);
                    if (left != NULL) {
                        joined = PyUnicode_Concat(left, text);
                        Py_DECREF(left);
                    }
                    Py_DECREF(sep);
                }
            }
            Py_DECREF(text);
            if (joined == NULL) {
                if (before == NULL && !PyErr_Occurred())
                    PyErr_SetString(PyExc_RuntimeError, "environ changed while being built");
                Py_DECREF(key);
                goto done;
            }
            text = joined;
        } else if (known < 0) {
            Py_DECREF(key);
            Py_DECREF(text);
            goto done;
        }
        rc = PyDict_SetItem(environ, key, text);
        Py_DECREF(key);
        Py_DECREF(text);
        if (rc < 0)
            goto done;
    }
    if (host != NULL) {
        result = host;
        host = NULL;
    } else {
        Py_INCREF(Py_None);
        result = Py_None;
    }
    goto done;
python_path:
    Py_INCREF(Py_False);
    result = Py_False;
done:
    Py_XDECREF(host);
    Py_XDECREF(seen);
    Py_DECREF(seq);
    return result;
}

PyObject *Ktlswsgi_environ_headers(PyObject *self, PyObject *args)
{
    PyObject *environ, *headers;

    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &environ, &headers))
        return NULL;
    return fill_headers(environ, headers, 0);
}

static int hex_value(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* urllib.parse.unquote_to_bytes(path).decode("latin-1"): "%" and two hex
   digits is that byte; any other "%" stays as it is. */
static PyObject *unquoted_latin1(const char *p, Py_ssize_t n)
{
    PyObject *text;
    Py_UCS1 *d;
    Py_ssize_t i, j = 0, out = n;

    for (i = 0; i + 2 < n; i++)
        if (p[i] == '%' && hex_value((unsigned char)p[i + 1]) >= 0 &&
            hex_value((unsigned char)p[i + 2]) >= 0) {
            out -= 2;
            i += 2;
        }
    if (out == n)
        return PyUnicode_DecodeLatin1(p, n, NULL);
    text = PyUnicode_New(out, 255);
    if (text == NULL)
        return NULL;
    d = PyUnicode_1BYTE_DATA(text);
    for (i = 0; i < n; i++) {
        int hi, lo;

        if (p[i] == '%' && i + 2 < n && (hi = hex_value((unsigned char)p[i + 1])) >= 0 &&
            (lo = hex_value((unsigned char)p[i + 2])) >= 0) {
            d[j++] = (Py_UCS1)(hi * 16 + lo);
            i += 2;
        } else {
            d[j++] = (Py_UCS1)p[i];
        }
    }
    if (j != out) {   /* never: both passes read the same escapes */
        Py_DECREF(text);
        PyErr_SetString(PyExc_RuntimeError, "unquote: length mismatch");
        return NULL;
    }
    return text;
}

static int set_key(PyObject *environ, int key, PyObject *value)
{
    int rc;

    if (value == NULL)
        return -1;
    rc = PyDict_SetItem(environ, keys[key], value);
    Py_DECREF(value);
    return rc;
}

static int set_default_empty(PyObject *environ, int key)
{
    return PyDict_SetDefault(environ, keys[key], values[V_EMPTY]) == NULL ? -1 : 0;
}

/* SERVER_NAME and SERVER_PORT: the Host field's, else the listening address's;
   1 when the Python path must decide. */
static int server_name_port(PyObject *environ, PyObject *host, PyObject *scheme,
                            PyObject *server_addr)
{
    PyObject *name = NULL, *port = NULL;
    int rc = -1;

    if (PyTuple_Check(server_addr) && PyTuple_GET_SIZE(server_addr) < 2)
        return 1;
    if (PyTuple_Check(server_addr)) {
        name = PyTuple_GET_ITEM(server_addr, 0);
        Py_INCREF(name);
        port = PyObject_Str(PyTuple_GET_ITEM(server_addr, 1));
    } else {
        name = value(V_LOCALHOST);
        port = value(V_EMPTY);
    }
    if (port == NULL)
        goto done;
    if (host != Py_None && PyUnicode_GET_LENGTH(host) > 0) {
        /* as the Python path: "[v6]:port" or "name:port" (host is latin-1) */
        const Py_UCS1 *h = PyUnicode_1BYTE_DATA(host);
        Py_ssize_t len = PyUnicode_GET_LENGTH(host), name_start = 0, name_end, port_start;
        const Py_UCS1 *cut;

        if (PyUnicode_KIND(host) != PyUnicode_1BYTE_KIND)
            goto python_path;
        if (h[0] == '[') {
            name_start = 1;
            cut = memchr(h + 1, ']', (size_t)(len - 1));
            name_end = cut ? cut - h : len;
            port_start = cut ? name_end + 2 : len;   /* past "]" and one more */
        } else {
            cut = memchr(h, ':', (size_t)len);
            name_end = cut ? cut - h : len;
            port_start = cut ? name_end + 1 : len;
        }
        if (name_end > name_start) {
            Py_SETREF(name, PyUnicode_Substring(host, name_start, name_end));
            if (name == NULL)
                goto done;
        }
        if (port_start < len)
            Py_SETREF(port, PyUnicode_Substring(host, port_start, len));
        else
            Py_SETREF(port, value(PyUnicode_CompareWithASCIIString(scheme, "https") == 0
                                  ? V_443 : V_80));
        if (port == NULL)
            goto done;
    }
    if (PyDict_SetItem(environ, keys[K_SERVER_NAME], name) == 0 &&
        PyDict_SetItem(environ, keys[K_SERVER_PORT], port) == 0)
        rc = 0;
    goto done;
python_path:
    rc = 1;
done:
    Py_XDECREF(name);
    Py_XDECREF(port);
    return rc;
}

static PyObject *method_text(PyObject *method)
{
    const char *m = PyBytes_AS_STRING(method);
    Py_ssize_t n = PyBytes_GET_SIZE(method);

    if (n == 3 && memcmp(m, "GET", 3) == 0)
        return value(V_GET);
    if (n == 4 && memcmp(m, "POST", 4) == 0)
        return value(V_POST);
    if (n == 4 && memcmp(m, "HEAD", 4) == 0)
        return value(V_HEAD);
    return PyUnicode_DecodeASCII(m, n, NULL);
}

static PyObject *protocol_text(PyObject *version)
{
    const char *v = PyBytes_AS_STRING(version);
    Py_ssize_t n = PyBytes_GET_SIZE(version);
    PyObject *text;

    if (n == 3 && memcmp(v, "1.1", 3) == 0)
        return value(V_HTTP_11);
    if (n == 3 && memcmp(v, "1.0", 3) == 0)
        return value(V_HTTP_10);
    if (n == 1 && v[0] == '2')
        return value(V_HTTP_2);
    text = PyUnicode_DecodeASCII(v, n, NULL);
    if (text != NULL)
        Py_SETREF(text, PyUnicode_FromFormat("HTTP/%U", text));
    return text;
}

PyObject *Ktlswsgi_build_environ(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *base, *method, *target, *version, *headers, *scheme, *server_addr, *peer_addr;
    PyObject *environ, *host = NULL;
    const char *t, *q;
    Py_ssize_t tlen, plen;
    int rc;

    (void)self;
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "build_environ(base, method, target, version, "
                        "headers, scheme, server_addr, peer_addr)");
        return NULL;
    }
    base = args[0], method = args[1], target = args[2], version = args[3];
    headers = args[4], scheme = args[5], server_addr = args[6], peer_addr = args[7];
    if (!PyDict_CheckExact(base) || !PyBytes_Check(method) || !PyBytes_Check(target) ||
        !PyBytes_Check(version) || !PyUnicode_Check(scheme))
        Py_RETURN_FALSE;
    environ = PyDict_Copy(base);
    if (environ == NULL)
        return NULL;
    t = PyBytes_AS_STRING(target);
    tlen = PyBytes_GET_SIZE(target);
    if ((tlen >= 7 && memcmp(t, "http://", 7) == 0) ||
        (tlen >= 8 && memcmp(t, "https://", 8) == 0)) {   /* absolute-form */
        const char *auth = memchr(t, '/', (size_t)tlen);   /* the first of "//" */
        const char *slash = memchr(auth + 2, '/', (size_t)(t + tlen - (auth + 2)));

        if (slash != NULL) {
            tlen -= slash - t;
            t = slash;
        } else {
            t = "/";
            tlen = 1;
        }
    }
    q = memchr(t, '?', (size_t)tlen);
    plen = q ? q - t : tlen;
    if (set_key(environ, K_REQUEST_METHOD, method_text(method)) < 0 ||
        set_key(environ, K_PATH_INFO, unquoted_latin1(t, plen)) < 0 ||
        set_key(environ, K_QUERY_STRING, q ? PyUnicode_DecodeLatin1(q + 1, tlen - plen - 1, NULL)
                                           : value(V_EMPTY)) < 0 ||
        set_key(environ, K_RAW_URI, PyUnicode_DecodeLatin1(
            PyBytes_AS_STRING(target), PyBytes_GET_SIZE(target), NULL)) < 0 ||
        set_key(environ, K_SERVER_PROTOCOL, protocol_text(version)) < 0)
        goto fail;
    host = fill_headers(environ, headers, 1);
    if (host == NULL)
        goto fail;
    if (host == Py_False)
        goto python_path;
    if (set_default_empty(environ, K_CONTENT_TYPE) < 0 ||
        set_default_empty(environ, K_CONTENT_LENGTH) < 0)
        goto fail;
    rc = server_name_port(environ, host, scheme, server_addr);
    if (rc < 0)
        goto fail;
    if (rc > 0)
        goto python_path;
    if (PyTuple_Check(peer_addr) && PyTuple_GET_SIZE(peer_addr) < 2)
        goto python_path;
    if (PyTuple_Check(peer_addr)) {
        if (PyDict_SetItem(environ, keys[K_REMOTE_ADDR], PyTuple_GET_ITEM(peer_addr, 0)) < 0 ||
            set_key(environ, K_REMOTE_PORT, PyObject_Str(PyTuple_GET_ITEM(peer_addr, 1))) < 0)
            goto fail;
    } else if (PyDict_SetItem(environ, keys[K_REMOTE_ADDR], values[V_EMPTY]) < 0 ||
               PyDict_SetItem(environ, keys[K_REMOTE_PORT], values[V_EMPTY]) < 0) {
        goto fail;
    }
    Py_DECREF(host);
    return environ;
python_path:
    Py_XDECREF(host);
    Py_DECREF(environ);
    Py_RETURN_FALSE;
fail:
    Py_XDECREF(host);
    Py_DECREF(environ);
    return NULL;
}
