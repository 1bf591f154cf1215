"""COSE_Mac0 with HMAC 256/64: COSE WG examples, RFC 4231 HMAC vectors, tamper checks."""

import json
from binascii import unhexlify

from fwtest import raises
from pile.cose import CoseError, equal, hmac_sha256, mac0_sign, mac0_verify

_DATA = __file__.rsplit("/", 1)[0] + "/data/cose/"
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"
KEY = b"0123456789abcdef0123456789abcdef"


def cose_examples():
    cases = []
    for name in ("HMac-enc-05.json", "CWT-A_4.json"):
        with open(_DATA + name) as f:
            case = json.load(f)
        cases.append((unhexlify(case["intermediates"]["CEK_hex"]),
                      unhexlify(case["output"]["cbor"])))
    return cases


def test_hmac_sha256_rfc4231():
    assert hmac_sha256(b"\x0b" * 20, b"Hi There") == unhexlify(
        "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")
    assert hmac_sha256(b"Jefe", b"what do ya want for nothing?") == unhexlify(
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
    assert hmac_sha256(b"\xaa" * 131, b"Test Using Larger Than Block-Size Key - Hash Key First") \
        == unhexlify("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")


def test_cose_wg_examples_verify_and_resign_identically():
    for key, data in cose_examples():
        payload = mac0_verify(key, data)
        assert len(payload) >= 20
        assert mac0_sign(key, payload) == data


def test_one_bit_flip_anywhere_fails():
    for key, data in cose_examples() + [(KEY, mac0_sign(KEY, b"\xa1\x00\x03", NONCE, b"kid1"))]:
        aad = NONCE if key == KEY else b""
        unprotected = b"\xa1\x04\x44kid1"  # {4: h'6b696431'}
        at = data.find(unprotected) if key == KEY else -1
        for i in range(len(data)):
            if at >= 0 and at < i < at + len(unprotected):
                continue  # the unprotected header is outside the MAC (RFC 9052); its size is not
            for bit in (0, 3, 7):
                bad = bytearray(data)
                bad[i] ^= 1 << bit
                with raises(CoseError):
                    mac0_verify(key, bytes(bad), aad)


def test_wrong_key_nonce_or_truncation_fails():
    data = mac0_sign(KEY, b"\xa1\x00\x03", NONCE, b"kid1")
    assert mac0_verify(KEY, data, NONCE) == b"\xa1\x00\x03"
    with raises(CoseError):
        mac0_verify(KEY[:-1] + b"!", data, NONCE)
    with raises(CoseError):
        mac0_verify(KEY, data, NONCE[:-1] + b"\x00")
    for n in range(len(data)):
        with raises(CoseError):
            mac0_verify(KEY, data[:n], NONCE)


def test_refuses_other_structures():
    for data in (b"\xa0", unhexlify("d18440a0404800000000000000"),  # empty protected
                 unhexlify("d28443a10104a0404800000000000000"),  # tag 18, COSE_Sign1
                 unhexlify("d18443a10105a0404800000000000000"),  # alg 5: HMAC 256/256
                 unhexlify("d18343a10104a040")):  # three elements
        with raises(CoseError):
            mac0_verify(KEY, data)


def test_constant_time_compare():
    assert equal(b"abc", b"abc")
    assert not equal(b"abc", b"abd")
    assert not equal(b"abc", b"ab")
