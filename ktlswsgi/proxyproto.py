"""The PROXY protocol header (HAProxy's spec, version 1 text and version 2 binary).

Owns: recognising, bounding and validating the header an L4 load balancer
(HAProxy `send-proxy`, AWS NLB, Kubernetes LoadBalancer services) sends as the
very first bytes of a TCP connection, before the TLS ClientHello, so TLS (and
kTLS) stays end to end here while the client's address is passed on; and
building such headers for tests and tools.  Sans-I/O: no sockets, no clocks,
no threads; bytes in, one result out.

Spec: HAProxy's doc/proxy-protocol.txt (revision 2020/03/05).  Decisions:

- A listener configured for the protocol requires it: bytes that cannot start
  a header are rejected as soon as they rule out both signatures (an HTTP
  request or a TLS ClientHello at its first or second byte).  The spec forbids
  guessing whether a header is present.
- v1: one US-ASCII line of at most 107 bytes including CRLF, fields separated
  by exactly one space, no leading zeros in IPv4 octets or ports, a bare CR or
  LF (or any control byte) is an error.  `PROXY UNKNOWN ...` is accepted and
  means "use the real connection's addresses" (family UNKNOWN, src None).
- v2: version nibble 2 only; command LOCAL (0) or PROXY (1) only; family
  UNSPEC/INET/INET6/UNIX and transport UNSPEC/STREAM/DGRAM only.  LOCAL, the
  UNSPEC family and non-STREAM transports fall back to the real connection's
  addresses (family UNKNOWN, src None), as the spec allows.  The whole header
  (16 bytes + length) is capped at `max_bytes` and rejected from its length
  field alone when over.  TLVs follow the address block; a truncated TLV is an
  error; a CRC32C TLV is verified; NOOP TLVs are dropped; of repeated types the
  first is kept.
- Error reasons are short, fixed texts plus numbers: never the received bytes.
"""
from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass, field


class _Sentinel:
    __slots__ = ("_name",)

    def __init__(self, name: str):
        self._name = name

    def __repr__(self) -> str:
        return self._name


NEED_DATA = _Sentinel("NEED_DATA")

V1_PREFIX = b"PROXY "
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"
V1_MAX_BYTES = 107             # longest v1 line including CRLF (spec 2.1)
V2_FIXED_BYTES = 16            # signature, ver_cmd, fam, 2-byte length
MIN_HEADER_BYTES = 15          # b"PROXY UNKNOWN\r\n"
DEFAULT_MAX_BYTES = V2_FIXED_BYTES + 1024
MIN_MAX_BYTES = V2_FIXED_BYTES + 216  # a v2 UNIX address block must fit

# v2 TLV types (spec 2.2)
PP2_TYPE_ALPN = 0x01
PP2_TYPE_AUTHORITY = 0x02
PP2_TYPE_CRC32C = 0x03
PP2_TYPE_NOOP = 0x04
PP2_TYPE_UNIQUE_ID = 0x05
PP2_TYPE_SSL = 0x20
PP2_TYPE_NETNS = 0x30

_V2_ADDRESS_BYTES = {1: 12, 2: 36, 3: 216}   # INET, INET6, UNIX (with ports for IP)
_V2_FAMILY = {1: "TCP4", 2: "TCP6", 3: "UNIX"}
_V1_PRINTABLE = re.compile(rb"[\x20-\x7e]*")
_V1_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_V1_IPV4 = re.compile(rb"(?:0|[1-9][0-9]{0,2})(?:\.(?:0|[1-9][0-9]{0,2})){3}")
_V1_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{2,45}")


@dataclass(frozen=True)
class ProxyInfo:
    """A complete, valid header.

    `src`/`dst` mirror what getpeername()/getsockname() give for the family:
    (host, port) for TCP4/TCP6 (host as canonical text), a path str for UNIX,
    None for UNKNOWN -- None means "keep the real connection's addresses".
    """

    version: int                 # 1 or 2
    command: str                 # "PROXY" or "LOCAL" (v2 health checks)
    family: str                  # "TCP4", "TCP6", "UNIX" or "UNKNOWN"
    src: tuple | str | None
    dst: tuple | str | None
    tlvs: dict = field(default_factory=dict)  # v2 only: {type: value bytes}
    header_bytes: int = 0        # bytes the header took on the wire
    rest: bytes = b""            # bytes after the header (TLS/HTTP), as fed


@dataclass(frozen=True)
class ProxyError:
    reason: str                  # one short line, never the received bytes


def parse_header(data, max_bytes: int = DEFAULT_MAX_BYTES):
    """NEED_DATA, ProxyInfo or ProxyError for a connection that starts with `data`.

    Pure: the same prefix gives the same answer, so it also suits bytes seen
    with recv(MSG_PEEK).  `rest` is everything in `data` after the header.
    """
    _check_max_bytes(max_bytes)
    return _parse(data, max_bytes)


class ProxyHeaderParser:
    """Incremental: feed bytes as they arrive, ask `result()` after each feed.

    Two ways to feed one connection (use one of them):
    - `feed(data)`: everything read goes in; `result().rest` holds the bytes
      after the header (hand them to the TLS memory BIO or to HTTP).
    - `feed_peeked(peeked)`: for transports that must leave the bytes after
      the header in the socket (OpenSSL reading the fd itself): pass what
      recv(MSG_PEEK) returned, then recv() exactly the number of bytes it
      returns; those are header bytes only.  `rest` is then b"".
    An empty feed means the peer closed: the result becomes a ProxyError.
    """

    def __init__(self, max_bytes: int = DEFAULT_MAX_BYTES):
        _check_max_bytes(max_bytes)
        self._max_bytes = max_bytes
        self._buf = bytearray()
        self._result = NEED_DATA

    def feed(self, data: bytes) -> None:
        self._check_open()
        if not data:
            self._result = self._closed_error()
            return
        self._buf += data
        self._result = _parse(self._buf, self._max_bytes)

    def feed_peeked(self, peeked: bytes) -> int:
        """How many of the `peeked` bytes to consume now (all header bytes)."""
        self._check_open()
        if not peeked:
            self._result = self._closed_error()
            return 0
        result = _parse(bytes(self._buf) + peeked, self._max_bytes)
        if result is NEED_DATA:   # no end of header yet: every byte seen is header
            self._buf += peeked
            return len(peeked)
        if isinstance(result, ProxyError):
            self._result = result
            return 0
        consume = result.header_bytes - len(self._buf)
        self._buf += peeked[:consume]
        self._result = dataclasses.replace(result, rest=b"")
        return consume

    def result(self):
        """NEED_DATA, a ProxyInfo or a ProxyError (both final)."""
        return self._result

    @property
    def bytes_received(self) -> int:
        return len(self._buf)

    def _check_open(self) -> None:
        if self._result is not NEED_DATA:
            raise RuntimeError("PROXY header parser fed after its final result")

    def _closed_error(self) -> ProxyError:
        if not self._buf:
            return ProxyError("closed before a PROXY header")
        return ProxyError(f"closed after {len(self._buf)} bytes of an incomplete PROXY header")


# -- parsing -------------------------------------------------------------------
def _check_max_bytes(max_bytes: int) -> None:
    if max_bytes < MIN_MAX_BYTES or max_bytes > V2_FIXED_BYTES + 0xFFFF:
        raise ValueError(f"PROXY header max_bytes {max_bytes}: use "
                         f"{MIN_MAX_BYTES}..{V2_FIXED_BYTES + 0xFFFF}")


def _parse(data, max_bytes: int):
    if not data:
        return NEED_DATA
    first = data[0]
    if first == V1_PREFIX[0]:
        seen = min(len(data), len(V1_PREFIX))
        if data[:seen] != V1_PREFIX[:seen]:
            return ProxyError("not a PROXY protocol header")
        if seen < len(V1_PREFIX):
            return NEED_DATA
        return _parse_v1(data)
    if first == V2_SIGNATURE[0]:
        seen = min(len(data), len(V2_SIGNATURE))
        if data[:seen] != V2_SIGNATURE[:seen]:
            return ProxyError("not a PROXY protocol header")
        return _parse_v2(data, max_bytes)
    return ProxyError("not a PROXY protocol header")


def _parse_v1(data):
    window = bytes(data[:V1_MAX_BYTES])
    end = window.find(b"\r\n")
    if end < 0:
        pending = window[:-1] if window.endswith(b"\r") else window
        if not _V1_PRINTABLE.fullmatch(pending):
            return ProxyError("v1 line with a control or non-ASCII byte")
        if len(window) >= V1_MAX_BYTES:
            return ProxyError(f"v1 line without CRLF in its first {V1_MAX_BYTES} bytes")
        return NEED_DATA
    line = window[:end]
    if not _V1_PRINTABLE.fullmatch(line):
        return ProxyError("v1 line with a control or non-ASCII byte")
    header_bytes = end + 2
    rest = bytes(data[header_bytes:])
    fields = line.split(b" ")
    proto = fields[1]
    if proto == b"UNKNOWN":  # the receiver ignores the rest of the line
        return ProxyInfo(1, "PROXY", "UNKNOWN", None, None, {}, header_bytes, rest)
    if proto not in (b"TCP4", b"TCP6"):
        return ProxyError("v1 protocol is not TCP4, TCP6 or UNKNOWN")
    family = proto.decode("ascii")
    if len(fields) != 6:
        return ProxyError(f"v1 {family} line has {len(fields) - 2} fields after it, needs 4")
    src_host = _v1_address(fields[2], family)
    dst_host = _v1_address(fields[3], family)
    if src_host is None or dst_host is None:
        which = "source" if src_host is None else "destination"
        return ProxyError(f"v1 {which} address is not a canonical {family} address")
    src_port = _v1_port(fields[4])
    dst_port = _v1_port(fields[5])
    if src_port is None or dst_port is None:
        which = "source" if src_port is None else "destination"
        return ProxyError(f"v1 {which} port is not a decimal 0-65535 without leading zeros")
    return ProxyInfo(1, "PROXY", family, (src_host, src_port), (dst_host, dst_port),
                     {}, header_bytes, rest)


def _v1_address(text: bytes, family: str) -> str | None:
    if family == "TCP4":
        if not _V1_IPV4.fullmatch(text):
            return None
        if any(int(octet) > 255 for octet in text.split(b".")):
            return None
        return text.decode("ascii")
    if not _V1_IPV6_CHARS.fullmatch(text):  # also keeps out "%scope"
        return None
    try:
        return str(ipaddress.IPv6Address(text.decode("ascii")))
    except ValueError:
        return None


def _v1_port(text: bytes) -> int | None:
    if not _V1_PORT.fullmatch(text):
        return None
    port = int(text)
    return port if port <= 65535 else None


def _parse_v2(data, max_bytes: int):
    have = len(data)
    if have > 12:
        version, command = data[12] >> 4, data[12] & 0x0F
        if version != 2:
            return ProxyError(f"v2 version {version}, only 2 is defined")
        if command > 1:
            return ProxyError(f"v2 command {command} is not LOCAL (0) or PROXY (1)")
    if have > 13 and data[12] & 0x0F == 1:
        family, transport = data[13] >> 4, data[13] & 0x0F
        if family > 3:
            return ProxyError(f"v2 address family {family} is not defined")
        if transport > 2:
            return ProxyError(f"v2 transport protocol {transport} is not defined")
    if have < V2_FIXED_BYTES:
        return NEED_DATA
    header_bytes = V2_FIXED_BYTES + int.from_bytes(data[14:16], "big")
    if header_bytes > max_bytes:
        return ProxyError(f"v2 header of {header_bytes} bytes, over the limit of {max_bytes}")
    if have < header_bytes:
        return NEED_DATA
    header = bytes(data[:header_bytes])
    rest = bytes(data[header_bytes:])
    if header[12] & 0x0F == 0:  # LOCAL: the family and the whole block are ignored
        return ProxyInfo(2, "LOCAL", "UNKNOWN", None, None, {}, header_bytes, rest)
    family, transport = header[13] >> 4, header[13] & 0x0F
    if family == 0 or transport != 1:  # UNSPEC family, or not a stream: real addresses
        return ProxyInfo(2, "PROXY", "UNKNOWN", None, None, {}, header_bytes, rest)
    name = _V2_FAMILY[family]
    address_bytes = _V2_ADDRESS_BYTES[family]
    block = header[V2_FIXED_BYTES:]
    if len(block) < address_bytes:
        return ProxyError(f"v2 address block of {len(block)} bytes, {name} needs {address_bytes}")
    if family == 3:
        src, dst = _unix_path(block[:108]), _unix_path(block[108:216])
    else:
        size = 4 if family == 1 else 16
        make = ipaddress.IPv4Address if family == 1 else ipaddress.IPv6Address
        ports = block[2 * size:2 * size + 4]
        src = (str(make(block[:size])), int.from_bytes(ports[:2], "big"))
        dst = (str(make(block[size:2 * size])), int.from_bytes(ports[2:], "big"))
    tlvs = _parse_tlvs(header, V2_FIXED_BYTES + address_bytes)
    if isinstance(tlvs, ProxyError):
        return tlvs
    return ProxyInfo(2, "PROXY", name, src, dst, tlvs, header_bytes, rest)


def _unix_path(raw: bytes) -> str:
    if raw[:1] == b"\0":  # Linux abstract namespace: keep the leading NUL
        name = b"\0" + raw[1:].rstrip(b"\0")
    else:
        name = raw.split(b"\0", 1)[0]
    return name.decode("utf-8", "surrogateescape")


def _parse_tlvs(header: bytes, offset: int):
    tlvs: dict[int, bytes] = {}
    end = len(header)
    while offset < end:
        if end - offset < 3:
            return ProxyError("v2 TLV truncated")
        kind = header[offset]
        length = int.from_bytes(header[offset + 1:offset + 3], "big")
        start = offset + 3
        if start + length > end:
            return ProxyError("v2 TLV truncated")
        if kind == PP2_TYPE_CRC32C:
            if length != 4:
                return ProxyError(f"v2 CRC32C TLV of {length} bytes, needs 4")
            zeroed = header[:start] + b"\0\0\0\0" + header[start + 4:]
            if crc32c(zeroed) != int.from_bytes(header[start:start + 4], "big"):
                return ProxyError("v2 CRC32C checksum mismatch")
        if kind != PP2_TYPE_NOOP and kind not in tlvs:
            tlvs[kind] = header[start:start + length]
        offset = start + length
    return tlvs


def _make_crc32c_table() -> list:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC32C_TABLE = _make_crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli, RFC 4960 appendix B), as PP2_TYPE_CRC32C carries it."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- building (tests, tools) ----------------------------------------------------
def build_v1(src: tuple | None, dst: tuple | None) -> bytes:
    """b"PROXY TCP4|TCP6 src dst sport dport\\r\\n"; both None gives PROXY UNKNOWN."""
    if src is None and dst is None:
        return b"PROXY UNKNOWN\r\n"
    (src_ip, src_port), (dst_ip, dst_port) = _ip_pair(src, dst)
    family = "TCP4" if src_ip.version == 4 else "TCP6"
    return f"PROXY {family} {src_ip} {dst_ip} {src_port} {dst_port}\r\n".encode("ascii")


def build_v2(src, dst, command: str = "PROXY", tlvs=(), *, crc: bool = False) -> bytes:
    """A v2 header.  `src`/`dst`: (host, port) for TCP4/TCP6, str paths for UNIX,
    None for UNSPEC.  `command` "LOCAL" carries no addresses.  `tlvs`: a dict
    or (type, bytes) pairs, sent in order.  `crc` appends a valid CRC32C TLV."""
    if command == "LOCAL":
        ver_cmd, fam, block = 0x20, 0x00, b""
    elif command == "PROXY":
        ver_cmd = 0x21
        if src is None and dst is None:
            fam, block = 0x00, b""
        elif isinstance(src, str) and isinstance(dst, str):
            fam, block = 0x31, _unix_block(src) + _unix_block(dst)
        else:
            (src_ip, src_port), (dst_ip, dst_port) = _ip_pair(src, dst)
            fam = 0x11 if src_ip.version == 4 else 0x21
            block = (src_ip.packed + dst_ip.packed
                     + src_port.to_bytes(2, "big") + dst_port.to_bytes(2, "big"))
    else:
        raise ValueError(f"command {command!r}: use PROXY or LOCAL")
    pairs = list(tlvs.items()) if isinstance(tlvs, dict) else list(tlvs)
    for kind, value in pairs:
        block += bytes([kind]) + len(value).to_bytes(2, "big") + bytes(value)
    if crc:
        block += bytes([PP2_TYPE_CRC32C]) + b"\x00\x04" + b"\0\0\0\0"
    if len(block) > 0xFFFF:
        raise ValueError(f"v2 header body of {len(block)} bytes, over 65535")
    header = V2_SIGNATURE + bytes([ver_cmd, fam]) + len(block).to_bytes(2, "big") + block
    if crc:
        header = header[:-4] + crc32c(header).to_bytes(4, "big")
    return header


def _ip_pair(src, dst):
    pair = []
    for host, port in (src, dst):
        if not 0 <= port <= 65535:
            raise ValueError(f"port {port} out of range")
        pair.append((ipaddress.ip_address(host), port))
    if pair[0][0].version != pair[1][0].version:
        raise ValueError("source and destination are of different IP versions")
    return pair


def _unix_block(path: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    if len(raw) > 108:
        raise ValueError(f"unix path of {len(raw)} bytes, over 108")
    return raw.ljust(108, b"\0")


def unmapped(addr):
    """(host, port) with an IPv4-mapped IPv6 host as IPv4, as forwarded.py gives
    REMOTE_ADDR; anything else unchanged."""
    if isinstance(addr, tuple) and addr[0].startswith("::ffff:"):
        mapped = ipaddress.IPv6Address(addr[0]).ipv4_mapped
        if mapped is not None:
            return (str(mapped), addr[1])
    return addr
