"""The firmware's CBOR codec, run under MicroPython, against cbor2 and an RFC 8949 reference.

Hypothesis generates values; the firmware encodes them (in the unix port), and
- cbor2 decodes the bytes to the same value;
- the bytes equal an independent RFC 8949 section 4.2.1 encoder written here;
- they equal cbor2.dumps(value, canonical=True) wherever the key orders agree
  (all keys of each map encode to the same length) and cbor2 finds the shortest
  float (cbor2 5.9.0 encodes 65504.0, the largest half, as a single);
and cbor2's own (non-canonical) output decodes in the firmware to the same value.
"""

import math
import struct

import cbor2
from helpers import WorkerError
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

TAGS = st.integers(44000, 55000)  # numbers cbor2 leaves as plain CBORTag (43000 is complex)
INTS = st.integers(-(2**64), 2**64 - 1)
KEYS = INTS | st.text(max_size=8) | st.binary(max_size=8)
LEAVES = (st.none() | st.booleans() | INTS | st.floats(width=64) | st.floats(width=16)
          | st.text(max_size=40) | st.binary(max_size=40))
VALUES = st.recursive(
    LEAVES,
    lambda inner: (st.lists(inner, max_size=6) | st.dictionaries(KEYS, inner, max_size=6)
                   | st.builds(cbor2.CBORTag, TAGS, inner)),
    max_leaves=25,
)
SETTINGS = settings(max_examples=400, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


# -- an independent deterministic encoder (RFC 8949 section 4.2.1) ------------------

def head(major, n):
    if n < 24:
        return bytes([major << 5 | n])
    for info, fmt in ((24, ">B"), (25, ">H"), (26, ">I"), (27, ">Q")):
        try:
            return bytes([major << 5 | info]) + struct.pack(fmt, n)
        except struct.error:
            continue
    raise ValueError("beyond 64 bits")


def shortest_float(value):
    if math.isnan(value):
        return b"\xf9\x7e\x00"
    for prefix, fmt in ((b"\xf9", ">e"), (b"\xfa", ">f")):
        try:
            packed = struct.pack(fmt, value)
        except OverflowError:
            continue
        if struct.unpack(fmt, packed)[0] == value:
            return prefix + packed
    return b"\xfb" + struct.pack(">d", value)


def rfc8949(value):
    if value is None:
        return b"\xf6"
    if isinstance(value, bool):
        return b"\xf5" if value else b"\xf4"
    if isinstance(value, int):
        return head(0, value) if value >= 0 else head(1, -1 - value)
    if isinstance(value, float):
        return shortest_float(value)
    if isinstance(value, bytes):
        return head(2, len(value)) + value
    if isinstance(value, str):
        data = value.encode()
        return head(3, len(data)) + data
    if isinstance(value, list):
        return head(4, len(value)) + b"".join(rfc8949(v) for v in value)
    if isinstance(value, dict):
        items = sorted((rfc8949(k), rfc8949(v)) for k, v in value.items())
        return head(5, len(items)) + b"".join(k + v for k, v in items)
    if isinstance(value, cbor2.CBORTag):
        return head(6, value.tag) + rfc8949(value.value)
    raise TypeError(type(value))


# -- helpers ---------------------------------------------------------------------------

def source(value):
    """MicroPython source that rebuilds `value` exactly (see tests/mp/worker.py)."""
    if value is None or isinstance(value, bool | int):
        return repr(value)
    if isinstance(value, float):
        return f"F('{struct.pack('>d', value).hex()}')"
    if isinstance(value, str):
        return f"S('{value.encode().hex()}')"
    if isinstance(value, bytes):
        return f"B('{value.hex()}')"
    if isinstance(value, list):
        return "[" + ",".join(source(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{source(k)}:{source(v)}" for k, v in value.items()) + "}"
    return f"Tag({value.tag},{source(value.value)})"


def depth(value):
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    if isinstance(value, cbor2.CBORTag):
        return 1 + depth(value.value)
    return 0


def walk(value):
    yield value
    children = (value if isinstance(value, list) else
                [x for kv in value.items() for x in kv] if isinstance(value, dict) else
                [value.value] if isinstance(value, cbor2.CBORTag) else [])
    for child in children:
        yield from walk(child)


def cbor2_agrees(value):
    """cbor2's canonical bytes are RFC 8949's for this value (see the module docstring)."""
    for item in walk(value):
        if isinstance(item, dict) and len({len(rfc8949(k)) for k in item}) > 1:
            return False
        if isinstance(item, float) and cbor2.dumps(item, canonical=True) != shortest_float(item):
            return False
    return True


def same(a, b):
    """Equal as CBOR data (NaN equals NaN, -0.0 differs from 0.0)."""
    return rfc8949(a) == rfc8949(b)


def firmware_encode(worker, value):
    return bytes.fromhex(worker.call("enc", source(value).encode()))


# -- the properties ----------------------------------------------------------------------

@SETTINGS
@given(VALUES)
def test_firmware_encoding_is_rfc8949_and_decodes_in_cbor2(mp_worker, value):
    assume(depth(value) <= 16)
    encoded = firmware_encode(mp_worker, value)
    assert encoded == rfc8949(value)
    assert same(cbor2.loads(encoded), value)
    if cbor2_agrees(value):
        assert encoded == cbor2.dumps(value, canonical=True)


@SETTINGS
@given(VALUES, st.booleans())
def test_cbor2_output_decodes_in_the_firmware(mp_worker, value, canonical):
    assume(depth(value) <= 16)
    reencoded = bytes.fromhex(mp_worker.call("dec", cbor2.dumps(value, canonical=canonical)))
    assert same(cbor2.loads(reencoded), value)


def test_protocol_messages_are_byte_identical_to_cbor2(mp_worker):
    setpoint = {0: 3, 1: 1000, 2: -7000, 3: 60, 4: 28800, 5: 80}
    telemetry = {0: 2, 1: 70000, 2: 3, 3: -6950, 4: 612, 5: 312, 6: 455, 7: 11000,
                 8: 5000, 9: 0x2080, 10: -7000, 11: 42, 12: None, 13: 0, 14: 86400,
                 15: 123456, 16: 65432}
    for message in (setpoint, telemetry):
        assert firmware_encode(mp_worker, message) == cbor2.dumps(message, canonical=True)


def test_deeper_than_16_is_refused_both_ways(mp_worker):
    deep = []
    for _ in range(17):
        deep = [deep]
    try:
        firmware_encode(mp_worker, deep)
    except WorkerError as exc:
        assert "CBORError" in str(exc)
    else:
        raise AssertionError("17 levels were encoded")
    try:
        mp_worker.call("dec", cbor2.dumps(deep))
    except WorkerError as exc:
        assert "CBORError" in str(exc)
    else:
        raise AssertionError("17 levels were decoded")
