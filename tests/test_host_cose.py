"""The host's COSE_Mac0 (pilectl/cose.py) against pycose and the COSE working group's vector."""

import binascii
import json

import cbor2
import oracle
import pytest
from helpers import FW_TESTS
from hypothesis import example, given
from hypothesis import strategies as st
from pilectl import cborhead, cose, wire

keys = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))


@given(keys, st.binary(max_size=300), st.binary(min_size=8, max_size=8))
@example(bytes(32), bytes(23), bytes(8))  # every head the byte strings take: 1, 2, 3 bytes
@example(bytes(32), bytes(24), bytes(8))
@example(bytes(32), bytes(255), bytes(8))
@example(bytes(32), bytes(256), bytes(8))
def test_the_same_bytes_as_pycose_both_ways(key, payload, nonce):
    signed = cose.sign(key, payload, nonce)
    assert signed == oracle.sign(key, payload, nonce)
    assert oracle.verify(key, signed, nonce) == payload
    assert cose.verify(key, oracle.sign(key, payload, nonce), nonce) == payload


@given(keys, st.binary(min_size=1, max_size=100), st.binary(min_size=8, max_size=8),
       st.integers(0, 200))
def test_any_flipped_byte_or_other_nonce_is_refused(key, payload, nonce, where):
    signed = bytearray(cose.sign(key, payload, nonce))
    at = where % len(signed)
    unprotected = len(cbor2.dumps({4: cose.key_id(key)}))
    if 6 <= at < 6 + unprotected:  # the kid's header: not covered by the MAC (RFC 9052)
        return
    signed[at] ^= 0x01
    with pytest.raises(wire.WireError):
        cose.verify(key, bytes(signed), nonce)
    with pytest.raises(wire.WireError):
        cose.verify(key, cose.sign(key, payload, nonce, b"k"), bytes(b ^ 0xFF for b in nonce))


def test_the_cose_wg_hmac_256_64_example():
    example = json.loads((FW_TESTS / "data" / "cose" / "HMac-enc-05.json").read_text())
    recipient = example["input"]["mac0"]["recipients"][0]["key"]
    key = binascii.a2b_base64(recipient["k"].replace("-", "+").replace("_", "/") + "==")
    data = bytes.fromhex(example["output"]["cbor"])
    payload = example["input"]["plaintext"].encode()
    assert cose.verify(key, data, b"") == payload
    assert cose.Mac0(data).tag == cbor2.loads(data).value[3]


ints = st.integers(min_value=-2**64, max_value=2**64 - 1)


@given(ints)
@example(23)  # every head length: 1, 2, 3, 5 and 9 bytes, both signs
@example(24)
@example(-25)
@example(255)
@example(256)
@example(65536)
@example(-2**32 - 1)
@example(2**32)
@example(2**64 - 1)
def test_a_direct_integer_is_cbor2s(value):
    assert cborhead.integer(value) == cbor2.dumps(value)


@given(st.integers(min_value=0, max_value=2**32 - 1), st.integers(-10**6, 10**6),
       st.integers(0, 3600))
def test_a_direct_setpoint_is_the_canonical_message(seq, power_w, ttl_s):
    assert cborhead.setpoint(seq, power_w, ttl_s) == wire.encode(
        {wire.TYPE: wire.SETPOINT, wire.SEQ: seq, wire.SETPOINT_POWER: power_w,
         wire.SETPOINT_TTL: ttl_s})
