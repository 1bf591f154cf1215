"""Deterministic CBOR codec: RFC 8949 Appendix A and strictness (CPython and MicroPython)."""

import json
from binascii import hexlify, unhexlify

from fwtest import raises
from pile.cbor import CBORError, Simple, Tag, dumps, loads

_VECTORS = __file__.rsplit("/", 1)[0] + "/data/cbor-rfc8949-appendix-a.json"


def vectors():
    with open(_VECTORS) as f:
        return json.load(f)


def test_appendix_a_decodes_and_roundtrips():
    checked = 0
    for case in vectors():
        data = unhexlify(case["hex"])
        if case["hex"] == "f818":  # simple(24): not well-formed under RFC 8949
            with raises(CBORError):
                loads(data)
            continue
        value = loads(data)
        if "decoded" in case and not isinstance(value, Tag):
            assert value == case["decoded"], case["hex"]
        if case["roundtrip"]:
            assert hexlify(dumps(value)).decode() == case["hex"], case["hex"]
        checked += 1
    assert checked > 75


def test_deterministic_map_order_is_bytewise():
    assert dumps({"b": 1, 10: 2, "a": 3, -1: 4}) == unhexlify("a40a022004616103616201")


def test_shortest_float_that_keeps_the_value():
    assert dumps(1.5) == unhexlify("f93e00")
    assert dumps(100000.0) == unhexlify("fa47c35000")
    assert dumps(4.208087921142578e-05) == unhexlify("f902c2")  # half subnormal
    assert dumps(-6.103515625e-05) == unhexlify("f98400")  # smallest normal half
    assert dumps(1.401298464324817e-45) == unhexlify("fa00000001")  # single subnormal
    assert dumps(65504.0) == unhexlify("f97bff")
    assert dumps(65505.0) == unhexlify("fa477fe100")
    assert dumps(1e300) == unhexlify("fb7e37e43c8800759c")
    assert dumps(1.1) == unhexlify("fb3ff199999999999a")
    assert dumps(float("nan")) == unhexlify("f97e00")


def test_tags_encode_and_decode():
    tagged = Tag(17, [b"\xa1\x01\x04", {}, b"payload", b"tag"])
    assert loads(dumps(tagged)) == tagged


def test_strict_decoding_refuses_malformed_input():
    bad = (
        "",  # empty
        "0000",  # trailing byte
        "18",  # truncated argument
        "62 61",  # truncated text
        "1c",  # reserved additional info
        "5a ffffffff 00",  # length larger than what remains
        "9b 7fffffffffffffff",  # array count larger than what remains
        "a2 0101 0102",  # duplicate key
        "a1 80 01",  # unhashable key
        "62 ff fe",  # invalid UTF-8
        "ff",  # lone break
        "5f 61 61 ff",  # text chunk inside a byte string
        "c1",  # tag without content
        "81" * 17 + "00",  # nested deeper than 16
        "83 00 00",  # an array's last item missing
        "a2 01 02 03",  # a map's last value missing
        "a1 01",  # a map's only value missing
        "82 1864",  # an array of two ints, the second missing
    )
    for text in bad:
        with raises(CBORError):
            loads(unhexlify(text.replace(" ", "")))


def test_simple_values_encode_only_in_well_formed_forms():
    assert dumps(Simple(16)) == unhexlify("f0")
    assert dumps(Simple(255)) == unhexlify("f8ff")
    for value in (24, 31, 256, -1):
        with raises(CBORError):
            dumps(Simple(value))


def test_indefinite_lengths_decode_but_are_never_emitted():
    value = loads(unhexlify("bf61610161629f0203ffff"))
    assert value == {"a": 1, "b": [2, 3]}
    assert dumps(value) == unhexlify("a26161016162820203")
