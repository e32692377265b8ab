/* HPACK (RFC 7541) for the HTTP/2 driver, through nghttp2's coder.
 *
 * hpack_inflater() / hpack_deflater(max_table_bytes): a new decoder or
 * encoder context (a capsule; one of each per HTTP/2 connection).
 *
 * hpack_inflate(inflater, block, max_list_bytes) decodes one complete header
 * block into [(name, value)], or returns an int: -1 when the block is not
 * valid HPACK (a bad index, Huffman code, integer or table size update, a
 * truncated block), -2 when the decoded list is over max_list_bytes
 * (name + value + 32 per field, RFC 9113 6.5.2) or one field is over
 * nghttp2's own bound.  Decoding stops at that field: nothing over the bound
 * is ever built.  After either, the context is not used again (h2 ends the
 * connection: a decoding error is a connection error).
 * hpack_inflate_table_size(inflater, size): the table size our acknowledged
 * SETTINGS allow; the peer must shrink to it at its next block.
 *
 * hpack_deflate(deflater, headers) encodes a list of (name, value) or
 * (name, value, never_indexed) tuples of bytes into one block; None when an
 * item has any other shape (the caller normalises and calls again); a
 * negative int when nghttp2 fails (out of memory).  nghttp2 never indexes
 * Authorization, Proxy-Authorization or a short Cookie, besides the fields
 * marked never_indexed.
 * hpack_deflate_table_size(deflater, size): the peer's SETTINGS_HEADER_TABLE_SIZE
 * (the context never uses more than the max_table_bytes it was made with).
 *
 * Built only where nghttp2's headers are (setup.py defines KTLSWSGI_NGHTTP2);
 * ktlswsgi/hpackcoder.py keeps the hpack package's coder otherwise.
 * tests/test_hpack.py holds both directions to the hpack package (h2's own
 * coder) and tests/fuzz/fuzz_native.py fuzzes the decoder against it.
 */
#ifdef KTLSWSGI_NGHTTP2
#include "native.h"

#include <nghttp2/nghttp2.h>

#define INFLATER "ktlswsgi.hpack.inflater"
#define DEFLATER "ktlswsgi.hpack.deflater"
#define NV_ON_STACK 32

static void inflater_free(PyObject *capsule)
{
    nghttp2_hd_inflater *p = PyCapsule_GetPointer(capsule, INFLATER);

    if (p != NULL)
        nghttp2_hd_inflate_del(p);
}

static void deflater_free(PyObject *capsule)
{
    nghttp2_hd_deflater *p = PyCapsule_GetPointer(capsule, DEFLATER);

    if (p != NULL)
        nghttp2_hd_deflate_del(p);
}

static int size_arg(PyObject *arg, size_t *out)
{
    Py_ssize_t v = PyLong_AsSsize_t(arg);

    if (v == -1 && PyErr_Occurred())
        return -1;
    if (v < 0) {
        PyErr_SetString(PyExc_ValueError, "a size must not be negative");
        return -1;
    }
    *out = (size_t)v;
    return 0;
}

PyObject *Ktlswsgi_hpack_inflater(PyObject *self, PyObject *unused)
{
    nghttp2_hd_inflater *p = NULL;
    PyObject *capsule;

    (void)self;
    (void)unused;
    if (nghttp2_hd_inflate_new(&p) != 0)
        return PyErr_NoMemory();
    capsule = PyCapsule_New(p, INFLATER, inflater_free);
    if (capsule == NULL)
        nghttp2_hd_inflate_del(p);
    return capsule;
}

PyObject *Ktlswsgi_hpack_deflater(PyObject *self, PyObject *arg)
{
    nghttp2_hd_deflater *p = NULL;
    PyObject *capsule;
    size_t max_table;

    (void)self;
    if (size_arg(arg, &max_table) < 0)
        return NULL;
    if (nghttp2_hd_deflate_new(&p, max_table) != 0)
        return PyErr_NoMemory();
    capsule = PyCapsule_New(p, DEFLATER, deflater_free);
    if (capsule == NULL)
        nghttp2_hd_deflate_del(p);
    return capsule;
}

static PyObject *field(const nghttp2_nv *nv)
{
    PyObject *pair = PyTuple_New(2), *item;

    if (pair == NULL)
        return NULL;
    item = PyBytes_FromStringAndSize((const char *)nv->name, (Py_ssize_t)nv->namelen);
    if (item == NULL)
        goto fail;
    PyTuple_SET_ITEM(pair, 0, item);
    item = PyBytes_FromStringAndSize((const char *)nv->value, (Py_ssize_t)nv->valuelen);
    if (item == NULL)
        goto fail;
    PyTuple_SET_ITEM(pair, 1, item);
    return pair;
fail:
    Py_DECREF(pair);
    return NULL;
}

PyObject *Ktlswsgi_hpack_inflate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    nghttp2_hd_inflater *inflater;
    Py_buffer view;
    PyObject *headers;
    const uint8_t *in;
    size_t left, max_list, list_bytes = 0;
    long code = 0;

    (void)self;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "hpack_inflate(inflater, block, max_list_bytes)");
        return NULL;
    }
    inflater = PyCapsule_GetPointer(args[0], INFLATER);
    if (inflater == NULL || size_arg(args[2], &max_list) < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    headers = PyList_New(0);
    if (headers == NULL)
        goto done;
    in = view.buf;
    left = (size_t)view.len;
    for (;;) {
        nghttp2_nv nv;
        int flags = 0;
        ssize_t rv = nghttp2_hd_inflate_hd2(inflater, &nv, &flags, in, left, 1);

        if (rv == NGHTTP2_ERR_NOMEM) {
            PyErr_NoMemory();
            Py_CLEAR(headers);
            goto done;
        }
        if (rv < 0) {
            code = rv == NGHTTP2_ERR_BUFFER_ERROR ? -2 : -1;
            break;
        }
        if ((size_t)rv > left) {   /* never: nghttp2 consumes from what it was given */
            code = -1;
            break;
        }
        in += rv;
        left -= (size_t)rv;
        if (flags & NGHTTP2_HD_INFLATE_EMIT) {
            PyObject *pair;
            int rc;

            list_bytes += nv.namelen + nv.valuelen + 32;
            if (list_bytes > max_list) {
                code = -2;
                break;
            }
            pair = field(&nv);
            if (pair == NULL) {
                Py_CLEAR(headers);
                goto done;
            }
            rc = PyList_Append(headers, pair);
            Py_DECREF(pair);
            if (rc < 0) {
                Py_CLEAR(headers);
                goto done;
            }
        }
        if (flags & NGHTTP2_HD_INFLATE_FINAL) {
            nghttp2_hd_inflate_end_headers(inflater);
            break;
        }
        if (!(flags & NGHTTP2_HD_INFLATE_EMIT) && (left == 0 || rv == 0)) {
            code = -1;   /* no progress and no end: never loop on it */
            break;
        }
    }
    if (code != 0) {
        Py_DECREF(headers);
        headers = PyLong_FromLong(code);
    }
done:
    PyBuffer_Release(&view);
    return headers;
}

/* The (context, size) arguments of the table-size calls: the context, or
   NULL with an exception. */
static void *table_size_args(PyObject *const *args, Py_ssize_t nargs, const char *kind,
                             size_t *size)
{
    void *ctx;

    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hpack_*_table_size(context, size)");
        return NULL;
    }
    ctx = PyCapsule_GetPointer(args[0], kind);
    return ctx == NULL || size_arg(args[1], size) < 0 ? NULL : ctx;
}

PyObject *Ktlswsgi_hpack_inflate_table_size(PyObject *self, PyObject *const *args,
                                            Py_ssize_t nargs)
{
    size_t size;
    nghttp2_hd_inflater *inflater = table_size_args(args, nargs, INFLATER, &size);

    (void)self;
    if (inflater == NULL)
        return NULL;
    if (nghttp2_hd_inflate_change_table_size(inflater, size) != 0) {
        PyErr_SetString(PyExc_RuntimeError, "HPACK decoder: table size change refused");
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *Ktlswsgi_hpack_deflate_table_size(PyObject *self, PyObject *const *args,
                                            Py_ssize_t nargs)
{
    size_t size;
    nghttp2_hd_deflater *deflater = table_size_args(args, nargs, DEFLATER, &size);

    (void)self;
    if (deflater == NULL)
        return NULL;
    if (nghttp2_hd_deflate_change_table_size(deflater, size) != 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* Fills nva from the fast sequence `seq`: 1, or 0 when an item is not an
   exact tuple of two bytes (and an optional never-indexed flag). */
static int fill_nva(PyObject *seq, nghttp2_nv *nva, Py_ssize_t n)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i), *name, *value;
        Py_ssize_t size;

        if (!PyTuple_CheckExact(item))
            return 0;
        size = PyTuple_GET_SIZE(item);
        if (size != 2 && size != 3)
            return 0;
        name = PyTuple_GET_ITEM(item, 0);
        value = PyTuple_GET_ITEM(item, 1);
        if (!PyBytes_CheckExact(name) || !PyBytes_CheckExact(value))
            return 0;
        nva[i].name = (uint8_t *)PyBytes_AS_STRING(name);
        nva[i].namelen = (size_t)PyBytes_GET_SIZE(name);
        nva[i].value = (uint8_t *)PyBytes_AS_STRING(value);
        nva[i].valuelen = (size_t)PyBytes_GET_SIZE(value);
        nva[i].flags = NGHTTP2_NV_FLAG_NONE;
        if (size == 3) {
            PyObject *flag = PyTuple_GET_ITEM(item, 2);

            if (flag != Py_True && flag != Py_False && flag != Py_None)
                return 0;
            if (flag == Py_True)
                nva[i].flags = NGHTTP2_NV_FLAG_NO_INDEX;
        }
    }
    return 1;
}

PyObject *Ktlswsgi_hpack_deflate(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    nghttp2_hd_deflater *deflater;
    nghttp2_nv on_stack[NV_ON_STACK], *nva = on_stack;
    PyObject *seq, *out = NULL;
    Py_ssize_t n;
    size_t bound;
    ssize_t rv;

    (void)self;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "hpack_deflate(deflater, headers)");
        return NULL;
    }
    deflater = PyCapsule_GetPointer(args[0], DEFLATER);
    if (deflater == NULL)
        return NULL;
    if (!PyList_CheckExact(args[1]) && !PyTuple_CheckExact(args[1]))
        Py_RETURN_NONE;   /* an iterator could be consumed only once */
    seq = PySequence_Fast(args[1], "headers must be a list");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n > NV_ON_STACK) {
        nva = PyMem_New(nghttp2_nv, (size_t)n);
        if (nva == NULL) {
            Py_DECREF(seq);
            return PyErr_NoMemory();
        }
    }
    if (!fill_nva(seq, nva, n)) {
        out = Py_None;
        Py_INCREF(out);
        goto done;
    }
    bound = nghttp2_hd_deflate_bound(deflater, nva, (size_t)n);
    if (bound > (size_t)PY_SSIZE_T_MAX) {
        PyErr_NoMemory();
        goto done;
    }
    out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)bound);
    if (out == NULL)
        goto done;
    rv = nghttp2_hd_deflate_hd(deflater, (uint8_t *)PyBytes_AS_STRING(out), bound, nva,
                               (size_t)n);
    if (rv < 0) {
        Py_DECREF(out);
        out = PyLong_FromLong((long)rv);
        goto done;
    }
    if ((size_t)rv < bound)
        _PyBytes_Resize(&out, (Py_ssize_t)rv);   /* NULL on failure, with the error set */
done:
    if (nva != on_stack)
        PyMem_Free(nva);
    Py_DECREF(seq);
    return out;
}

#endif /* KTLSWSGI_NGHTTP2 */
