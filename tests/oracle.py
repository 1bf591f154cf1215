"""COSE_Mac0 through pycose: the independent oracle the host's own codec
(pilectl/cose.py) and the firmware's (pile/cose.py) are held against in tests."""

from pilectl.cose import key_id
from pilectl.wire import WireError
from pycose.algorithms import HMAC25664
from pycose.headers import KID, Algorithm
from pycose.keys import SymmetricKey
from pycose.messages import CoseMessage, Mac0Message


def sign(key, message, nonce):
    mac = Mac0Message(phdr={Algorithm: HMAC25664}, uhdr={KID: key_id(key)}, payload=message,
                      external_aad=nonce)
    mac.key = SymmetricKey(k=key)
    return mac.encode(tag=True)


def verify(key, data, nonce):
    """The payload of a COSE_Mac0; WireError unless it carries a good MAC for `key`."""
    try:
        mac = CoseMessage.decode(data)
    except Exception as exc:  # pycose raises many kinds on malformed input
        raise WireError(f"not a COSE_Mac0: {exc}") from exc
    if not isinstance(mac, Mac0Message):
        raise WireError("not a COSE_Mac0")
    mac.key = SymmetricKey(k=key)
    mac.external_aad = nonce
    try:
        good = mac.verify_tag()
    except Exception as exc:
        raise WireError(f"cannot verify: {exc}") from exc
    if not good:
        raise WireError("MAC mismatch")
    return mac.payload
