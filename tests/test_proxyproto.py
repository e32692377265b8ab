"""PROXY protocol header: literal bytes in, NEED_DATA / ProxyInfo / ProxyError out."""
from __future__ import annotations

import pytest

from ktlswsgi.proxyproto import (
    DEFAULT_MAX_BYTES, NEED_DATA, PP2_TYPE_ALPN, PP2_TYPE_AUTHORITY, PP2_TYPE_CRC32C,
    PP2_TYPE_NOOP, PP2_TYPE_UNIQUE_ID, V2_SIGNATURE, ProxyError, ProxyHeaderParser,
    ProxyInfo, build_v1, build_v2, crc32c, parse_header)

# The first bytes of a real TLS 1.2/1.3 ClientHello record.
CLIENT_HELLO = bytes.fromhex("160301020001000200fc0303") + bytes(range(32))
HTTP_GET = b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n"


def feed_whole(data: bytes, **kw):
    parser = ProxyHeaderParser(**kw)
    parser.feed(data)
    return parser.result()


def feed_bytewise(data: bytes, **kw):
    """Feed one byte at a time; stop at the first final result."""
    parser = ProxyHeaderParser(**kw)
    for i in range(len(data)):
        parser.feed(data[i:i + 1])
        result = parser.result()
        if result is not NEED_DATA:
            return result, i + 1
    return parser.result(), len(data)


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes([ver_cmd, fam]) + size.to_bytes(2, "big") + body


def v2_tcp4_body(src=(192, 0, 2, 1), dst=(198, 51, 100, 7), sport=56324, dport=443) -> bytes:
    return bytes(src) + bytes(dst) + sport.to_bytes(2, "big") + dport.to_bytes(2, "big")


# -- v1 ------------------------------------------------------------------------------

V1_ACCEPTED = [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
     "TCP4", ("192.168.0.1", 56324), ("192.168.0.11", 443)),
    (b"PROXY TCP4 255.255.255.255 0.0.0.0 65535 0\r\n",
     "TCP4", ("255.255.255.255", 65535), ("0.0.0.0", 0)),
    (b"PROXY TCP6 2001:DB8::1 2001:db8:0:0:0:0:0:2 4711 8443\r\n",
     "TCP6", ("2001:db8::1", 4711), ("2001:db8::2", 8443)),
    (b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
     b"65535 65535\r\n",
     "TCP6", ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535),
     ("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", 65535)),
    (b"PROXY TCP6 ::ffff:192.0.2.1 :: 1 2\r\n",
     "TCP6", ("::ffff:c000:201", 1), ("::", 2)),
]


@pytest.mark.parametrize("header,family,src,dst", V1_ACCEPTED,
                         ids=["tcp4", "tcp4-extremes", "tcp6", "tcp6-longest", "tcp6-mapped"])
@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_v1_accepted(header, family, src, dst, feed):
    data = header + CLIENT_HELLO
    if feed == "whole":
        result = feed_whole(data)
    else:
        result, used = feed_bytewise(data)
        assert used == len(header)  # decided at the LF, not later
    assert result == ProxyInfo(1, "PROXY", family, src, dst, {}, len(header),
                               CLIENT_HELLO if feed == "whole" else b"")


def test_v1_longest_line_is_107_bytes():
    header = (b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
              b"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n")
    assert len(header) == 107
    result = feed_whole(header + HTTP_GET)
    assert result == ProxyInfo(1, "PROXY", "UNKNOWN", None, None, {}, 107, HTTP_GET)


@pytest.mark.parametrize("header", [b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN anything at all\r\n"])
def test_v1_unknown_means_real_addresses(header):
    result = feed_whole(header + HTTP_GET)
    assert result == ProxyInfo(1, "PROXY", "UNKNOWN", None, None, {}, len(header), HTTP_GET)


def test_v1_without_crlf_in_107_bytes_is_rejected_at_byte_107():
    line = b"PROXY UNKNOWN " + b"a" * 200
    result, used = feed_bytewise(line)
    assert result == ProxyError("v1 line without CRLF in its first 107 bytes")
    assert used == 107
    assert feed_whole(line[:106]) is NEED_DATA


def test_v1_108_byte_line_is_rejected():
    line = b"PROXY UNKNOWN " + b"a" * 92 + b"\r\n"
    assert len(line) == 108
    assert isinstance(feed_whole(line), ProxyError)


BAD_DST6 = "v1 destination address is not a canonical TCP6 address"
CONTROL = "v1 line with a control or non-ASCII byte"
V1_REJECTED = [
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n", CONTROL),
    (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX", CONTROL),
    (b"PROXY TCP4 192.168.0.1\t192.168.0.11 56324 443\r\n", CONTROL),
    (b"PROXY TCP4 192.168.0.\xff 192.168.0.11 1 2\r\n", CONTROL),
    (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY UNKNOWNX\r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY \r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n", "v1 protocol is not TCP4, TCP6 or UNKNOWN"),
    (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", "v1 TCP4 line has 5 fields after it, needs 4"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n", "v1 TCP4 line has 5 fields after it, needs 4"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n", "v1 TCP4 line has 3 fields after it, needs 4"),
    (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", "v1 source address is not a canonical TCP4 address"),
    (b"PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n", "v1 source address is not a canonical TCP4 address"),
    (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n", "v1 source address is not a canonical TCP4 address"),
    (b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n", "v1 source address is not a canonical TCP4 address"),
    (b"PROXY TCP4 1.2.3.4 ::1 1 2\r\n", "v1 destination address is not a canonical TCP4 address"),
    (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", "v1 source address is not a canonical TCP6 address"),
    (b"PROXY TCP6 ::1 fe80::1%eth0 1 2\r\n", BAD_DST6),
    (b"PROXY TCP6 ::1 1::2::3 1 2\r\n", BAD_DST6),
    (b"PROXY TCP6 ::1 ::g 1 2\r\n", BAD_DST6),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
     "v1 source port is not a decimal 0-65535 without leading zeros"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
     "v1 source port is not a decimal 0-65535 without leading zeros"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 -2\r\n",
     "v1 destination port is not a decimal 0-65535 without leading zeros"),
    (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2x\r\n",
     "v1 destination port is not a decimal 0-65535 without leading zeros"),
]


@pytest.mark.parametrize("line,reason", V1_REJECTED)
def test_v1_rejected(line, reason):
    assert feed_whole(line + HTTP_GET) == ProxyError(reason)
    assert feed_bytewise(line + HTTP_GET)[0] == ProxyError(reason)


def test_v1_bare_lf_rejected_at_once():
    result, used = feed_bytewise(b"PROXY TCP4 1.2.3.4\n5.6.7.8 1 2\r\n")
    assert result == ProxyError("v1 line with a control or non-ASCII byte")
    assert used == len(b"PROXY TCP4 1.2.3.4\n")


# -- v2 ------------------------------------------------------------------------------

def test_v2_tcp4_spec_example_with_http_after():
    # The bytes HAProxy sent in a capture (172.19.0.1:42578 -> 172.19.0.3:80).
    header = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050")
    result = feed_whole(header + HTTP_GET)
    assert result == ProxyInfo(2, "PROXY", "TCP4", ("172.19.0.1", 42578), ("172.19.0.3", 80),
                               {}, 28, HTTP_GET)


@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_v2_tcp4(feed):
    header = v2(0x21, 0x11, v2_tcp4_body())
    data = header + CLIENT_HELLO
    if feed == "whole":
        result = feed_whole(data)
        rest = CLIENT_HELLO
    else:
        result, used = feed_bytewise(data)
        assert used == len(header)
        rest = b""
    assert result == ProxyInfo(2, "PROXY", "TCP4", ("192.0.2.1", 56324), ("198.51.100.7", 443),
                               {}, 28, rest)


@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_v2_tcp6_with_tlvs(feed):
    src = bytes.fromhex("20010db8000000000000000000000001")
    dst = bytes.fromhex("20010db8000000000000000000000002")
    tlvs = (bytes([PP2_TYPE_ALPN]) + b"\x00\x08http/1.1"
            + bytes([PP2_TYPE_AUTHORITY]) + b"\x00\x0bexample.com"
            + bytes([PP2_TYPE_NOOP]) + b"\x00\x03\x00\x00\x00"
            + bytes([0xEA]) + b"\x00\x00"                       # empty value
            + bytes([PP2_TYPE_ALPN]) + b"\x00\x02h2")           # repeated: first kept
    header = v2(0x21, 0x21, src + dst + b"\x12\x67\x20\xfb" + tlvs)
    data = header + CLIENT_HELLO
    result = feed_whole(data) if feed == "whole" else feed_bytewise(data)[0]
    assert result == ProxyInfo(
        2, "PROXY", "TCP6", ("2001:db8::1", 4711), ("2001:db8::2", 8443),
        {PP2_TYPE_ALPN: b"http/1.1", PP2_TYPE_AUTHORITY: b"example.com", 0xEA: b""},
        len(header), CLIENT_HELLO if feed == "whole" else b"")


def test_v2_unix():
    body = b"/run/lb.sock".ljust(108, b"\0") + b"/run/app.sock\0junk".ljust(108, b"\0")
    header = v2(0x21, 0x31, body + bytes([PP2_TYPE_UNIQUE_ID]) + b"\x00\x03abc")
    result = feed_whole(header + HTTP_GET)
    assert result == ProxyInfo(2, "PROXY", "UNIX", "/run/lb.sock", "/run/app.sock",
                               {PP2_TYPE_UNIQUE_ID: b"abc"}, 16 + 216 + 6, HTTP_GET)


def test_v2_unix_abstract_namespace():
    body = b"\0lb".ljust(108, b"\0") + b"\0app".ljust(108, b"\0")
    result = feed_whole(v2(0x21, 0x31, body))
    assert (result.src, result.dst) == ("\0lb", "\0app")


@pytest.mark.parametrize("fam,body", [
    (0x00, b""),                      # the usual health check: no address block
    (0x11, v2_tcp4_body()),           # an address block is skipped, not used
    (0x77, b"\x01\x02\x03"),          # the family byte is ignored for LOCAL
], ids=["unspec", "tcp4-block", "garbage-family"])
@pytest.mark.parametrize("feed", ["whole", "bytewise"])
def test_v2_local_means_real_addresses(fam, body, feed):
    header = v2(0x20, fam, body)
    data = header + CLIENT_HELLO
    result = feed_whole(data) if feed == "whole" else feed_bytewise(data)[0]
    assert result == ProxyInfo(2, "LOCAL", "UNKNOWN", None, None, {}, len(header),
                               CLIENT_HELLO if feed == "whole" else b"")


@pytest.mark.parametrize("fam,body", [
    (0x00, b""), (0x00, b"ignored"),
    (0x12, v2_tcp4_body()),           # UDP over IPv4: not a stream, use the real peer
    (0x10, v2_tcp4_body()),           # INET with UNSPEC transport
    (0x22, b""),                      # UDP over IPv6, block not even present: ignored
], ids=["unspec", "unspec-with-bytes", "udp4", "inet-unspec", "udp6-empty"])
def test_v2_proxy_unspec_falls_back_to_real_addresses(fam, body):
    header = v2(0x21, fam, body)
    assert feed_whole(header + HTTP_GET) == ProxyInfo(2, "PROXY", "UNKNOWN", None, None, {},
                                                      len(header), HTTP_GET)


V2_REJECTED = [
    (v2(0x11, 0x11, v2_tcp4_body()), "v2 version 1, only 2 is defined", 13),
    (v2(0x31, 0x11, v2_tcp4_body()), "v2 version 3, only 2 is defined", 13),
    (v2(0x22, 0x11, v2_tcp4_body()), "v2 command 2 is not LOCAL (0) or PROXY (1)", 13),
    (v2(0x2F, 0x11, v2_tcp4_body()), "v2 command 15 is not LOCAL (0) or PROXY (1)", 13),
    (v2(0x21, 0x41, v2_tcp4_body()), "v2 address family 4 is not defined", 14),
    (v2(0x21, 0x13, v2_tcp4_body()), "v2 transport protocol 3 is not defined", 14),
    (v2(0x21, 0x11, v2_tcp4_body()[:8]), "v2 address block of 8 bytes, TCP4 needs 12", 24),
    (v2(0x21, 0x21, bytes(35)), "v2 address block of 35 bytes, TCP6 needs 36", 51),
    (v2(0x21, 0x31, bytes(215)), "v2 address block of 215 bytes, UNIX needs 216", 231),
    (v2(0x21, 0x11, v2_tcp4_body() + b"\x01\x00"), "v2 TLV truncated", 30),
    (v2(0x21, 0x11, v2_tcp4_body() + b"\x01\x00\x05abcd"), "v2 TLV truncated", 35),
    (v2(0x21, 0x11, v2_tcp4_body() + b"\x03\x00\x02ab"), "v2 CRC32C TLV of 2 bytes, needs 4", 33),
    (v2(0x21, 0x11, v2_tcp4_body() + b"\x03\x00\x04abcd"), "v2 CRC32C checksum mismatch", 35),
]


@pytest.mark.parametrize("header,reason,decided_at", V2_REJECTED)
def test_v2_rejected(header, reason, decided_at):
    assert feed_whole(header + CLIENT_HELLO) == ProxyError(reason)
    result, used = feed_bytewise(header + CLIENT_HELLO)
    assert result == ProxyError(reason)
    assert used == decided_at


def test_v2_size_bound_decided_from_the_length_field():
    body = v2_tcp4_body() + bytes([0xE0]) + (2000).to_bytes(2, "big") + bytes(2000)
    header = v2(0x21, 0x11, body)
    reason = f"v2 header of {16 + len(body)} bytes, over the limit of {DEFAULT_MAX_BYTES}"
    result, used = feed_bytewise(header)
    assert (result, used) == (ProxyError(reason), 16)
    # A larger configured bound admits it.
    info = feed_whole(header + HTTP_GET, max_bytes=4096)
    assert info.tlvs == {0xE0: bytes(2000)} and info.rest == HTTP_GET


def test_v2_exactly_at_the_bound():
    tlv_bytes = DEFAULT_MAX_BYTES - 16 - 12 - 3
    header = v2(0x21, 0x11, v2_tcp4_body() + b"\xe1" + tlv_bytes.to_bytes(2, "big")
                + bytes(tlv_bytes))
    assert len(header) == DEFAULT_MAX_BYTES
    assert isinstance(feed_whole(header), ProxyInfo)
    over = v2(0x21, 0x11, v2_tcp4_body() + b"\xe1" + (tlv_bytes + 1).to_bytes(2, "big")
              + bytes(tlv_bytes + 1))
    assert isinstance(feed_whole(over), ProxyError)


@pytest.mark.parametrize("max_bytes", [0, 100, 231, 16 + 0x10000])
def test_max_bytes_out_of_range(max_bytes):
    with pytest.raises(ValueError, match="max_bytes"):
        ProxyHeaderParser(max_bytes=max_bytes)


def test_v2_crc32c_verified():
    assert crc32c(b"123456789") == 0xE3069283  # the standard check value
    header = build_v2(("192.0.2.1", 1), ("192.0.2.2", 2), tlvs={PP2_TYPE_UNIQUE_ID: b"id"},
                      crc=True)
    info = feed_whole(header)
    assert info.tlvs[PP2_TYPE_UNIQUE_ID] == b"id" and PP2_TYPE_CRC32C in info.tlvs
    tampered = bytearray(header)
    tampered[17] ^= 1  # one bit of the source address
    assert feed_whole(bytes(tampered)) == ProxyError("v2 CRC32C checksum mismatch")


# -- neither signature ----------------------------------------------------------------

@pytest.mark.parametrize("data,decided_at", [
    (CLIENT_HELLO, 1),
    (HTTP_GET, 1),
    (b"POST / HTTP/1.1\r\n", 2),
    (b"PUT / HTTP/1.1\r\n", 2),
    (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 3),
    (b"PROPFIND / HTTP/1.1\r\n", 4),
    (b"PROXY\r\n", 6),
    (b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8), 11),
    (b"\r\nGET / HTTP/1.1\r\n", 3),
    (b"\x00" * 20, 1),
], ids=["tls-clienthello", "http-get", "http-post", "http-put", "h2-preface", "propfind",
        "proxy-no-space", "v2-bad-signature", "crlf-then-http", "zeros"])
def test_no_header_rejected_within_the_first_bytes(data, decided_at):
    result, used = feed_bytewise(data)
    assert result == ProxyError("not a PROXY protocol header")
    assert used == decided_at
    assert feed_whole(data) == ProxyError("not a PROXY protocol header")


def test_reasons_never_carry_received_bytes():
    secret = b"SECRET"
    cases = [secret + HTTP_GET,
             b"PROXY TCP4 " + secret + b" 1.2.3.4 1 2\r\n",
             b"PROXY " + secret + b"\r\n",
             b"PROXY TCP4 1.2.3.4 5.6.7.8 1 " + secret + b"\r\n",
             b"PROXY UNKNOWN " + secret * 30]
    for data in cases:
        result = feed_whole(data)
        assert isinstance(result, ProxyError) and "SECRET" not in result.reason


# -- parser life cycle -------------------------------------------------------------------

def test_nothing_fed_needs_data_and_close_is_an_error():
    parser = ProxyHeaderParser()
    assert parser.result() is NEED_DATA
    parser.feed(b"")
    assert parser.result() == ProxyError("closed before a PROXY header")


def test_close_mid_header():
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY TCP4 1.2")
    assert parser.result() is NEED_DATA
    parser.feed(b"")
    assert parser.result() == ProxyError("closed after 14 bytes of an incomplete PROXY header")


def test_feed_after_final_result_is_a_caller_bug():
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY UNKNOWN\r\n")
    with pytest.raises(RuntimeError):
        parser.feed(b"GET")


def test_rest_split_across_feeds_stays_with_the_header_feed():
    parser = ProxyHeaderParser()
    parser.feed(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r")
    assert parser.result() is NEED_DATA
    parser.feed(b"\n" + CLIENT_HELLO[:5])
    info = parser.result()
    assert info.rest == CLIENT_HELLO[:5] and info.header_bytes == 32


@pytest.mark.parametrize("header", [
    b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
    v2(0x21, 0x11, v2_tcp4_body() + b"\x05\x00\x02id"),
])
def test_feed_peeked_consumes_only_header_bytes(header):
    # Whole header in the first peek (the usual case): consume exactly the header.
    parser = ProxyHeaderParser()
    assert parser.feed_peeked(header + CLIENT_HELLO) == len(header)
    info = parser.result()
    assert isinstance(info, ProxyInfo) and info.header_bytes == len(header) and info.rest == b""
    # Fragmented: every peeked byte before the end of the header is consumed, then
    # the last peek (header end + ClientHello) gives only the header's remainder.
    parser = ProxyHeaderParser()
    consumed = 0
    for cut in (3, 10, 20):
        assert parser.feed_peeked(header[consumed:cut]) == cut - consumed
        consumed = cut
        assert parser.result() is NEED_DATA
    assert parser.feed_peeked(header[consumed:] + CLIENT_HELLO) == len(header) - consumed
    assert parser.result() == info


def test_feed_peeked_error_and_close():
    parser = ProxyHeaderParser()
    assert parser.feed_peeked(CLIENT_HELLO) == 0
    assert parser.result() == ProxyError("not a PROXY protocol header")
    parser = ProxyHeaderParser()
    assert parser.feed_peeked(b"") == 0
    assert parser.result() == ProxyError("closed before a PROXY header")


def test_parse_header_is_pure():
    data = b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET"
    assert parse_header(data[:10]) is NEED_DATA
    assert parse_header(data).rest == b"GET"
    assert parse_header(bytearray(data)) == parse_header(data)


# -- building ---------------------------------------------------------------------------

def test_build_v1():
    assert build_v1(("192.168.0.1", 56324), ("192.168.0.11", 443)) == \
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n"
    assert build_v1(("2001:DB8::1", 1), ("::1", 2)) == b"PROXY TCP6 2001:db8::1 ::1 1 2\r\n"
    assert build_v1(None, None) == b"PROXY UNKNOWN\r\n"
    with pytest.raises(ValueError):
        build_v1(("1.2.3.4", 1), ("::1", 2))
    with pytest.raises(ValueError):
        build_v1(("1.2.3.4", 70000), ("1.2.3.5", 2))


@pytest.mark.parametrize("src,dst,family", [
    (("192.0.2.1", 1), ("192.0.2.2", 65535), "TCP4"),
    (("2001:db8::1", 1), ("2001:db8::2", 2), "TCP6"),
    ("/run/a.sock", "/run/b.sock", "UNIX"),
])
def test_build_round_trips(src, dst, family):
    tlvs = [(PP2_TYPE_AUTHORITY, b"example.com"), (0xE5, b"\x00\x01")]
    info = parse_header(build_v2(src, dst, tlvs=tlvs) + CLIENT_HELLO)
    assert (info.command, info.family, info.src, info.dst, info.rest) == \
        ("PROXY", family, src, dst, CLIENT_HELLO)
    assert info.tlvs == dict(tlvs)
    if family != "UNIX":
        info = parse_header(build_v1(src, dst))
        assert (info.version, info.family, info.src, info.dst) == (1, family, src, dst)


def test_build_v2_local_and_unspec():
    assert build_v2(None, None, command="LOCAL") == V2_SIGNATURE + b"\x20\x00\x00\x00"
    assert parse_header(build_v2(None, None)).family == "UNKNOWN"
    with pytest.raises(ValueError):
        build_v2(None, None, command="HEALTH")
    with pytest.raises(ValueError):
        build_v2("/" + "x" * 200, "/y")
