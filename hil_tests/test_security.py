"""A hostile or careless host on the real link (raw frames over TCP and the serial pty):
replays across connections and transports, the pile's own messages reflected back, the
aggregator's key reaching for technician powers, and the pile maker's hard limits.
Each test failed on the firmware before per-key seq windows, request-only types and roles."""

import asyncio
import time

import cbor2
import pytest
import serial
from pile.control import STATE_STOPPED
from pile_under_test import SCENARIO, VirtualPile
from pilectl import cose, wire
from pilectl.client import PileError

pytestmark = pytest.mark.virtual_only("raw TCP connections need the virtual bench")


class RawLink:
    """One TCP connection spoken frame by frame: what an attacker on the LAN holds."""

    def __init__(self, reader, writer, key):
        self.reader, self.writer, self.key = reader, writer, key
        self.deframer = wire.Deframer()
        self.nonce = None
        self.hello = None
        self.inbox = []  # (message bytes, fields) as the pile sent them, verified

    @classmethod
    async def open(cls, pile):
        link = cls(*await asyncio.open_connection("127.0.0.1", pile.bench.tcp_port), pile.key)
        _, link.hello = await link.take(wire.HELLO)
        link.nonce = link.hello[wire.HELLO_NONCE]
        return link

    async def take(self, *types):
        """The next message of one of `types` the pile sends: (bytes, fields)."""
        while True:
            for item in self.inbox:
                if item[1][wire.TYPE] in types:
                    self.inbox.remove(item)
                    return item
            data = await asyncio.wait_for(self.reader.read(4096), 5)
            for message in self.deframer.feed(data):
                unverified = wire.decode(cbor2.loads(message).value[2])
                nonce = unverified.get(wire.HELLO_NONCE) if self.nonce is None else self.nonce
                self.inbox.append((message, wire.decode(cose.verify(self.key, message, nonce))))

    async def exchange(self, message):
        """Send `message` as it is; the pile's answer to it."""
        self.writer.write(wire.frame(message))
        await self.writer.drain()
        return (await self.take(wire.ACK, wire.CONFIG, wire.ERROR, wire.HELLO))[1]

    async def close(self):
        self.writer.close()
        await self.writer.wait_closed()


def next_request(client, mtype, fields):
    """The bytes `client` would send next for a request: its key, its next seq."""
    client.seq += 1
    return client.sign({wire.TYPE: mtype, wire.SEQ: client.seq, **fields})


async def test_a_captured_message_counts_once_per_boot_on_any_connection(pile):
    technician = pile.client
    await technician.command("stop")
    release = next_request(technician, wire.COMMAND, {wire.BODY: wire.COMMANDS["release"]})
    assert (await technician.exchange_raw(release))[wire.TYPE] == wire.ACK
    await technician.command("stop")  # stopped again: a replayed release would undo it
    attacker = await RawLink.open(pile)  # a new TCP connection in the same boot
    try:
        error = await attacker.exchange(release)
    finally:
        await attacker.close()
    assert error[wire.TYPE] == wire.ERROR and error[wire.ERROR_CODE] == wire.ERR_REPLAY
    wired = await pile.serial()  # captured on TCP, replayed on the serial link
    try:
        with pytest.raises(PileError) as replayed:
            await wired.exchange_raw(release)
        assert replayed.value.code == wire.ERR_REPLAY
        change = next_request(wired, wire.CONFIG_SET, {wire.BODY: {"min_soc": 30}})
        assert (await wired.exchange_raw(change))[wire.BODY]["min_soc"] == 30
        await wired.config_set({"min_soc": 20})
    finally:
        await wired.close()
    with pytest.raises(PileError) as reverted:  # captured on serial, replayed over TCP
        await technician.exchange_raw(change)
    assert reverted.value.code == wire.ERR_REPLAY
    assert await technician.config_get(["min_soc"]) == {"min_soc": 20}
    tel = await pile.until(lambda t: True)
    assert tel["state"] == STATE_STOPPED and tel["applied_w"] == 0


async def test_the_piles_own_messages_reflected_back_change_nothing(pile):
    link = await RawLink.open(pile)
    try:
        seq = link.hello[wire.HELLO_NEXT_SEQ]  # where this host starts, as the pile said

        def request(seq):
            fields = {wire.TYPE: wire.CONFIG_GET, wire.SEQ: seq, wire.BODY: ["min_soc"]}
            return cose.sign(pile.key, wire.encode(fields), link.nonce)

        assert (await link.exchange(request(seq)))[wire.TYPE] == wire.CONFIG  # telemetry on
        for _ in range(3):  # the pile's own seqs run ahead of this host's
            reflected, _ = await link.take(wire.TELEMETRY)
        error = await link.exchange(reflected)
        assert error[wire.TYPE] == wire.ERROR and error[wire.ERROR_CODE] == wire.ERR_UNKNOWN_TYPE
        reply = await link.exchange(request(seq + 1))  # the reflection moved no window
        assert reply[wire.TYPE] == wire.CONFIG, reply
    finally:
        await link.close()


async def test_the_aggregators_key_asks_for_power_and_nothing_more(pile):
    aggregator = await pile.tcp()  # the link key alone, over Wi-Fi
    try:
        before = await aggregator.config_get()
        for changes in ({"min_soc": 0}, {"reserve_soc": 0}, {"battery_min_charge_c": -30},
                        {"battery_cutoff_c": 80}, {"converter_cutoff_c": 130},
                        {"meter_stale_s": 60}, {"site_import_limit_w": 1000000},
                        {"ramp_w_per_s": 1000000}, {"tick_ms": 1000}):
            with pytest.raises(PileError) as refused:
                await aggregator.config_set(changes)
            assert refused.value.code == wire.ERR_AUTH and "technician" in refused.value.detail
        await aggregator.command("stop")
        for name in ("release", "reset-fault", "reboot"):
            with pytest.raises(PileError) as refused:
                await aggregator.command(name)
            assert refused.value.code == wire.ERR_AUTH
        assert await aggregator.config_get() == before
        await pile.client.command("release")  # the technician may
        assert (await aggregator.setpoint(-2000, 60))["target_w"] == -2000
        await pile.until(lambda t: t["applied_w"] == -2000)
    finally:
        await aggregator.close()


async def test_the_pile_makers_limits_bound_even_the_technician(tmp_path):
    limits = {"battery_cutoff_c": [1, 52], "min_soc": [25, 60], "ramp_w_per_s": [10, 6000]}
    scenario = dict(SCENARIO, board={"limits": limits})
    pile = await VirtualPile.open(tmp_path, scenario)
    try:
        config = await pile.client.config_get()
        assert config["battery_cutoff_c"] == 52 and config["min_soc"] == 25
        for changes in ({"battery_cutoff_c": 53}, {"min_soc": 20}, {"ramp_w_per_s": 6001}):
            with pytest.raises(PileError) as refused:
                await pile.client.config_set(changes)
            assert refused.value.code == wire.ERR_OUT_OF_RANGE, changes
        assert "1..52" in (await _refusal(pile.client, {"battery_cutoff_c": 70})).detail
    finally:
        await pile.close()
    assert pile.violations() == []


async def _refusal(client, changes):
    with pytest.raises(PileError) as refused:
        await client.config_set(changes)
    return refused.value


async def test_a_host_flooding_the_serial_link_without_reading_never_delays_the_tick(pile):
    """Each reply is ~18 times its request: a host that writes and never reads fills the
    line back to it. The control writes must go on at their period all the same."""
    await pile.client.setpoint(-3000, 600)
    await pile.until(lambda t: t["applied_w"] == -3000)
    writes = pile.control_writes()
    nonce, key = pile.client.nonce, pile.key
    frames = [wire.frame(cose.sign(key, wire.encode(
        {wire.TYPE: wire.CONFIG_GET, wire.SEQ: 10_000 + i}), nonce)) for i in range(4000)]
    line = serial.Serial(str(pile.bench.dir / "link-host"), 115200, write_timeout=10)

    def flood():
        deadline = time.monotonic() + 4
        sent = 0
        while time.monotonic() < deadline:  # and never a read
            line.write(frames[sent % len(frames)])
            sent += 1

    try:
        await asyncio.wait_for(asyncio.to_thread(flood), 20)
        await asyncio.sleep(1)
    finally:
        line.close()
    times = [at for at, _ in writes]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    assert len(times) >= 16 and max(gaps) < 0.4, f"control writes stalled: {max(gaps):.2f} s"
    counters = await pile.client.diagnostics()
    assert counters["requests_shed"] > 0  # the budget held the flood off
