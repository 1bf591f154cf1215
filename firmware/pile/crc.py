"""CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), shared by Modbus RTU and the host link.

Table-driven: 512 bytes of table once, then one lookup per byte, in native code where the
board has it (pile/native.py), else in the bytecode loop below.
"""

from array import array


def _table():
    table = array("H", bytes(512))
    for i in range(256):
        crc = i
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table[i] = crc
    return table


TABLE = _table()  # also pile.modbus's, whose reply search checks CRCs inline


def crc16_bytecode(data, start, end, table):
    """pile.native.crc16, interpreted."""
    crc = 0xFFFF
    for i in range(start, end):
        crc = (crc >> 8) ^ table[(crc ^ data[i]) & 0xFF]
    return crc


try:
    from pile.native import crc16 as _kernel
except (ImportError, SyntaxError, ValueError):  # no native code here: see pile/native.py
    _kernel = crc16_bytecode


def crc16(data, start=0, end=None):
    """CRC-16/MODBUS of data[start:end] without slicing (no copy)."""
    return _kernel(data, start, len(data) if end is None else end, TABLE)
