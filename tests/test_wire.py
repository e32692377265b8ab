"""wire.py's coalescing, on its own: a run of byte pieces with HTTP/2 `Done`
markers among them becomes one write, and whatever part of it the transport
does not take goes back in front of the wire with every marker where it
was (an HTTP/1 `Done` ends the run)."""
from __future__ import annotations

import collections
import random

from ktlswsgi.wire import COALESCE_BYTES, Done, coalesce, uncoalesce


def _flatten(pieces):
    """The wire as (bytes, marker) events: bytes merged, markers kept in place."""
    out, buf = [], bytearray()
    for p in pieces:
        if type(p) is memoryview:
            buf += p
        elif type(p) is tuple:
            buf += p[0]
        else:
            if buf:
                out.append(bytes(buf))
                buf = bytearray()
            out.append(p)
    if buf:
        out.append(bytes(buf))
    return out


def test_every_cut_of_a_coalesced_run_puts_back_what_was_not_written():
    rng = random.Random(19)
    for _ in range(300):
        pieces = []
        for i in range(rng.randint(1, 8)):
            pieces.append(memoryview(bytes([65 + i]) * rng.randint(1, 30)))
            if rng.random() < 0.6:
                pieces.append(Done(object(), 200, 0, stream=object()))
        if rng.random() < 0.3:
            pieces.append(Done(object(), 200, 0))          # HTTP/1: ends the run
        pieces.append(memoryview(b"tail"))
        wire = collections.deque(pieces)
        view, credits, dones = coalesce(wire)
        taken_markers = [d for _, d in dones or ()]
        assert bytes(view) == b"".join(bytes(p) for p in pieces[:len(pieces) - len(wire)]
                                       if type(p) is memoryview)
        assert all(d.stream is not None for d in taken_markers)
        rest_of_wire = list(wire)
        for n in range(len(view) + 1):
            back = collections.deque(rest_of_wire)
            uncoalesce(back, view, n, credits, dones)
            reached = [d for off, d in dones or () if off <= n]
            # What went out, then what came back, is the original wire in order.
            sent = bytes(view[:n])
            events = _flatten(list(back))
            original = _flatten(pieces)
            rebuilt = []
            consumed = sent
            for ev in original:
                if type(ev) is bytes:
                    if consumed:
                        k = min(len(consumed), len(ev))
                        assert ev[:k] == consumed[:k]
                        consumed = consumed[k:]
                        ev = ev[k:]
                    if ev:
                        rebuilt.append(ev)
                elif ev in reached:
                    continue
                else:
                    rebuilt.append(ev)
            assert _flatten(rebuilt) == events, (n, rebuilt, events)


def test_credits_ride_with_the_last_bytes_put_back():
    a, b = memoryview(b"x" * 10), memoryview(b"y" * 5)
    marker = Done(object(), 200, 0, stream=object())
    wire = collections.deque([(a, (("ex", 10),)), marker, b])
    view, credits, dones = coalesce(wire)
    assert bytes(view) == b"x" * 10 + b"y" * 5 and list(credits) == [("ex", 10)]
    assert dones == [(10, marker)]
    back = collections.deque()
    uncoalesce(back, view, 4, credits, dones)
    assert [type(p) for p in back] == [memoryview, Done, tuple]
    assert bytes(back[0]) == b"x" * 6 and back[1] is marker
    assert bytes(back[2][0]) == b"y" * 5 and list(back[2][1]) == [("ex", 10)]


def test_a_big_piece_goes_alone_and_http1_done_ends_the_run():
    big = memoryview(b"z" * COALESCE_BYTES)
    wire = collections.deque([big, memoryview(b"after")])
    assert coalesce(wire) == (big, None, None) and len(wire) == 1
    h1_done = Done(object(), 200, 0)
    wire = collections.deque([memoryview(b"head"), h1_done, memoryview(b"next")])
    view, _, dones = coalesce(wire)
    assert bytes(view) == b"head" and dones is None and wire[0] is h1_done
