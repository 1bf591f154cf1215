"""A long-lived MicroPython process that runs firmware codecs for host cross-checks.

One request per stdin line, `command hex-arg ...`; one reply line, `ok hex` or
`err message`. Values to encode arrive as MicroPython source built by the host
(floats as their IEEE bytes, text as UTF-8 bytes) so nothing is lost in parsing.
"""

import struct
import sys
from binascii import hexlify, unhexlify

from pile.cbor import Tag, dumps, loads
from pile.cose import mac0_sign, mac0_verify
from pile.framing import Deframer, frame


def F(h):
    return struct.unpack(">d", unhexlify(h))[0]


def S(h):
    return unhexlify(h).decode()


def B(h):
    return unhexlify(h)


_NAMES = {"Tag": Tag, "F": F, "S": S, "B": B}


def deframe(data):
    deframer = Deframer()
    got = []
    deframer.feed(data, got.append)
    return b",".join(hexlify(m) for m in got) + b";%d" % deframer.dropped()


def run(cmd, args):
    raw = [unhexlify(a[1:]) if a != "-" else None for a in args]  # "x" + hex, or "-"
    if cmd == "enc":
        return hexlify(dumps(eval(raw[0].decode(), _NAMES)))
    if cmd == "dec":
        return hexlify(dumps(loads(raw[0])))
    if cmd == "sign":
        return hexlify(mac0_sign(raw[0], raw[1], raw[2], raw[3]))
    if cmd == "verify":
        return hexlify(mac0_verify(raw[0], raw[1], raw[2]))
    if cmd == "frame":
        return hexlify(frame(raw[0]))
    if cmd == "deframe":
        return deframe(raw[0])
    raise ValueError("unknown command " + cmd)


while True:
    line = sys.stdin.readline()
    if not line:
        break
    parts = line.split()
    try:
        print("ok", run(parts[0], parts[1:]).decode())
    except Exception as exc:  # reported to the host test, which decides
        print("err", type(exc).__name__, exc)
