"""Trusted proxy headers: who may say which client and which scheme a request had.

Owns: the `--forwarded-allow-ips` trust list (gunicorn's setting: addresses
and CIDR networks, "*" for everyone, default "127.0.0.1,::1") and turning
X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Protocol / X-Forwarded-Ssl,
or the RFC 7239 `Forwarded` header, into REMOTE_ADDR, REMOTE_PORT and
wsgi.url_scheme.  Sans-I/O: no sockets, no clocks; the spec is parsed once at
start-up, `apply` is a pure function of one request's headers.

Rules:
- Trust is decided on the DIRECT peer (getpeername()), never on an address a
  header reported.  From an untrusted peer nothing is applied; the headers
  stay in the environ as HTTP_X_FORWARDED_FOR etc., as with gunicorn.
- Unix-socket peers are trusted by default, as gunicorn does (its rule is
  "not a (host, port) tuple, or in forwarded_allow_ips"): only processes the
  socket's file permissions admit can connect, typically nginx on the same
  host.  `trust_unix=False` trusts them only with "*".
- One header family is read, chosen by `source`: "x-forwarded" (default,
  gunicorn/nginx/HAProxy/AWS ALB) or "forwarded" (RFC 7239).  Never both: a
  proxy that maintains one passes the other through from the client
  untouched, so reading both would let the client choose.
- Client address: the hops of all header lines in order, comma lists split,
  empty elements skipped.  Walking from the right, hops that are trusted
  addresses are proxies; the first hop that is not is the client.  If every
  hop is trusted, the leftmost.  If the client hop is not an IP address
  (RFC 7239 "unknown", an obfuscated "_id", garbage), REMOTE_ADDR stays the
  peer's: REMOTE_ADDR only ever holds an IP address, IPv6 without brackets,
  IPv4-mapped IPv6 as IPv4, no port.  The port given with it ("1.2.3.4:5678",
  "[::1]:80", for="[::1]:80") becomes REMOTE_PORT, else "".
- Scheme, "x-forwarded": the rightmost value of each header present:
  X-Forwarded-Proto http|https, X-Forwarded-Protocol ssl|https|http,
  X-Forwarded-Ssl on|off (gunicorn's secure_scheme_headers), case-insensitive;
  other values are ignored; headers that disagree leave the scheme unchanged
  (gunicorn answers 400 there).  "forwarded": proto= of the element that gave
  the client, http|https only.
- Header names are matched exactly as h11 gives them (lower case), so
  "X_Forwarded_For" is never read as X-Forwarded-For.
"""
from __future__ import annotations

import ipaddress
import re
from typing import NamedTuple

DEFAULT_FORWARDED_ALLOW_IPS = "127.0.0.1,::1"
SOURCES = ("x-forwarded", "forwarded")

_XFF = b"x-forwarded-for"
_FORWARDED = b"forwarded"
_SCHEME_VALUES = {
    b"x-forwarded-proto": {"https": "https", "http": "http"},
    b"x-forwarded-protocol": {"ssl": "https", "https": "https", "http": "http"},
    b"x-forwarded-ssl": {"on": "https", "off": "http"},
}
_X_NAMES = frozenset([_XFF, *_SCHEME_VALUES])
_FORWARDED_NAMES = frozenset([_FORWARDED])

_PORT = re.compile(r"0|[1-9][0-9]{0,4}")
_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_FORWARDED_PAIR = re.compile(
    r'[ \t]*(' + _TCHARS + r')=(' + _TCHARS + r'|"(?:[^"\\]|\\.)*")[ \t]*')
_QUOTED_PAIR = re.compile(r"\\(.)")


class Applied(NamedTuple):
    """What the headers change; None means "leave as the connection gave it"."""

    remote_addr: str | None      # an IP address, canonical text
    remote_port: str | None      # set (maybe "") exactly when remote_addr is
    url_scheme: str | None       # "http" or "https"


UNCHANGED = Applied(None, None, None)


class TrustedProxies:
    """The parsed `--forwarded-allow-ips` spec, plus which headers to read."""

    __slots__ = ("spec", "trust_all", "trust_unix", "source", "_exact", "_networks", "_names")

    def __init__(self, spec: str = DEFAULT_FORWARDED_ALLOW_IPS, *,
                 source: str = "x-forwarded", trust_unix: bool = True):
        if source not in SOURCES:
            raise ValueError(f"forwarded header source {source!r}: use x-forwarded or forwarded")
        self.source = source
        self._names = _X_NAMES if source == "x-forwarded" else _FORWARDED_NAMES
        self.trust_all = False
        self.trust_unix = trust_unix
        exact = set()
        networks = []
        entries = []
        for raw in spec.split(","):
            entry = raw.strip()
            if not entry:
                continue
            entries.append(entry)
            if entry == "*":
                self.trust_all = True
                continue
            network = _parse_entry(entry)
            if network.num_addresses == 1:
                exact.add(_unmap(network.network_address))
            else:
                networks.append(network)
        self.spec = ",".join(entries)
        self._exact = frozenset(exact)
        self._networks = tuple(networks)

    def trusts(self, addr: str | None) -> bool:
        """Is this direct peer a trusted proxy?  None or "" is a Unix-socket peer."""
        if self.trust_all:
            return True
        if not addr:
            return self.trust_unix
        try:
            ip = ipaddress.ip_address(addr.split("%", 1)[0])
        except ValueError:
            return False
        return self._trusts_ip(ip)

    def _trusts_ip(self, ip) -> bool:
        if self.trust_all:
            return True
        ip = _unmap(ip)
        if ip in self._exact:
            return True
        for network in self._networks:
            if ip in network:
                return True
        return False

    def __repr__(self) -> str:
        return (f"TrustedProxies({self.spec!r}, source={self.source!r}, "
                f"trust_unix={self.trust_unix})")


def apply(headers: list, peer_addr: str | None, trusted: TrustedProxies) -> Applied:
    """What the forwarding headers of one request change, or UNCHANGED.

    `headers`: [(lower-case name bytes, value bytes)] as h11 gives them;
    `peer_addr`: the direct peer's IP as text, None (or "") for a Unix socket.
    """
    names = trusted._names
    found = None
    for name, value in headers:
        if name in names:
            if found is None:
                found = []
            found.append((name, value))
    if found is None or not trusted.trusts(peer_addr):
        return UNCHANGED
    if trusted.source == "forwarded":
        return _apply_forwarded([value for _, value in found], trusted)
    return _apply_x_forwarded(found, trusted)


# -- X-Forwarded-* -----------------------------------------------------------------
def _apply_x_forwarded(found: list, trusted: TrustedProxies) -> Applied:
    hops: list[str] = []
    last_value: dict[bytes, str] = {}
    for name, value in found:
        items = value.decode("latin-1").split(",")
        if name == _XFF:
            hops.extend(items)
            continue
        for item in reversed(items):
            item = item.strip(" \t")
            if item:
                last_value[name] = item.lower()
                break
    schemes = set()
    for name, value in last_value.items():
        scheme = _SCHEME_VALUES[name].get(value)
        if scheme is not None:
            schemes.add(scheme)
    scheme = schemes.pop() if len(schemes) == 1 else None
    client = None
    if hops:
        client = _pick_client(
            (_parse_hop(hop) for hop in reversed(hops) if hop.strip(" \t")), trusted)
    if client is None:
        return Applied(None, None, scheme)
    return Applied(client[0], client[1], scheme)


def _parse_hop(text: str):
    """(ip, port text) for "1.2.3.4", "1.2.3.4:80", "::1", "[::1]", "[::1]:80"; else None."""
    text = text.strip(" \t")
    if text.startswith("["):
        host, sep, after = text[1:].partition("]")
        if not sep or (after and not after.startswith(":")):
            return None
        port = after[1:] if after else ""
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    else:
        host, port = text, ""
    ip = _ip_or_none(host)
    if ip is None or (port and not _valid_port(port)):
        return None
    return ip, port


def _pick_client(hops_right_to_left, trusted: TrustedProxies):
    """(address text, port text) of the client hop, or None when unusable/absent."""
    leftmost = None
    for hop in hops_right_to_left:
        if hop is None or not trusted._trusts_ip(hop[0]):
            return _as_client(hop)
        leftmost = hop
    return _as_client(leftmost)


def _as_client(hop):
    if hop is None:
        return None
    ip, port = hop
    return str(_unmap(ip)), port


# -- RFC 7239 Forwarded ----------------------------------------------------------------
def _apply_forwarded(values: list, trusted: TrustedProxies) -> Applied:
    elements = []
    for value in values:
        elements.extend(_forwarded_elements(value.decode("latin-1")))
    chosen = None          # (element or None if malformed, node or None)
    leftmost = None
    for element in reversed(elements):
        if element is None:
            chosen = (None, None)
            break
        if not element:
            continue
        node = _parse_node(element["for"]) if "for" in element else None
        if node is not None and trusted._trusts_ip(node[0]):
            leftmost = (element, node)
            continue
        chosen = (element, node)
        break
    else:
        chosen = leftmost
    if chosen is None or chosen[0] is None:
        return UNCHANGED
    element, node = chosen
    proto = element.get("proto", "").lower()
    scheme = proto if proto in ("http", "https") else None
    client = _as_client(node)
    if client is None:
        return Applied(None, None, scheme)
    return Applied(client[0], client[1], scheme)


def _forwarded_elements(line: str) -> list:
    """The elements of one Forwarded field line: {lower-case name: value} each,
    or None for a malformed element (bad syntax, a repeated parameter)."""
    elements = []
    params: dict | None = {}
    pos, end = 0, len(line)
    while True:
        match = _FORWARDED_PAIR.match(line, pos)
        if match:
            name = match.group(1).lower()
            if params is not None:
                if name in params:
                    params = None
                else:
                    params[name] = _unquote(match.group(2))
            pos = match.end()
        else:
            while pos < end and line[pos] in " \t":
                pos += 1
        if pos >= end:
            elements.append(params)
            return elements
        char = line[pos]
        if char == ";":
            pos += 1
        elif char == ",":
            elements.append(params)
            params = {}
            pos += 1
        else:  # garbage: this element is malformed; resume after its comma
            pos = _end_of_element(line, pos)
            elements.append(None)
            if pos >= end:
                return elements
            params = {}
            pos += 1


def _end_of_element(line: str, pos: int) -> int:
    """Index of the comma ending the element at `pos` (not inside a quoted string)."""
    in_quote = False
    end = len(line)
    while pos < end:
        char = line[pos]
        if in_quote:
            if char == "\\":
                pos += 1
            elif char == '"':
                in_quote = False
        elif char == '"':
            in_quote = True
        elif char == ",":
            return pos
        pos += 1
    return end


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return _QUOTED_PAIR.sub(r"\1", value[1:-1])
    return value


def _parse_node(value: str):
    """(ip, port text) for an RFC 7239 node; None for "unknown", "_obfuscated", garbage."""
    if value.startswith("["):
        host, sep, after = value[1:].partition("]")
        if not sep or (after and not after.startswith(":")):
            return None
        port = after[1:] if after else ""
    elif value.count(":") == 1:
        host, _, port = value.partition(":")
    else:  # a bare IPv6 address (not RFC 7239, but seen in the wild) or a name
        host, port = value, ""
    ip = _ip_or_none(host)
    if ip is None:
        return None
    if port.startswith("_"):     # obfuscated port: the address is still usable
        port = ""
    elif port and not _valid_port(port):
        return None
    return ip, port


# -- shared ---------------------------------------------------------------------------
def _parse_entry(entry: str):
    if "%" in entry:
        raise ValueError(f"forwarded-allow-ips entry {entry!r}: zone indexes are not supported")
    try:
        network = ipaddress.ip_network(entry, strict=False)
    except ValueError:
        raise ValueError(f"forwarded-allow-ips entry {entry!r}: "
                         f"not an IP address or network") from None
    if network.network_address != ipaddress.ip_interface(entry).ip:
        raise ValueError(f"forwarded-allow-ips entry {entry!r}: host bits set, "
                         f"did you mean {network}?")
    mapped = network.network_address.ipv4_mapped if network.version == 6 else None
    if mapped is not None and network.prefixlen >= 96:  # ::ffff:10.0.0.0/104 is 10.0.0.0/8
        network = ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network


def _ip_or_none(text: str):
    if not text or "%" in text:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _unmap(ip):
    if ip.version == 6 and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


def _valid_port(text: str) -> bool:
    return bool(_PORT.fullmatch(text)) and int(text) <= 65535
