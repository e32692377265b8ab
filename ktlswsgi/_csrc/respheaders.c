/* The app's response headers, checked and encoded, as wsgi.py's
 * Responder.start_response does it in Python, which is the reference:
 *
 * response_headers(headers) -> (encoded, content_length, has_date, has_server)
 *   encoded: [(name latin-1 bytes, value latin-1 bytes)], each value without
 *   its surrounding SP / HTAB; content_length: an int or None; has_date /
 *   has_server: whether the app gave Date / Server.
 *
 * response_start(status, headers, date, server) -> (code, reason, encoded,
 *   content_length): all of start_response's checks and encoding at once:
 *   the status line "DDD reason" (three ASCII digits, 100 or more, a
 *   non-empty reason of latin-1 characters without control characters but
 *   HTAB) with its reason as latin-1 bytes, and the headers as
 *   response_headers checks them, with (b"Date", date) and (b"Server",
 *   server) appended when the app gave none; `date` None: this second's
 *   IMF-fixdate (httpdate.date_value's, made here once a second).  False,
 *   having decided nothing, where either check leaves it to Python.
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
#include <time.h>

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

/* The checks of response_headers: 1 with the results set, 0 when Python
   must decide (nothing set), -1 with an exception. */
static int check_headers(PyObject *headers, PyObject **encoded_out, long long *length_out,
                         int *has_date_out, int *has_server_out)
{
    PyObject *encoded;
    Py_ssize_t n, i;
    long long length = -1;
    int has_date = 0, has_server = 0;

    if (!PyList_Check(headers))
        return 0;
    n = PyList_GET_SIZE(headers);
    encoded = PyList_New(0);
    if (encoded == NULL)
        return -1;
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
            Py_DECREF(encoded);
            return -1;
        }
        Py_DECREF(pair);
    }
    *encoded_out = encoded;
    *length_out = length;
    *has_date_out = has_date;
    *has_server_out = has_server;
    return 1;
python_path:
    Py_DECREF(encoded);
    return 0;
}

static PyObject *length_object(long long length)
{
    if (length >= 0)
        return PyLong_FromLongLong(length);
    Py_INCREF(Py_None);
    return Py_None;
}

PyObject *Ktlswsgi_response_headers(PyObject *self, PyObject *headers)
{
    PyObject *encoded, *length_obj, *result;
    long long length;
    int has_date, has_server, r;

    (void)self;
    r = check_headers(headers, &encoded, &length, &has_date, &has_server);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    length_obj = length_object(length);
    result = length_obj == NULL ? NULL :
        Py_BuildValue("(OOOO)", encoded, length_obj, has_date ? Py_True : Py_False,
                      has_server ? Py_True : Py_False);
    Py_XDECREF(length_obj);
    Py_DECREF(encoded);
    return result;
}

/* Append (name, value) to `list`; -1 with an exception. */
static int append_pair(PyObject *list, const char *name, PyObject *value)
{
    PyObject *pair = Py_BuildValue("(yO)", name, value);
    int r;

    if (pair == NULL)
        return -1;
    r = PyList_Append(list, pair);
    Py_DECREF(pair);
    return r;
}

/* This second's b"Thu, 03 Dec 2026 04:20:15 GMT" (RFC 9110 5.6.7), made
   once a second: the GIL, held by every caller, guards the cache. */
static PyObject *date_now(void)
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    static time_t cached_second = -1;
    static PyObject *cached;
    time_t now = time(NULL);
    struct tm tm;
    char text[40];
    int n;

    if (now != cached_second || cached == NULL) {
        if (gmtime_r(&now, &tm) == NULL || tm.tm_wday < 0 || tm.tm_wday > 6 ||
            tm.tm_mon < 0 || tm.tm_mon > 11) {
            PyErr_SetString(PyExc_OverflowError, "the clock is out of range");
            return NULL;
        }
        n = snprintf(text, sizeof text, "%s, %02d %s %04d %02d:%02d:%02d GMT",
                     days[tm.tm_wday], tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900,
                     tm.tm_hour, tm.tm_min, tm.tm_sec);
        if (n < 0 || (size_t)n >= sizeof text) {
            PyErr_SetString(PyExc_OverflowError, "the clock is out of range");
            return NULL;
        }
        Py_XSETREF(cached, PyBytes_FromStringAndSize(text, n));
        if (cached == NULL)
            return NULL;
        cached_second = now;
    }
    Py_INCREF(cached);
    return cached;
}

PyObject *Ktlswsgi_response_start(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *status, *headers, *date, *server, *encoded, *reason, *code, *length_obj;
    PyObject *result = NULL;
    const Py_UCS1 *s;
    Py_ssize_t n, k;
    long long length;
    int has_date, has_server, r;

    (void)self;
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "response_start takes 4 arguments");
        return NULL;
    }
    status = args[0];
    headers = args[1];
    date = args[2];
    server = args[3];
    if ((date != Py_None && !PyBytes_Check(date)) || !PyBytes_Check(server)) {
        PyErr_SetString(PyExc_TypeError, "date must be bytes or None, server bytes");
        return NULL;
    }
    if (!PyUnicode_Check(status) || PyUnicode_KIND(status) != PyUnicode_1BYTE_KIND)
        Py_RETURN_FALSE;
    s = PyUnicode_1BYTE_DATA(status);
    n = PyUnicode_GET_LENGTH(status);
    /* "DDD " and at least one reason character */
    if (n < 5 || s[3] != ' ')
        Py_RETURN_FALSE;
    for (k = 0; k < 3; k++)
        if (s[k] < '0' || s[k] > '9')
            Py_RETURN_FALSE;
    if (s[0] == '0')
        Py_RETURN_FALSE;   /* under 100: Python's error */
    for (k = 4; k < n; k++)
        if ((s[k] < 0x20 && s[k] != '\t') || s[k] == 0x7f)
            Py_RETURN_FALSE;
    r = check_headers(headers, &encoded, &length, &has_date, &has_server);
    if (r <= 0) {
        if (r < 0)
            return NULL;
        Py_RETURN_FALSE;
    }
    if (!has_date) {
        PyObject *value = date == Py_None ? date_now() : (Py_INCREF(date), date);

        r = value == NULL ? -1 : append_pair(encoded, "Date", value);
        Py_XDECREF(value);
        if (r < 0) {
            Py_DECREF(encoded);
            return NULL;
        }
    }
    if (!has_server && append_pair(encoded, "Server", server) < 0) {
        Py_DECREF(encoded);
        return NULL;
    }
    code = PyLong_FromLong((s[0] - '0') * 100 + (s[1] - '0') * 10 + (s[2] - '0'));
    reason = code ? PyBytes_FromStringAndSize((const char *)s + 4, n - 4) : NULL;
    length_obj = reason ? length_object(length) : NULL;
    if (length_obj != NULL)
        result = PyTuple_Pack(4, code, reason, encoded, length_obj);
    Py_XDECREF(code);
    Py_XDECREF(reason);
    Py_XDECREF(length_obj);
    Py_DECREF(encoded);
    return result;
}
