/* The common HTTP/1 request head, parsed in C (`--http c`).
 *
 * ktlswsgi._native.parse_head(head, limit_line, limit_fields, limit_field, limit_head)
 * takes a complete request head (request line, header lines, blank line: the
 * bytes http1.py cut at the head's end, or a whole read that may be exactly
 * one head: any byte after the first blank line is refused) and returns
 *     (method, target, http_version, [(lower-case name, value)], keep_alive)
 * when the head is an ordinary request that h11 would accept with exactly
 * those parts and that the server's own rules (http1.py: _request,
 * _request_verdict) pass; otherwise None, and http1.py gives the same bytes to
 * h11, whose answer stands.  It accepts a strict subset:
 *
 *   request-line = token SP 1*(%x21-7E) SP "HTTP/1." ("0" / "1") CRLF
 *   header-line  = token ":" OWS [ value ] OWS CRLF
 *   value        = bytes %x21-7E / %x80-FF, with SP / HTAB only inside
 *
 * and None for: any other line ending, CONNECT, a target that is not
 * origin-form, absolute-form (http/https) or "*" with OPTIONS; Content-Length,
 * Transfer-Encoding, Expect or Upgrade (a body or a special exchange: h11
 * frames those); a Host header missing from HTTP/1.1, repeated, or not
 * uri-host [":" port]; any limit exceeded (the Python path then answers
 * 414/431 with the reason).  keep_alive is h11's rule: HTTP/1.1 and no
 * "close" among the Connection tokens.
 *
 * No allocation but the returned objects; every index is checked against
 * the head's length before it is read.  The caller holds the GIL throughout:
 * a head costs well under a microsecond, less than releasing it would.
 * tests/test_http1_parsers.py holds this parser to h11 over a corpus,
 * seeded mutations and splits; tests/fuzz/fuzz_native.py fuzzes it
 * (coverage-guided, against the same reference).
 */
#include "native.h"

#include <string.h>

/* uri-host's reg-name characters (RFC 3986 3.2.2), as http1.py's _HOST. */
static unsigned char regname[256];

static PyObject *version_10;
static PyObject *version_11;

int Ktlswsgi_h1parse_init(void)
{
    Ktlswsgi_char_table(regname, "-._~%!$&'()*+,;=");
    version_10 = PyBytes_FromStringAndSize("1.0", 3);
    version_11 = PyBytes_FromStringAndSize("1.1", 3);
    return version_10 != NULL && version_11 != NULL ? 0 : -1;
}

static int hexdigit(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static int value_byte(unsigned char c)
{
    return (c >= 0x21 && c <= 0x7e) || c >= 0x80;
}

static int lower_startswith(const char *s, Py_ssize_t n, const char *lower)
{
    Py_ssize_t k = (Py_ssize_t)strlen(lower);

    return n >= k && Ktlswsgi_lower_equals(s, k, lower);
}

/* http1.py's _HOST: ( "[" 1*(HEX / ":" / ".") "]" / *regname ) [ ":" *DIGIT ] */
static int host_ok(const char *s, Py_ssize_t n)
{
    Py_ssize_t i = 0;

    if (n > 0 && s[0] == '[') {
        i = 1;
        while (i < n && (hexdigit((unsigned char)s[i]) || s[i] == ':' || s[i] == '.'))
            i++;
        if (i == 1 || i >= n || s[i] != ']')
            return 0;
        i++;
    } else {
        while (i < n && regname[(unsigned char)s[i]])
            i++;
    }
    if (i == n)
        return 1;
    if (s[i] != ':')
        return 0;
    for (i++; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return 1;
}

/* Whether a Connection value holds the token "close" (h11's get_comma_header). */
static int has_close_token(const char *s, Py_ssize_t n)
{
    Py_ssize_t start = 0, end;

    while (start <= n) {
        Py_ssize_t a, b;

        end = start;
        while (end < n && s[end] != ',')
            end++;
        a = start;
        b = end;
        while (a < b && (s[a] == ' ' || s[a] == '\t'))
            a++;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (Ktlswsgi_lower_equals(s + a, b - a, "close"))
            return 1;
        start = end + 1;
    }
    return 0;
}

static PyObject *lowered(const char *s, Py_ssize_t n)
{
    PyObject *out = PyBytes_FromStringAndSize(NULL, n);
    char *d;
    Py_ssize_t i;

    if (out == NULL)
        return NULL;
    d = PyBytes_AS_STRING(out);
    for (i = 0; i < n; i++) {
        char c = s[i];
        d[i] = (c >= 'A' && c <= 'Z') ? (char)(c + ('a' - 'A')) : c;
    }
    return out;
}

/* Appends (lower-case name, value) to `headers`; 0, or -1 with an exception. */
static int add_header(PyObject *headers, const char *name, Py_ssize_t name_len,
                      const char *value, Py_ssize_t value_len)
{
    PyObject *n = lowered(name, name_len);
    PyObject *v, *pair;
    int rc;

    if (n == NULL)
        return -1;
    v = PyBytes_FromStringAndSize(value, value_len);
    if (v == NULL) {
        Py_DECREF(n);
        return -1;
    }
    pair = PyTuple_Pack(2, n, v);
    Py_DECREF(n);
    Py_DECREF(v);
    if (pair == NULL)
        return -1;
    rc = PyList_Append(headers, pair);
    Py_DECREF(pair);
    return rc;
}

PyObject *Ktlswsgi_parse_head(PyObject *self, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t limit_line, limit_fields, limit_field, limit_head;
    PyObject *result;

    (void)self;
    if (!PyArg_ParseTuple(args, "y*nnnn", &view, &limit_line, &limit_fields,
                          &limit_field, &limit_head))
        return NULL;
    result = NULL;
    {
        const char *p = view.buf;
        const Py_ssize_t len = view.len;
        PyObject *headers = NULL;
        Py_ssize_t i = 0, m_end, t_start, t_end, fields = 0, head_bytes;
        int minor, hosts = 0, keep_alive;
        const char *host = NULL;
        Py_ssize_t host_len = 0;

        /* request line */
        while (i < len && Ktlswsgi_tchar[(unsigned char)p[i]])
            i++;
        m_end = i;
        if (m_end == 0 || i >= len || p[i] != ' ')
            goto refuse;
        t_start = ++i;
        while (i < len && p[i] >= 0x21 && p[i] <= 0x7e)
            i++;
        t_end = i;
        if (t_end == t_start || len - i < 11 || memcmp(p + i, " HTTP/1.", 8) != 0)
            goto refuse;
        i += 8;
        if (p[i] != '0' && p[i] != '1')
            goto refuse;
        minor = p[i] - '0';
        if (p[i + 1] != '\r' || p[i + 2] != '\n')
            goto refuse;
        i += 3;
        if (t_end - t_start > limit_line)
            goto refuse;
        if (m_end == 7 && memcmp(p, "CONNECT", 7) == 0)
            goto refuse;
        if (p[t_start] != '/') {
            Py_ssize_t tl = t_end - t_start;
            if (tl == 1 && p[t_start] == '*') {
                if (!(m_end == 7 && memcmp(p, "OPTIONS", 7) == 0))
                    goto refuse;
            } else if (!lower_startswith(p + t_start, tl, "http://") &&
                       !lower_startswith(p + t_start, tl, "https://")) {
                goto refuse;
            }
        }
        head_bytes = m_end + (t_end - t_start) + 12;
        if (head_bytes > limit_head)   /* a head with no header lines is checked here */
            goto refuse;
        keep_alive = minor == 1;

        headers = PyList_New(0);
        if (headers == NULL)
            goto done;
        /* header lines, up to the blank line that must end the buffer */
        for (;;) {
            Py_ssize_t n_start = i, n_end, v_start, v_end;

            if (i + 1 < len && p[i] == '\r' && p[i + 1] == '\n') {
                if (i + 2 != len)
                    goto refuse;
                break;
            }
            while (i < len && Ktlswsgi_tchar[(unsigned char)p[i]])
                i++;
            n_end = i;
            if (n_end == n_start || i >= len || p[i] != ':')
                goto refuse;
            i++;
            while (i < len && (p[i] == ' ' || p[i] == '\t'))
                i++;
            v_start = i;
            v_end = i;
            while (i < len && (value_byte((unsigned char)p[i]) || p[i] == ' ' || p[i] == '\t')) {
                if (p[i] != ' ' && p[i] != '\t')
                    v_end = i + 1;
                i++;
            }
            if (i + 1 >= len || p[i] != '\r' || p[i + 1] != '\n')
                goto refuse;
            i += 2;

            if (++fields > limit_fields)
                goto refuse;
            if ((n_end - n_start) + (v_end - v_start) + 2 > limit_field)
                goto refuse;
            head_bytes += (n_end - n_start) + (v_end - v_start) + 4;
            if (head_bytes > limit_head)
                goto refuse;
            {
                const char *name = p + n_start;
                Py_ssize_t nl = n_end - n_start;

                if (Ktlswsgi_lower_equals(name, nl, "content-length") ||
                    Ktlswsgi_lower_equals(name, nl, "transfer-encoding") ||
                    Ktlswsgi_lower_equals(name, nl, "expect") ||
                    Ktlswsgi_lower_equals(name, nl, "upgrade"))
                    goto refuse;
                if (Ktlswsgi_lower_equals(name, nl, "host")) {
                    hosts++;
                    host = p + v_start;
                    host_len = v_end - v_start;
                } else if (keep_alive && Ktlswsgi_lower_equals(name, nl, "connection") &&
                           has_close_token(p + v_start, v_end - v_start)) {
                    keep_alive = 0;
                }
            }
            if (add_header(headers, p + n_start, n_end - n_start, p + v_start,
                           v_end - v_start) < 0)
                goto done;
        }
        if (hosts > 1 || (hosts == 0 && minor == 1))
            goto refuse;
        if (hosts == 1 && !host_ok(host, host_len))
            goto refuse;
        {
            PyObject *method = PyBytes_FromStringAndSize(p, m_end);
            PyObject *target = method ? PyBytes_FromStringAndSize(p + t_start, t_end - t_start)
                                      : NULL;

            if (target != NULL)
                result = PyTuple_Pack(5, method, target, minor ? version_11 : version_10,
                                      headers, keep_alive ? Py_True : Py_False);
            Py_XDECREF(method);
            Py_XDECREF(target);
        }
        goto done;
refuse:
        Py_INCREF(Py_None);
        result = Py_None;
done:
        Py_XDECREF(headers);
    }
    PyBuffer_Release(&view);
    return result;
}
