"""One test per fault: the converter, the bus, the meter, the host link, the EV, the stops."""

import asyncio
import random
import time

import pytest
from pile import limits
from pile.control import STATE_DISCHARGING, STATE_FAULT, STATE_IDLE, STATE_NO_EV, STATE_STOPPED
from pile.events import (
    EVENT_EV_PLUGGED,
    EVENT_EV_UNPLUGGED,
    EVENT_FAULT,
    EVENT_FAULT_CLEARED,
    EVENT_METER_BACK,
    EVENT_METER_LOST,
    EVENT_SESSION_ENDED,
    EVENT_STOP,
)
from pilectl import wire
from pilectl.client import PileError


async def test_silent_converter_faults_then_recovers(pile):
    await pile.client.setpoint(-4000, 60)
    await pile.until(lambda t: t["applied_w"] == -4000)
    pile.faults.silent = True
    tel = await pile.until(lambda t: t["state"] == STATE_FAULT, what="a fault after 3 failed polls")
    assert tel["reasons"] & limits.REASON_CONVERTER_FAULT and tel["applied_w"] == 0
    pile.faults.silent = False
    await pile.until(lambda t: t["state"] == STATE_DISCHARGING and t["applied_w"] == -4000,
                     what="the setpoint re-applied after recovery")
    events = [e[2] for e in await pile.events()]
    assert EVENT_FAULT in events and EVENT_FAULT_CLEARED in events


async def test_expired_setpoint_is_not_reapplied_after_recovery(pile):
    await pile.client.setpoint(-4000, 3)
    await pile.until(lambda t: t["applied_w"] == -4000)
    pile.faults.silent = True
    await pile.until(lambda t: t["state"] == STATE_FAULT)
    await asyncio.sleep(3)
    pile.faults.silent = False
    tel = await pile.until(lambda t: t["state"] == STATE_IDLE, what="idle, not discharging, after")
    assert tel["applied_w"] == 0 and tel["reasons"] & limits.REASON_SETPOINT_EXPIRED


async def test_crc_noise_on_the_bus_is_ridden_out(pile):
    await pile.client.setpoint(-3000, 60)
    await pile.until(lambda t: t["applied_w"] == -3000)
    pile.faults.noise = b"\x13\x37\x00\xff\x01"
    pile.faults.corrupt_crc = True
    await asyncio.sleep(0.4)  # fewer than 3 polls: no fault
    pile.faults.corrupt_crc = False
    await asyncio.sleep(1.5)
    pile.faults.noise = b""
    tel = await pile.until(lambda t: t["applied_w"] == -3000)
    assert tel["state"] == STATE_DISCHARGING
    events = [e[2] for e in await pile.events()]
    assert EVENT_FAULT not in events


async def test_meter_lost_and_back_is_logged(pile):
    pile.faults.silent_units.add(2)
    await pile.until(lambda t: t["site_w"] is None, timeout=10)
    pile.faults.silent_units.discard(2)
    await pile.until(lambda t: t["site_w"] is not None)
    codes = [e[2] for e in await pile.events()]
    assert codes[-2:] == [EVENT_METER_LOST, EVENT_METER_BACK]


async def test_host_link_lost_means_expiry_then_fallback(pile):
    await pile.client.setpoint(-4000, 3)
    await pile.until(lambda t: t["applied_w"] == -4000)
    await pile.client.close()  # the aggregator vanishes
    await asyncio.sleep(4.5)
    assert pile.plant.power_w == 0 and pile.plant.commanded_w == 0
    pile.client = await pile.aggregator()
    tel = await pile.until(lambda t: True)
    assert tel["reasons"] & limits.REASON_SETPOINT_EXPIRED and tel["applied_w"] == 0


async def test_ev_unplugged_stops_and_forgets_the_departure(pile):
    await pile.client.setpoint(-4000, 60, departure_s=7200, reserve_soc=40)
    await pile.until(lambda t: t["applied_w"] == -4000)
    pile.plant.ev_connected = False
    tel = await pile.until(lambda t: t["state"] == STATE_NO_EV)
    assert tel["applied_w"] == 0 and tel["reasons"] & limits.REASON_NO_EV
    pile.plant.ev_connected = True
    pile.plant.soc = 0.45  # the next car, with no departure given
    await pile.client.setpoint(-3000, 60)
    await pile.until(lambda t: t["applied_w"] == -3000
                     and not t["reasons"] & limits.REASON_DEPARTURE_RESERVE)
    codes = [e[2] for e in await pile.events()]
    assert EVENT_EV_PLUGGED in codes[codes.index(EVENT_EV_UNPLUGGED):]  # the next car


async def test_command_stop_latches_until_released(pile):
    await pile.client.setpoint(-4000, 60)
    await pile.until(lambda t: t["applied_w"] == -4000)
    await pile.client.command("stop")
    tel = await pile.until(lambda t: t["state"] == STATE_STOPPED)
    assert tel["applied_w"] == 0 and tel["reasons"] & limits.REASON_STOPPED
    await pile.client.setpoint(-4000, 60)  # a new setpoint does not undo the stop
    tel = await pile.until(lambda t: t["ttl_left_s"] >= 59)
    assert tel["state"] == STATE_STOPPED and tel["applied_w"] == 0
    await pile.client.command("release")
    await pile.until(lambda t: t["applied_w"] == -4000, what="power back after release")


@pytest.mark.estop
async def test_estop_latches_and_release_waits_for_the_input(pile):
    await pile.client.setpoint(-4000, 60)
    await pile.until(lambda t: t["applied_w"] == -4000)
    pile.press_estop()
    tel = await pile.until(lambda t: t["state"] == STATE_STOPPED)
    assert tel["applied_w"] == 0
    with pytest.raises(PileError) as busy:
        await pile.client.command("release")
    assert busy.value.code == wire.ERR_BUSY
    pile.press_estop(False)
    await asyncio.sleep(0.5)
    tel = await pile.until(lambda t: True)
    assert tel["state"] == STATE_STOPPED  # the latch holds after the input clears
    await pile.client.command("release")
    await pile.until(lambda t: t["applied_w"] == -4000)
    stops = [e for e in await pile.events() if e[2] == EVENT_STOP]
    assert stops and stops[0][3] == 2  # logged as an E-stop


async def test_converter_fault_bit_then_reset(pile):
    pile.plant.fault_code = 17
    tel = await pile.until(lambda t: t["state"] == STATE_FAULT)
    assert tel["fault_code"] == 17 and tel["reasons"] & limits.REASON_CONVERTER_FAULT
    await pile.client.command("reset-fault")
    await pile.until(lambda t: t["state"] == STATE_IDLE and t["fault_code"] == 0,
                     what="the fault cleared by COMMAND 1")


async def test_the_next_car_inherits_nothing_from_the_last(pile):
    await pile.client.setpoint(-3000, 600, departure_s=7200, reserve_soc=30)
    await pile.until(lambda t: t["applied_w"] == -3000)
    pile.plant.ev_connected = False
    await pile.until(lambda t: t["state"] == STATE_NO_EV)
    pile.plant.soc = 0.35  # a different car, which the last one's setpoint would discharge
    pile.plant.ev_connected = True
    clock = asyncio.get_running_loop()
    watched_until = clock.time() + 6
    while clock.time() < watched_until:
        tel = await pile.client.telemetry()
        assert tel["applied_w"] == 0 and tel["power_w"] == 0, tel
    assert tel["state"] == STATE_IDLE and tel["ttl_left_s"] == 0
    codes = [e[2] for e in await pile.events()]
    assert EVENT_SESSION_ENDED in codes[codes.index(EVENT_EV_UNPLUGGED):]
    await pile.client.setpoint(-2000, 60)  # the host asks again: the new session starts
    await pile.until(lambda t: t["applied_w"] == -2000)


async def test_a_setpoint_before_the_first_converter_reading_is_busy(pile):
    pile.faults.silent = True
    await pile.reboot_and_reconnect()
    with pytest.raises(PileError) as busy:
        await pile.client.setpoint(-2000, 60)
    assert busy.value.code == wire.ERR_BUSY
    pile.faults.silent = False
    await pile.until(lambda t: t["state"] == STATE_IDLE, what="the first reading")
    assert (await pile.client.setpoint(-2000, 60))["target_w"] == -2000


@pytest.mark.estop
async def test_a_20_ms_estop_press_latches_and_cuts_within_one_transaction(pile):
    await pile.client.setpoint(-4000, 60)
    await pile.until(lambda t: t["applied_w"] == -4000)
    writes = pile.control_writes()
    await asyncio.sleep(random.uniform(0, 0.25))  # anywhere in the control period
    pressed_at = time.monotonic()
    pile.press_estop()
    await asyncio.sleep(0.02)
    pile.press_estop(False)
    tel = await pile.until(lambda t: t["state"] == STATE_STOPPED, what="a 20 ms press latched")
    assert tel["applied_w"] == 0
    after = [(at, values) for at, values in writes if at >= pressed_at]
    cut = next(i for i, (_, values) in enumerate(after) if values[:3] == [0, 0, 0])
    assert cut <= 1, f"{cut} control writes went out before the cut"  # one under way, at most
    assert after[cut][0] - pressed_at < 0.06, after[cut][0] - pressed_at
    stops = [e for e in await pile.events() if e[2] == EVENT_STOP]
    assert stops and stops[-1][3] == 2  # logged as an E-stop
