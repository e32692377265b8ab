/* A request's header fields into its WSGI environ (PEP 3333), as
 * wsgi.py's _environ_headers does it, which is the reference:
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

    *is_host = n == 4 && PyOS_strnicmp(name, "host", 4) == 0;
    *is_cookie = n == 6 && PyOS_strnicmp(name, "cookie", 6) == 0;
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

PyObject *Ktlswsgi_environ_headers(PyObject *self, PyObject *args)
{
    PyObject *environ, *headers, *seq, *seen = NULL, *host = NULL, *result = NULL;
    Py_ssize_t n, i;
    int pairs;

    (void)self;
    if (!PyArg_ParseTuple(args, "O!O", &PyDict_Type, &environ, &headers))
        return NULL;
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
    seen = PySet_New(NULL);
    if (seen == NULL)
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
        known = PySet_Contains(seen, key);
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
        } else if (known < 0 || PySet_Add(seen, key) < 0) {
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
