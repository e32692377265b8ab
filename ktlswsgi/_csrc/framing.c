/* An HTTP/1 response head's bytes, as http1.Http1.response_head frames them
 * in Python, which is the reference (the policy, framing and Connection
 * rules, stay there):
 *
 * scan_response_headers(headers): the Content-Length the headers give (an
 *   int, or None without one); False, having judged nothing, when Python
 *   must look (a Connection field, a Content-Length that is not all ASCII
 *   digits, longer than 18 digits or repeated with another value, an item
 *   that is not a pair of bytes).
 * serialize_head(status, reason, headers): b"HTTP/1.1 <status> <reason>\r\n"
 *   then b"<name>: <value>\r\n" per field, then b"\r\n"; None when an item is
 *   not a pair of bytes.  One allocation, sized first.
 */
#include "native.h"

#include <stdio.h>
#include <string.h>

PyObject *Ktlswsgi_scan_response_headers(PyObject *self, PyObject *headers)
{
    PyObject *seq, *result;
    Py_ssize_t n, i;
    long long length = -1;
    int pairs;

    (void)self;
    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq == NULL)
        return NULL;
    if (!pairs)
        goto python_path;
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        const char *name, *value;
        Py_ssize_t nl, vl, k;
        long long v = 0;

        name = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 0));
        nl = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0));
        if (nl == 10 && PyOS_strnicmp(name, "connection", 10) == 0)
            goto python_path;
        if (!(nl == 14 && PyOS_strnicmp(name, "content-length", 14) == 0))
            continue;
        value = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 1));
        vl = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1));
        if (vl == 0 || vl > 18)
            goto python_path;
        for (k = 0; k < vl; k++) {
            if (value[k] < '0' || value[k] > '9')
                goto python_path;
            v = v * 10 + (value[k] - '0');
        }
        if (length >= 0 && v != length)
            goto python_path;
        length = v;
    }
    Py_DECREF(seq);
    if (length < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(length);
python_path:
    Py_DECREF(seq);
    result = Py_False;
    Py_INCREF(result);
    return result;
}

PyObject *Ktlswsgi_serialize_head(PyObject *self, PyObject *args)
{
    long status;
    Py_buffer reason;
    PyObject *headers, *seq, *out = NULL;
    Py_ssize_t n, i, total;
    char line[32];
    int line_len;
    char *d;
    int pairs;

    (void)self;
    if (!PyArg_ParseTuple(args, "ly*O", &status, &reason, &headers))
        return NULL;
    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq == NULL)
        goto release;
    if (!pairs) {
        Py_INCREF(Py_None);
        out = Py_None;
        goto release;
    }
    line_len = snprintf(line, sizeof line, "HTTP/1.1 %ld ", status);
    if (line_len < 0 || (size_t)line_len >= sizeof line) {
        PyErr_SetString(PyExc_ValueError, "status out of range");
        goto release;
    }
    total = line_len + reason.len + 2 + 2;
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t add;

        add = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0)) +
              PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) + 4;
        if (total > PY_SSIZE_T_MAX - add) {
            PyErr_NoMemory();
            goto release;
        }
        total += add;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        goto release;
    d = PyBytes_AS_STRING(out);
    memcpy(d, line, (size_t)line_len);
    d += line_len;
    memcpy(d, reason.buf, (size_t)reason.len);
    d += reason.len;
    *d++ = '\r';
    *d++ = '\n';
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *name = PyTuple_GET_ITEM(item, 0), *value = PyTuple_GET_ITEM(item, 1);

        memcpy(d, PyBytes_AS_STRING(name), (size_t)PyBytes_GET_SIZE(name));
        d += PyBytes_GET_SIZE(name);
        *d++ = ':';
        *d++ = ' ';
        memcpy(d, PyBytes_AS_STRING(value), (size_t)PyBytes_GET_SIZE(value));
        d += PyBytes_GET_SIZE(value);
        *d++ = '\r';
        *d++ = '\n';
    }
    *d++ = '\r';
    *d++ = '\n';
    if (d != PyBytes_AS_STRING(out) + total) {
        Py_DECREF(out);
        out = NULL;
        PyErr_SetString(PyExc_SystemError, "serialize_head: length mismatch");
    }
release:
    Py_XDECREF(seq);
    PyBuffer_Release(&reason);
    return out;
}
