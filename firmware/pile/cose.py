"""COSE_Mac0 (RFC 9052) with HMAC 256/64 (alg 4), on hashlib.sha256.

MicroPython has no `hmac` module, so HMAC-SHA256 (RFC 2104) is built here.
The tag is compared in constant time so a forger learns nothing from timing.
`codec` is the CBOR codec (`dumps`, `loads`, `Tag`, `CBORError`): pile.cbor on a board,
the host's C codec in an emulator (pile.protocol.Session hands on its own).
"""

from hashlib import sha256

from micropython import const

from pile import cbor

_MAC0 = const(17)
_ALG_HMAC_256_64 = const(4)
_TAG_LEN = const(8)
_BLOCK = const(64)
_MAX_KEYS = const(8)  # pads kept; more keys than that (a hostile host cannot add any) clear them
_PROTECTED = b"\xa1\x01\x04"  # {1: 4}, the only protected header we send


class CoseError(ValueError):
    pass


def hmac_sha256(key, message):
    inner, outer = _pads(key)
    h = sha256(inner)
    h.update(message)
    h2 = sha256(outer)
    h2.update(h.digest())
    return h2.digest()


_key_pads = {}  # key -> (inner pad, outer pad): a pile has two or three keys


def _pads(key):
    """The key's HMAC pads, made once per key: making them (192 steps of Python) took
    about 1.5 ms of an RP2040 per MAC, three MACs to a signed request and its ACK."""
    if type(key) is not bytes:
        key = bytes(key)
    pads = _key_pads.get(key)
    if pads is None:
        if len(_key_pads) >= _MAX_KEYS:
            _key_pads.clear()
        block = sha256(key).digest() if len(key) > _BLOCK else key
        inner = bytearray(_BLOCK)
        outer = bytearray(_BLOCK)
        for i in range(len(block)):
            inner[i] = outer[i] = block[i]
        for i in range(_BLOCK):
            inner[i] ^= 0x36
            outer[i] ^= 0x5C
        pads = _key_pads[key] = (bytes(inner), bytes(outer))
    return pads


def _to_mac(codec, protected, external_aad, payload):
    return codec.dumps(["MAC0", protected, external_aad, payload])


def mac0_sign(key, payload, external_aad=b"", kid=None, codec=cbor):
    """A tagged COSE_Mac0 carrying `payload`, with `{4: kid}` unprotected when kid is given."""
    unprotected = {} if kid is None else {4: kid}
    tag = hmac_sha256(key, _to_mac(codec, _PROTECTED, external_aad, payload))[:_TAG_LEN]
    return codec.dumps(codec.Tag(_MAC0, [_PROTECTED, unprotected, payload, tag]))


def mac0_verify(key, data, external_aad=b"", codec=cbor):
    """Return the payload of a COSE_Mac0 made with `key`; raise CoseError on any mismatch."""
    return mac0_open((key,), data, external_aad, codec)[0]


def mac0_open(keys, data, external_aad=b"", codec=cbor):
    """(payload, index in `keys` of the key that made it); CoseError when none did."""
    loads = codec.loads
    try:
        msg = loads(data)
    except codec.CBORError as exc:
        raise CoseError("not CBOR: %s" % exc)
    if not isinstance(msg, codec.Tag) or msg.tag != _MAC0:
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
    except codec.CBORError as exc:
        raise CoseError("protected header is not CBOR: %s" % exc)
    if protected != {1: _ALG_HMAC_256_64}:
        raise CoseError("protected header must be {1: 4} (HMAC 256/64)")
    to_mac = _to_mac(codec, protected_bytes, external_aad, payload)  # the same for every key
    for index in range(len(keys)):
        if equal(hmac_sha256(keys[index], to_mac)[:_TAG_LEN], tag):
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
