"""COBS (Consistent Overhead Byte Stuffing), the host link's framing (DESIGN section 5).

In native code where the board has it (pile/native.py), else in the bytecode loops below;
both compute the same bytes.
"""


def encode_bytecode(data, n, out):
    """pile.native.cobs_encode, interpreted."""
    code_at = 0  # where the current block's code byte goes
    code = 1
    m = 1
    for i in range(n):
        b = data[i]
        if code == 0xFF:  # the block is full: close it, open the next
            out[code_at] = code
            code_at = m
            m += 1
            code = 1
        if b:
            out[m] = b
            m += 1
            code += 1
        else:
            out[code_at] = code
            code_at = m
            m += 1
            code = 1
    out[code_at] = code
    return m


def decode_bytecode(data, n, out, limit):
    """pile.native.cobs_decode, interpreted."""
    i = m = 0
    while i < n:
        code = data[i]
        end = i + code
        if code == 0 or end > n or m + code - 1 > limit:
            return -1
        for j in range(i + 1, end):
            out[m] = data[j]
            m += 1
        i = end
        if code != 0xFF and i < n:
            if m == limit:
                return -1
            out[m] = 0
            m += 1
    return m


try:
    from pile.native import cobs_decode as _decode
    from pile.native import cobs_encode as encode_into
except (ImportError, SyntaxError, ValueError):  # no native code here: see pile/native.py
    encode_into = encode_bytecode
    _decode = decode_bytecode
# encode_into(data, n, out): COBS of data[:n] into `out` (room for encoded_size(n)); the
# length written. Named straight to the native or bytecode loop: a frame is one call less.


def encoded_size(n):
    """The most bytes COBS makes of n."""
    return n + n // 254 + 1


def decode(data, n, out, limit=None):
    """Decode data[:n] into `out` (which may be `data` itself: the output never overtakes
    the input); return the decoded length, or -1 when malformed or longer than `limit`."""
    return _decode(data, n, out, len(out) if limit is None else limit)
