"""The pile emulator: protocol v1 exactly as the firmware speaks it, at fleet cost."""

import random

import cbor2
from pile.surface import Session
from pilectl import cose, wire
from pilectl.aggregator import hostcodec
from pilectl.aggregator.emulator import EmulatedPile

KEY = bytes(range(32))
NONCE = b"\x01\x02\x03\x04\x05\x06\x07\x08"


def requests():
    """(name, bytes) the host sends: good, replayed, forged, malformed."""
    def signed(seq, fields, key=KEY):
        return cose.sign(key, wire.encode({**fields, wire.SEQ: seq}), NONCE, cose.key_id(KEY))
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
        ("not a map", cose.sign(KEY, cbor2.dumps([5, 1]), NONCE)),
        ("out of range", signed(6, {wire.TYPE: wire.SETPOINT, wire.SETPOINT_POWER: 10**7,
                                    wire.SETPOINT_TTL: 5})),
        ("unknown type", signed(7, {wire.TYPE: 99})),
        ("diagnostics", signed(8, {wire.TYPE: wire.DIAGNOSTICS_GET})),
        ("diagnostics part 1", signed(9, {wire.TYPE: wire.DIAGNOSTICS_GET, wire.BODY: 1})),
        ("events", signed(10, {wire.TYPE: wire.EVENTS_GET, wire.BODY: 0})),
        ("stop", signed(11, {wire.TYPE: wire.COMMAND, wire.BODY: wire.COMMANDS["stop"]})),
    ]


def replies(codec):
    """Every kind of reply a pile's session makes, on `codec` (None: the firmware's own)."""
    emulated = EmulatedPile("codec-pile", KEY, 0, random.Random(1))
    pile = emulated.pile
    pile.nonce = NONCE
    pile.now = lambda: 123456  # the clock stands still: ttl and uptime alike in both runs
    emulated.step(123456)
    session = Session(pile) if codec is None else Session(pile, codec=codec)
    found = [("hello", session.hello())]
    found += [(name, session.handle(data)) for name, data in requests()]
    return found + [("telemetry", session.telemetry())]


def test_the_host_codec_makes_the_firmware_codecs_bytes():
    """Every reply kind, byte for byte, but the wording of a CBOR decoder's complaint; in
    one process, since each session is handed its codec and nothing is patched."""
    firmware, host = replies(None), replies(hostcodec)
    assert [name for name, _ in firmware] == [name for name, _ in host]
    assert len(firmware) == 16
    for (name, ours), (_, theirs) in zip(firmware, host, strict=True):
        if name == "not cbor":
            mine = wire.decode(cose.payload(ours))
            other = wire.decode(cose.payload(theirs))
            assert mine.pop(wire.ERROR_DETAIL) != other.pop(wire.ERROR_DETAIL)
            assert mine == other and mine[wire.ERROR_CODE] == wire.ERR_AUTH
        else:
            assert ours == theirs, name


def test_an_emulated_pile_keeps_its_v2g_budget_across_a_reboot():
    emulated = EmulatedPile("budget-pile", KEY, 0, random.Random(1))
    emulated.pile.set_config({"budget_wh_day": 500})
    emulated.pile.ctl.budget.run(3600 * 1000, 600)  # an hour at 600 W: spent
    emulated.reboot()
    budget = emulated.pile.ctl.budget
    assert budget.day_wh() >= 600 and budget.closes(emulated.pile.cfg)
    assert emulated.pile.cfg.budget_wh_day == 500
