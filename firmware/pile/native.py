"""The firmware's byte loops in native code (`@micropython.viper`): CRC-16, COBS, and the
Modbus reply's search and assembly.

Interpreted, these loops cost 10-13 us a byte on an RP2040, a third of a signed
request's time (docs/performance.md). The `.mpy` is built for the board's architecture
(`pilectl.build` takes it from `sys.implementation._mpy`); where there is no native
code (CPython, a port without the emitter, a build for another architecture) the import
fails and `pile.crc`, `pile.cobs` and `pile.modbus` run their bytecode twins, which
compute the same.
"""

import micropython


@micropython.viper
def crc16(data: ptr8, start: int, end: int, table: ptr16) -> int:
    """CRC-16/MODBUS of data[start:end], one `table` lookup a byte."""
    crc = 0xFFFF
    i = start
    while i < end:
        crc = (crc >> 8) ^ table[(crc ^ data[i]) & 0xFF]
        i += 1
    return crc


@micropython.viper
def cobs_encode(data: ptr8, n: int, out: ptr8) -> int:
    """COBS of data[:n] into `out` (room for n + n // 254 + 1); the length written."""
    code_at = 0  # where the current block's code byte goes
    code = 1
    m = 1
    i = 0
    while i < n:
        if code == 0xFF:  # the block is full: close it, open the next
            out[code_at] = code
            code_at = m
            m += 1
            code = 1
        b = int(data[i])
        if b:
            out[m] = b
            m += 1
            code += 1
        else:
            out[code_at] = code
            code_at = m
            m += 1
            code = 1
        i += 1
    out[code_at] = code
    return m


@micropython.viper
def cobs_decode(data: ptr8, n: int, out: ptr8, limit: int) -> int:
    """COBS-decode data[:n] into `out` (may be `data`); the length, -1 if malformed or
    longer than `limit`."""
    i = 0
    m = 0
    while i < n:
        code = int(data[i])
        end = i + code
        if code == 0 or end > n or m + code - 1 > limit:
            return -1
        j = i + 1
        while j < end:
            out[m] = data[j]
            m += 1
            j += 1
        i = end
        if code != 0xFF and i < n:
            if m == limit:
                return -1
            out[m] = 0
            m += 1
    return m


@micropython.viper
def find_reply(rx: ptr8, n: int, unit: int, function: int, table: ptr16) -> int:
    """Offset of a complete reply with a good CRC from `unit` to `function` in rx[:n], else
    -1: every offset is tried, so noise ahead of a reply costs nothing but the noise."""
    start = 0
    while start < n - 1:
        code = int(rx[start + 1])
        if int(rx[start]) == unit and (code & 0x7F) == function:
            length = 0  # while unknown
            if code != function:  # the exception bit
                length = 5
            elif function == 6 or function == 16:
                length = 8
            elif n - start >= 3:
                length = 5 + int(rx[start + 2])
            end = start + length - 2
            if length >= 5 and start + length <= n:
                crc = 0xFFFF
                i = start
                while i < end:
                    crc = (crc >> 8) ^ int(table[(crc ^ int(rx[i])) & 0xFF])
                    i += 1
                if crc == int(rx[end]) | int(rx[end + 1]) << 8:
                    return start
        start += 1
    return -1


@micropython.viper
def append(dst: ptr8, at: int, src: ptr8, n: int):
    """src[:n] copied to dst[at:], where a slice would allocate: the rest of a Modbus
    reply that came in pieces."""
    i = 0
    while i < n:
        dst[at + i] = src[i]
        i += 1
