"""Every kind of reply a pile's session makes, as hex lines: run once on the firmware's
own codec and once with aggregator/hostcodec.py installed (`--host`), in a process of
its own each (install() is for good). tests/test_aggregator_emulator.py compares them."""

import random
import sys

import cbor2
from aggregator import hostcodec, mac0
from aggregator.emulator import EmulatedPile
from pile.protocol import Session
from pilectl import wire

KEY = bytes(range(32))
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def requests(kid):
    """(name, bytes) the host sends: good, replayed, forged, malformed."""
    def signed(seq, fields, key=KEY):
        return mac0.sign(key, kid, wire.encode({**fields, wire.SEQ: seq}), NONCE)
    setpoint = signed(2, {wire.TYPE: wire.SETPOINT, wire.SETPOINT_POWER: -4000,
                          wire.SETPOINT_TTL: 10})
    return [
        ("hello", wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 0})),
        ("config_get", signed(1, {wire.TYPE: wire.CONFIG_GET,
                                  wire.BODY: ["tick_ms", "min_soc", "site_import_limit_w"]})),
        ("setpoint", setpoint),
        ("replay", setpoint),
        ("wrong key", signed(3, {wire.TYPE: wire.SETPOINT, wire.SETPOINT_POWER: 1,
                                 wire.SETPOINT_TTL: 5}, bytes(32))),
        ("unsigned", wire.encode({wire.TYPE: wire.SETPOINT, wire.SEQ: 4,
                                  wire.SETPOINT_POWER: 1, wire.SETPOINT_TTL: 5})),
        ("not cbor", b"\xd1\x84\xff"),
        ("not a map", mac0.sign(KEY, kid, cbor2.dumps([5, 1]), NONCE)),
        ("out of range", signed(6, {wire.TYPE: wire.SETPOINT, wire.SETPOINT_POWER: 10**7,
                                    wire.SETPOINT_TTL: 5})),
        ("unknown type", signed(7, {wire.TYPE: 99})),
        ("diagnostics", signed(8, {wire.TYPE: wire.DIAGNOSTICS_GET})),
        ("diagnostics part 1", signed(9, {wire.TYPE: wire.DIAGNOSTICS_GET, wire.BODY: 1})),
        ("events", signed(10, {wire.TYPE: wire.EVENTS_GET, wire.BODY: 0})),
        ("stop", signed(11, {wire.TYPE: wire.COMMAND, wire.BODY: wire.COMMANDS["stop"]})),
    ]


def main():
    if "--host" in sys.argv:
        hostcodec.install()
    emulated = EmulatedPile("codec-pile", KEY, 0, random.Random(1))
    pile = emulated.pile
    pile.nonce = NONCE
    pile.now = lambda: 123456  # the clock stands still: ttl and uptime alike in both runs
    emulated.step(123456)
    session = Session(pile)
    print("hello", session.hello().hex())
    for name, data in requests(wire.key_id(KEY)):
        print(name, session.handle(data).hex())
    print("telemetry", session.telemetry().hex())


if __name__ == "__main__":
    main()
