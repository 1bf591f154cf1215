"""Converter and meter drivers plus the controller under MicroPython, against the plant.

    drive_plant.py DEVICE BAUD CONVERTER_PROFILE METER_PROFILE TICKS SETPOINT_W

One control tick every 250 ms: a converter transaction, the meter once a second,
then the controller. Prints one JSON line per tick so the host test can inject
faults at known ticks and check what the firmware did. (The full firmware loop,
with the host link, is main.py.)
"""

import asyncio
import gc
import json
import sys
import time

from pile import profile
from pile.config import Config
from pile.control import Controller
from pile.converter import Converter
from pile.hal.unix import SerialPort
from pile.meter import Meter
from pile.modbus import Master
from pile.telemetry import Telemetry

device, baud, conv_name, meter_name, ticks, setpoint = sys.argv[1:7]
master = Master(SerialPort(device), int(baud), retries=0, timeout_ms=100)
tel = Telemetry()
converter = Converter(master, profile.load(conv_name, "firmware/profiles"), tel)
meter = Meter(master, profile.load(meter_name, "firmware/profiles"))
ctl = Controller(Config({"site_import_limit_w": 16000, "site_export_limit_w": 11000}))


async def main():
    ctl.set_setpoint(int(setpoint), 3600, time.ticks_ms())
    last_meter = None
    for tick in range(int(ticks)):
        started = time.ticks_ms()
        before = (master.transactions, master.bytes_out, master.bytes_in)
        gc.collect()
        gc.disable()  # so the heap figure counts this transaction's allocations only
        heap = gc.mem_alloc()
        t0 = time.ticks_us()
        ok = await converter.poll(ctl.applied, ctl.applied != 0)
        bus_us = time.ticks_diff(time.ticks_us(), t0)
        heap = gc.mem_alloc() - heap
        gc.enable()
        if last_meter is None or time.ticks_diff(started, last_meter) >= 1000:
            await meter.poll(started)
            last_meter = started
        now = time.ticks_ms()
        ctl.tick(now, tel, ok, meter.site_w, meter.age_ms(now))
        print(json.dumps({
            "tick": tick, "ok": ok, "state": ctl.state, "applied": ctl.applied,
            "reasons": ctl.reasons, "failed_polls": ctl.failed_polls, "soc": tel.soc,
            "battery_temp": tel.battery_temp, "power": tel.power, "status": tel.status,
            "rated": [tel.rated_charge, tel.rated_discharge], "ev_max": [tel.ev_max_charge,
                                                                         tel.ev_max_discharge],
            "heartbeat": converter.heartbeat, "heartbeat_echo": tel.heartbeat_echo,
            "site_w": meter.site_w, "meter_age_ms": meter.age_ms(now),
            "use_23": converter.use_23, "bus_us": bus_us, "heap": heap,
            "transactions": master.transactions - before[0],
            "bytes": [master.bytes_out - before[1], master.bytes_in - before[2]]}))
        await asyncio.sleep_ms(max(0, 250 - time.ticks_diff(time.ticks_ms(), started)))


asyncio.run(main())
