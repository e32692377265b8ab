"""The reactor's own contract: timers, cross-thread calls, the heartbeat,
events and their handlers' errors, signals; for both loops (`--loop c`,
_csrc/loop.c, and `--loop python`, its reference).

The heartbeat (what a worker writes for the master's --timeout) comes from
the loop turning, not from a timer: an error in any callback cannot silence
it, and a loop that stops turning does.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading
import time

import pytest

from ktlswsgi.native import native
from ktlswsgi.reactor import IN, Reactor

LOOPS = [pytest.param("c", marks=pytest.mark.skipif(native is None, reason="not built")),
         "python"]


@pytest.fixture(params=LOOPS)
def loop(request):
    return request.param


def run_for(reactor: Reactor, seconds: float) -> None:
    reactor.call_later(seconds, reactor.stop)
    reactor.run()


def test_heartbeat_beats_while_the_loop_turns_even_if_callbacks_fail(loop):
    r = Reactor(loop)
    beats = []
    r.set_heartbeat(lambda: beats.append(time.monotonic()), 0.05)

    def failing():
        raise RuntimeError("a broken timer callback")

    for i in range(5):
        r.call_later(0.01 * i, failing)
    r.call_soon(failing)
    try:
        run_for(r, 0.5)
    finally:
        r.close()
    assert len(beats) >= 6, beats
    gaps = [b - a for a, b in zip(beats, beats[1:])]
    assert max(gaps) < 0.3, gaps


def test_heartbeat_stops_while_the_loop_is_stuck(loop):
    r = Reactor(loop)
    beats = []
    r.set_heartbeat(lambda: beats.append(time.monotonic()), 0.05)
    stuck = {}

    def stuck_callback():
        stuck["from"] = time.monotonic()
        time.sleep(0.4)          # the scenario: a callback that never yields
        stuck["to"] = time.monotonic()

    r.call_later(0.1, stuck_callback)
    try:
        run_for(r, 0.7)
    finally:
        r.close()
    inside = [b for b in beats if stuck["from"] < b < stuck["to"]]
    assert inside == []
    assert any(b >= stuck["to"] for b in beats)


def test_calls_from_other_threads_run_on_the_loop(loop):
    r = Reactor(loop)
    ran = []
    done = threading.Event()

    def from_worker():
        for i in range(100):
            r.call_soon_threadsafe(lambda i=i: ran.append((i, threading.current_thread())))
        r.call_soon_threadsafe(done.set)

    t = threading.Thread(target=from_worker)
    r.call_soon(t.start)
    r.call_later(5, r.stop)

    def stop_when_done():
        if done.is_set():
            r.stop()
        else:
            r.call_later(0.01, stop_when_done)

    r.call_later(0.01, stop_when_done)
    try:
        r.run()
    finally:
        t.join(5)
        r.close()
    assert [i for i, _ in ran] == list(range(100))
    assert all(th is threading.main_thread() for _, th in ran)


def test_auto_is_the_c_loop_where_it_is_built():
    assert Reactor("auto").loop == ("python" if native is None else "c")


def test_a_handlers_error_is_logged_and_the_loop_goes_on(loop, caplog):
    r = Reactor(loop)
    a, b = socket.socketpair()
    seen = []

    def handler(ev):
        seen.append(ev)
        a.recv(1)
        if len(seen) == 1:
            raise RuntimeError("a broken handler")
        r.stop()

    r.add(a.fileno(), IN, handler)
    b.send(b"xy")
    r.call_later(5, r.stop)
    try:
        with caplog.at_level(logging.ERROR, logger="ktlswsgi.reactor"):
            r.run()
    finally:
        r.close()
        a.close()
        b.close()
    assert seen == [IN, IN]
    errors = [rec for rec in caplog.records if rec.name == "ktlswsgi.reactor"]
    assert [rec.getMessage() for rec in errors] == [
        "reactor: unhandled error in an event handler"]
    assert errors[0].exc_info[0] is RuntimeError   # with its traceback
    assert errors[0].exc_info[2] is not None


class _Fatal(BaseException):
    pass


def test_a_base_exception_ends_the_loop(loop):
    r = Reactor(loop)

    def fatal():
        raise _Fatal()

    r.call_soon(fatal)
    r.call_later(5, r.stop)
    try:
        with pytest.raises(_Fatal):
            r.run()
    finally:
        r.close()


def test_a_handler_removed_by_another_in_the_same_turn_is_not_called(loop):
    r = Reactor(loop)
    pairs = [socket.socketpair() for _ in range(2)]
    called = []

    def handler(i):
        def on_event(ev):
            called.append(i)
            other = pairs[1 - i][0]
            r.remove(other.fileno())
            pairs[i][0].recv(1)
            r.remove(pairs[i][0].fileno())
            r.call_soon(r.stop)
        return on_event

    for i, (a, b) in enumerate(pairs):
        r.add(a.fileno(), IN, handler(i))
    for a, b in pairs:
        b.send(b"x")
    # Both are readable before the loop's first epoll_wait: one turn sees both.
    r.call_later(5, r.stop)
    try:
        r.run()
    finally:
        r.close()
        for a, b in pairs:
            a.close()
            b.close()
    assert len(called) == 1, called


def _when_running(r: Reactor, action) -> threading.Thread:
    """Run `action()` on another thread once `r`'s loop has turned."""
    turned = threading.Event()
    r.call_soon(turned.set)

    def go():
        assert turned.wait(5)
        action()
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def test_a_signal_reaches_the_loop_on_the_main_thread(loop):
    assert threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGUSR2)
    r = Reactor(loop)
    ran = []

    def callback():
        ran.append(threading.current_thread())
        r.stop()

    r.add_signal_handler(signal.SIGUSR2, callback)
    # The loop sleeps in epoll_wait (nothing else to do): the signal must wake it.
    t = _when_running(r, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                     signal.SIGUSR2))
    r.call_later(5, r.stop)
    try:
        r.run()
    finally:
        t.join(5)
        r.close()
    assert ran == [threading.main_thread()]
    assert signal.getsignal(signal.SIGUSR2) == previous


def test_ctrl_c_stops_a_sleeping_loop(loop):
    if signal.getsignal(signal.SIGINT) is not signal.default_int_handler:
        pytest.skip("SIGINT is not Python's default handler here")
    r = Reactor(loop)
    t = _when_running(r, lambda: signal.pthread_kill(threading.main_thread().ident,
                                                     signal.SIGINT))
    r.call_later(5, r.stop)
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            r.run()
    finally:
        t.join(5)
        r.close()
    assert time.monotonic() - started < 4


def test_the_loop_sleeps_without_holding_the_gil(loop):
    """While the loop waits for its next timer, other threads run."""
    r = Reactor(loop)
    counted = []
    stop = threading.Event()

    def count():
        n = 0
        while not stop.is_set():
            n += 1
        counted.append(n)

    t = threading.Thread(target=count)
    r.call_soon(t.start)
    r.call_later(0.3, r.stop)
    try:
        r.run()
    finally:
        stop.set()
        t.join(5)
        r.close()
    assert counted and counted[0] > 1_000_000, counted  # held: ~0.1M here; released: ~5M


def test_a_server_serves_on_either_loop(loop):
    """The whole server on each loop: keep-alive requests, an app error's
    500, a client that leaves mid-response, then a clean stop."""
    import http.client

    from support import running_server, wait_until

    def app(environ, start_response):
        if environ["PATH_INFO"] == "/fail":
            raise RuntimeError("app error")
        body = environ["PATH_INFO"].encode() * 1000
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    with running_server(app, loop=loop) as srv:
        assert srv.server.reactor.loop == loop
        c = http.client.HTTPConnection(srv.host, srv.port, timeout=10)
        for i in range(20):
            c.request("GET", f"/r{i}")
            r = c.getresponse()
            assert r.status == 200 and r.read() == f"/r{i}".encode() * 1000
        c.request("GET", "/fail")
        r = c.getresponse()
        assert r.status == 500
        r.read()
        c.close()
        s = srv.connect()
        s.sendall(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
        s.close()
        c = srv.counters
        wait_until(lambda: c.requests == 22 and c.connections == 2
                   and c.connections_closed == 2, 10, "the last request read, every connection closed")
        srv.wait_idle()
