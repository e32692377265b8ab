/* ktlswsgi._native: the request path's per-request work in C.
 *
 * h1parse.c  parse_head: the common HTTP/1 request head (`--http c`)
 * environ.c  build_environ, environ_headers: a request's WSGI environ
 * h2request.c  h2_request, h2_trailers: an HTTP/2 request's header block checked
 *            (h2's inbound rules) and its Request fields
 * framing.c  scan_response_headers, serialize_head, frame_whole: an HTTP/1
 *            response head, or a whole response framed by its Content-Length
 * respheaders.c  response_headers, response_start: the app's start_response
 *            status and headers, checked
 * gate.c     the reactor's non-blocking steps (the TLS transports' SSL_read /
 *            SSL_write, plain socket recv / send), called without releasing the GIL
 * hpack.c    hpack_*: HPACK for the HTTP/2 driver, through nghttp2 (where its
 *            headers are: KTLSWSGI_NGHTTP2)
 * loop.c     loop_run: the reactor's loop (`--loop c`; reactor.py is its reference)
 * native.c   the module: its method table and initialisation
 *
 * Plain C against the Python headers (not cffi): each function builds the
 * Python objects it returns, which is the work it exists to take off the
 * interpreter.  Each has a Python reference it is tested against.
 */
#ifndef KTLSWSGI_NATIVE_H
#define KTLSWSGI_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Shared by the files above (native.c).
   Ktlswsgi_tchar: RFC 9110 5.6.2 tchar, 1 for each byte a token may hold.
   Ktlswsgi_char_table: marks ASCII letters, digits and `extra` in `table`.
   Ktlswsgi_lower_equals: the `n` bytes at `s`, ASCII letters lower-cased,
   are the string `lower` (no byte past `s + n` is read).
   Ktlswsgi_byte_pairs: `headers` as a fast sequence (a new reference), with
   *ok = 1 when every item is a (bytes, bytes) tuple, 0 when one is not (the
   caller leaves it to its Python path); NULL with an exception when
   `headers` is not a sequence. */
extern unsigned char Ktlswsgi_tchar[256];
void Ktlswsgi_char_table(unsigned char table[256], const char *extra);
int Ktlswsgi_lower_equals(const char *s, Py_ssize_t n, const char *lower);
PyObject *Ktlswsgi_byte_pairs(PyObject *headers, int *ok);

int Ktlswsgi_h1parse_init(void);
int Ktlswsgi_environ_init(void);
int Ktlswsgi_loop_init(void);
PyObject *Ktlswsgi_loop_run(PyObject *self, PyObject *reactor);
PyObject *Ktlswsgi_parse_head(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_environ_headers(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_build_environ(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_h2_request(PyObject *self, PyObject *headers);
PyObject *Ktlswsgi_h2_trailers(PyObject *self, PyObject *headers);
PyObject *Ktlswsgi_scan_response_headers(PyObject *self, PyObject *headers);
PyObject *Ktlswsgi_serialize_head(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_frame_whole(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_response_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_response_headers(PyObject *self, PyObject *headers);
PyObject *Ktlswsgi_tls_bind(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_flush(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_has_pending(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_ssl_read(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_ssl_write(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_sock_recv(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_gate_sock_send(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
#ifdef KTLSWSGI_NGHTTP2
PyObject *Ktlswsgi_hpack_inflater(PyObject *self, PyObject *unused);
PyObject *Ktlswsgi_hpack_deflater(PyObject *self, PyObject *arg);
PyObject *Ktlswsgi_hpack_inflate(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_hpack_inflate_table_size(PyObject *self, PyObject *const *args,
                                            Py_ssize_t nargs);
PyObject *Ktlswsgi_hpack_deflate(PyObject *self, PyObject *const *args, Py_ssize_t nargs);
PyObject *Ktlswsgi_hpack_deflate_table_size(PyObject *self, PyObject *const *args,
                                            Py_ssize_t nargs);
#endif

#endif
