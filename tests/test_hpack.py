"""HPACK through nghttp2 (ktlswsgi/hpackcoder.py, ktlswsgi/_csrc/hpack.c)
held to the hpack package, h2's own coder.

Both directions, over header lists in sequence on one pair of contexts (the
dynamic tables evolve): what our encoder writes the hpack package decodes to
the same list, and what the hpack package encodes ours decodes as it does.
Bad blocks (a corpus, then seeded mutations of good ones) must fail in both
or in neither, with the same list when both succeed.  Table size changes,
the header list bound and never-indexed fields are checked on their own, and
a real HTTP/2 request (curl) must go through the C.
"""
from __future__ import annotations

import random
import subprocess

import pytest
from hpack import Decoder as RefDecoder, Encoder as RefEncoder
from hpack import HeaderTuple, NeverIndexedHeaderTuple
from hpack.exceptions import HPACKError, OversizedHeaderListError

from ktlswsgi import hpackcoder

pytestmark = pytest.mark.skipif(not hpackcoder.AVAILABLE,
                                reason="ktlswsgi._native built without nghttp2")

REQUEST = [(b":method", b"GET"), (b":scheme", b"https"), (b":authority", b"example.com"),
           (b":path", b"/a/b?c=d"), (b"user-agent", b"curl/7.88.1"), (b"accept", b"*/*")]
RESPONSE = [(b":status", b"200"), (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", b"1234"), (b"date", b"Fri, 04 Dec 2026 10:00:00 GMT"),
            (b"server", b"ktlswsgi"), (b"set-cookie", b"session=abc; Path=/; HttpOnly")]
LISTS = [
    REQUEST,
    RESPONSE,
    REQUEST + [(b"cookie", b"a=1"), (b"cookie", b"b=" + b"x" * 300)],
    [(b":status", b"204")],
    [(b"x-empty", b""), (b"", b"empty name"), (b"x-bin", bytes(range(256)))],
    [(b"x-long", b"v" * 5000)],        # over the 4 KiB table: never stored
    [(b"x-%d" % i, b"%d" % (i * 7)) for i in range(200)],
    [],
]


def sequence(seed: int, n: int = 60) -> list:
    """`n` header lists: the fixed ones, then random fields (names repeat, so
    the dynamic table is hit and evicted)."""
    rnd = random.Random(seed)
    out = list(LISTS)
    while len(out) < n:
        fields = []
        for _ in range(rnd.randrange(0, 12)):
            name = rnd.choice([b"accept", b"x-a", b"x-b", b"cookie", b"x-%d" % rnd.randrange(50)])
            value = bytes(rnd.randrange(256) for _ in range(rnd.choice([0, 1, 5, 40, 300])))
            fields.append((name, value))
        out.append(rnd.choice([REQUEST, RESPONSE, []]) + fields)
    return out


@pytest.mark.parametrize("seed", range(4))
def test_our_blocks_decode_with_the_hpack_package(seed):
    ours, ref = hpackcoder.Encoder(), RefDecoder()
    for headers in sequence(seed):
        assert ref.decode(ours.encode(headers), raw=True) == headers


@pytest.mark.parametrize("seed", range(4))
def test_we_decode_the_hpack_package_blocks_as_it_does(seed):
    enc, ours, ref = RefEncoder(), hpackcoder.Decoder(), RefDecoder()
    for headers in sequence(seed):
        block = enc.encode(headers)
        got = ours.decode(block, raw=True)
        assert got == [tuple(h) for h in ref.decode(block, raw=True)] == headers
    assert ours.decode(RefEncoder().encode([(b"a", b"\xc3\xa9")])) == [("a", "\u00e9")]


@pytest.mark.parametrize("size", [0, 256, 4096, 65536])
def test_the_peers_table_size_reaches_our_encoder(size):
    ours, ref = hpackcoder.Encoder(), RefDecoder()
    ref.decode(ours.encode(RESPONSE), raw=True)
    ours.header_table_size = size           # the client's SETTINGS_HEADER_TABLE_SIZE
    for headers in sequence(9, 20):
        assert ref.decode(ours.encode(headers), raw=True) == headers
    # Never more than our own bound, whatever the client offers.
    assert ref.header_table_size == min(size, hpackcoder.ENCODER_TABLE_BYTES)


def test_a_peer_that_does_not_shrink_to_our_acknowledged_table_fails():
    for decoder in (hpackcoder.Decoder(), RefDecoder()):
        enc = RefEncoder()
        decoder.decode(enc.encode(REQUEST), raw=True)
        decoder.max_allowed_table_size = 0
        with pytest.raises(HPACKError):
            decoder.decode(enc.encode(REQUEST), raw=True)  # no size update first
    for decoder in (hpackcoder.Decoder(), RefDecoder()):
        enc = RefEncoder()
        decoder.max_allowed_table_size = 0
        enc.header_table_size = 0               # the peer shrinks: fine
        assert decoder.decode(enc.encode(REQUEST), raw=True) == REQUEST


@pytest.mark.parametrize("bound", [0, 70, 150, 1000])
def test_the_header_list_bound_is_the_hpack_packages(bound):
    block = RefEncoder().encode(REQUEST)        # 6 fields: 32 each + their bytes
    size = sum(len(n) + len(v) + 32 for n, v in REQUEST)
    outcomes = []
    for decoder in (hpackcoder.Decoder(), RefDecoder()):
        decoder.max_header_list_size = bound
        if bound >= size:
            outcomes.append(decoder.decode(block, raw=True))
        else:
            with pytest.raises(OversizedHeaderListError):
                decoder.decode(block, raw=True)
            outcomes.append("oversized")
    assert outcomes[0] == outcomes[1]


def test_credentials_are_never_indexed():
    ours, ref = hpackcoder.Encoder(), RefDecoder()
    headers = [(b"authorization", b"Bearer secret"), (b"cookie", b"short"),
               NeverIndexedHeaderTuple(b"x-token", b"t"), (b"x-flagged", b"f", True),
               HeaderTuple(b"x-plain", b"p"), ("x-str", "s")]
    got = ref.decode(ours.encode(headers), raw=True)
    assert [tuple(h) for h in got] == [
        (b"authorization", b"Bearer secret"), (b"cookie", b"short"), (b"x-token", b"t"),
        (b"x-flagged", b"f"), (b"x-plain", b"p"), (b"x-str", b"s")]
    assert [type(h) is NeverIndexedHeaderTuple for h in got] == [True] * 4 + [False] * 2


BAD_BLOCKS = [
    b"\x80",                    # indexed field 0
    b"\xbe",                    # index 62: past the static table, empty dynamic table
    b"\xff\xff\xff\xff\xff",    # an integer that never ends
    b"\x40\x05abc",             # a literal name shorter than its length
    b"\x40\x81\xff",            # a Huffman string that is only EOS padding
    b"\x82\x20",                # a table size update after a field
    b"\x3f\xe2\x1f",            # a table size update above 4096
    b"\x00\x01a",               # a value length missing
]


def outcome(decoder, block):
    try:
        return [tuple(h) for h in decoder.decode(block, raw=True)]
    except HPACKError:
        return "error"


@pytest.mark.parametrize("block", BAD_BLOCKS, ids=lambda b: b.hex())
def test_bad_blocks_fail_in_both(block):
    assert outcome(hpackcoder.Decoder(), block) == outcome(RefDecoder(), block) == "error"


@pytest.mark.parametrize("seed", range(3))
def test_mutated_blocks_fail_or_decode_alike(seed):
    rnd = random.Random(seed)
    good = [RefEncoder().encode(h) for h in sequence(seed, 30) if h]
    errors = 0
    for _ in range(1500):
        block = bytearray(rnd.choice(good))
        for _ in range(rnd.randrange(1, 4)):
            op = rnd.randrange(3)
            at = rnd.randrange(len(block) + 1)
            if op == 0 and block:
                block[min(at, len(block) - 1)] = rnd.randrange(256)
            elif op == 1:
                block[at:at] = bytes([rnd.randrange(256)])
            else:
                del block[at:at + rnd.randrange(1, 4)]
        got = outcome(hpackcoder.Decoder(), bytes(block))
        assert got == outcome(RefDecoder(), bytes(block)), bytes(block).hex()
        errors += got == "error"
    assert 100 < errors < 1400     # both kinds of outcome were exercised


def test_a_real_http2_request_goes_through_nghttp2(monkeypatch, tmp_path):
    """... and through the C request-block checks and environ: the
    comparisons in test_native.py would pass with the server never calling them."""
    from support import running_server
    from test_native import Recording, hello_app

    from ktlswsgi import http2, wsgi
    stand_in = Recording()
    monkeypatch.setattr(hpackcoder, "native", stand_in)
    monkeypatch.setattr(http2, "native", stand_in)
    monkeypatch.setattr(wsgi, "native", stand_in)
    with running_server(hello_app, tls=True) as srv:
        r = subprocess.run(["curl", "-sSk", "--http2", "--max-time", "20", srv.url + "/"],
                           capture_output=True, timeout=30)
    assert r.returncode == 0 and r.stdout == b"hello", r.stderr
    assert {"hpack_inflater", "hpack_deflater", "hpack_inflate", "hpack_deflate",
            "h2_request", "build_environ"} <= set(stand_in.called)
