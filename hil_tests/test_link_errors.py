"""One test per protocol error, on the live link: each is refused and changes nothing."""

import pytest
from pile.control import STATE_STOPPED
from pilectl import wire
from pilectl.client import PileError


async def refused(pile, make, code):
    """Send the bytes `make()` builds (after a config snapshot); expect ERROR `code`."""
    before = await pile.client.config_get()
    with pytest.raises(PileError) as error:
        await pile.client.exchange_raw(make())
    assert error.value.code == code, error.value
    assert await pile.client.config_get() == before
    return error.value


async def test_malformed_frames_are_dropped_and_bad_messages_refused(pile):
    garbage = b"\x13\x37\xff\xfe\x00"  # not a frame: dropped, the link resynchronises
    await pile.client.send_raw(garbage, frame=False)
    error = await refused(pile, lambda: b"\xff\xff not cbor", wire.ERR_MALFORMED)
    assert "CBOR" in error.detail
    assert (await pile.client.config_get(["min_soc"])) == {"min_soc": 20}


SETPOINT = {wire.TYPE: wire.SETPOINT, wire.SETPOINT_POWER: -4000, wire.SETPOINT_TTL: 60}


def signed(pile, fields):
    """Signed `fields` with the client's next seq."""
    pile.client.seq += 1
    return pile.client.sign({wire.SEQ: pile.client.seq, **fields})


async def test_unknown_type_is_refused(pile):
    await refused(pile, lambda: signed(pile, {wire.TYPE: 99}), wire.ERR_UNKNOWN_TYPE)


async def test_out_of_range_setpoint_is_refused(pile):
    for ttl in (0, 3601):
        request = {**SETPOINT, wire.SETPOINT_TTL: ttl}
        error = await refused(pile, lambda r=request: signed(pile, r), wire.ERR_OUT_OF_RANGE)
        assert "ttl" in error.detail
    tel = await pile.until(lambda t: True)
    assert tel["applied_w"] == 0 and tel["ttl_left_s"] == 0


async def test_out_of_range_config_is_refused_with_the_allowed_range(pile):
    with pytest.raises(PileError) as error:
        await pile.client.config_set({"min_soc": 20, "site_import_limit_w": 5000000})
    assert error.value.code == wire.ERR_OUT_OF_RANGE and "0..1000000 W" in error.value.detail
    assert (await pile.client.config_get(["site_import_limit_w"]))["site_import_limit_w"] == 16000


async def test_bad_mac_is_refused(pile):
    def tampered():
        data = bytearray(signed(pile, SETPOINT))
        data[-1] ^= 0x01
        return bytes(data)

    error = await refused(pile, tampered, wire.ERR_AUTH)
    assert "MAC" in error.detail
    unsigned = {**SETPOINT, wire.SEQ: pile.client.seq + 1}
    await refused(pile, lambda: wire.encode(unsigned), wire.ERR_AUTH)
    tel = await pile.until(lambda t: True)
    assert tel["applied_w"] == 0


async def test_replay_is_refused(pile):
    data = signed(pile, {wire.TYPE: wire.COMMAND, wire.BODY: wire.COMMANDS["stop"]})
    reply = await pile.client.exchange_raw(data)
    assert reply[wire.TYPE] == wire.ACK
    await pile.client.command("release")
    await refused(pile, lambda: data, wire.ERR_REPLAY)
    tel = await pile.until(lambda t: True)
    assert tel["state"] != STATE_STOPPED  # the replayed stop did not latch again
