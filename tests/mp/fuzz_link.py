"""Fuzz the frame -> message path under MicroPython: `fuzz_link.py SEED FRAMES`.

The link is the firmware's own (`build_link`), and every input goes into its serial
connection as bytes read from the line would; the replies are what it writes back.
A pile with a link key gets a warm-up of valid signed requests, then FRAMES
random and mutated inputs: raw noise, framed noise, mutated signed messages,
mutated frames, exact replays, forged requests (unsigned, or signed with another
key) and signed requests with bad fields. Every input is isolated by 0x00
delimiters, so the expected number of frames is known. Prints one JSON line with
the counters; the host test checks:
nothing escaped, every frame was dropped or answered, and no pile state changed.
"""

import asyncio
import json
import sys

from fwtest import logged_apart_from_refusals, pile_with_ev
from pile.app import key_id
from pile.cbor import dumps, loads
from pile.cose import mac0_sign
from pile.firmware import build_link
from pile.framing import Deframer, frame
from pile.hal import select

KEY = b"fuzz-key-0123456789abcdef-012345"
_state = int(sys.argv[1]) or 1
FRAMES = int(sys.argv[2])


def rand(n):
    """xorshift32, reproducible from the seed on any interpreter: 0..n-1."""
    global _state
    x = _state
    x ^= (x << 13) & 0xFFFFFFFF
    x ^= x >> 17
    x ^= (x << 5) & 0xFFFFFFFF
    _state = x
    return x % n


def noise(n):
    return bytes([rand(256) for _ in range(n)])


pile = pile_with_ev()  # an open envelope to ask within
pile.set_key(KEY)
BOARD = {"board": "unix_sim", "pile_id": "fuzz-001", "modbus": {"device": "unused"}}
replies = 0
reply_types = {}


def on_reply(message):
    global replies
    reply = loads(loads(message).value[2])  # signed: the payload's type
    reply_types[reply[0]] = reply_types.get(reply[0], 0) + 1
    replies += 1


class Line:
    """The host's end of the serial line: what the pile writes is deframed and counted."""

    def __init__(self):
        self.deframer = Deframer()

    def write(self, data):
        self.deframer.feed(data, on_reply)

    async def drain(self):
        pass


link = build_link(pile, select(BOARD), BOARD)
link.requests_per_s = 0  # every frame is answered: the fuzzer counts them all
conn = link.open(None, Line(), "serial", may_provision=True)
session = conn.session
deframer = conn.deframer


seq = 0


def signed(fields):
    global seq
    seq += 1
    fields[1] = seq
    return mac0_sign(KEY, dumps(fields), pile.nonce, key_id(KEY))


WARM_UP = [
    {0: 3, 2: -3000, 3: 600, 4: 7200, 5: 60},
    {0: 6, 2: {"min_soc": 25, "ramp_w_per_s": 4000}},
    {0: 5, 2: ["min_soc"]},
    {0: 8, 2: 0},
    {0: 10, 2: 3},
    {0: 10, 2: 4},
    {0: 10, 2: 1},
    {0: 1},
]
corpus = []


async def warm_up():
    for fields in WARM_UP:
        message = signed(fields)
        corpus.append(message)
        await conn.receive(frame(message))
        await conn.flush()


asyncio.run(warm_up())
frames_of_corpus = [frame(m) for m in corpus]


def snapshot():
    ctl = pile.ctl
    return repr((sorted(pile.cfg.values.items()), ctl.setpoint, ctl.setpoint_live, ctl.stopped,
                 ctl.inputs.reserve_x10, pile.key, logged_apart_from_refusals(pile),
                 pile.actions))


before = snapshot()
base_frames = deframer.frames
base_dropped = deframer.dropped()
base_replies = replies
base_errors = session.refused()
base_accepted = session.accepted
reply_types.clear()


def mutate(data):
    data = bytearray(data)
    for _ in range(1 + rand(4)):
        kind = rand(5)
        if kind == 0 and data:
            data[rand(len(data))] ^= 1 << rand(8)
        elif kind == 1:
            at = rand(len(data) + 1)
            data = data[:at] + bytes([rand(256)]) + data[at:]
        elif kind == 2 and data:
            at = rand(len(data))
            data = data[:at] + data[at + 1:]
        elif kind == 3 and data:
            data = data[: rand(len(data))]
        else:
            data.extend(noise(rand(8)))
    return bytes(data)


def bad_request():
    """Signed with the key, fresh seq, but every field of the wrong kind."""
    mtype = (3, 5, 6, 8, 10, 77)[rand(6)]
    return signed({0: mtype, 2: "x" * rand(5), 3: [rand(9)], 5: -1 - rand(100)})


def forged():
    """What an attacker without the key sends: plausible requests with a fresh seq."""
    template = (
        {0: 3, 2: -1 - rand(11000), 3: 1 + rand(3600)},
        {0: 10, 2: 1 + rand(4)},
        {0: 6, 2: {"min_soc": rand(60), "fallback": "charge"}},
        {0: rand(14), 2: noise(rand(6)), rand(30): rand(1000)},
    )[rand(4)]
    template[1] = 1000 + rand(1 << 20)
    message = dumps(template)
    if rand(2):
        return message  # unsigned
    return mac0_sign(b"not-the-key-0123456789abcdef-xyz", message, pile.nonce, key_id(KEY))


expected_frames = 0
modes = [0] * 7  # how often each kind of input was sent
escaped = 0


async def fuzz():
    global expected_frames, escaped
    for _ in range(FRAMES):
        mode = rand(7)
        modes[mode] += 1
        if mode == 0:
            data = noise(rand(600))
        elif mode == 1:
            data = frame(noise(1 + rand(300)))
        elif mode == 2:
            data = frame(mutate(corpus[rand(len(corpus))]))
        elif mode == 3:
            data = mutate(frames_of_corpus[rand(len(corpus))])
        elif mode == 4:
            data = frames_of_corpus[rand(len(corpus))]
        elif mode == 5:
            data = frame(forged())
        else:
            data = frame(bad_request())
        data = b"\x00" + data + b"\x00"
        expected_frames += sum(1 for part in data.split(b"\x00") if part)
        try:
            await conn.receive(data)
            await conn.flush()
        except Exception as exc:  # counted and reported: the host test fails on any
            escaped += 1
            print("ESCAPED", repr(exc))


asyncio.run(fuzz())
print(json.dumps({
    "inputs": FRAMES,
    "modes": modes,
    "expected_frames": expected_frames,
    "good_frames": deframer.frames - base_frames,
    "dropped": deframer.dropped() - base_dropped,
    "bad_crc": deframer.bad_crc,
    "malformed": deframer.malformed,
    "too_long": deframer.too_long,
    "replies": replies - base_replies,
    "accepted": session.accepted - base_accepted,
    "errors": session.refused() - base_errors,
    "errors_by_code": session.errors,
    "reply_types": {str(k): v for k, v in reply_types.items()},
    "escaped": escaped,
    "state_unchanged": snapshot() == before,
}))
