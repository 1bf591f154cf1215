"""COSE_Mac0 (RFC 9052) with HMAC 256/64 (alg 4), on hashlib.sha256.

MicroPython has no `hmac` module, so HMAC-SHA256 (RFC 2104) is built here.
The tag is compared in constant time so a forger learns nothing from timing.
"""

from hashlib import sha256

from micropython import const

from pile.cbor import CBORError, Tag, dumps, loads

_MAC0 = const(17)
_ALG_HMAC_256_64 = const(4)
_TAG_LEN = const(8)
_BLOCK = const(64)
_PROTECTED = b"\xa1\x01\x04"  # {1: 4}, the only protected header we send


class CoseError(ValueError):
    pass


def hmac_sha256(key, message):
    if len(key) > _BLOCK:
        key = sha256(key).digest()
    inner = bytearray(_BLOCK)
    outer = bytearray(_BLOCK)
    for i in range(len(key)):
        inner[i] = key[i]
        outer[i] = key[i]
    for i in range(_BLOCK):
        inner[i] ^= 0x36
        outer[i] ^= 0x5C
    h = sha256(inner)
    h.update(message)
    h2 = sha256(outer)
    h2.update(h.digest())
    return h2.digest()


def _tag(key, protected, external_aad, payload):
    to_mac = dumps(["MAC0", protected, external_aad, payload])
    return hmac_sha256(key, to_mac)[:_TAG_LEN]


def mac0_sign(key, payload, external_aad=b"", kid=None):
    """A tagged COSE_Mac0 carrying `payload`, with `{4: kid}` unprotected when kid is given."""
    unprotected = {} if kid is None else {4: kid}
    tag = _tag(key, _PROTECTED, external_aad, payload)
    return dumps(Tag(_MAC0, [_PROTECTED, unprotected, payload, tag]))


def mac0_verify(key, data, external_aad=b""):
    """Return the payload of a COSE_Mac0 made with `key`; raise CoseError on any mismatch."""
    return mac0_open((key,), data, external_aad)[0]


def mac0_open(keys, data, external_aad=b""):
    """(payload, index in `keys` of the key that made it); CoseError when none did."""
    try:
        msg = loads(data)
    except CBORError as exc:
        raise CoseError("not CBOR: %s" % exc)
    if not isinstance(msg, Tag) or msg.tag != _MAC0:
        raise CoseError("not a tagged COSE_Mac0")
    if type(msg.value) is not list or len(msg.value) != 4:
        raise CoseError("a COSE_Mac0 is an array of 4")
    protected_bytes, unprotected, payload, tag = msg.value
    for field in (protected_bytes, payload, tag):
        if type(field) is not bytes:
            raise CoseError("protected header, payload and tag must be byte strings")
    if type(unprotected) is not dict:
        raise CoseError("unprotected header must be a map")
    try:
        protected = loads(protected_bytes)
    except CBORError as exc:
        raise CoseError("protected header is not CBOR: %s" % exc)
    if protected != {1: _ALG_HMAC_256_64}:
        raise CoseError("protected header must be {1: 4} (HMAC 256/64)")
    for index in range(len(keys)):
        if equal(_tag(keys[index], protected_bytes, external_aad, payload), tag):
            return payload, index
    raise CoseError("MAC mismatch")


def equal(a, b):
    """Constant-time comparison (for equal lengths): every byte is always looked at."""
    if len(a) != len(b):
        return False
    diff = 0
    for i in range(len(a)):
        diff |= a[i] ^ b[i]
    return diff == 0
