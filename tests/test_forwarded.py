"""Trusted proxy headers: request headers + direct peer in, REMOTE_ADDR/PORT and scheme out."""
from __future__ import annotations

import pytest

from ktlswsgi.forwarded import UNCHANGED, Applied, TrustedProxies, apply

DEFAULT = TrustedProxies()                       # "127.0.0.1,::1"
LB = TrustedProxies("10.0.0.0/8, 2001:db8:ff::/48, 192.0.2.10")
RFC = TrustedProxies("10.0.0.0/8", source="forwarded")


def h(*pairs: str) -> list:
    """Headers as h11 gives them: lower-case name bytes, value bytes."""
    return [(name.lower().encode(), value.encode("latin-1")) for name, value in pairs]


# -- the trust list -------------------------------------------------------------------

def test_default_trusts_loopback_only():
    assert DEFAULT.spec == "127.0.0.1,::1"
    assert DEFAULT.trusts("127.0.0.1") and DEFAULT.trusts("::1")
    assert not DEFAULT.trusts("127.0.0.2") and not DEFAULT.trusts("10.0.0.1")
    assert DEFAULT.trusts("::ffff:127.0.0.1")   # an IPv4 peer on a dual-stack socket


@pytest.mark.parametrize("addr,trusted", [
    ("10.1.2.3", True), ("11.0.0.1", False), ("::ffff:10.9.9.9", True),
    ("2001:db8:ff:1::5", True), ("2001:db8:fe::5", False), ("192.0.2.10", True),
    ("192.0.2.11", False), ("fe80::1%eth0", False), ("not-an-ip", False),
])
def test_cidr_and_single_addresses(addr, trusted):
    assert LB.trusts(addr) is trusted


def test_star_trusts_everyone():
    star = TrustedProxies("*")
    assert star.trust_all and star.trusts("203.0.113.9") and star.trusts("::2")
    assert star.trusts(None)
    assert TrustedProxies("10.0.0.1, *").trust_all


def test_unix_socket_peers():
    assert DEFAULT.trusts(None) and DEFAULT.trusts("")             # gunicorn parity
    strict = TrustedProxies("127.0.0.1", trust_unix=False)
    assert not strict.trusts(None) and not strict.trusts("")
    assert TrustedProxies("*", trust_unix=False).trusts(None)


def test_empty_spec_trusts_no_tcp_peer():
    nobody = TrustedProxies("")
    assert not nobody.trusts("127.0.0.1") and nobody.spec == ""
    assert TrustedProxies(" 127.0.0.1 ,, ").spec == "127.0.0.1"


@pytest.mark.parametrize("spec,message", [
    ("localhost", "entry 'localhost': not an IP address or network"),
    ("127.0.0.1,10.0.0.0/33", "entry '10.0.0.0/33': not an IP address or network"),
    ("10.0.0.1/8", "entry '10.0.0.1/8': host bits set, did you mean 10.0.0.0/8?"),
    ("1.2.3", "entry '1.2.3': not an IP address or network"),
    ("01.2.3.4", "entry '01.2.3.4': not an IP address or network"),
    ("fe80::1%eth0", "entry 'fe80::1%eth0': zone indexes are not supported"),
    ("**", "entry '**': not an IP address or network"),
])
def test_invalid_spec_names_the_entry(spec, message):
    with pytest.raises(ValueError) as info:
        TrustedProxies(spec)
    assert str(info.value) == f"forwarded-allow-ips {message}"
    assert "\n" not in str(info.value)


def test_invalid_source():
    with pytest.raises(ValueError, match="source 'both'"):
        TrustedProxies(source="both")


# -- X-Forwarded-For ---------------------------------------------------------------------

def test_no_forwarding_headers_is_unchanged():
    assert apply(h(("Host", "a"), ("Accept", "*/*")), "127.0.0.1", DEFAULT) is UNCHANGED
    assert apply([], "127.0.0.1", DEFAULT) is UNCHANGED


def test_untrusted_peer_is_ignored_entirely():
    headers = h(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"),
                ("Forwarded", "for=203.0.113.7;proto=https"))
    assert apply(headers, "198.51.100.1", DEFAULT) is UNCHANGED
    assert apply(headers, "198.51.100.1", RFC) is UNCHANGED


def test_trusted_peer_sets_client_and_scheme():
    headers = h(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"))
    assert apply(headers, "127.0.0.1", DEFAULT) == Applied("203.0.113.7", "", "https")
    assert apply(headers, "::1", DEFAULT) == Applied("203.0.113.7", "", "https")
    assert apply(headers, None, DEFAULT) == Applied("203.0.113.7", "", "https")  # unix socket


def test_rightmost_untrusted_hop_wins_over_a_spoofed_leftmost():
    # The client sent "X-Forwarded-For: 1.1.1.1"; two trusted proxies appended.
    headers = h(("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.0.0.5"))
    assert apply(headers, "10.0.0.6", LB) == Applied("203.0.113.7", "", None)


def test_every_hop_trusted_gives_the_leftmost():
    headers = h(("X-Forwarded-For", "10.0.0.1, 10.0.0.2"))
    assert apply(headers, "10.0.0.3", LB).remote_addr == "10.0.0.1"


def test_star_gives_the_leftmost():
    headers = h(("X-Forwarded-For", "1.1.1.1, 203.0.113.7, 10.0.0.5"))
    assert apply(headers, "198.51.100.1", TrustedProxies("*")).remote_addr == "1.1.1.1"


def test_multiple_header_lines_are_one_list_in_order():
    headers = h(("X-Forwarded-For", "1.1.1.1"), ("Accept", "*/*"),
                ("X-Forwarded-For", "203.0.113.7, 10.0.0.9"), ("X-Forwarded-For", ""))
    assert apply(headers, "10.0.0.6", LB).remote_addr == "203.0.113.7"


@pytest.mark.parametrize("value,addr,port", [
    ("2001:DB8::7", "2001:db8::7", ""),
    ("[2001:db8::7]", "2001:db8::7", ""),
    ("[2001:db8::7]:4711", "2001:db8::7", "4711"),
    ("203.0.113.7:4711", "203.0.113.7", "4711"),
    ("  203.0.113.7  ", "203.0.113.7", ""),
    ("::ffff:203.0.113.7", "203.0.113.7", ""),
    (",,203.0.113.7,,", "203.0.113.7", ""),
])
def test_hop_forms(value, addr, port):
    assert apply(h(("X-Forwarded-For", value)), "127.0.0.1", DEFAULT) == Applied(addr, port, None)


@pytest.mark.parametrize("value", [
    "unknown", "_hidden", "example.com", "203.0.113.7:99999", "203.0.113.7:08",
    "[2001:db8::7", "[2001:db8::7]x", "fe80::1%eth0", "1.1.1.1, garbage", "", " , ",
])
def test_unusable_client_hop_leaves_remote_addr(value):
    assert apply(h(("X-Forwarded-For", value)), "127.0.0.1", DEFAULT) == UNCHANGED


def test_unusable_hop_stops_the_walk():
    # Behind the garbage hop nothing can be believed, not even the leftmost address.
    headers = h(("X-Forwarded-For", "203.0.113.7, garbage, 10.0.0.5"))
    assert apply(headers, "10.0.0.6", LB) == UNCHANGED


def test_ipv6_peer_in_cidr():
    headers = h(("X-Forwarded-For", "2001:db8:1::9, 2001:db8:ff::1"))
    assert apply(headers, "2001:db8:ff::2", LB).remote_addr == "2001:db8:1::9"


def test_underscore_header_is_not_x_forwarded_for():
    headers = [(b"x_forwarded_for", b"203.0.113.7"), (b"x_forwarded_proto", b"https")]
    assert apply(headers, "127.0.0.1", DEFAULT) is UNCHANGED


def test_forwarded_header_ignored_in_x_forwarded_mode():
    headers = h(("Forwarded", "for=203.0.113.7;proto=https"))
    assert apply(headers, "127.0.0.1", DEFAULT) is UNCHANGED


# -- scheme headers -------------------------------------------------------------------------

@pytest.mark.parametrize("name,value,scheme", [
    ("X-Forwarded-Proto", "https", "https"),
    ("X-Forwarded-Proto", "HTTPS", "https"),
    ("X-Forwarded-Proto", " http ", "http"),
    ("X-Forwarded-Proto", "wss", None),
    ("X-Forwarded-Proto", "https://", None),
    ("X-Forwarded-Proto", "", None),
    ("X-Forwarded-Proto", "http, https", "https"),     # rightmost: the nearest proxy's
    ("X-Forwarded-Proto", "https, http", "http"),
    ("X-Forwarded-Protocol", "ssl", "https"),
    ("X-Forwarded-Protocol", "https", "https"),
    ("X-Forwarded-Protocol", "http", "http"),
    ("X-Forwarded-Protocol", "tls", None),
    ("X-Forwarded-Ssl", "on", "https"),
    ("X-Forwarded-Ssl", "ON", "https"),
    ("X-Forwarded-Ssl", "off", "http"),
    ("X-Forwarded-Ssl", "yes", None),
])
def test_scheme_values(name, value, scheme):
    assert apply(h((name, value)), "127.0.0.1", DEFAULT) == Applied(None, None, scheme)


def test_scheme_headers_agreeing():
    headers = h(("X-Forwarded-Proto", "https"), ("X-Forwarded-Ssl", "on"),
                ("X-Forwarded-Protocol", "ssl"))
    assert apply(headers, "127.0.0.1", DEFAULT).url_scheme == "https"


def test_scheme_headers_contradicting_leave_the_scheme():
    headers = h(("X-Forwarded-Proto", "http"), ("X-Forwarded-Ssl", "on"))
    assert apply(headers, "127.0.0.1", DEFAULT).url_scheme is None


def test_scheme_from_the_last_line_of_a_repeated_header():
    headers = h(("X-Forwarded-Proto", "http"), ("X-Forwarded-Proto", "https"))
    assert apply(headers, "127.0.0.1", DEFAULT).url_scheme == "https"


# -- RFC 7239 Forwarded -----------------------------------------------------------------------

@pytest.mark.parametrize("value,expected", [
    ("for=203.0.113.7", Applied("203.0.113.7", "", None)),
    ("For=203.0.113.7;Proto=HTTPS", Applied("203.0.113.7", "", "https")),
    ('for="203.0.113.7:4711";proto=https;by=10.0.0.1;host=example.com',
     Applied("203.0.113.7", "4711", "https")),
    ('for="[2001:db8:cafe::17]:4711"', Applied("2001:db8:cafe::17", "4711", None)),
    ('for="[2001:db8:cafe::17]"', Applied("2001:db8:cafe::17", "", None)),
    ('for="2001:db8:cafe::17"', Applied("2001:db8:cafe::17", "", None)),   # lenient: unbracketed
    ('for="203.0.113.7:_abc"', Applied("203.0.113.7", "", None)),          # obfuscated port
    ('for="\\2\\0\\3.0.113.7"', Applied("203.0.113.7", "", None)),         # quoted-pairs
    (" for = 203.0.113.7", UNCHANGED),                                     # no space around '='
    ("for=unknown;proto=https", Applied(None, None, "https")),
    ("for=_hidden;proto=http", Applied(None, None, "http")),
    ('for="_gazonk"', UNCHANGED),
    ("proto=https", Applied(None, None, "https")),
    ("for=203.0.113.7;proto=ftp", Applied("203.0.113.7", "", None)),
    ("for=203.0.113.7:4711", UNCHANGED),                    # a port needs quoting
    ("for=[2001:db8::1]", UNCHANGED),                       # brackets need quoting
    ("for=203.0.113.7;for=198.51.100.1", UNCHANGED),        # repeated parameter
    ('for="203.0.113.7', UNCHANGED),                        # unterminated quote
    ("for=203.0.113.7 garbage", UNCHANGED),
    ('for="[2001:db8::1]:99999"', UNCHANGED),
])
def test_forwarded_element_forms(value, expected):
    assert apply(h(("Forwarded", value)), "10.0.0.1", RFC) == expected


def test_forwarded_walk_from_the_right():
    headers = h(("Forwarded", 'for=1.1.1.1;proto=http, for="[2001:db8::7]";proto=https'),
                ("Forwarded", "for=10.0.0.5;proto=http"))
    assert apply(headers, "10.0.0.6", RFC) == Applied("2001:db8::7", "", "https")


def test_forwarded_all_trusted_gives_the_leftmost():
    headers = h(("Forwarded", "for=10.0.0.4;proto=https, for=10.0.0.5;proto=http"))
    assert apply(headers, "10.0.0.6", RFC) == Applied("10.0.0.4", "", "https")


def test_forwarded_quoted_comma_and_semicolon_do_not_split():
    headers = h(("Forwarded", 'for=203.0.113.7;host="a,b;c", for=10.0.0.5'))
    assert apply(headers, "10.0.0.6", RFC) == Applied("203.0.113.7", "", None)


def test_forwarded_garbage_on_the_left_does_not_hide_the_right():
    headers = h(("Forwarded", 'for="1.1.1.1 !!, , for=203.0.113.7;proto=https'))
    assert apply(headers, "10.0.0.6", RFC) == UNCHANGED   # the quote swallows the rest
    headers = h(("Forwarded", '@@="x,y", for=203.0.113.7;proto=https'))
    assert apply(headers, "10.0.0.6", RFC) == Applied("203.0.113.7", "", "https")
    headers = h(("Forwarded", 'for="1.1.1.1'), ("Forwarded", "for=203.0.113.7"))
    assert apply(headers, "10.0.0.6", RFC) == Applied("203.0.113.7", "", None)


def test_forwarded_malformed_hop_stops_the_walk():
    headers = h(("Forwarded", "for=203.0.113.7, for=1.2.3.4 x, for=10.0.0.5"))
    assert apply(headers, "10.0.0.6", RFC) == UNCHANGED


def test_forwarded_empty_elements_skipped():
    headers = h(("Forwarded", ", for=203.0.113.7;proto=https ,,"))
    assert apply(headers, "10.0.0.6", RFC) == Applied("203.0.113.7", "", "https")


def test_x_forwarded_headers_ignored_in_forwarded_mode():
    headers = h(("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-Proto", "https"))
    assert apply(headers, "10.0.0.6", RFC) is UNCHANGED


def test_forwarded_untrusted_peer():
    assert apply(h(("Forwarded", "for=203.0.113.7")), "11.0.0.1", RFC) is UNCHANGED
