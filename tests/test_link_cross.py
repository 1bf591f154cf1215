"""Firmware COSE and framing under MicroPython, against pycose, the cobs package and fastcrc.

The host side (host_tools/pilectl/wire.py) is built on those independent
libraries, so agreement here means both implementations follow the standards.
"""

import cbor2
import oracle
from helpers import WorkerError
from hypothesis import given, settings
from hypothesis import strategies as st
from pilectl import cose, wire

KEYS = st.sampled_from([16, 24, 32]).flatmap(lambda n: st.binary(min_size=n, max_size=n))
NONCES = st.binary(min_size=8, max_size=8)
PAYLOADS = st.binary(max_size=400)
SETTINGS = settings(max_examples=200, deadline=None)


@SETTINGS
@given(KEYS, PAYLOADS, NONCES)
def test_firmware_signed_verifies_in_pycose(mp_worker, key, payload, nonce):
    signed = bytes.fromhex(mp_worker.call("sign", key, payload, nonce, cose.key_id(key)))
    assert oracle.verify(key, signed, nonce) == payload
    assert signed == oracle.sign(key, payload, nonce)  # byte-identical, too


@SETTINGS
@given(KEYS, PAYLOADS, NONCES, st.integers(0, 10_000))
def test_pycose_signed_verifies_in_the_firmware_and_tampering_fails(mp_worker, key, payload,
                                                                     nonce, where):
    signed = oracle.sign(key, payload, nonce)
    assert bytes.fromhex(mp_worker.call("verify", key, signed, nonce)) == payload
    tampered = bytearray(signed)
    tail = len(signed) - len(payload) - 9  # payload and tag: everything the MAC covers there
    i = tail + where % (len(signed) - tail)
    tampered[i] ^= 0x01
    try:
        mp_worker.call("verify", key, bytes(tampered), nonce)
    except WorkerError as exc:
        assert "CoseError" in str(exc)
    else:
        raise AssertionError(f"a flipped bit at {i} verified")


def test_cose_wg_examples_verify_in_pycose_too():
    import json

    from helpers import FW_TESTS

    for name in ("HMac-enc-05.json", "CWT-A_4.json"):
        case = json.loads((FW_TESTS / "data" / "cose" / name).read_text())
        key = bytes.fromhex(case["intermediates"]["CEK_hex"])
        data = bytes.fromhex(case["output"]["cbor"])
        assert oracle.verify(key, data, b"") == cbor2.loads(data).value[2]


@SETTINGS
@given(st.binary(max_size=wire.MAX_FRAME - 2))
def test_frames_match_the_host_framer(mp_worker, message):
    assert bytes.fromhex(mp_worker.call("frame", message)) == wire.frame(message)


@SETTINGS
@given(st.lists(st.binary(min_size=1, max_size=300), max_size=8),
       st.lists(st.binary(max_size=20), max_size=8))
def test_firmware_deframes_host_frames_amid_garbage(mp_worker, messages, garbage):
    stream = b""
    for i, message in enumerate(messages):
        noise = garbage[i] if i < len(garbage) else b""
        stream += noise + b"\x00" + wire.frame(message)  # garbage, then a resync point
    found, dropped = mp_worker.call("deframe", stream).split(";")
    got = [bytes.fromhex(h) for h in found.split(",") if h]
    assert got == messages
    host = wire.Deframer()
    assert host.feed(stream) == messages
    assert int(dropped) == host.dropped  # both count the same garbage frames
