"""CBOR for the host link: deterministic encoding, strict and bounded decoding.

Encoding follows RFC 8949 section 4.2.1: shortest heads, definite lengths, map
keys sorted by their encoded bytes, floats in the shortest form that keeps the
value. Decoding refuses trailing bytes, truncation, reserved additional info,
lengths larger than what remains (before allocating), duplicate map keys and
nesting deeper than 16; it accepts indefinite lengths but never emits them.
"""

import struct

from micropython import const

_MAX_DEPTH = const(16)
_BREAK = const(0xFF)


class CBORError(ValueError):
    pass


class Tag:
    """A tagged item: `tag` number and `value`."""

    def __init__(self, tag, value):
        self.tag = tag
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Tag) and self.tag == other.tag and self.value == other.value

    def __repr__(self):
        return "Tag(%d, %r)" % (self.tag, self.value)


class Simple:
    """An unassigned simple value (major type 7), kept so it can be re-encoded."""

    def __init__(self, value):
        self.value = value

    def __eq__(self, other):
        return isinstance(other, Simple) and self.value == other.value


UNDEFINED = Simple(23)


def dumps(obj):
    out = bytearray()
    _encode(out, obj, 0)
    return bytes(out)


def _head(out, major, n):
    major <<= 5
    if n < 24:
        out.append(major | n)
    elif n < 0x100:
        out.append(major | 24)
        out.append(n)
    elif n < 0x10000:
        out.append(major | 25)
        out.extend(struct.pack(">H", n))
    elif n < 0x100000000:
        out.append(major | 26)
        out.extend(struct.pack(">I", n))
    elif n < 0x10000000000000000:
        out.append(major | 27)
        out.extend(struct.pack(">Q", n))
    else:
        raise CBORError("integer out of the 64-bit range")


def _encode(out, obj, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nested deeper than %d" % _MAX_DEPTH)
    if obj is None:
        out.append(0xF6)
    elif obj is True:
        out.append(0xF5)
    elif obj is False:
        out.append(0xF4)
    elif isinstance(obj, int):
        _int(out, obj)
    elif isinstance(obj, float):
        _float(out, obj)
    elif isinstance(obj, (bytes, bytearray, memoryview)):
        _head(out, 2, len(obj))
        out.extend(obj)
    elif isinstance(obj, str):
        data = obj.encode()
        _head(out, 3, len(data))
        out.extend(data)
    elif isinstance(obj, (list, tuple)):
        _head(out, 4, len(obj))
        for item in obj:
            _item(out, item, depth + 1)
    elif isinstance(obj, dict):
        if _small_int_keys(obj):  # protocol messages: one-byte keys sort as numbers
            _head(out, 5, len(obj))
            for key in sorted(obj):
                out.append(key)
                _item(out, obj[key], depth + 1)
            return
        items = []
        for key, value in obj.items():
            encoded = bytearray()
            _encode(encoded, key, depth + 1)
            items.append((bytes(encoded), value))
        items.sort(key=lambda item: item[0])
        _head(out, 5, len(items))
        for key, value in items:
            out.extend(key)
            _encode(out, value, depth + 1)
    elif isinstance(obj, Tag):
        _head(out, 6, obj.tag)
        _encode(out, obj.value, depth + 1)
    elif isinstance(obj, Simple):
        if 0 <= obj.value < 24:
            out.append(0xE0 | obj.value)
        elif 32 <= obj.value <= 255:
            out.append(0xF8)
            out.append(obj.value)
        else:  # 24..31 in the two-byte form is not well-formed (RFC 8949 section 3.3)
            raise CBORError("simple value %d cannot be encoded" % obj.value)
    else:
        raise CBORError("cannot encode %s" % type(obj).__name__)


def _int(out, n):
    if n >= 0:
        _head(out, 0, n)
    else:
        _head(out, 1, -1 - n)


def _item(out, obj, depth):
    """An array's or map's item: an int directly, as most are. _encode's frame is too big
    for the C stack, so on a board each call of it allocates one (docs/performance.md)."""
    if type(obj) is int and depth <= _MAX_DEPTH:
        _int(out, obj)
    else:
        _encode(out, obj, depth)


def _small_int_keys(obj):
    for key in obj:
        if type(key) is not int or not 0 <= key < 24:
            return False
    return True


def _float(out, value):
    """Shortest of half, single, double that holds `value` exactly (RFC 8949 section 4.2.2).

    Narrowed from the double's bits rather than through struct's "e" and "f", because
    MicroPython's struct rounds half-precision subnormals wrongly.
    """
    if value != value:  # NaN: the canonical quiet NaN
        out.extend(b"\xf9\x7e\x00")
        return
    bits = struct.unpack(">Q", struct.pack(">d", value))[0]
    half = _narrow(bits, 5, 10)
    if half >= 0:
        out.append(0xF9)
        out.extend(struct.pack(">H", half))
        return
    single = _narrow(bits, 8, 23)
    if single >= 0:
        out.append(0xFA)
        out.extend(struct.pack(">I", single))
        return
    out.append(0xFB)
    out.extend(struct.pack(">d", value))


def _narrow(bits, exp_bits, man_bits):
    """The narrower IEEE-754 encoding equal to the double with these bits, or -1."""
    sign = bits >> 63
    exp = (bits >> 52) & 0x7FF
    mant = bits & 0xFFFFFFFFFFFFF
    bias = (1 << (exp_bits - 1)) - 1
    top = sign << (exp_bits + man_bits)
    if exp == 0x7FF:  # infinity (NaN is handled before)
        return top | ((1 << exp_bits) - 1) << man_bits
    if exp == 0:  # zero; a double subnormal is far below every narrower range
        return top if mant == 0 else -1
    e = exp - 1023
    drop = 52 - man_bits
    if 1 - bias <= e <= bias:  # a normal number in the narrow format
        if mant & ((1 << drop) - 1):
            return -1
        return top | (e + bias) << man_bits | mant >> drop
    if e > bias or e < 1 - bias - man_bits:
        return -1
    shift = drop + 1 - bias - e  # a subnormal in the narrow format
    full = mant | 1 << 52
    if full & ((1 << shift) - 1):
        return -1
    return top | full >> shift


def loads(data):
    """Decode exactly one item from `data`; raise CBORError on anything malformed."""
    view = memoryview(data)
    obj, pos = _decode(view, 0, 0)
    if pos != len(view):
        raise CBORError("%d trailing bytes" % (len(view) - pos))
    return obj


def _need(view, pos, count):
    if count > len(view) - pos:
        raise CBORError("truncated: %d bytes needed at offset %d" % (count, pos))


def _decode(view, pos, depth):
    if depth > _MAX_DEPTH:
        raise CBORError("nested deeper than %d" % _MAX_DEPTH)
    _need(view, pos, 1)
    initial = view[pos]
    pos += 1
    major = initial >> 5
    info = initial & 31
    if major == 7:
        return _simple(view, pos, info)
    if info < 24:
        arg = info
    elif info < 28:
        size = 1 << (info - 24)
        _need(view, pos, size)
        arg = int.from_bytes(view[pos : pos + size], "big")
        pos += size
    elif info == 31 and major >= 2 and major != 6:
        return _indefinite(view, pos, major, depth)
    else:
        raise CBORError("reserved or invalid additional info %d" % info)

    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - arg, pos
    if major == 2 or major == 3:
        _need(view, pos, arg)
        raw = bytes(view[pos : pos + arg])
        return (raw if major == 2 else _text(raw)), pos + arg
    if major == 4:
        _need(view, pos, arg)  # every item takes at least one byte
        items = []
        # an item inside still within the nesting bound, and a byte left to look at (else
        # _decode raises): a small unsigned int is decoded here, as a call costs a frame
        inline = depth < _MAX_DEPTH
        end = len(view)
        for _ in range(arg):
            if inline and pos < end and view[pos] < 24:
                item = view[pos]
                pos += 1
            else:
                item, pos = _decode(view, pos, depth + 1)
            items.append(item)
        return items, pos
    if major == 5:
        _need(view, pos, 2 * arg)
        result = {}
        inline = depth < _MAX_DEPTH
        end = len(view)
        for _ in range(arg):
            if inline and pos < end and view[pos] < 24:  # a message's key: as above
                key = view[pos]
                pos += 1
            else:
                key, pos = _decode(view, pos, depth + 1)
            if inline and pos < end and view[pos] < 24:
                value = view[pos]
                pos += 1
            else:
                value, pos = _decode(view, pos, depth + 1)
            _store(result, key, value)
        return result, pos
    value, pos = _decode(view, pos, depth + 1)
    return Tag(arg, value), pos


def _text(raw):
    try:
        return str(raw, "utf-8")
    except UnicodeError:
        raise CBORError("text string is not valid UTF-8") from None


def _entry(view, pos, depth, result):
    key, pos = _decode(view, pos, depth + 1)
    value, pos = _decode(view, pos, depth + 1)
    _store(result, key, value)
    return pos


def _store(result, key, value):
    try:
        if key in result:
            raise CBORError("duplicate map key %r" % (key,))
        result[key] = value
    except TypeError:
        raise CBORError("map key of type %s cannot be used" % type(key).__name__) from None


def _simple(view, pos, info):
    if info == 20:
        return False, pos
    if info == 21:
        return True, pos
    if info == 22:
        return None, pos
    if info < 24:
        return (UNDEFINED if info == 23 else Simple(info)), pos
    if info == 24:
        _need(view, pos, 1)
        if view[pos] < 32:
            raise CBORError("simple value %d must use the short form" % view[pos])
        return Simple(view[pos]), pos + 1
    if 25 <= info <= 27:
        size = 1 << (info - 24)
        _need(view, pos, size)
        fmt = (">e", ">f", ">d")[info - 25]
        return struct.unpack(fmt, view[pos : pos + size])[0], pos + size
    raise CBORError("unexpected break or reserved simple value %d" % info)


def _indefinite(view, pos, major, depth):
    """Indefinite-length strings, arrays and maps, closed by a break byte."""
    parts = {} if major == 5 else []
    while True:
        _need(view, pos, 1)
        if view[pos] == _BREAK:
            pos += 1
            break
        if major == 5:
            pos = _entry(view, pos, depth, parts)
            continue
        if major < 4 and view[pos] >> 5 != major:
            raise CBORError("chunk of an indefinite string has another type")
        if major < 4 and view[pos] & 31 == 31:
            raise CBORError("nested indefinite string chunk")
        item, pos = _decode(view, pos, depth + 1)
        parts.append(item)
    if major == 2:
        return b"".join(parts), pos
    if major == 3:
        return "".join(parts), pos
    return parts, pos
