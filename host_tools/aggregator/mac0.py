"""COSE_Mac0 with HMAC 256/64 (RFC 9052), computed directly with `hmac` and cbor2.

What `pilectl.wire` does through pycose, at fleet scale: DESIGN section 5 measured pycose
at about 98 us to sign and 43 us to verify, a second per round for 10,000 piles. The
same structure built by hand is exactly the bytes pycose makes (tests/test_aggregator_mac0.py
holds it against pycose and the COSE working group's HMAC 256/64 example).
"""

import hashlib
import hmac

import cbor2
from pilectl.wire import WireError

_PROTECTED = b"\xa1\x01\x04"  # {1 (alg): 4 (HMAC 256/64)}
_TAG = 17
_CONTEXT = "MAC0"
_KID = 4


def _tag(key, payload, nonce):
    to_mac = cbor2.dumps([_CONTEXT, _PROTECTED, nonce, payload])
    return hmac.new(key, to_mac, hashlib.sha256).digest()[:8]


def sign(key, kid, payload, nonce):
    """The Mac0 of `payload` (message bytes), external_aad `nonce`, kid in the clear."""
    return cbor2.dumps(cbor2.CBORTag(_TAG, [_PROTECTED, {_KID: kid}, payload,
                                            _tag(key, payload, nonce)]))


def verify(key, data, nonce):
    """The payload of a Mac0 made with `key`; WireError unless it is one."""
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
    if not hmac.compare_digest(tag, _tag(key, payload, nonce)):
        raise WireError("MAC mismatch: the pile and this host hold different keys")
    return payload
