"""HPACK for the HTTP/2 driver: nghttp2's coder in C, in place of the hpack
package's pure-Python one, where the extension was built with it.

Owns: the header compression of each HTTP/2 connection (RFC 7541).  h2 runs
the protocol and reaches the coder only through its connection's `encoder`
(`encode(headers)`, `header_table_size` from the peer's SETTINGS) and
`decoder` (`decode(block, raw=True)`, `max_header_list_size`,
`max_allowed_table_size` once our SETTINGS are acknowledged); `install()`
puts an `Encoder` and a `Decoder` with that interface there.  They raise
hpack's exceptions, which h2 turns into connection errors as it does for its
own coder.  Without nghttp2 (ktlswsgi/_csrc/hpack.c is built only where
libnghttp2-dev is installed) h2 keeps the hpack package's coder, which is
also the reference tests/test_hpack.py holds this one to.

Our encoder's dynamic table is at most ENCODER_TABLE_BYTES whatever table a
client offers; the decoder's is what our SETTINGS advertise (4096 bytes).
"""
from __future__ import annotations

from hpack.exceptions import HPACKDecodingError, HPACKError, OversizedHeaderListError
from hpack.struct import HeaderTuple

from .native import native

ENCODER_TABLE_BYTES = 4096
_DEFAULT_TABLE_BYTES = 4096          # RFC 7541 4.2: before any SETTINGS
_DEFAULT_LIST_BYTES = 64 * 1024      # as the hpack package's Decoder

AVAILABLE = native is not None and hasattr(native, "hpack_inflater")
NAME = "nghttp2" if AVAILABLE else "hpack (pure Python)"


def install(conn) -> None:
    """Give an h2 connection (before its first frame) nghttp2's coder, if built."""
    if AVAILABLE:
        conn.encoder = Encoder()
        conn.decoder = Decoder()


class Decoder:
    """h2's `decoder`: one connection's HPACK decoding context."""

    __slots__ = ("_ctx", "max_header_list_size", "_max_table")

    def __init__(self) -> None:
        self._ctx = native.hpack_inflater()
        self.max_header_list_size = _DEFAULT_LIST_BYTES
        self._max_table = _DEFAULT_TABLE_BYTES

    @property
    def max_allowed_table_size(self) -> int:
        return self._max_table

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, value: int) -> None:
        if value != self._max_table:
            native.hpack_inflate_table_size(self._ctx, value)
            self._max_table = value

    def decode(self, data, raw: bool = False) -> list:
        headers = native.hpack_inflate(self._ctx, data, self.max_header_list_size)
        if type(headers) is list:
            if raw:
                return headers
            try:
                return [(n.decode("utf-8"), v.decode("utf-8")) for n, v in headers]
            except UnicodeDecodeError as exc:
                raise HPACKDecodingError("Unable to decode headers as UTF-8") from exc
        if headers == -2:
            raise OversizedHeaderListError(
                f"A header list larger than {self.max_header_list_size} has been received")
        raise HPACKDecodingError("invalid HPACK header block")


class Encoder:
    """h2's `encoder`: one connection's HPACK encoding context."""

    __slots__ = ("_ctx", "_table")

    def __init__(self) -> None:
        self._ctx = native.hpack_deflater(ENCODER_TABLE_BYTES)
        self._table = _DEFAULT_TABLE_BYTES

    @property
    def header_table_size(self) -> int:
        return self._table

    @header_table_size.setter
    def header_table_size(self, value: int) -> None:
        native.hpack_deflate_table_size(self._ctx, value)
        self._table = value

    def encode(self, headers, huffman: bool = True) -> bytes:
        """One header block; nghttp2 chooses Huffman or not per field (the
        shorter), so `huffman` (the hpack package's switch) is not used."""
        block = native.hpack_deflate(self._ctx, headers)
        if block is None:   # not a list of (bytes, bytes): as the hpack package takes them
            block = native.hpack_deflate(self._ctx, _normalized(headers))
        if type(block) is not bytes:
            raise HPACKError(f"HPACK encoding failed (nghttp2 error {block})")
        return block


def _normalized(headers) -> list:
    """The hpack package's accepted forms (a dict, HeaderTuple, str, a third
    `sensitive` item) as (name, value, never_indexed) tuples of bytes."""
    if isinstance(headers, dict):
        items = sorted(headers.items(), key=lambda kv: not _bytes(kv[0]).startswith(b":"))
    else:
        items = headers
    out = []
    for h in items:
        if isinstance(h, HeaderTuple):
            sensitive = not h.indexable
        else:
            sensitive = bool(h[2]) if len(h) > 2 else False
        out.append((_bytes(h[0]), _bytes(h[1]), sensitive))
    return out


def _bytes(value) -> bytes:
    if type(value) is bytes:
        return value
    if not isinstance(value, str):
        value = str(value)
    return value.encode("utf-8")
