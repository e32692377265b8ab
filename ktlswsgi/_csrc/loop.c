/* The reactor's loop in C: Reactor.run's turn (`--loop c`).
 *
 * loop_run(reactor) runs the turn reactor.py's Python loop runs, over the
 * same Reactor object: its epoll descriptor, handler dict, call and signal
 * deques, timer heap and flags, so that both loops serve the same
 * registrations and reactor.py stays the reference.  Each turn:
 *
 *   heartbeat (when due) -> timeout (_next_timeout, the heartbeat's bound)
 *   -> epoll_wait -> each event's handler(ev), or the wake-up eventfd
 *   drained -> _run_signals (when any) -> the queued calls -> _run_timers
 *   (only when the earliest timer is due)
 *
 * What it changes: no interpreted frame per event or per queued call, and
 * epoll_wait releases the GIL only when it may sleep (a zero timeout
 * returns at once: releasing the GIL there only lets a worker take it and
 * makes the reactor wait to get it back).  A handler's or call's Exception
 * goes to reactor._unhandled() and the loop goes on; any other
 * BaseException (KeyboardInterrupt, SystemExit) ends the loop, as in Python.
 * Signals: a Python handler runs in the main thread when the interpreter
 * next checks (each handler call), and an EINTR from epoll_wait checks at
 * once.
 */
#include "native.h"

#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <sys/epoll.h>
#include <time.h>
#include <unistd.h>

#define MAX_EVENTS 256

static PyObject *s_epoll, *s_handlers, *s_calls, *s_signals, *s_timers, *s_wake_fd,
    *s_wake_pending, *s_running, *s_heartbeat, *s_next_timeout, *s_run_signals,
    *s_run_timers, *s_unhandled, *s_fileno, *s_popleft, *s_event_what, *s_call_what;

int Ktlswsgi_loop_init(void)
{
#define INTERN(var, text) \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_epoll, "_epoll");
    INTERN(s_handlers, "_handlers");
    INTERN(s_calls, "_calls");
    INTERN(s_signals, "_signals");
    INTERN(s_timers, "_timers");
    INTERN(s_wake_fd, "_wake_fd");
    INTERN(s_wake_pending, "_wake_pending");
    INTERN(s_running, "_running");
    INTERN(s_heartbeat, "_heartbeat");
    INTERN(s_next_timeout, "_next_timeout");
    INTERN(s_run_signals, "_run_signals");
    INTERN(s_run_timers, "_run_timers");
    INTERN(s_unhandled, "_unhandled");
    INTERN(s_fileno, "fileno");
    INTERN(s_popleft, "popleft");
    INTERN(s_event_what, "an event handler");
    INTERN(s_call_what, "a scheduled call");
#undef INTERN
    return 0;
}

static double monotonic_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);   /* time.monotonic()'s clock */
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* After a failed call: an Exception is handed to reactor._unhandled(what,
   exc) and 0 returned (the loop goes on); anything else stays raised, -1. */
static int unhandled(PyObject *reactor, PyObject *what)
{
    PyObject *type, *value, *tb, *r;

    if (!PyErr_ExceptionMatches(PyExc_Exception))
        return -1;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL)
        PyException_SetTraceback(value, tb);
    r = PyObject_CallMethodObjArgs(reactor, s_unhandled, what,
                                   value != NULL ? value : Py_None, NULL);
    Py_XDECREF(type);
    Py_XDECREF(value);
    Py_XDECREF(tb);
    if (r == NULL) {   /* the logging failed */
        if (!PyErr_ExceptionMatches(PyExc_Exception))
            return -1;
        PyErr_WriteUnraisable(reactor);
        return 0;
    }
    Py_DECREF(r);
    return 0;
}

static int call_noargs(PyObject *reactor, PyObject *fn, PyObject *what)
{
    PyObject *r = PyObject_CallNoArgs(fn);

    if (r == NULL)
        return unhandled(reactor, what);
    Py_DECREF(r);
    return 0;
}

/* A method of the reactor that must not fail (its own Python steps). */
static int call_method(PyObject *reactor, PyObject *name, double *out)
{
    PyObject *r = PyObject_CallMethodNoArgs(reactor, name);

    if (r == NULL)
        return -1;
    if (out != NULL) {
        *out = PyFloat_AsDouble(r);
        if (*out == -1.0 && PyErr_Occurred()) {
            Py_DECREF(r);
            return -1;
        }
    }
    Py_DECREF(r);
    return 0;
}

static int attr_true(PyObject *obj, PyObject *name)
{
    PyObject *v = PyObject_GetAttr(obj, name);
    int t;

    if (v == NULL)
        return -1;
    t = PyObject_IsTrue(v);
    Py_DECREF(v);
    return t;
}

/* A descriptor number from `v` (a new reference, consumed; NULL: an error
   is already set); `what` names it when it is not one (-1: closed). */
static int take_fd(PyObject *v, const char *what, int *out)
{
    long n;

    if (v == NULL)
        return -1;
    n = PyLong_AsLong(v);
    Py_DECREF(v);
    if (n == -1 && PyErr_Occurred())
        return -1;
    if (n < 0 || n > INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "%s is not an open descriptor", what);
        return -1;
    }
    *out = (int)n;
    return 0;
}

/* The earliest timer's `when`, or INFINITY with none (a heapq list of
   (when, seq, timer) tuples). */
static double first_timer(PyObject *timers)
{
    PyObject *top, *when;

    if (!PyList_Check(timers) || PyList_GET_SIZE(timers) == 0)
        return INFINITY;
    top = PyList_GET_ITEM(timers, 0);
    if (!PyTuple_Check(top) || PyTuple_GET_SIZE(top) < 1)
        return -INFINITY;   /* not ours: let _run_timers see it */
    when = PyTuple_GET_ITEM(top, 0);
    return PyFloat_Check(when) ? PyFloat_AS_DOUBLE(when) : -INFINITY;
}

struct state {
    PyObject *reactor, *handlers, *calls, *popleft, *signals, *timers;
    PyObject *beat, *beat_s;   /* the heartbeat's callback and interval, or NULL */
    int epfd, wake_fd;
};

static void state_clear(struct state *st)
{
    Py_CLEAR(st->handlers);
    Py_CLEAR(st->calls);
    Py_CLEAR(st->popleft);
    Py_CLEAR(st->signals);
    Py_CLEAR(st->timers);
    Py_CLEAR(st->beat);
    Py_CLEAR(st->beat_s);
}

static int state_load(struct state *st, PyObject *reactor)
{
    PyObject *epoll, *beat, *fd;

    st->reactor = reactor;
    if ((st->handlers = PyObject_GetAttr(reactor, s_handlers)) == NULL ||
        (st->calls = PyObject_GetAttr(reactor, s_calls)) == NULL ||
        (st->popleft = PyObject_GetAttr(st->calls, s_popleft)) == NULL ||
        (st->signals = PyObject_GetAttr(reactor, s_signals)) == NULL ||
        (st->timers = PyObject_GetAttr(reactor, s_timers)) == NULL)
        return -1;
    if (!PyDict_Check(st->handlers)) {
        PyErr_SetString(PyExc_TypeError, "reactor._handlers is not a dict");
        return -1;
    }
    if ((epoll = PyObject_GetAttr(reactor, s_epoll)) == NULL)
        return -1;
    fd = PyObject_CallMethodNoArgs(epoll, s_fileno);
    Py_DECREF(epoll);
    if (take_fd(fd, "reactor._epoll", &st->epfd) < 0 ||
        take_fd(PyObject_GetAttr(reactor, s_wake_fd), "reactor._wake_fd", &st->wake_fd) < 0)
        return -1;
    if ((beat = PyObject_GetAttr(reactor, s_heartbeat)) == NULL)
        return -1;
    if (beat != Py_None) {
        if (!PyTuple_Check(beat) || PyTuple_GET_SIZE(beat) != 2) {
            Py_DECREF(beat);
            PyErr_SetString(PyExc_TypeError, "reactor._heartbeat is not (callback, interval)");
            return -1;
        }
        st->beat = Py_NewRef(PyTuple_GET_ITEM(beat, 0));
        st->beat_s = Py_NewRef(PyTuple_GET_ITEM(beat, 1));
    }
    Py_DECREF(beat);
    return 0;
}

/* The wake-up eventfd: read, THEN clear _wake_pending (reactor.py's
   _drain_wake says why this order). */
static int drain_wake(struct state *st)
{
    uint64_t v;
    ssize_t got = read(st->wake_fd, &v, sizeof v);   /* EAGAIN: already drained */

    (void)got;
    return PyObject_SetAttr(st->reactor, s_wake_pending, Py_False);
}

static int dispatch(struct state *st, const struct epoll_event *ev)
{
    PyObject *key, *handler, *mask, *r;
    int fd = ev->data.fd;

    if (fd == st->wake_fd)
        return drain_wake(st);
    key = PyLong_FromLong(fd);
    if (key == NULL)
        return -1;
    handler = PyDict_GetItemWithError(st->handlers, key);
    Py_DECREF(key);
    if (handler == NULL)
        return PyErr_Occurred() ? -1 : 0;   /* removed by an earlier handler */
    Py_INCREF(handler);   /* it may remove itself */
    mask = PyLong_FromUnsignedLong(ev->events);
    if (mask == NULL) {
        Py_DECREF(handler);
        return -1;
    }
    r = PyObject_CallOneArg(handler, mask);
    Py_DECREF(mask);
    Py_DECREF(handler);
    if (r == NULL)
        return unhandled(st->reactor, s_event_what);
    Py_DECREF(r);
    return 0;
}

static int run_calls(struct state *st)
{
    Py_ssize_t n = PyObject_Length(st->calls), i;

    if (n < 0)
        return -1;
    for (i = 0; i < n; i++) {
        PyObject *cb = PyObject_CallNoArgs(st->popleft);
        int rc;

        if (cb == NULL) {
            if (PyErr_ExceptionMatches(PyExc_IndexError)) {   /* emptied meanwhile */
                PyErr_Clear();
                return 0;
            }
            return -1;
        }
        rc = call_noargs(st->reactor, cb, s_call_what);
        Py_DECREF(cb);
        if (rc < 0)
            return -1;
    }
    return 0;
}

static int turn(struct state *st, double *next_beat, struct epoll_event *events)
{
    double timeout, beat_s = 0.0, now;
    int ms, n, i, err;
    Py_ssize_t pending;

    if (st->beat != NULL) {
        beat_s = PyFloat_AsDouble(st->beat_s);
        if (beat_s == -1.0 && PyErr_Occurred())
            return -1;
        now = monotonic_s();
        if (now >= *next_beat) {   /* not guarded: as in Python, its error ends the loop */
            PyObject *r = PyObject_CallNoArgs(st->beat);

            if (r == NULL)
                return -1;
            Py_DECREF(r);
            *next_beat = now + beat_s;
        }
    }
    if (call_method(st->reactor, s_next_timeout, &timeout) < 0)
        return -1;
    if (st->beat != NULL && beat_s < timeout)
        timeout = beat_s;
    ms = timeout <= 0.0 ? 0 : (int)ceil(timeout * 1000.0);
    if (ms == 0) {
        n = epoll_wait(st->epfd, events, MAX_EVENTS, 0);
        err = errno;
    } else {
        Py_BEGIN_ALLOW_THREADS
        n = epoll_wait(st->epfd, events, MAX_EVENTS, ms);
        err = errno;
        Py_END_ALLOW_THREADS
    }
    if (n < 0) {
        if (err == EINTR)
            return PyErr_CheckSignals();   /* a handler's exception ends the loop */
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    for (i = 0; i < n; i++)
        if (dispatch(st, &events[i]) < 0)
            return -1;
    if (PyErr_CheckSignals() < 0)
        return -1;
    pending = PyObject_Length(st->signals);
    if (pending < 0)
        return -1;
    if (pending > 0 && call_method(st->reactor, s_run_signals, NULL) < 0)
        return -1;
    if (run_calls(st) < 0)
        return -1;
    if (first_timer(st->timers) <= monotonic_s() &&
        call_method(st->reactor, s_run_timers, NULL) < 0)
        return -1;
    return 0;
}

PyObject *Ktlswsgi_loop_run(PyObject *self, PyObject *reactor)
{
    struct state st = {0};
    struct epoll_event events[MAX_EVENTS];
    double next_beat = 0.0;
    int running;

    (void)self;
    if (state_load(&st, reactor) < 0) {
        state_clear(&st);
        return NULL;
    }
    while ((running = attr_true(reactor, s_running)) == 1) {
        if (turn(&st, &next_beat, events) < 0) {
            running = -1;
            break;
        }
    }
    state_clear(&st);
    if (running < 0)
        return NULL;
    Py_RETURN_NONE;
}
