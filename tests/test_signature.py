"""pile.signature (ECDSA P-256, SHA-256) against the `cryptography` package as the oracle,
under CPython and under the MicroPython unix port (tests/mp/signature_check.py takes the
same vectors, made here).

What is held: signatures from many keys over many messages verify; one flipped bit in
the key, the message or the signature fails; vectors in the manner of Wycheproof made with
`cryptography` (fixed keys among them G and -G, deterministic and high-s signatures, r and
s at and past their bounds, keys off the curve or past p, a sum at infinity, and x(R) past
n); the generator's slices stay small; G's odd multiples written in the module are G's.
"""

import hashlib
import json
import sys
import tokenize

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from helpers import FIRMWARE, ROOT
from hypothesis import given, settings
from hypothesis import strategies as st
from pile import signature

# P-256 (FIPS 186-4 D.1.2.3), written here again to make cases
P = 0xFFFFFFFF00000001000000000000000000000000FFFFFFFFFFFFFFFFFFFFFFFF
N = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
B = 0x5AC635D8AA3A93E7B3EBBD55769886BC651D06B0CC53B0F63BCE3C3E27D2604B
G = (0x6B17D1F2E12C4247F8BCE6E563A440F277037D812DEB33A0F4A13945D898C296,
     0x4FE342E2FE1A7F9B8EE7EB4A7C0F9E162BCE33576B315ECECBB6406837BF51F5)
ECDSA = ec.ECDSA(hashes.SHA256())
DETERMINISTIC = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)  # RFC 6979


def be(value, size=32):
    return value.to_bytes(size, "big")


def raw_key(private):
    point = private.public_key().public_numbers()
    return be(point.x) + be(point.y)


def key_of(d):
    return ec.derive_private_key(d, ec.SECP256R1())


def sign(private, message, algorithm=ECDSA):
    r, s = decode_dss_signature(private.sign(message, algorithm))
    return be(r) + be(s)


def oracle(key, message, sig):
    """cryptography's verdict on raw key and signature bytes of the right lengths."""
    x, y = int.from_bytes(key[:32], "big"), int.from_bytes(key[32:], "big")
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    try:
        public = ec.EllipticCurvePublicNumbers(x, y, ec.SECP256R1()).public_key()
        public.verify(encode_dss_signature(r, s), message, ECDSA)
    except (ValueError, InvalidSignature):
        return False
    return True


def run(key, message, sig):
    """(verdict, yields) of the generator, run as the update task runs it."""
    steps = signature.verifying(key, message, sig)
    yields = 0
    try:
        while True:
            assert next(steps) is None
            yields += 1
    except StopIteration as done:
        return done.value, yields


def flip(data, bit):
    out = bytearray(data)
    out[bit // 8] ^= 1 << bit % 8
    return bytes(out)


# Affine arithmetic, plain and slow, to make a case the oracle then judges.

def _add(p1, p2):
    if p1 is None:
        return p2
    if p2 is None:
        return p1
    if p1[0] == p2[0] and (p1[1] + p2[1]) % P == 0:
        return None
    if p1 == p2:
        slope = (3 * p1[0] * p1[0] - 3) * pow(2 * p1[1], -1, P)
    else:
        slope = (p2[1] - p1[1]) * pow(p2[0] - p1[0], -1, P)
    x = (slope * slope - p1[0] - p2[0]) % P
    return x, (slope * (p1[0] - x) - p1[1]) % P


def _mul(k, point):
    out = None
    while k:
        if k & 1:
            out = _add(out, point)
        point = _add(point, point)
        k >>= 1
    return out


def _sqrt(value):
    root = pow(value, (P + 1) // 4, P)  # p = 3 mod 4
    return root if root * root % P == value % P else None


def _poly_mod(a, f):
    """a mod f, polynomials over GF(p) as coefficient lists, lowest first; f monic."""
    a = [c % P for c in a]
    while len(a) >= len(f):
        lead = a[-1]
        shift = len(a) - len(f)
        for i, c in enumerate(f):
            a[shift + i] = (a[shift + i] - lead * c) % P
        a.pop()
    while a and a[-1] == 0:
        a.pop()
    return a


def _poly_mulmod(a, b, f):
    out = [0] * (len(a) + len(b))
    for i, x in enumerate(a):
        for j, y in enumerate(b):
            out[i + j] += x * y
    return _poly_mod(out, f)


def point_with_small_y():
    """A point (x, y) of the curve with y < 2**256 - p, so that y + p is 32 bytes: for
    y = 1, 2, ..., a root of x**3 - 3x + b - y**2 when the cubic has exactly one, from
    gcd(cubic, x**p - x)."""
    y = 0
    while True:
        y += 1
        f = [(B - y * y) % P, P - 3, 0, 1]
        power, base, e = [1], [0, 1], P  # x ** p mod f
        while e:
            if e & 1:
                power = _poly_mulmod(power, base, f)
            base = _poly_mulmod(base, base, f)
            e >>= 1
        g, h = f, _poly_mod([c - d for c, d in zip(power + [0, 0], [0, 1, 0], strict=False)], f)
        while h:  # Euclid on polynomials: g becomes gcd(f, x**p - x), the roots' product
            inverse = pow(h[-1], -1, P)
            g, h = h, _poly_mod(g, [c * inverse % P for c in h])
        if len(g) == 2:
            x = -g[0] * pow(g[1], -1, P) % P
            return x, y


def x_past_n():
    """A valid (key, message, signature) whose R has n <= x(R) < p, so that r = x(R) - n:
    R picked first, the key solved for (Q = (R - u1 G) / u2); and x(R). Its s is small, so
    s + n is 32 bytes too."""
    x = N
    while True:
        rhs = (x ** 3 - 3 * x + B) % P
        y = pow(rhs, (P + 1) // 4, P)  # p = 3 mod 4
        if y * y % P == rhs:
            break
        x += 1
    message = b"x(R) is past the group order"
    e = int.from_bytes(hashlib.sha256(message).digest(), "big")
    r, s = x - N, 0x1234567
    w = pow(s, -1, N)
    u1, u2 = e * w % N, r * w % N
    minus_u1g = _mul(u1, G)
    q = _mul(pow(u2, -1, N), _add((x, y), (minus_u1g[0], P - minus_u1g[1])))
    return be(q[0]) + be(q[1]), message, be(r) + be(s), x


def wycheproof_style():
    """[(name, key, message, signature, expected)]; `expected` written by hand, and the
    oracle must agree with it."""
    cases = []
    message = b"signed head of firmware 1.2.3 for RPI_PICO"
    keys = {"d1": 1, "d2": 2, "d3": 3, "half": (N - 1) // 2, "minus2": N - 2,
            "minus1": N - 1,
            "fixed": 0xC9AFA9D845BA75166B5C215767B1D6934E50C3DB36E89B127B8A622B120F6721}
    for label, d in keys.items():
        private = key_of(d)
        key = raw_key(private)
        sig = sign(private, message, DETERMINISTIC)
        cases.append((f"deterministic-{label}", key, message, sig, True))
        cases.append((f"random-nonce-{label}", key, message, sign(private, message), True))
        cases.append((f"other-message-{label}", key, message + b".", sig, False))
    private = key_of(keys["fixed"])
    key = raw_key(private)
    sig = sign(private, message, DETERMINISTIC)
    r, s = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big")
    x, y = int.from_bytes(key[:32], "big"), int.from_bytes(key[32:], "big")
    for name, body, expected in (
            ("empty-message", b"", True), ("long-message", bytes(range(256)) * 8, True),
            ("all-zero-message", bytes(200), True)):
        cases.append((name, key, body, sign(private, body, DETERMINISTIC), expected))
    cases += [
        ("high-s", key, message, be(r) + be(N - s), True),  # ECDSA itself has no low-s rule
        ("r-zero", key, message, be(0) + be(s), False),
        ("s-zero", key, message, be(r) + be(0), False),
        ("both-zero", key, message, bytes(64), False),
        ("r-is-n", key, message, be(N) + be(s), False),
        ("s-is-n", key, message, be(r) + be(N), False),
        ("s-is-n-minus-1", key, message, be(r) + be(N - 1), False),
        ("r-s-one", key, message, be(1) + be(1), False),
        ("all-ones-signature", key, message, b"\xff" * 64, False),
        ("y-plus-one", be(x) + be((y + 1) % P), message, sig, False),
        ("negated-key", be(x) + be(P - y), message, sig, False),  # on the curve, not the key
        ("zero-key", bytes(64), message, sig, False),
        ("all-ones-key", b"\xff" * 64, message, sig, False),
    ]
    # points of the curve written with a coordinate past p: x = 0 is on the curve
    zero_y = _sqrt(B)
    small_x, small_y = point_with_small_y()
    cases += [
        ("x-past-p", be(P) + be(zero_y), message, sig, False),
        ("y-past-p", be(small_x) + be(small_y + P), message, sig, False),
        ("point-of-x-zero", be(0) + be(zero_y), message, sig, False),
        ("generator-not-the-key", be(G[0]) + be(G[1]), message, sig, False),
    ]
    # u1 G + u2 Q at infinity: Q = -G (d = n - 1) and r = e, so u1 = u2
    e = int.from_bytes(hashlib.sha256(message).digest(), "big") % N
    minus_g = raw_key(key_of(N - 1))
    cases.append(("sum-at-infinity", minus_g, message, be(e) + be(12345), False))
    # u1 = u2 with Q = G: the first two additions add a point to itself
    g_key = raw_key(key_of(1))
    cases.append(("point-added-to-itself", g_key, message, be(e) + be(12345), False))
    key_p, message_p, sig_p, x_r = x_past_n()
    cases.append(("x-of-R-past-n", key_p, message_p, sig_p, True))
    # the same signature with r or s written as the same number mod n, past n: refused
    cases.append(("r-past-n", key_p, message_p, be(x_r) + sig_p[32:], False))
    cases.append(("s-past-n", key_p, message_p,
                  sig_p[:32] + be(int.from_bytes(sig_p[32:], "big") + N), False))
    return cases


def random_vectors(count, seed):
    """Valid signatures from random keys over random messages, and each with one bit
    flipped in its key, its message and its signature."""
    import random

    rng = random.Random(seed)
    cases = []
    for i in range(count):
        private = key_of(rng.randrange(1, N))
        key = raw_key(private)
        message = rng.randbytes(rng.randrange(1, 300))
        sig = sign(private, message)
        cases.append((f"valid-{i}", key, message, sig, True))
        cases.append((f"key-bit-{i}", flip(key, rng.randrange(512)), message, sig, False))
        cases.append((f"message-bit-{i}", key, flip(message, rng.randrange(len(message) * 8)),
                      sig, False))
        cases.append((f"signature-bit-{i}", key, message, flip(sig, rng.randrange(512)), False))
    return cases


WRONG_LENGTHS = [("key-63", bytes(63), b"m", bytes(64)), ("key-65", bytes(65), b"m", bytes(64)),
                 ("signature-63", bytes(64), b"m", bytes(63)),
                 ("signature-65", bytes(64), b"m", bytes(65)), ("empty", b"", b"", b"")]


def test_the_interface():
    assert signature.SCHEME == "p256"
    assert signature.PUBLIC_KEY_BYTES == 64 and signature.SIGNATURE_BYTES == 64
    private = key_of(7)
    key, sig = raw_key(private), sign(private, b"head")
    assert signature.verify(key, b"head", sig) is True
    assert signature.verify(key, b"bead", sig) is False
    assert signature.verify(bytearray(key), memoryview(b"head"), bytearray(sig)) is True
    verdict, yields = run(key, b"head", sig)
    assert verdict is True and yields > 500


@pytest.mark.parametrize(("name", "key", "message", "sig"), WRONG_LENGTHS,
                         ids=[case[0] for case in WRONG_LENGTHS])
def test_wrong_lengths_raise_value_error_when_called(name, key, message, sig):
    with pytest.raises(ValueError):
        signature.verifying(key, message, sig)
    with pytest.raises(ValueError):
        signature.verify(key, message, sig)


CASES = wycheproof_style()
# refused before the first yield: r or s out of 1..n-1, a coordinate past p, a key off the
# curve (whose products would not be the group's: the verdict is not left to them)
AT_ONCE = {"r-zero", "s-zero", "both-zero", "r-is-n", "s-is-n", "r-past-n", "s-past-n",
           "all-ones-signature", "y-plus-one", "x-past-p", "y-past-p", "zero-key",
           "all-ones-key"}


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_wycheproof_style_vectors(case):
    name, key, message, sig, expected = case
    assert oracle(key, message, sig) is expected, "the oracle disagrees with the case"
    verdict, yields = run(key, message, sig)
    assert verdict is expected
    assert (yields == 0) is (name in AT_ONCE), yields


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, N - 1), message=st.binary(max_size=400))
def test_signatures_of_random_keys_verify(d, message):
    private = key_of(d)
    key, sig = raw_key(private), sign(private, message)
    assert signature.verify(key, message, sig) is True


@settings(max_examples=60, deadline=None)
@given(d=st.integers(1, N - 1), message=st.binary(min_size=1, max_size=300),
       where=st.sampled_from(("key", "message", "signature")), bit=st.integers(0, 4095))
def test_one_flipped_bit_anywhere_fails(d, message, where, bit):
    private = key_of(d)
    parts = {"key": raw_key(private), "message": message}
    parts["signature"] = sign(private, message)
    parts[where] = flip(parts[where], bit % (len(parts[where]) * 8))
    key, message, sig = parts["key"], parts["message"], parts["signature"]
    assert oracle(key, message, sig) is False
    assert signature.verify(key, message, sig) is False


@settings(max_examples=60, deadline=None)
@given(key=st.binary(min_size=64, max_size=64), sig=st.binary(min_size=64, max_size=64),
       message=st.binary(max_size=64))
def test_any_bytes_of_the_right_lengths_are_a_verdict(key, sig, message):
    assert signature.verify(key, message, sig) is False


def test_g_odd_multiples_are_gs():
    for i, m in enumerate(range(1, 16, 2)):
        assert raw_key(key_of(m)) == be(signature._G_ODD[2 * i]) + be(signature._G_ODD[2 * i + 1])


def _work_per_line():
    """({line: products}, {line: divisions}) of pile/signature.py: the `*` on a line that
    reduces by `%` are products of field or scalar elements (a small constant's counted
    too); a `//` is a step of Euclid's (whose products have a small quotient)."""
    products, divisions = {}, {}
    with open(signature.__file__, "rb") as f:
        tokens = [t for t in tokenize.tokenize(f.readline) if t.type == tokenize.OP]
    lines = {}
    for token in tokens:
        lines.setdefault(token.start[0], []).append(token.string)
    for line, ops in lines.items():
        if "%" in ops:
            products[line] = ops.count("*")
        if "//" in ops:
            divisions[line] = ops.count("//")
    return products, divisions


def test_no_slice_does_more_than_a_few_multiplications():
    """Between two yields the verifier makes at most 4 big products (7 `*` with the
    small constants') or 8 steps of Euclid, a slice of about 1 ms on an RP2040
    (bench/signature_bench.py measures it): counted line by line under sys.settrace, so
    a yield taken out of a loop or a point operation fails here."""
    products, divisions = _work_per_line()
    source = signature.__file__
    done = [0, 0]

    def tracer(frame, event, arg):
        if frame.f_code.co_filename != source:
            return None
        if event == "line":
            done[0] += products.get(frame.f_lineno, 0)
            done[1] += divisions.get(frame.f_lineno, 0)
        return tracer

    private = key_of(0xC0FFEE)
    steps = signature.verifying(raw_key(private), b"m" * 200, sign(private, b"m" * 200))
    most = [0, 0]
    slices = 0
    while True:
        done[:] = [0, 0]
        sys.settrace(tracer)
        try:
            next(steps)
        except StopIteration as end:
            assert end.value is True
            break
        finally:
            sys.settrace(None)
        most = [max(most[0], done[0]), max(most[1], done[1])]
        slices += 1
    assert slices > 800
    assert most[0] <= 7 and most[1] <= 8, most


RANDOM = random_vectors(12, seed=28)


@pytest.mark.parametrize("case", RANDOM, ids=[case[0] for case in RANDOM])
def test_random_vectors(case):
    name, key, message, sig, expected = case
    assert oracle(key, message, sig) is expected
    assert run(key, message, sig)[0] is expected


def test_a_point_added_to_itself_and_to_its_negation():
    """[u1]G + [u2]Q with Q = G: u1 == u2 adds a point to itself (the doubling inside the
    addition), u1 == -u2 ends at infinity (Z = 0)."""
    for u in (1, 2, 0xC0FFEE, N // 3, N - 1):
        steps = signature._double_mult(u, u, *G)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            x, y, z = done.value
        zi = pow(z, -1, P)
        assert be(x * zi * zi % P) + be(y * zi * zi * zi % P) == raw_key(key_of(2 * u % N))
        steps = signature._double_mult(u, N - u, *G)
        try:
            while True:
                next(steps)
        except StopIteration as done:
            assert done.value[2] == 0


def test_the_same_vectors_under_micropython(micropython):
    cases = CASES + RANDOM
    wrong = [(name, key, message, sig, "raised ValueError") for name, key, message, sig
             in WRONG_LENGTHS]
    table = [[name, key.hex(), message.hex(), sig.hex()] for name, key, message, sig, _
             in cases + wrong]
    result = micropython(ROOT / "tests" / "mp" / "signature_check.py",
                         paths=(FIRMWARE, ROOT / "tests" / "mp"), input=json.dumps(table),
                         timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
    got = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in result.stdout.splitlines()}
    for name, key, message, sig, expected in cases:
        verdict, yields = run(key, message, sig)  # CPython's: the same slices on both
        assert verdict is expected
        assert got[name] == f"{verdict} {yields}", name
    for name, *_, expected in wrong:
        assert got[name] == expected, (name, got[name])
