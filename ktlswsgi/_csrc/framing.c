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
 * frame_whole(status, reason, headers, body, close): a whole response framed
 *   by its Content-Length, in one buffer: serialize_head's bytes (with
 *   b"connection: close" last when `close`) then the body.  None, having
 *   judged nothing, unless the headers give exactly one Content-Length value
 *   and it is len(body), and hold no Connection field (scan_response_headers'
 *   rules); the caller checked the rest (a request kept alive, a status and
 *   method with a body).
 */
#include "native.h"

#include <stdio.h>
#include <string.h>

/* The Content-Length of `seq` (pairs of bytes): >= 0, -1 without one, -2
   when Python must look (scan_response_headers' rules). */
static long long content_length(PyObject *seq)
{
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq), i;
    long long length = -1;

    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        const char *name, *value;
        Py_ssize_t nl, vl, k;
        long long v = 0;

        name = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 0));
        nl = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0));
        if (nl == 10 && PyOS_strnicmp(name, "connection", 10) == 0)
            return -2;
        if (!(nl == 14 && PyOS_strnicmp(name, "content-length", 14) == 0))
            continue;
        value = PyBytes_AS_STRING(PyTuple_GET_ITEM(item, 1));
        vl = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1));
        if (vl == 0 || vl > 18)
            return -2;
        for (k = 0; k < vl; k++) {
            if (value[k] < '0' || value[k] > '9')
                return -2;
            v = v * 10 + (value[k] - '0');
        }
        if (length >= 0 && v != length)
            return -2;
        length = v;
    }
    return length;
}

PyObject *Ktlswsgi_scan_response_headers(PyObject *self, PyObject *headers)
{
    PyObject *seq;
    long long length;
    int pairs;

    (void)self;
    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq == NULL)
        return NULL;
    length = pairs ? content_length(seq) : -2;
    Py_DECREF(seq);
    if (length == -2)
        Py_RETURN_FALSE;
    if (length < 0)
        Py_RETURN_NONE;
    return PyLong_FromLongLong(length);
}

static const char CLOSE_FIELD[] = "connection: close\r\n";
#define CLOSE_FIELD_LEN ((Py_ssize_t)(sizeof CLOSE_FIELD - 1))

/* The head of `seq` (pairs of bytes), then `close`'s field, then `body`. */
static PyObject *frame(long status, const Py_buffer *reason, PyObject *seq, int close,
                       const Py_buffer *body)
{
    PyObject *out;
    Py_ssize_t n, i, total;
    char line[32];
    int line_len;
    char *d;

    line_len = snprintf(line, sizeof line, "HTTP/1.1 %ld ", status);
    if (line_len < 0 || (size_t)line_len >= sizeof line) {
        PyErr_SetString(PyExc_ValueError, "status out of range");
        return NULL;
    }
    total = line_len + reason->len + 2 + 2 + (close ? CLOSE_FIELD_LEN : 0);
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        Py_ssize_t add;

        add = PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 0)) +
              PyBytes_GET_SIZE(PyTuple_GET_ITEM(item, 1)) + 4;
        if (total > PY_SSIZE_T_MAX - add)
            return PyErr_NoMemory();
        total += add;
    }
    if (body != NULL) {
        if (total > PY_SSIZE_T_MAX - body->len)
            return PyErr_NoMemory();
        total += body->len;
    }
    out = PyBytes_FromStringAndSize(NULL, total);
    if (out == NULL)
        return NULL;
    d = PyBytes_AS_STRING(out);
    memcpy(d, line, (size_t)line_len);
    d += line_len;
    memcpy(d, reason->buf, (size_t)reason->len);
    d += reason->len;
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
    if (close) {
        memcpy(d, CLOSE_FIELD, (size_t)CLOSE_FIELD_LEN);
        d += CLOSE_FIELD_LEN;
    }
    *d++ = '\r';
    *d++ = '\n';
    if (body != NULL) {
        memcpy(d, body->buf, (size_t)body->len);
        d += body->len;
    }
    if (d != PyBytes_AS_STRING(out) + total) {
        Py_DECREF(out);
        PyErr_SetString(PyExc_SystemError, "framing: length mismatch");
        return NULL;
    }
    return out;
}

PyObject *Ktlswsgi_serialize_head(PyObject *self, PyObject *args)
{
    long status;
    Py_buffer reason;
    PyObject *headers, *seq, *out = NULL;
    int pairs;

    (void)self;
    if (!PyArg_ParseTuple(args, "ly*O", &status, &reason, &headers))
        return NULL;
    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq != NULL) {
        if (pairs) {
            out = frame(status, &reason, seq, 0, NULL);
        } else {
            Py_INCREF(Py_None);
            out = Py_None;
        }
        Py_DECREF(seq);
    }
    PyBuffer_Release(&reason);
    return out;
}

PyObject *Ktlswsgi_frame_whole(PyObject *self, PyObject *args)
{
    long status;
    Py_buffer reason, body;
    PyObject *headers, *seq, *out = NULL;
    int close, pairs;

    (void)self;
    if (!PyArg_ParseTuple(args, "ly*Oy*p", &status, &reason, &headers, &body, &close))
        return NULL;
    seq = Ktlswsgi_byte_pairs(headers, &pairs);
    if (seq != NULL) {
        if (pairs && content_length(seq) == (long long)body.len) {
            out = frame(status, &reason, seq, close, &body);
        } else {
            Py_INCREF(Py_None);
            out = Py_None;
        }
        Py_DECREF(seq);
    }
    PyBuffer_Release(&reason);
    PyBuffer_Release(&body);
    return out;
}
