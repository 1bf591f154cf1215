"""The firmware's protocol session on the host's C codec: cbor2 and `hmac` under it.

The pile emulator runs the firmware's own `Session` (checks, refusals, replies) for
thousands of piles; the firmware's pure-Python CBOR encoder and HMAC are what a
microcontroller has, and on a host they are most of an emulated pile's cost (a SETPOINT
handled in 52 us against 21 us on these, TELEMETRY built in 23 against 13). `install()`
puts cbor2 and hashlib's one-shot HMAC under the firmware's COSE and protocol modules:
the same bytes (deterministic CBOR, RFC 8949; tests/test_aggregator_emulator.py holds
every message kind to the firmware codec's bytes). For emulators only, never a board.
"""

import hmac
import io

import cbor2
import pile.cose
import pile.protocol

_buffer = io.BytesIO()
_encoder = cbor2.CBOREncoder(_buffer, canonical=True)  # keys 0..23 in RFC 8949's order


def dumps(obj):
    """cbor2.dumps(obj, canonical=True) on one encoder kept for the process: most of a
    dumps() is setting up its encoder (5.5 us against 1.8 us for a five-key map)."""
    _buffer.seek(0)
    _buffer.truncate()
    _encoder.encode(obj)
    return _buffer.getvalue()


def hmac_sha256(key, message):
    return hmac.digest(key, message, "sha256")


def install():
    """From now on in this process, the firmware's session encodes and MACs with these."""
    for module in (pile.cose, pile.protocol):
        module.dumps = dumps
        module.loads = cbor2.loads
        module.Tag = cbor2.CBORTag
        module.CBORError = cbor2.CBORDecodeError
    pile.cose.hmac_sha256 = hmac_sha256
    pile.cose.equal = hmac.compare_digest
