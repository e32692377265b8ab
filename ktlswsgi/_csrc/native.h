/* ktlswsgi._native: the request path's per-request work in C.
 *
 * h1parse.c  parse_head: the common HTTP/1 request head (`--http c`)
 * environ.c  environ_headers: a request's headers into its WSGI environ
 * framing.c  scan_response_headers, serialize_head: an HTTP/1 response head
 * respheaders.c  response_headers: the app's start_response headers, checked
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

/* Shared by the files above (native.c): RFC 9110 5.6.2 tchar, 1 for each
   byte that may appear in a token; whether an item is a (bytes, bytes) tuple. */
extern unsigned char Ktlswsgi_tchar[256];
int Ktlswsgi_pair_of_bytes(PyObject *item);

int Ktlswsgi_h1parse_init(void);
PyObject *Ktlswsgi_parse_head(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_environ_headers(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_scan_response_headers(PyObject *self, PyObject *headers);
PyObject *Ktlswsgi_serialize_head(PyObject *self, PyObject *args);
PyObject *Ktlswsgi_response_headers(PyObject *self, PyObject *headers);

#endif
