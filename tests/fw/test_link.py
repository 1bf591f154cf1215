"""Host link framing: CRC-16/MODBUS, COBS, and a deframer that resynchronises."""

from binascii import unhexlify

from fwtest import raises
from pile.cobs import decode as cobs_decode
from pile.cobs import encode_into, encoded_size
from pile.crc import crc16
from pile.framing import MAX_FRAME, Deframer, FrameError, frame


def cobs_encode(data):
    out = bytearray(encoded_size(len(data)))
    return out[:encode_into(data, len(data), out)]


# Wikipedia's COBS examples, plus the all-zero and full-block edges.
COBS = (
    ("", "01"),
    ("00", "0101"),
    ("0000", "010101"),
    ("11220033", "0311220233"),
    ("11223344", "0511223344"),
    ("11000000", "0211010101"),
)


def test_crc16_modbus_check_value():
    assert crc16(b"123456789") == 0x4B37
    assert crc16(b"\x01\x03\x00\x00\x00\x01") == 0x0A84
    assert crc16(b"xx123456789yy", 2, 11) == 0x4B37


def test_cobs_known_vectors():
    for raw, encoded in COBS:
        assert bytes(cobs_encode(unhexlify(raw))) == unhexlify(encoded), raw
    run = bytes(range(1, 255))
    assert bytes(cobs_encode(run)) == b"\xff" + run
    assert bytes(cobs_encode(b"\x00" + run)) == b"\x01\xff" + run
    assert bytes(cobs_encode(run + b"\xff")) == b"\xff" + run + b"\x02\xff"
    assert bytes(cobs_encode(bytes(range(2, 256)) + b"\x00")) == \
        b"\xff" + bytes(range(2, 256)) + b"\x01\x01"


def test_cobs_roundtrip_and_malformed():
    out = bytearray(600)
    for n in (0, 1, 253, 254, 255, 508, 510):
        for data in (bytes(n), bytes([7]) * n, bytes([i % 256 for i in range(n)])):
            encoded = cobs_encode(data)
            assert encoded.find(b"\x00") == -1
            m = cobs_decode(encoded, len(encoded), out)
            assert bytes(out[:m]) == data
    assert cobs_decode(b"\x05\x01\x02", 3, out) == -1  # the block runs past the end
    assert cobs_decode(b"\x00\x01", 2, out) == -1
    assert cobs_decode(b"\xff" + bytes(range(1, 255)), 255, bytearray(10)) == -1  # too long


def test_frames_pass_and_bad_ones_are_counted_and_dropped():
    got = []
    deframer = Deframer()
    good = [b"\xa2\x00\x01\x01\x05", bytes(range(256)) * 1 + bytes(254), b"x"]
    stream = b"".join(frame(m) for m in good)
    deframer.feed(stream, got.append)
    assert got == good
    assert deframer.frames == 3 and deframer.dropped() == 0

    bad_crc = bytearray(frame(b"hello"))
    bad_crc[2] ^= 0x40
    deframer.feed(bytes(bad_crc) + b"\x02\x01\x00" + b"\x07" * 600 + b"\x00" + frame(b"ok"),
                  got.append)
    assert got[-1] == b"ok" and len(got) == 4
    assert (deframer.bad_crc, deframer.malformed, deframer.too_long) == (1, 1, 1)


def test_resynchronises_after_garbage_and_split_reads():
    got = []
    deframer = Deframer()
    wire = b"\x13\x37garbage\x00\x00" + frame(b"one") + frame(b"two")
    for i in range(len(wire)):  # one byte at a time, as a slow UART delivers it
        deframer.feed(wire[i:i + 1], got.append)
    assert got == [b"one", b"two"]
    assert deframer.dropped() == 1


def test_frame_size_limit():
    assert len(frame(bytes(MAX_FRAME - 2))) <= MAX_FRAME + 4
    with raises(FrameError):
        frame(bytes(MAX_FRAME - 1))
    got = []
    Deframer().feed(frame(bytes(MAX_FRAME - 2)), got.append)
    assert got == [bytes(MAX_FRAME - 2)]
