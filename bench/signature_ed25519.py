"""The candidate that lost: Ed25519 (RFC 8032) verification, cooperative, kept here for
bench/signature_bench.py only (docs/decisions.md, "Signature scheme for firmware updates";
the firmware's scheme is ECDSA P-256, firmware/pile/signature.py).

The same API and slice rhythm as pile.signature: `verifying(public_key, message,
signature)` yields None between slices of at most about five field multiplications and
returns True or False; ValueError only for wrong lengths. A 32-byte key, a 64-byte R || S.
What it does:
- SHA-512 written in Python (MicroPython's hashlib has no sha512), 64-bit words as big
  ints, a rotation as one shift of the word doubled (x * (2**64 + 1));
- field elements as ints below 2**256, reduced by folding 2**255 = 19 twice (a quarter
  faster than % p on the RP2040);
- A and R decoded (RFC 8032 5.1.3: y below p, a square root, x = 0 with the sign bit set
  refused), the square root as x ** ((p - 5) / 8) on an addition chain;
- [S]B + [k](-A) (cofactorless, as OpenSSL) in extended coordinates (Hisil et al.), width-5
  NAFs, odd multiples of B and -A made at run time, compared with R projectively.
"""

from micropython import const

SCHEME = "ed25519"
PUBLIC_KEY_BYTES = const(32)
SIGNATURE_BYTES = const(64)

_P = (1 << 255) - 19
_MASK255 = (1 << 255) - 1
_L = (1 << 252) + 27742317777372353535851937790883648493  # B's order
_D = 37095705934669439343138083508754565189542113879843219016388785533085940283555
_D2 = 16295367250680780974490674513165176452449235426866156013048779062215315747161
_SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752
_BX = 15112221349535400772501151409588531511454012693041857206046113283949847762202
_BY = 46316835694926478169428394003475163141307993866256225615783033603165251855960
_SHA_ROUNDS = const(2)  # SHA-512 rounds a slice
_SHA_SCHEDULE = const(8)  # message schedule words a slice
_SQUARES = const(4)  # squarings a slice
_NAF_STEPS = const(12)

_M64 = (1 << 64) - 1
_DUP = (1 << 64) + 1  # x * _DUP == x | x << 64 for x < 2**64: a rotation is one shift
# SHA-512's initial hash and round constants (FIPS 180-4 4.2.3, 5.3.5)
_H0 = (0x6a09e667f3bcc908, 0xbb67ae8584caa73b, 0x3c6ef372fe94f82b, 0xa54ff53a5f1d36f1,
       0x510e527fade682d1, 0x9b05688c2b3e6c1f, 0x1f83d9abfb41bd6b, 0x5be0cd19137e2179)
_K = (
    0x428a2f98d728ae22, 0x7137449123ef65cd, 0xb5c0fbcfec4d3b2f, 0xe9b5dba58189dbbc,
    0x3956c25bf348b538, 0x59f111f1b605d019, 0x923f82a4af194f9b, 0xab1c5ed5da6d8118,
    0xd807aa98a3030242, 0x12835b0145706fbe, 0x243185be4ee4b28c, 0x550c7dc3d5ffb4e2,
    0x72be5d74f27b896f, 0x80deb1fe3b1696b1, 0x9bdc06a725c71235, 0xc19bf174cf692694,
    0xe49b69c19ef14ad2, 0xefbe4786384f25e3, 0x0fc19dc68b8cd5b5, 0x240ca1cc77ac9c65,
    0x2de92c6f592b0275, 0x4a7484aa6ea6e483, 0x5cb0a9dcbd41fbd4, 0x76f988da831153b5,
    0x983e5152ee66dfab, 0xa831c66d2db43210, 0xb00327c898fb213f, 0xbf597fc7beef0ee4,
    0xc6e00bf33da88fc2, 0xd5a79147930aa725, 0x06ca6351e003826f, 0x142929670a0e6e70,
    0x27b70a8546d22ffc, 0x2e1b21385c26c926, 0x4d2c6dfc5ac42aed, 0x53380d139d95b3df,
    0x650a73548baf63de, 0x766a0abb3c77b2a8, 0x81c2c92e47edaee6, 0x92722c851482353b,
    0xa2bfe8a14cf10364, 0xa81a664bbc423001, 0xc24b8b70d0f89791, 0xc76c51a30654be30,
    0xd192e819d6ef5218, 0xd69906245565a910, 0xf40e35855771202a, 0x106aa07032bbd1b8,
    0x19a4c116b8d2d0c8, 0x1e376c085141ab53, 0x2748774cdf8eeb99, 0x34b0bcb5e19b48a8,
    0x391c0cb3c5c95a63, 0x4ed8aa4ae3418acb, 0x5b9cca4f7763e373, 0x682e6ff3d6b2b8a3,
    0x748f82ee5defb2fc, 0x78a5636f43172f60, 0x84c87814a1f0ab72, 0x8cc702081a6439ec,
    0x90befffa23631e28, 0xa4506cebde82bde9, 0xbef9a3f7b2c67915, 0xc67178f2e372532b,
    0xca273eceea26619c, 0xd186b8c721c0c207, 0xeada7dd6cde0eb1e, 0xf57d4f7fee6ed178,
    0x06f067aa72176fba, 0x0a637dc5a2c898a6, 0x113f9804bef90dae, 0x1b710b35131c471b,
    0x28db77f523047d84, 0x32caab7b40c72493, 0x3c9ebe0a15c9bebc, 0x431d67c49c100d4c,
    0x4cc5d4becb3e42b6, 0x597f299cfc657e2a, 0x5fcb6fab3ad6faec, 0x6c44198c4a475817,
)


def verify(public_key, message, signature):
    """`verifying` run to its end: True or False."""
    steps = verifying(public_key, message, signature)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def verifying(public_key, message, signature):
    """A generator: yields None between slices, returns True or False. ValueError only
    for a key or signature of the wrong length, when called."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise ValueError("ed25519: a 32-byte key and a 64-byte signature")
    return _verifying(bytes(public_key), message, bytes(signature))


def _verifying(key, message, signature):
    s = int.from_bytes(signature[32:], "little")
    if s >= _L:
        return False
    a = yield from _decode(key)
    if a is None:
        return False
    r = yield from _decode(signature[:32])
    if r is None:
        return False
    digest = yield from _sha512(signature[:32] + key + bytes(message))
    k = int.from_bytes(digest, "little") % _L
    ax, ay = a
    x, y, z, _ = yield from _double_mult(s, _BX, _BY, k, _P - ax, ay)  # -A is (-x, y)
    rx, ry = r
    return (x - rx * z) % _P == 0 and (y - ry * z) % _P == 0


def _mul(a, b):
    """a * b mod p, below 2**256 (not always below p) for |a|, |b| below 2**258."""
    c = a * b
    c = (c & _MASK255) + 19 * (c >> 255)
    return (c & _MASK255) + 19 * (c >> 255)


def _decode(encoded):
    """The point (x, y) of a 32-byte encoding, or None when it is not canonical or not
    on the curve (RFC 8032 5.1.3)."""
    y = int.from_bytes(encoded, "little")
    sign = y >> 255
    y &= _MASK255
    if y >= _P:
        return None
    yy = _mul(y, y)
    u = yy - 1
    v = _mul(_D, yy) + 1
    v3 = _mul(_mul(v, v), v)
    yield
    uv3 = _mul(u, v3)
    uv7 = _mul(uv3, _mul(v3, v))
    yield
    t = yield from _pow22523(uv7)  # (u v**7) ** ((p - 5) / 8)
    x = _mul(uv3, t) % _P
    vxx = _mul(v, _mul(x, x)) % _P
    u %= _P
    if vxx != u:
        if vxx != _P - u:
            return None  # no square root: not a point
        x = _mul(x, _SQRT_M1) % _P
    if x == 0 and sign:
        return None
    if x & 1 != sign:
        x = _P - x
    return x, y


def _squares(x, n):
    """x ** (2 ** n)"""
    while n > 0:
        for _ in range(min(n, _SQUARES)):
            x = _mul(x, x)
        n -= _SQUARES
        yield
    return x


def _pow22523(x):
    """x ** (2**252 - 3), as t(k) = x ** (2**k - 1) grows."""
    t2 = _mul(_mul(x, x), x)
    t4 = _mul((yield from _squares(t2, 2)), t2)
    t5 = _mul(_mul(t4, t4), x)
    t10 = _mul((yield from _squares(t5, 5)), t5)
    t20 = _mul((yield from _squares(t10, 10)), t10)
    t40 = _mul((yield from _squares(t20, 20)), t20)
    t50 = _mul((yield from _squares(t40, 10)), t10)
    t100 = _mul((yield from _squares(t50, 50)), t50)
    t200 = _mul((yield from _squares(t100, 100)), t100)
    t250 = _mul((yield from _squares(t200, 50)), t50)
    return _mul((yield from _squares(t250, 2)), x)


def _sha512(data):
    n = len(data)
    data += b"\x80" + bytes((111 - n) % 128) + (n * 8).to_bytes(16, "big")
    state = list(_H0)
    for block in range(0, len(data), 128):
        w = [int.from_bytes(data[i:i + 8], "big") for i in range(block, block + 128, 8)]
        for t in range(16, 80):
            x = w[t - 15]
            xx = x * _DUP
            y = w[t - 2]
            yy = y * _DUP
            # sigma0 + sigma1 + w[t-7] + w[t-16]; the bits over 64 are cut at the end
            w.append(((xx >> 1) ^ (xx >> 8) ^ (x >> 7)) + ((yy >> 19) ^ (yy >> 61) ^ (y >> 6))
                     + w[t - 7] + w[t - 16] & _M64)
            if t % _SHA_SCHEDULE == _SHA_SCHEDULE - 1:
                yield
        a, b, c, d, e, f, g, h = state
        for t in range(80):
            ee = e * _DUP
            aa = a * _DUP
            # Sigma1(e) and Sigma0(a) keep bits over 64: only sums cut to 64 bits use them
            t1 = h + ((ee >> 14) ^ (ee >> 18) ^ (ee >> 41)) + (g ^ (e & (f ^ g))) + _K[t] + w[t]
            h = g
            g = f
            f = e
            e = (d + t1) & _M64
            d = c
            c = b
            b = a
            a = (t1 + ((aa >> 28) ^ (aa >> 34) ^ (aa >> 39)) + ((b & c) | (d & (b | c)))) & _M64
            if t % _SHA_ROUNDS == _SHA_ROUNDS - 1:
                yield
        state = [(state[i] + v) & _M64 for i, v in enumerate((a, b, c, d, e, f, g, h))]
    return b"".join(v.to_bytes(8, "big") for v in state)


# Points in extended coordinates (X, Y, Z, T): x = X/Z, y = Y/Z, x y = T/Z. A point to
# add is kept "cached": (Y + X, Y - X, 2d T, 2 Z).

def _cached(p):
    x, y, z, t = p
    return y + x, y - x, _mul(_D2, t), z + z


def _add(p, q, negate):
    """p + q (or p - q), q cached: 8 multiplications in two slices."""
    x1, y1, z1, t1 = p
    ypx, ymx, t2d, z2 = q
    if negate:  # -(x, y) is (-x, y)
        ypx, ymx, t2d = ymx, ypx, -t2d
    a = _mul(y1 - x1, ymx)
    b = _mul(y1 + x1, ypx)
    c = _mul(t1, t2d)
    d = _mul(z1, z2)
    yield
    e = b - a
    f = d - c
    g = d + c
    h = b + a
    return _mul(e, f), _mul(g, h), _mul(f, g), _mul(e, h)


def _double(p):
    """2p (a = -1): 9 multiplications in two slices."""
    x, y, z, _ = p
    a = _mul(x, x)
    b = _mul(y, y)
    c = _mul(z, z)
    c += c
    h = a + b
    e = h - _mul(x + y, x + y)
    yield
    g = a - b
    f = c + g
    return _mul(e, f), _mul(g, h), _mul(f, g), _mul(e, h)


def _naf(k):
    """The width-5 NAF of 0 <= k < 2**256, least significant digit first (as in
    pile.signature)."""
    b = k.to_bytes(34, "little")
    digits = []
    carry = 0
    i = 0
    steps = 0
    while i < 257:
        word = ((b[i >> 3] | b[(i >> 3) + 1] << 8) >> (i & 7) & 31) + carry
        if word & 1:
            if word > 16:
                word -= 32
            carry = 1 if word < 0 else 0
            digits.append(word)
            digits.extend((0, 0, 0, 0))
            i += 5
        else:
            digits.append(0)
            i += 1
        steps += 1
        if steps == _NAF_STEPS:
            steps = 0
            yield
    while digits and not digits[-1]:
        digits.pop()
    return digits


def _odd_multiples(x, y):
    """P, 3P, ..., 15P of the affine point P, cached."""
    p = (x, y, 1, _mul(x, y))
    two = _cached((yield from _double(p)))
    table = [_cached(p)]
    for _ in range(7):
        yield
        p = yield from _add(p, two, False)
        table.append(_cached(p))
    return table


def _double_mult(a, ax, ay, b, bx, by):
    """[a](ax, ay) + [b](bx, by), extended."""
    ta = yield from _odd_multiples(ax, ay)
    tb = yield from _odd_multiples(bx, by)
    na = yield from _naf(a)
    nb = yield from _naf(b)
    n = max(len(na), len(nb))
    na += [0] * (n - len(na))
    nb += [0] * (n - len(nb))
    q = (0, 1, 1, 0)
    for i in range(n - 1, -1, -1):
        q = yield from _double(q)
        yield
        d = na[i]
        if d:
            q = yield from _add(q, ta[(d if d > 0 else -d) >> 1], d < 0)
            yield
        d = nb[i]
        if d:
            q = yield from _add(q, tb[(d if d > 0 else -d) >> 1], d < 0)
            yield
    return q
