"""COSE_Mac0 with HMAC 256/64 (RFC 9052), computed directly with `hmac` and cbor2.

What `pilectl.wire` does through pycose, at fleet scale: DESIGN section 5 measured pycose
at about 98 us to sign and 43 us to verify, a second per round for 10,000 piles. The
same structure built by hand is exactly the bytes pycose makes (tests/test_aggregator_mac0.py
holds it against pycose and the COSE working group's HMAC 256/64 example). Signing joins
constant heads and byte strings instead of encoding arrays with cbor2 (2.5 us against
9.7 us a setpoint: a fleet's target change signs 10,000 at once); reading uses cbor2.
"""

import hmac

import cbor2
from pilectl.wire import WireError

from aggregator.cborhead import head

_PROTECTED = b"\xa1\x01\x04"  # {1 (alg): 4 (HMAC 256/64)}
_TAG = 17
# ["MAC0", protected, ...: the MAC structure (RFC 9052 section 6.3) up to external_aad
_MAC_STRUCTURE = b"\x84\x64MAC0\x43" + _PROTECTED
# 17([protected, {4 (kid): ...: a tagged Mac0 up to the kid's byte string
_MAC0_HEAD = b"\xd1\x84\x43" + _PROTECTED + b"\xa1\x04"
_TAG_HEAD = b"\x48"  # the 8-byte tag's byte string head


def _bstr(data):
    return head(2, len(data)) + data


def _tag(key, payload, nonce):
    to_mac = _MAC_STRUCTURE + _bstr(nonce) + _bstr(payload)
    return hmac.digest(key, to_mac, "sha256")[:8]  # one-shot, in C


def sign(key, kid, payload, nonce):
    """The Mac0 of `payload` (message bytes), external_aad `nonce`, kid in the clear."""
    return _MAC0_HEAD + _bstr(kid) + _bstr(payload) + _TAG_HEAD + _tag(key, payload, nonce)


def _open(data):
    """(payload, tag) of a Mac0 with HMAC 256/64; WireError unless `data` is one."""
    try:
        item = cbor2.loads(data)
    except Exception as exc:  # cbor2 raises several decoder error kinds
        raise WireError(f"not CBOR: {exc}") from exc
    if not isinstance(item, cbor2.CBORTag) or item.tag != _TAG or \
            not isinstance(item.value, list) or len(item.value) != 4:
        raise WireError("not a COSE_Mac0")
    protected, _, payload, tag = item.value
    if protected != _PROTECTED or not isinstance(payload, bytes) or not isinstance(tag, bytes):
        raise WireError("not a COSE_Mac0 with HMAC 256/64")
    return payload, tag


def payload(data):
    """The payload of a Mac0, unverified: a HELLO's, whose nonce the MAC covers."""
    return _open(data)[0]


def verify(key, data, nonce):
    """The payload of a Mac0 made with `key`; WireError unless it is one."""
    payload, tag = _open(data)
    if not hmac.compare_digest(tag, _tag(key, payload, nonce)):
        raise WireError("MAC mismatch: the pile and this host hold different keys")
    return payload
