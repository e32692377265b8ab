/* The app's response headers, checked and encoded, as wsgi.py's
 * Responder.start_response does it in Python, which is the reference:
 *
 * response_headers(headers) -> (encoded, content_length, has_date, has_server)
 *   encoded: [(name latin-1 bytes, value latin-1 bytes)], each value without
 *   its surrounding SP / HTAB; content_length: an int or None; has_date /
 *   has_server: whether the app gave Date / Server.
 *
 * Only the plain case is decided here: every item a tuple of two str, every
 * name an HTTP token, every value of latin-1 characters with no control
 * character but HTAB, no hop-by-hop field (Python drops and logs those), a
 * Content-Length of 1 to 18 ASCII digits.  Anything else returns False,
 * having decided nothing, and the Python path gives its answer (the precise
 * HeaderError, the log line).
 */
#include "native.h"

#include <string.h>

static int is_name(const char *name, Py_ssize_t n, const char *lower)
{
    return (Py_ssize_t)strlen(lower) == n && PyOS_strnicmp(name, lower, (size_t)n) == 0;
}

static int hop_by_hop(const char *name, Py_ssize_t n)
{
    return is_name(name, n, "transfer-encoding") || is_name(name, n, "keep-alive") ||
           is_name(name, n, "upgrade") || is_name(name, n, "proxy-connection") ||
           is_name(name, n, "te") || is_name(name, n, "trailer");
}

PyObject *Ktlswsgi_response_headers(PyObject *self, PyObject *headers)
{
    PyObject *encoded, *result = NULL, *length_obj = NULL;
    Py_ssize_t n, i;
    long long length = -1;
    int has_date = 0, has_server = 0;

    (void)self;
    if (!PyList_Check(headers))
        Py_RETURN_FALSE;
    n = PyList_GET_SIZE(headers);
    encoded = PyList_New(0);
    if (encoded == NULL)
        return NULL;
    for (i = 0; i < n && i < PyList_GET_SIZE(headers); i++) {
        PyObject *item = PyList_GET_ITEM(headers, i);
        PyObject *name, *value, *name_b, *value_b, *pair;
        const char *nm;
        const Py_UCS1 *v;
        Py_ssize_t nl, vl, a, b, k;

        if (!PyTuple_Check(item) || PyTuple_GET_SIZE(item) != 2)
            goto python_path;
        name = PyTuple_GET_ITEM(item, 0);
        value = PyTuple_GET_ITEM(item, 1);
        if (!PyUnicode_Check(name) || !PyUnicode_Check(value) ||
            !PyUnicode_IS_ASCII(name) || PyUnicode_KIND(value) != PyUnicode_1BYTE_KIND)
            goto python_path;
        nm = (const char *)PyUnicode_1BYTE_DATA(name);
        nl = PyUnicode_GET_LENGTH(name);
        if (nl == 0)
            goto python_path;
        for (k = 0; k < nl; k++)
            if (!Ktlswsgi_tchar[(unsigned char)nm[k]])
                goto python_path;
        if (hop_by_hop(nm, nl))
            goto python_path;
        v = PyUnicode_1BYTE_DATA(value);
        vl = PyUnicode_GET_LENGTH(value);
        a = 0;
        b = vl;
        while (a < b && (v[a] == ' ' || v[a] == '\t'))
            a++;
        while (b > a && (v[b - 1] == ' ' || v[b - 1] == '\t'))
            b--;
        for (k = a; k < b; k++)
            if ((v[k] < 0x20 && v[k] != '\t') || v[k] == 0x7f)
                goto python_path;
        if (is_name(nm, nl, "content-length")) {
            long long cl = 0;

            if (b - a == 0 || b - a > 18)
                goto python_path;
            for (k = a; k < b; k++) {
                if (v[k] < '0' || v[k] > '9')
                    goto python_path;
                cl = cl * 10 + (v[k] - '0');
            }
            length = cl;
        } else if (is_name(nm, nl, "date")) {
            has_date = 1;
        } else if (is_name(nm, nl, "server")) {
            has_server = 1;
        }
        name_b = PyBytes_FromStringAndSize(nm, nl);
        value_b = name_b ? PyBytes_FromStringAndSize((const char *)v + a, b - a) : NULL;
        pair = value_b ? PyTuple_Pack(2, name_b, value_b) : NULL;
        Py_XDECREF(name_b);
        Py_XDECREF(value_b);
        if (pair == NULL || PyList_Append(encoded, pair) < 0) {
            Py_XDECREF(pair);
            goto done;
        }
        Py_DECREF(pair);
    }
    if (length >= 0) {
        length_obj = PyLong_FromLongLong(length);
        if (length_obj == NULL)
            goto done;
    } else {
        Py_INCREF(Py_None);
        length_obj = Py_None;
    }
    result = Py_BuildValue("(OOOO)", encoded, length_obj, has_date ? Py_True : Py_False,
                           has_server ? Py_True : Py_False);
    goto done;
python_path:
    Py_INCREF(Py_False);
    result = Py_False;
done:
    Py_XDECREF(length_obj);
    Py_DECREF(encoded);
    return result;
}
