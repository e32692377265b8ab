"""The reactor's own contract: timers, cross-thread calls, the heartbeat.

The heartbeat (what a worker writes for the master's --timeout) comes from
the loop turning, not from a timer: an error in any callback cannot silence
it, and a loop that stops turning does.
"""
from __future__ import annotations

import threading
import time

from ktlswsgi.reactor import Reactor


def run_for(reactor: Reactor, seconds: float) -> None:
    reactor.call_later(seconds, reactor.stop)
    reactor.run()


def test_heartbeat_beats_while_the_loop_turns_even_if_callbacks_fail():
    r = Reactor()
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


def test_heartbeat_stops_while_the_loop_is_stuck():
    r = Reactor()
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


def test_calls_from_other_threads_run_on_the_loop():
    r = Reactor()
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
