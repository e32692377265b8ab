/* The ktlswsgi._native module: method table and initialisation (native.h). */
#include "native.h"

unsigned char Ktlswsgi_tchar[256];

void Ktlswsgi_char_table(unsigned char table[256], const char *extra)
{
    int c;

    for (c = '0'; c <= '9'; c++)
        table[c] = 1;
    for (c = 'a'; c <= 'z'; c++)
        table[c] = 1;
    for (c = 'A'; c <= 'Z'; c++)
        table[c] = 1;
    for (; *extra; extra++)
        table[(unsigned char)*extra] = 1;
}

int Ktlswsgi_lower_equals(const char *s, Py_ssize_t n, const char *lower)
{
    Py_ssize_t i;

    for (i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 'A' && c <= 'Z')
            c += 'a' - 'A';
        if (lower[i] == '\0' || c != (unsigned char)lower[i])
            return 0;
    }
    return lower[n] == '\0';
}

PyObject *Ktlswsgi_byte_pairs(PyObject *headers, int *ok)
{
    PyObject *seq = PySequence_Fast(headers, "headers must be a sequence");
    Py_ssize_t n, i;

    *ok = 0;
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);

        if (!(PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2 &&
              PyBytes_Check(PyTuple_GET_ITEM(item, 0)) &&
              PyBytes_Check(PyTuple_GET_ITEM(item, 1))))
            return seq;
    }
    *ok = 1;
    return seq;
}

static PyMethodDef methods[] = {
    {"parse_head", Ktlswsgi_parse_head, METH_VARARGS,
     "parse_head(head, limit_line, limit_fields, limit_field, limit_head) -> "
     "(method, target, http_version, headers, keep_alive) or None (h1parse.c)"},
    {"environ_headers", Ktlswsgi_environ_headers, METH_VARARGS,
     "environ_headers(environ, headers) -> the first Host value, None, or False "
     "when the Python path must do it (environ.c)"},
    {"build_environ", (PyCFunction)(void (*)(void))Ktlswsgi_build_environ, METH_FASTCALL,
     "build_environ(base, method, target, version, headers, scheme, server_addr, peer_addr) "
     "-> the request's environ from the template `base`, or False when the Python path "
     "must build it (environ.c)"},
    {"h2_request", Ktlswsgi_h2_request, METH_O,
     "h2_request(headers) -> (method, target, fields, expects_continue), or the reason the "
     "HTTP/2 request block is malformed (h2request.c)"},
    {"h2_trailers", Ktlswsgi_h2_trailers, METH_O,
     "h2_trailers(headers) -> None, or the reason the trailer block is malformed (h2request.c)"},
    {"scan_response_headers", Ktlswsgi_scan_response_headers, METH_O,
     "scan_response_headers(headers) -> Content-Length (int), None, or False when "
     "the Python path must look (framing.c)"},
    {"frame_whole", Ktlswsgi_frame_whole, METH_VARARGS,
     "frame_whole(status, reason, headers, body, close) -> a whole response framed by "
     "its Content-Length, or None when the Python path must (framing.c)"},
    {"serialize_head", Ktlswsgi_serialize_head, METH_VARARGS,
     "serialize_head(status, reason, headers) -> the response head's bytes, or None "
     "when the Python path must (framing.c)"},
    {"response_start", (PyCFunction)(void (*)(void))Ktlswsgi_response_start, METH_FASTCALL,
     "response_start(status, headers, date, server) -> (code, reason, encoded, "
     "content_length), or False when the Python path must (respheaders.c)"},
    {"response_headers", Ktlswsgi_response_headers, METH_O,
     "response_headers(headers) -> (encoded, content_length, has_date, has_server), or "
     "False when the Python path must decide (respheaders.c)"},
    {"tls_bind", (PyCFunction)(void (*)(void))Ktlswsgi_tls_bind, METH_FASTCALL,
     "tls_bind(mem_read, mem_write, mem_flush, mem_has_pending, ssl_read, ssl_write): "
     "the addresses of the TLS transports' steps (tls/_csrc/), once (gate.c)"},
    {"mem_read", (PyCFunction)(void (*)(void))Ktlswsgi_gate_read, METH_FASTCALL,
     "mem_read(ssl, net, step, fd, max_bytes) -> bytes; b'' unless the step is DONE"},
    {"mem_write", (PyCFunction)(void (*)(void))Ktlswsgi_gate_write, METH_FASTCALL,
     "mem_write(ssl, net, step, fd, data, off) -> the new offset"},
    {"mem_flush", (PyCFunction)(void (*)(void))Ktlswsgi_gate_flush, METH_FASTCALL,
     "mem_flush(net, step, fd) -> True when no ciphertext is held back"},
    {"has_pending", (PyCFunction)(void (*)(void))Ktlswsgi_gate_has_pending, METH_FASTCALL,
     "has_pending(ssl) -> True when decrypted bytes, records read ahead or unread "
     "ciphertext in a memory BIO wait (either TLS transport)"},
    {"ssl_read", (PyCFunction)(void (*)(void))Ktlswsgi_gate_ssl_read, METH_FASTCALL,
     "ssl_read(ssl, step, max_bytes) -> bytes; b'' unless the step is DONE"},
    {"ssl_write", (PyCFunction)(void (*)(void))Ktlswsgi_gate_ssl_write, METH_FASTCALL,
     "ssl_write(ssl, step, data, off) -> the new offset"},
    {"sock_recv", (PyCFunction)(void (*)(void))Ktlswsgi_gate_sock_recv, METH_FASTCALL,
     "sock_recv(fd, max_bytes) -> bytes (b'' at EOF), or None when nothing is there"},
    {"sock_send", (PyCFunction)(void (*)(void))Ktlswsgi_gate_sock_send, METH_FASTCALL,
     "sock_send(fd, data) -> bytes taken, or -1 when the socket is full"},
#ifdef KTLSWSGI_NGHTTP2
    {"hpack_inflater", Ktlswsgi_hpack_inflater, METH_NOARGS,
     "hpack_inflater() -> a new HPACK decoding context (hpack.c)"},
    {"hpack_inflate", (PyCFunction)(void (*)(void))Ktlswsgi_hpack_inflate, METH_FASTCALL,
     "hpack_inflate(inflater, block, max_list_bytes) -> [(name, value)], or -1 (not "
     "valid HPACK) or -2 (over max_list_bytes)"},
    {"hpack_inflate_table_size", (PyCFunction)(void (*)(void))Ktlswsgi_hpack_inflate_table_size,
     METH_FASTCALL, "hpack_inflate_table_size(inflater, size): our acknowledged table size"},
    {"hpack_deflater", Ktlswsgi_hpack_deflater, METH_O,
     "hpack_deflater(max_table_bytes) -> a new HPACK encoding context (hpack.c)"},
    {"hpack_deflate", (PyCFunction)(void (*)(void))Ktlswsgi_hpack_deflate, METH_FASTCALL,
     "hpack_deflate(deflater, headers) -> the header block, None when a field is not a "
     "tuple of bytes, or a negative nghttp2 error"},
    {"hpack_deflate_table_size", (PyCFunction)(void (*)(void))Ktlswsgi_hpack_deflate_table_size,
     METH_FASTCALL, "hpack_deflate_table_size(deflater, size): the peer's table size"},
#endif
    {"loop_run", Ktlswsgi_loop_run, METH_O,
     "loop_run(reactor): run the reactor's loop until reactor.stop() (loop.c)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "ktlswsgi._native",
    "The request path's per-request work in C (ktlswsgi/_csrc/native.h).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__native(void)
{
    Ktlswsgi_char_table(Ktlswsgi_tchar, "!#$%&'*+-.^_`|~");
    if (Ktlswsgi_h1parse_init() < 0 || Ktlswsgi_environ_init() < 0 || Ktlswsgi_loop_init() < 0)
        return NULL;
    return PyModule_Create(&module);
}
