"""OutboundQueue on its own: order, wake-ups, producer backpressure, abort.

Real threads; every wait is on a condition with a deadline, never a sleep.
"""
from __future__ import annotations

import threading

import pytest

from ktlswsgi.outbound import Chunk, End, OutboundQueue, QueueAborted


class Wakes:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1


def test_items_come_out_in_order_and_a_wake_only_after_the_reactor_found_it_empty():
    wakes = Wakes()
    q = OutboundQueue(1000, 100, wakes)
    q.put(1)
    q.put_many([2, 3])
    assert wakes.n == 1          # one wake while the reactor has not looked yet
    assert q.pop() == 1
    assert list(q.pop_all()) == [2, 3]
    assert q.pop_all() == ()     # empty: the reactor is idle now
    q.put(4)
    assert wakes.n == 2
    assert q.pop() == 4 and q.pop() is None
    q.put(5)
    assert wakes.n == 3


def test_unpop_puts_items_back_in_front_in_order():
    q = OutboundQueue(1000, 100, lambda: None)
    q.put_many([1, 2, 3])
    items = q.pop_all()
    assert items.popleft() == 1
    q.put(4)
    q.unpop(items)
    assert list(q.pop_all()) == [2, 3, 4]


def test_a_producer_above_high_water_waits_until_the_reactor_drains_below_low_water():
    q = OutboundQueue(100, 40, lambda: None)
    q.put(Chunk(b"x" * 150), 150)           # over high water now
    entered, done = threading.Event(), threading.Event()

    def producer():
        entered.set()
        q.put(End(200, 150))
        done.set()

    t = threading.Thread(target=producer)
    t.start()
    assert entered.wait(5)
    assert not done.wait(0.2)              # still over high water: it waits
    q.sent(100)                            # 50 left: above low water
    assert not done.wait(0.2)
    q.sent(20)                             # 30 left: below low water
    assert done.wait(5)
    t.join(5)
    assert [type(i) for i in q.pop_all()] == [Chunk, End]


def test_abort_wakes_a_waiting_producer_and_fails_later_puts():
    q = OutboundQueue(10, 5, lambda: None)
    q.put(Chunk(b"x" * 20), 20)
    errors = []

    def producer():
        try:
            q.put(Chunk(b"y"), 1)
        except QueueAborted as exc:
            errors.append(str(exc))

    t = threading.Thread(target=producer)
    t.start()
    left = q.abort("connection closed")
    t.join(5)
    assert not t.is_alive() and errors == ["connection closed"]
    assert [type(i) for i in left] == [Chunk]
    with pytest.raises(QueueAborted):
        q.put_many([End(200, 0)])

