"""The pile maker's signature over a firmware update's head: ECDSA on P-256 with SHA-256
(FIPS 186-4), verified a slice at a time.

`verifying(public_key, message, signature)` is a generator: the update task runs it a
step at a time (the control loop shares the event loop), it yields None between slices
and returns True or False. `verify()` runs it to the end. The key is the raw point
x || y and the signature the raw r || s, each 32 bytes big-endian. A key off the curve,
r or s out of 1..n-1, or a signature that does not check is False; only a key or a
signature of the wrong length raises (ValueError), when `verifying` is called.

Why P-256 and not Ed25519, and the figures: docs/decisions.md ("Signature scheme for
firmware updates"). MicroPython's arbitrary-precision ints do the arithmetic; the slow
part is one double scalar multiplication, [u1]G + [u2]Q in Jacobian coordinates with
width-5 NAFs (G's odd multiples written below, Q's made at run time), compared with r
without an inverse. A slice makes at most four products of 256-bit numbers, or eight
steps of Euclid's inverse: about 1 ms of an RP2040 at 125 MHz, up to 2 ms on a heap as
fragmented as the running firmware's (tests/test_signature.py holds the count,
bench/signature_bench.py measures the time). The garbage collections its allocations
bring (about 1 MB allocated a verification) land in whichever slice allocates then.
Not constant-time: it checks public data (a key, a head, a signature) and holds no
secret.
"""

from hashlib import sha256

from micropython import const

SCHEME = "p256"
PUBLIC_KEY_BYTES = const(64)
SIGNATURE_BYTES = const(64)

_P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF  # the field
_N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # G's order
_B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B  # y² = x³ - 3x + b
_EUCLID_STEPS = const(8)  # steps of the inverse a slice
_NAF_STEPS = const(12)  # digits worked out a slice

# G, 3G, 5G, ..., 15G: x, y of each (the private keys 1, 3, ..., 15; tests/test_signature.py
# checks them against the cryptography package's)
_G_ODD = (
    0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
    0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5,
    0x5ECBE4D1A6330A44C8F7EF951D4BF165E6C6B721EFADA985FB41661BC6E7FD6C,
    0x8734640C4998FF7E374B06CE1A64A2ECD82AB036384FB83D9A79B127A27D5032,
    0x51590B7A515140D2D784C85608668FDFEF8C82FD1F5BE52421554A0DC3D033ED,
    0xE0C17DA8904A727D8AE1BF36BF8A79260D012F00D4D80888D1D0BB44FDA16DA4,
    0x8E533B6FA0BF7B4625BB30667C01FB607EF9F8B8A80FEF5B300628703187B2A3,
    0x73EB1DBDE03318366D069F83A6F5900053C73633CB041B21C55E1A86C1F400B4,
    0xEA68D7B6FEDF0B71878938D51D71F8729E0ACB8C2C6DF8B3D79E8A4B90949EE0,
    0x2A2744C972C9FCE787014A964A8EA0C84D714FEAA4DE823FE85A224A4DD048FA,
    0x3ED113B7883B4C590638379DB0C21CDA16742ED0255048BF433391D374BC21D1,
    0x9099209ACCC4C8A224C843AFA4F4C68A090D04DA5E9889DAE2F8EEFCE82A3740,
    0x177C837AE0AC495A61805DF2D85EE2FC792E284B65EAD58A98E15D9D46072C01,
    0x63BB58CD4EBEA558A24091ADB40F4E7226EE14C3A1FB4DF39C43BBE2EFC7BFD8,
    0xF0454DC6971ABAE7ADFB378999888265AE03AF92DE3A0EF163668C63E59B9D5F,
    0xB5B93EE3592E2D1F4E6594E51F9643E62A3B21CE75B5FA3F47E59CDE0D034F36,
)
_INFINITY = (0, 1, 0)  # Jacobian (X, Y, Z), x = X/Z², y = Y/Z³; Z = 0 is the point at infinity


def verify(public_key, message, signature):
    """`verifying` run to its end: True or False."""
    steps = verifying(public_key, message, signature)
    try:
        while True:
            next(steps)
    except StopIteration as done:
        return done.value


def verifying(public_key, message, signature):
    """A generator yielding None between slices and returning whether `signature` is
    `public_key`'s over `message` (bytes). Raises ValueError here, before the first
    slice, for a key or signature of the wrong length."""
    if len(public_key) != PUBLIC_KEY_BYTES or len(signature) != SIGNATURE_BYTES:
        raise ValueError("p256: a 64-byte key (x, y) and a 64-byte signature (r, s)")
    return _verifying(bytes(public_key), message, bytes(signature))


def _verifying(key, message, signature):
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if not (0 < r < _N and 0 < s < _N):
        return False
    x = int.from_bytes(key[:32], "big")
    y = int.from_bytes(key[32:], "big")
    if x >= _P or y >= _P or (y * y - (x * x - 3) * x - _B) % _P:
        return False  # not a point of the curve (P-256 has no other subgroup to check)
    e = int.from_bytes(sha256(message).digest(), "big")  # 256 bits, as many as n has
    yield
    w = yield from _inverse(s)
    u1 = e * w % _N
    u2 = r * w % _N
    yield
    rx, _, rz = yield from _double_mult(u1, u2, x, y)
    if rz == 0:
        return False
    # x(R) mod n == r, with x(R) = rx / rz²: compared without the inverse
    zz = rz * rz % _P
    if (rx - r * zz) % _P == 0:
        return True
    r += _N  # x(R) may be r + n (below p) as well
    return r < _P and (rx - r * zz) % _P == 0


def _inverse(a):
    """1/a mod n, by Euclid: 13 ms of an RP2040, against 90 for pow(a, n - 2, n)."""
    r0, r1 = _N, a
    x0, x1 = 0, 1
    while r1:
        for _ in range(_EUCLID_STEPS):
            q = r0 // r1
            r0, r1 = r1, r0 - q * r1
            x0, x1 = x1, x0 - q * x1
            if not r1:
                break
        yield
    return x0 % _N


def _naf(k):
    """The width-5 NAF of 0 <= k < 2**256, least significant digit first: each digit 0 or
    odd in -15..15, a nonzero one followed by at least four zeros; worked out on small
    ints from k's bytes."""
    b = k.to_bytes(34, "little")
    digits = []
    carry = 0
    i = 0
    steps = 0
    while i < 257:
        word = ((b[i >> 3] | b[(i >> 3) + 1] << 8) >> (i & 7) & 31) + carry
        if word & 1:
            if word > 16:
                word -= 32  # k - word leaves 32 here: carry it into bit i + 5
            carry = 1 if word < 0 else 0
            digits.append(word)
            digits.extend((0, 0, 0, 0))
            i += 5
        else:
            digits.append(0)  # a carry moves on to the next bit
            i += 1
        steps += 1
        if steps == _NAF_STEPS:
            steps = 0
            yield
    while digits and not digits[-1]:
        digits.pop()
    return digits


def _double_mult(u1, u2, qx, qy):
    """[u1]G + [u2]Q, Jacobian. Every point operation yields between its parts and after
    its end, here."""
    q_odd = yield from _odd_multiples(qx, qy)
    n1 = yield from _naf(u1)
    n2 = yield from _naf(u2)
    n = max(len(n1), len(n2))
    n1 += [0] * (n - len(n1))
    n2 += [0] * (n - len(n2))
    acc = _INFINITY
    for i in range(n - 1, -1, -1):
        if acc[2]:
            acc = yield from _double(acc)
            yield
        d = n1[i]
        if d:
            m = d if d > 0 else -d  # G's odd multiple m: x at m - 1, y at m
            y = _G_ODD[m]
            acc = yield from _add(acc, (_G_ODD[m - 1], y if d > 0 else _P - y, 1))
            yield
        d = n2[i]
        if d:
            x, y, z = q_odd[(d if d > 0 else -d) >> 1]
            acc = yield from _add(acc, (x, y if d > 0 else _P - y, z))
            yield
    return acc


def _odd_multiples(x, y):
    """Q, 3Q, ..., 15Q, Jacobian."""
    p = (x, y, 1)
    two = yield from _double(p)
    table = [p]
    for _ in range(7):
        yield
        p = yield from _add(p, two)
        table.append(p)
    return table


def _double(p):
    """2p for a = -3: 8 multiplications, in two slices."""
    x, y, z = p
    delta = z * z % _P
    gamma = y * y % _P
    beta = x * gamma % _P
    alpha = 3 * (x - delta) * (x + delta) % _P
    yield
    x3 = (alpha * alpha - 8 * beta) % _P
    z3 = (y * z << 1) % _P
    y3 = (alpha * (4 * beta - x3) - 8 * gamma * gamma) % _P
    return x3, y3, z3


def _add(p, q):
    """p + q, Jacobian: 16 multiplications in four slices, 11 in three when q's z is 1
    (an affine point: G's multiples)."""
    x1, y1, z1 = p
    x2, y2, z2 = q
    if z1 == 0:
        return q
    if z2 == 0:
        return p
    z1z1 = z1 * z1 % _P
    u2 = x2 * z1z1 % _P
    if z2 == 1:
        u1 = x1
        s1 = y1
    else:
        z2z2 = z2 * z2 % _P
        u1 = x1 * z2z2 % _P
        yield
        s1 = y1 * z2 % _P * z2z2 % _P
    s2 = y2 * z1 % _P * z1z1 % _P
    h = (u2 - u1) % _P
    r = (s2 - s1) % _P
    if h == 0:  # the same x: p == q, or p == -q
        if r:
            return _INFINITY
        yield
        return (yield from _double(p))
    yield
    hh = h * h % _P
    hhh = h * hh % _P
    v = u1 * hh % _P
    x3 = (r * r - hhh - 2 * v) % _P
    yield
    y3 = (r * (v - x3) - s1 * hhh) % _P
    z3 = z1 * h % _P if z2 == 1 else z1 * z2 % _P * h % _P
    return x3, y3, z3
