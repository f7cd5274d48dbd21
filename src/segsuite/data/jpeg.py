"""A structural check of a JPEG file's marker stream, entropy-coded data included.

libjpeg recovers from damaged compressed data with a warning on stderr and returns an image, so a
JPEG overwritten in place (same length) decodes silently to wrong pixels. In entropy-coded data a
0xFF byte may only be followed by 0x00 (a stuffed 0xFF), a restart marker 0xD0-0xD7, another 0xFF
(fill) or a real marker; everything outside scans is a sequence of length-prefixed segments.
Overwritten bytes break one of these rules with high probability (most 0xFF xx pairs are not
allowed), so checking them catches the damage the decoder hides.
"""

from __future__ import annotations

_SOI, _EOI, _SOS = 0xD8, 0xD9, 0xDA
_RST = range(0xD0, 0xD8)
# markers that begin a length-prefixed segment: SOFn/DHT/DAC (C0-CF), DQT, DNL, DRI, DHP, EXP, APPn, JPGn, COM
_SEGMENTS = {*range(0xC0, 0xD0), 0xDB, 0xDC, 0xDD, 0xDE, 0xDF, *range(0xE0, 0xF0), *range(0xF0, 0xFE), 0xFE}


def jpeg_stream_problem(data: bytes) -> str | None:
    """None if the marker structure of `data` (a whole JPEG file) is intact, else what is wrong."""
    if not data.startswith(b"\xff\xd8"):
        return "no start-of-image marker"
    pos, size = 2, len(data)
    while pos < size:
        if data[pos] != 0xFF:
            return f"expected a marker at byte {pos}, found 0x{data[pos]:02X}"
        while pos < size and data[pos] == 0xFF:  # fill bytes before a marker
            pos += 1
        if pos >= size:
            return "ends inside a marker"
        marker = data[pos]
        pos += 1
        if marker == _EOI:
            return None
        if marker == _SOI or marker in _RST:
            return f"unexpected marker 0x{marker:02X} at byte {pos - 1}"
        if marker not in _SEGMENTS and marker != _SOS:
            return f"invalid marker 0x{marker:02X} at byte {pos - 1}"
        if pos + 2 > size:
            return "ends inside a segment header"
        length = int.from_bytes(data[pos:pos + 2], "big")
        if length < 2 or pos + length > size:
            return f"segment 0x{marker:02X} at byte {pos - 1} has an impossible length {length}"
        pos += length
        if marker == _SOS:
            pos, bad = _end_of_scan(data, pos)
            if bad:
                return f"damaged compressed data (0xFF 0x{data[pos + 1]:02X} at byte {pos})"
    return "no end-of-image marker"


def _end_of_scan(data: bytes, pos: int) -> tuple[int, bool]:
    """(position of the marker that ends the entropy-coded data starting at `pos`, False), or (position
    of a 0xFF followed by a byte that cannot follow it there, True)."""
    size = len(data)
    while True:
        pos = data.find(b"\xff", pos)
        if pos < 0 or pos + 1 >= size:
            return size, False
        following = data[pos + 1]
        if following == 0xFF:  # fill byte
            pos += 1
        elif following == 0x00 or following in _RST:  # stuffed 0xFF, restart marker
            pos += 2
        elif following in (_EOI, _SOS) or following in _SEGMENTS:
            return pos, False
        else:
            return pos, True
