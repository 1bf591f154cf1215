"""The native byte loops (pile/native.py) against their bytecode twins: the same bytes.

Under MicroPython (the unix port, with its native emitter) pile.crc and pile.cobs must
have picked the native code, and both are compared on edge cases and random data; under
CPython there is no native code and the bytecode is what runs.
"""

import random
import sys

from pile import cobs, crc, modbus

NATIVE = sys.implementation.name == "micropython"
EDGES = (b"", b"\x00", bytes(range(1, 255)), b"\x00" + bytes(range(1, 255)),
         bytes(range(1, 256)) * 2, bytes(300), bytes(range(256)) * 2)


def _samples():
    rng = random.Random(7) if hasattr(random, "Random") else None
    draw = rng.getrandbits if rng else random.getrandbits
    found = list(EDGES)
    for _ in range(200):
        n = draw(9)  # 0..511
        found.append(bytes(draw(8) if draw(2) else 0 for _ in range(n)))
    return found


def test_the_native_code_is_the_one_used_where_there_is_some():
    if NATIVE:
        from pile import native

        assert crc._kernel is native.crc16
        assert cobs.encode_into is native.cobs_encode and cobs._decode is native.cobs_decode
        assert modbus._find_reply is native.find_reply and modbus._append is native.append
    else:
        assert crc._kernel is crc.crc16_bytecode
        assert cobs.encode_into is cobs.encode_bytecode and cobs._decode is cobs.decode_bytecode
        assert modbus._find_reply is modbus.find_reply_bytecode
        assert modbus._append is modbus.append_bytecode


def test_native_and_bytecode_compute_the_same_bytes():
    for data in _samples():
        n = len(data)
        assert crc._kernel(data, 0, n, crc.TABLE) == crc.crc16_bytecode(data, 0, n, crc.TABLE)
        if n > 4:
            assert crc._kernel(memoryview(data), 2, n - 1, crc.TABLE) == \
                crc.crc16_bytecode(data, 2, n - 1, crc.TABLE)
        size = cobs.encoded_size(n)
        fast, slow = bytearray(size), bytearray(size)
        m = cobs.encode_into(data, n, fast)
        assert m == cobs.encode_bytecode(data, n, slow) and fast == slow
        for limit in (512, n, max(0, n - 1)):
            for encoded in (bytes(fast[:m]), bytes(fast[:m // 2]), b"\x05" + bytes(fast[1:m])):
                got, want = bytearray(600), bytearray(600)
                k = cobs._decode(encoded, len(encoded), got, limit)
                assert k == cobs.decode_bytecode(encoded, len(encoded), want, limit)
                assert got == want


def _reply(unit, function, body):
    frame = bytearray([unit, function]) + body
    check = crc.crc16(frame)
    return bytes(frame + bytearray([check & 0xFF, check >> 8]))


def test_native_and_bytecode_find_the_same_modbus_reply():
    rng = random.Random(11) if hasattr(random, "Random") else None
    draw = rng.getrandbits if rng else random.getrandbits
    replies = [(3, _reply(1, 3, bytes([36]) + bytes(range(36)))),
               (23, _reply(1, 23, bytes([4, 0, 1, 0, 2]))),
               (16, _reply(1, 16, bytes([1, 0, 0, 4]))), (6, _reply(1, 6, bytes([1, 4, 0, 1]))),
               (3, _reply(1, 0x83, bytes([2]))), (4, _reply(2, 4, bytes([4, 1, 2, 3, 4])))]
    for function, reply in replies:
        for noise in (b"", b"\x01", b"\x01\x03\x10", bytes(draw(8) for _ in range(7))):
            for corrupt in (False, True):
                rx = bytearray(noise + reply)
                if corrupt:
                    rx[-3] ^= 0x40
                for n in range(len(rx) + 1):
                    for unit in (1, 2):
                        got = modbus._find_reply(rx, n, unit, function, crc.TABLE)
                        assert got == modbus.find_reply_bytecode(rx, n, unit, function,
                                                                 crc.TABLE), (rx, n, unit)
                        if not corrupt and n == len(rx) and unit == reply[0]:
                            assert got >= 0  # the reply is found after any noise


def test_native_and_bytecode_append_the_same_bytes():
    for at, n in ((0, 0), (0, 5), (7, 32), (250, 6)):
        src = bytes(range(100, 100 + max(n, 1)))
        fast, slow = bytearray(256), bytearray(256)
        modbus._append(fast, at, src, n)
        modbus.append_bytecode(slow, at, src, n)
        assert fast == slow and fast[at:at + n] == src[:n]
