/* The reactor's non-blocking steps, called with the GIL held.
 *
 * A cffi call, and a Python socket's recv or send, releases the GIL and
 * takes it back, so on the reactor every crossing lets a waiting worker take
 * the core, and the reactor then waits for the GIL to come back.  The steps
 * here never block (non-blocking sockets; SSL_read / SSL_write over a BIO
 * pair) and take microseconds, so they keep the GIL.
 *
 * The TLS transports' steps stay in the OpenSSL binding
 * (tls/_csrc/memtransport.c and socksteps.c, compiled into the cffi module):
 * tls_bind() is given their addresses once, and a transport passes its SSL,
 * BIO and step pointers as integers.  Nothing here owns those objects or descriptors;
 * each transport checks it is open first.
 */
#include "native.h"
#include "ktlswsgi_tls.h"

#include <errno.h>
#include <limits.h>
#include <sys/socket.h>

typedef __typeof__(&Ktlswsgi_mem_read) read_fn;
typedef __typeof__(&Ktlswsgi_mem_write) write_fn;
typedef __typeof__(&Ktlswsgi_mem_flush) flush_fn;
typedef __typeof__(&Ktlswsgi_mem_has_pending) pending_fn;
typedef __typeof__(&Ktlswsgi_ssl_read) ssl_read_fn;
typedef __typeof__(&Ktlswsgi_ssl_write) ssl_write_fn;

static read_fn mem_read;
static write_fn mem_write;
static flush_fn mem_flush;
static pending_fn mem_has_pending;
static ssl_read_fn ssl_read;
static ssl_write_fn ssl_write;

/* The scratch buffer a read decrypts into: the GIL, held throughout,
   makes it this module's alone. */
#define SCRATCH_BYTES (64 * 1024)
static unsigned char scratch[SCRATCH_BYTES];

static int pointers(PyObject *const *args, Py_ssize_t n, void **out)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        out[i] = PyLong_AsVoidPtr(args[i]);
        if (out[i] == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ValueError, "a NULL pointer");
            return -1;
        }
    }
    return 0;
}

static int bound(void)
{
    if (mem_read == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "tls_bind() was not called");
        return 0;
    }
    return 1;
}

static int as_fd(PyObject *obj)
{
    long fd = PyLong_AsLong(obj);

    if (fd == -1 && PyErr_Occurred())
        return -1;
    if (fd < 0 || fd > INT_MAX) {
        PyErr_SetString(PyExc_ValueError, "not a file descriptor");
        return -1;
    }
    return (int)fd;
}

static int nargs_ok(const char *name, Py_ssize_t nargs, Py_ssize_t want)
{
    if (nargs != want) {
        PyErr_Format(PyExc_TypeError, "%s takes %zd arguments", name, want);
        return 0;
    }
    return 1;
}

/* The buffer for a read of `arg` bytes (positive): the scratch buffer, or a
   PyMem block when more is asked; NULL with an exception. */
static unsigned char *read_buffer(PyObject *arg, Py_ssize_t *max)
{
    unsigned char *buf;

    *max = PyLong_AsSsize_t(arg);
    if (*max == -1 && PyErr_Occurred())
        return NULL;
    if (*max <= 0) {
        PyErr_SetString(PyExc_ValueError, "max_bytes must be positive");
        return NULL;
    }
    if (*max <= SCRATCH_BYTES)
        return scratch;
    buf = PyMem_Malloc((size_t)*max);
    if (buf == NULL)
        PyErr_NoMemory();
    return buf;
}

static void release_buffer(unsigned char *buf)
{
    if (buf != scratch)
        PyMem_Free(buf);
}

/* bytes of buf[:n] (nothing when a TLS step did not finish), and the
   buffer given back. */
static PyObject *read_result(unsigned char *buf, size_t n, Py_ssize_t max,
                             const Ktlswsgi_step *st)
{
    PyObject *out;

    if ((st != NULL && st->outcome != KTLSWSGI_STEP_DONE) || n > (size_t)max)
        n = 0;
    out = PyBytes_FromStringAndSize((const char *)buf, (Py_ssize_t)n);
    release_buffer(buf);
    return out;
}

/* `data` as a simple buffer and `off_arg` as an offset within it; -1 with
   an exception (the buffer then released). */
static int write_args(PyObject *data, PyObject *off_arg, Py_buffer *view, Py_ssize_t *off)
{
    *off = PyLong_AsSsize_t(off_arg);
    if (*off == -1 && PyErr_Occurred())
        return -1;
    if (PyObject_GetBuffer(data, view, PyBUF_SIMPLE) < 0)
        return -1;
    if (*off < 0 || *off > view->len) {
        PyBuffer_Release(view);
        PyErr_SetString(PyExc_ValueError, "offset outside the data");
        return -1;
    }
    return 0;
}

/* tls_bind(mem_read, mem_write, mem_flush, mem_has_pending, ssl_read,
   ssl_write): the steps' addresses. */
PyObject *Ktlswsgi_tls_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[6];

    (void)self;
    if (!nargs_ok("tls_bind", nargs, 6) || pointers(args, 6, p) < 0)
        return NULL;
    mem_read = (read_fn)p[0];
    mem_write = (write_fn)p[1];
    mem_flush = (flush_fn)p[2];
    mem_has_pending = (pending_fn)p[3];
    ssl_read = (ssl_read_fn)p[4];
    ssl_write = (ssl_write_fn)p[5];
    Py_RETURN_NONE;
}

/* mem_read(ssl, net, step, fd, max_bytes) -> the bytes read; b"" when the
   step's outcome is not DONE. */
PyObject *Ktlswsgi_gate_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[3];
    int fd;
    Py_ssize_t max;
    unsigned char *buf;
    size_t got;

    (void)self;
    if (!nargs_ok("mem_read", nargs, 5) || !bound() || pointers(args, 3, p) < 0)
        return NULL;
    fd = as_fd(args[3]);
    if (fd < 0 || (buf = read_buffer(args[4], &max)) == NULL)
        return NULL;
    got = mem_read((SSL *)p[0], (BIO *)p[1], fd, buf, (size_t)max, (Ktlswsgi_step *)p[2]);
    return read_result(buf, got, max, (Ktlswsgi_step *)p[2]);
}

/* mem_write(ssl, net, step, fd, data, off) -> the new offset into data. */
PyObject *Ktlswsgi_gate_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[3];
    int fd;
    Py_ssize_t off;
    Py_buffer view;
    size_t done;

    (void)self;
    if (!nargs_ok("mem_write", nargs, 6) || !bound() || pointers(args, 3, p) < 0)
        return NULL;
    fd = as_fd(args[3]);
    if (fd < 0 || write_args(args[4], args[5], &view, &off) < 0)
        return NULL;
    done = mem_write((SSL *)p[0], (BIO *)p[1], fd, view.buf, (size_t)view.len, (size_t)off,
                     (Ktlswsgi_step *)p[2]);
    PyBuffer_Release(&view);
    return PyLong_FromSize_t(done);
}

/* mem_flush(net, step, fd) -> True when no ciphertext is held back. */
PyObject *Ktlswsgi_gate_flush(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[2];
    int fd;

    (void)self;
    if (!nargs_ok("mem_flush", nargs, 3) || !bound() || pointers(args, 2, p) < 0)
        return NULL;
    fd = as_fd(args[2]);
    if (fd < 0)
        return NULL;
    return PyBool_FromLong(mem_flush((BIO *)p[0], fd, (Ktlswsgi_step *)p[1]));
}

/* has_pending(ssl) -> decrypted bytes, records read ahead, or ciphertext in a
   memory BIO not yet read by OpenSSL, wait (Ktlswsgi_mem_has_pending: a
   socket BIO has nothing pending of its own, so either transport). */
PyObject *Ktlswsgi_gate_has_pending(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[1];

    (void)self;
    if (!nargs_ok("has_pending", nargs, 1) || !bound() || pointers(args, 1, p) < 0)
        return NULL;
    return PyBool_FromLong(mem_has_pending((SSL *)p[0]));
}

/* ssl_read(ssl, step, max_bytes) -> the bytes read; b"" when the step's
   outcome is not DONE (the socket transport: OpenSSL reads the socket). */
PyObject *Ktlswsgi_gate_ssl_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[2];
    Py_ssize_t max;
    unsigned char *buf;
    size_t got;

    (void)self;
    if (!nargs_ok("ssl_read", nargs, 3) || !bound() || pointers(args, 2, p) < 0)
        return NULL;
    if ((buf = read_buffer(args[2], &max)) == NULL)
        return NULL;
    got = ssl_read((SSL *)p[0], buf, (size_t)max, (Ktlswsgi_step *)p[1]);
    return read_result(buf, got, max, (Ktlswsgi_step *)p[1]);
}

/* ssl_write(ssl, step, data, off) -> the new offset into data. */
PyObject *Ktlswsgi_gate_ssl_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    void *p[2];
    Py_ssize_t off;
    Py_buffer view;
    size_t done;

    (void)self;
    if (!nargs_ok("ssl_write", nargs, 4) || !bound() || pointers(args, 2, p) < 0)
        return NULL;
    if (write_args(args[2], args[3], &view, &off) < 0)
        return NULL;
    done = ssl_write((SSL *)p[0], view.buf, (size_t)view.len, (size_t)off,
                     (Ktlswsgi_step *)p[1]);
    PyBuffer_Release(&view);
    return PyLong_FromSize_t(done);
}

/* sock_recv(fd, max_bytes) -> bytes (b"" at EOF), or None when the socket
   has nothing now; OSError for a failure. */
PyObject *Ktlswsgi_gate_sock_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_ssize_t max;
    unsigned char *buf;
    ssize_t n;
    int err;

    (void)self;
    if (!nargs_ok("sock_recv", nargs, 2))
        return NULL;
    fd = as_fd(args[0]);
    if (fd < 0 || (buf = read_buffer(args[1], &max)) == NULL)
        return NULL;
    n = recv(fd, buf, (size_t)max, MSG_DONTWAIT);
    if (n >= 0)
        return read_result(buf, (size_t)n, max, NULL);
    err = errno;
    release_buffer(buf);
    if (err == EAGAIN || err == EWOULDBLOCK || err == EINTR)
        Py_RETURN_NONE;
    errno = err;
    return PyErr_SetFromErrno(PyExc_OSError);
}

/* sock_send(fd, data) -> bytes taken, or -1 when the socket is full;
   OSError for a failure. */
PyObject *Ktlswsgi_gate_sock_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    int fd;
    Py_buffer view;
    ssize_t n;

    (void)self;
    if (!nargs_ok("sock_send", nargs, 2))
        return NULL;
    fd = as_fd(args[0]);
    if (fd < 0)
        return NULL;
    if (PyObject_GetBuffer(args[1], &view, PyBUF_SIMPLE) < 0)
        return NULL;
    n = send(fd, view.buf, (size_t)view.len, MSG_DONTWAIT | MSG_NOSIGNAL);
    PyBuffer_Release(&view);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
            return PyLong_FromLong(-1);
        return PyErr_SetFromErrno(PyExc_OSError);
    }
    return PyLong_FromSsize_t(n);
}
