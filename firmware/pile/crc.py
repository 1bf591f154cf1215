"""CRC-16/MODBUS (poly 0xA001 reflected, init 0xFFFF), shared by Modbus RTU and the host link.

Table-driven: 512 bytes of table once, then one lookup per byte.
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


_TABLE = _table()


def crc16(data, start=0, end=None):
    """CRC-16/MODBUS of data[start:end] without slicing (no copy)."""
    table = _TABLE
    crc = 0xFFFF
    for i in range(start, len(data) if end is None else end):
        crc = (crc >> 8) ^ table[(crc ^ data[i]) & 0xFF]
    return crc
