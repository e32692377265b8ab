/* A measurement prototype, not part of the server: the floor of "the epoll
   loop in C, Python entered only to run the app" (issue 19's question).

   One loop thread, holding the GIL except in epoll_wait: accept, recv (or
   the TLS handshake and SSL_read through OpenSSL's socket BIO, given a
   certificate), the request head split into the WSGI environ, then the app:
   called inline, or handed to Python worker threads that frame and send the
   response in a C call (`run`); keep-alive.  HTTP/1.1 GET/HEAD without a
   body, heads up to BUF_BYTES, responses that fit one send; anything else
   closes the connection.  It answers what such a loop costs per request
   against the server's Python reactor and granian under the same h2load
   load (bench/prototypes/run_cloop.sh).  Built by cloop_serve.py only: pip
   never builds it and the server never imports it. */
#define _GNU_SOURCE
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/ssl.h>

#define BUF_BYTES 8192
#define MAX_FDS 4096

struct conn {
    int fd;
    SSL *ssl;            /* TLS: the connection's, NULL for plain TCP */
    int handshaken;
    size_t len;
    char buf[BUF_BYTES];
};

static struct conn *conns[MAX_FDS];
static PyObject *g_status, *g_headers;      /* the current start_response call's */

static PyObject *start_response(PyObject *self, PyObject *args)
{
    PyObject *status, *headers, *exc = NULL;

    (void)self;
    if (!PyArg_ParseTuple(args, "UO|O", &status, &headers, &exc))
        return NULL;
    Py_XSETREF(g_status, Py_NewRef(status));
    Py_XSETREF(g_headers, Py_NewRef(headers));
    Py_RETURN_NONE;
}

static PyMethodDef start_def = {"start_response", start_response, METH_VARARGS, NULL};

/* The pool mode's start_response: bound to a 2-item list [status, headers]
   made for its request, since several workers run at once. */
static PyObject *start_response_into(PyObject *self, PyObject *args)
{
    PyObject *status, *headers, *exc = NULL;

    if (!PyArg_ParseTuple(args, "UO|O", &status, &headers, &exc))
        return NULL;
    Py_INCREF(status);
    Py_INCREF(headers);
    PyList_SetItem(self, 0, status);
    PyList_SetItem(self, 1, headers);
    Py_RETURN_NONE;
}

static PyMethodDef start_into_def = {"start_response", start_response_into, METH_VARARGS, NULL};

static int append(char *out, size_t *n, size_t cap, const char *s, size_t len)
{
    if (*n + len > cap)
        return -1;
    memcpy(out + *n, s, len);
    *n += len;
    return 0;
}

/* The environ of the head buf[:head_len]; NULL when it is not a simple head. */
static PyObject *environ_of(const char *buf, size_t head_len, PyObject *base, int *keep)
{
    const char *end = buf + head_len, *p = buf, *sp1, *sp2, *eol, *q;
    PyObject *env = PyDict_Copy(base);

    if (env == NULL)
        return NULL;
    eol = memchr(p, '\r', (size_t)(end - p));
    sp1 = eol ? memchr(p, ' ', (size_t)(eol - p)) : NULL;
    sp2 = sp1 ? memchr(sp1 + 1, ' ', (size_t)(eol - sp1 - 1)) : NULL;
    if (sp2 == NULL)
        goto bad;
    q = memchr(sp1 + 1, '?', (size_t)(sp2 - sp1 - 1));
    PyObject *v;
#define SET(k, s, n) do { v = PyUnicode_DecodeLatin1((s), (Py_ssize_t)(n), NULL); \
        if (v == NULL || PyDict_SetItemString(env, (k), v) < 0) { Py_XDECREF(v); goto bad; } \
        Py_DECREF(v); } while (0)
    SET("REQUEST_METHOD", p, sp1 - p);
    SET("PATH_INFO", sp1 + 1, (q ? q : sp2) - sp1 - 1);
    SET("QUERY_STRING", q ? q + 1 : sp2, q ? sp2 - q - 1 : 0);
    SET("SERVER_PROTOCOL", sp2 + 1, eol - sp2 - 1);
    p = eol + 2;
    while (p < end - 2) {
        char name[5 + 128 + 1];   /* "HTTP_", up to 128 name bytes, NUL */
        const char *colon;
        size_t i, nlen;
        eol = memchr(p, '\r', (size_t)(end - p));
        colon = eol ? memchr(p, ':', (size_t)(eol - p)) : NULL;
        if (colon == NULL || (nlen = (size_t)(colon - p)) == 0 || nlen > 128)
            goto bad;
        memcpy(name, "HTTP_", 5);
        for (i = 0; i < nlen; i++) {
            char c = p[i];
            name[5 + i] = c == '-' ? '_' : (c >= 'a' && c <= 'z') ? (char)(c - 32) : c;
        }
        name[5 + nlen] = 0;
        for (q = colon + 1; q < eol && (*q == ' ' || *q == '\t'); q++)
            ;
        if (nlen == 10 && strncasecmp(p, "connection", 10) == 0 && eol - q == 5
                && strncasecmp(q, "close", 5) == 0)
            *keep = 0;
        if (nlen == 14 && strncasecmp(p, "content-length", 14) == 0)
            goto bad;   /* a body: out of this prototype's scope */
        SET(name, q, eol - q);
        p = eol + 2;
    }
#undef SET
    return env;
bad:
    Py_DECREF(env);
    return NULL;
}

/* Run the app for one head; the framed response in out[:*n]; -1: close. */
static int respond(PyObject *app, PyObject *env, PyObject *start, PyObject *holder,
                   char *out, size_t cap, size_t *n, const char *date)
{
    PyObject *result = PyObject_CallFunctionObjArgs(app, env, start, NULL);
    PyObject *status, *headers, *it, *chunk;
    char body[BUF_BYTES * 4];
    size_t blen = 0, hn = 0;
    Py_ssize_t i, len;
    const char *s;

    status = holder ? PyList_GetItem(holder, 0) : g_status;   /* set by the app's call */
    headers = holder ? PyList_GetItem(holder, 1) : g_headers;
    if (result == NULL || status == NULL || status == Py_None)
        goto fail;
    it = PyObject_GetIter(result);
    if (it == NULL)
        goto fail;
    while ((chunk = PyIter_Next(it)) != NULL) {
        char *cs;
        if (PyBytes_AsStringAndSize(chunk, &cs, &len) < 0
                || append(body, &blen, sizeof(body), cs, (size_t)len) < 0) {
            Py_DECREF(chunk);
            Py_DECREF(it);
            goto fail;
        }
        Py_DECREF(chunk);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        goto fail;
    if (PyObject_HasAttrString(result, "close")) {
        PyObject *r = PyObject_CallMethod(result, "close", NULL);
        Py_XDECREF(r);
    }
    Py_CLEAR(result);
    s = PyUnicode_AsUTF8AndSize(status, &len);
    if (s == NULL || append(out, &hn, cap, "HTTP/1.1 ", 9) < 0
            || append(out, &hn, cap, s, (size_t)len) < 0 || append(out, &hn, cap, "\r\n", 2) < 0)
        goto fail;
    for (i = 0; i < PyList_Size(headers); i++) {
        PyObject *pair = PyList_GetItem(headers, i);
        Py_ssize_t kl, vl;
        const char *k = PyUnicode_AsUTF8AndSize(PyTuple_GetItem(pair, 0), &kl);
        const char *v = k ? PyUnicode_AsUTF8AndSize(PyTuple_GetItem(pair, 1), &vl) : NULL;
        if (v == NULL || append(out, &hn, cap, k, (size_t)kl) < 0
                || append(out, &hn, cap, ": ", 2) < 0 || append(out, &hn, cap, v, (size_t)vl) < 0
                || append(out, &hn, cap, "\r\n", 2) < 0)
            goto fail;
    }
    if (append(out, &hn, cap, date, strlen(date)) < 0
            || append(out, &hn, cap, "\r\n\r\n", 4) < 0 || append(out, &hn, cap, body, blen) < 0)
        goto fail;
    *n = hn;
    return 0;
fail:
    Py_XDECREF(result);
    PyErr_Clear();
    return -1;
}

/* Send out[:n] whole on the connection (plain send, or SSL_write with the
   GIL held, so a worker's write and the loop's read never overlap); 0 on
   success. */
static int send_all(struct conn *c, const char *out, size_t n)
{
    if (c->ssl != NULL) {
        size_t done = 0;
        ERR_clear_error();
        return SSL_write_ex(c->ssl, out, n, &done) == 1 && done == n ? 0 : -1;
    }
    return send(c->fd, out, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

/* Read what the connection holds into its buffer: bytes read, 0 when none
   now, -1 at the end or on an error. */
static ssize_t read_some(struct conn *c)
{
    size_t room = BUF_BYTES - c->len, got = 0;
    int e;

    if (c->ssl == NULL) {
        ssize_t n = recv(c->fd, c->buf + c->len, room, 0);
        if (n < 0 && (errno == EAGAIN || errno == EINTR))
            return 0;
        return n > 0 ? n : -1;
    }
    ERR_clear_error();
    if (!c->handshaken) {
        int r = SSL_do_handshake(c->ssl);
        if (r != 1) {
            e = SSL_get_error(c->ssl, r);
            return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
        }
        c->handshaken = 1;
    }
    if (SSL_read_ex(c->ssl, c->buf + c->len, room, &got) == 1)
        return (ssize_t)got;
    e = SSL_get_error(c->ssl, 0);
    return e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE ? 0 : -1;
}

static void drop(int ep, struct conn *c)
{
    if (c->ssl != NULL)
        SSL_free(c->ssl);
    epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    conns[c->fd] = NULL;
    PyMem_Free(c);
}

static char date[64] = "";   /* this second's Date field; the loop thread writes it */

/* run(app, environ, fd): on a worker thread, the app's response framed and sent. */
static PyObject *run(PyObject *self, PyObject *args)
{
    PyObject *app, *env, *holder, *start;
    int fd, rc;
    size_t n = 0;
    static __thread char out[BUF_BYTES * 5];

    (void)self;
    if (!PyArg_ParseTuple(args, "OO!i", &app, &PyDict_Type, &env, &fd))
        return NULL;
    holder = Py_BuildValue("[OO]", Py_None, Py_None);
    start = holder ? PyCFunction_New(&start_into_def, holder) : NULL;
    if (start == NULL) {
        Py_XDECREF(holder);
        return NULL;
    }
    rc = respond(app, env, start, holder, out, sizeof(out), &n, date);
    Py_DECREF(start);
    Py_DECREF(holder);
    if (rc < 0 || fd < 0 || fd >= MAX_FDS || conns[fd] == NULL
            || send_all(conns[fd], out, n) < 0)
        shutdown(fd, SHUT_RDWR);   /* the loop sees the end and drops it */
    Py_RETURN_NONE;
}

/* serve(app, listen_fd, seconds, base_environ, put, certfile, keyfile) ->
   requests served.  put None: the app runs inline; else put((environ, fd))
   hands the request to Python workers, which call run().  certfile None:
   plain TCP; else TLS (OpenSSL's defaults, the socket BIO, no kTLS). */
static PyObject *serve(PyObject *self, PyObject *args)
{
    PyObject *app, *base, *start, *put;
    const char *certfile = NULL, *keyfile = NULL;
    SSL_CTX *ctx = NULL;
    int lfd, ep;
    double seconds;
    long served = 0;
    struct epoll_event ev, evs[64];
    time_t until, shown = 0;
    char out[BUF_BYTES * 5];

    (void)self;
    if (!PyArg_ParseTuple(args, "OidO!Ozz", &app, &lfd, &seconds, &PyDict_Type, &base, &put,
                          &certfile, &keyfile))
        return NULL;
    if (certfile != NULL) {
        ctx = SSL_CTX_new(TLS_server_method());
        if (ctx == NULL || SSL_CTX_use_certificate_chain_file(ctx, certfile) != 1
                || SSL_CTX_use_PrivateKey_file(ctx, keyfile, SSL_FILETYPE_PEM) != 1) {
            SSL_CTX_free(ctx);
            PyErr_SetString(PyExc_ValueError, "cannot load the certificate or the key");
            return NULL;
        }
    }
    start = PyCFunction_New(&start_def, NULL);
    ep = epoll_create1(0);
    ev.events = EPOLLIN;
    ev.data.fd = lfd;
    epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
    until = time(NULL) + (time_t)seconds;
    while (time(NULL) < until) {
        int i, k;
        Py_BEGIN_ALLOW_THREADS
        k = epoll_wait(ep, evs, 64, 200);
        Py_END_ALLOW_THREADS
        for (i = 0; i < k; i++) {
            int fd = evs[i].data.fd;
            if (fd == lfd) {
                int cfd;
                while ((cfd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
                    int one = 1;
                    if (cfd >= MAX_FDS) {
                        close(cfd);
                        continue;
                    }
                    setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
                    conns[cfd] = PyMem_Calloc(1, sizeof(struct conn));
                    if (conns[cfd] == NULL) {
                        close(cfd);
                        continue;
                    }
                    conns[cfd]->fd = cfd;
                    if (ctx != NULL) {
                        conns[cfd]->ssl = SSL_new(ctx);
                        if (conns[cfd]->ssl == NULL) {
                            close(cfd);
                            PyMem_Free(conns[cfd]);
                            conns[cfd] = NULL;
                            continue;
                        }
                        SSL_set_fd(conns[cfd]->ssl, cfd);
                        SSL_set_accept_state(conns[cfd]->ssl);
                    }
                    ev.events = EPOLLIN;
                    ev.data.fd = cfd;
                    epoll_ctl(ep, EPOLL_CTL_ADD, cfd, &ev);
                }
                continue;
            }
            struct conn *c = conns[fd];
            ssize_t got = read_some(c);
            if (got <= 0) {
                if (got < 0)
                    drop(ep, c);
                continue;
            }
            c->len += (size_t)got;
            for (;;) {
                char *hend = memmem(c->buf, c->len, "\r\n\r\n", 4);
                int keep = 1;
                size_t head_len, n = 0;
                PyObject *env;
                if (hend == NULL) {
                    if (c->len == BUF_BYTES)
                        drop(ep, c);
                    break;
                }
                head_len = (size_t)(hend - c->buf) + 4;
                if (time(NULL) != shown) {
                    struct tm tm;
                    shown = time(NULL);
                    gmtime_r(&shown, &tm);
                    strftime(date, sizeof(date), "Date: %a, %d %b %Y %H:%M:%S GMT", &tm);
                }
                env = environ_of(c->buf, head_len, base, &keep);
                if (env != NULL && put != Py_None) {
                    PyObject *job = Py_BuildValue("(Oi)", env, fd);
                    PyObject *r = job ? PyObject_CallOneArg(put, job) : NULL;
                    Py_XDECREF(job);
                    Py_DECREF(env);
                    if (r == NULL) {
                        PyErr_Clear();
                        drop(ep, c);
                        break;
                    }
                    Py_DECREF(r);
                    served++;
                    memmove(c->buf, c->buf + head_len, c->len - head_len);
                    c->len -= head_len;
                    continue;   /* no pipelining: h2load --h1 sends one at a time */
                }
                if (env == NULL || respond(app, env, start, NULL, out, sizeof(out), &n, date) < 0) {
                    Py_XDECREF(env);
                    PyErr_Clear();
                    drop(ep, c);
                    break;
                }
                Py_DECREF(env);
                served++;
                if (send_all(c, out, n) < 0 || !keep) {
                    drop(ep, c);   /* a prototype: a full socket ends the connection */
                    break;
                }
                memmove(c->buf, c->buf + head_len, c->len - head_len);
                c->len -= head_len;
            }
        }
    }
    for (int fd = 0; fd < MAX_FDS; fd++)
        if (conns[fd] != NULL)
            drop(ep, conns[fd]);
    close(ep);
    SSL_CTX_free(ctx);
    Py_DECREF(start);
    return PyLong_FromLong(served);
}

static PyMethodDef methods[] = {
    {"serve", serve, METH_VARARGS, "serve(app, listen_fd, seconds, base_environ, put)"},
    {"run", run, METH_VARARGS, "run(app, environ, fd)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_cloop", NULL, -1, methods};

PyMODINIT_FUNC PyInit__cloop(void)
{
    return PyModule_Create(&module);
}
