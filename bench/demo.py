"""Scripted evening-to-morning scenario for the firmware's safety core (MicroPython).

    MICROPYPATH=firmware micropython bench/demo.py [pace_ms]

The real Config, Controller and envelope run against a small plant model in this
file: one control tick stands for one minute of battery physics, so a night
takes ~840 ticks. Prints one JSON line per tick and a final summary line. A
checker re-derives the rules from the plant (not from the envelope) and counts
violations. The full virtual bench over Modbus and the host link replaces this
demo when it lands.
"""

import json
import sys
import time

from pile.config import Config
from pile.control import Controller
from pile.telemetry import EV_CONNECTED, READY, Telemetry

_TICK_MS = 250
_PLANT_S = 60  # plant seconds per control tick
_CAPACITY_WH = 60000
_AMBIENT_X10 = 200
_START_MIN = 17 * 60  # 17:00
_DEPARTURE_MIN = 31 * 60  # 07:00 next morning
_RESERVE_PCT = 50  # the owner's reserve at departure
_TARGET_X10 = 800  # what the aggregator charges to overnight


def household_w(minute, noise):
    """Base load, an evening peak around 19:00 and a little noise (deterministic)."""
    hour = (minute // 60) % 24
    peak = {17: 2500, 18: 4000, 19: 5000, 20: 4000, 21: 2500}.get(hour, 0)
    return 900 + peak + noise % 700


def aggregator_request(minute, soc_x10):
    """The aggregator: 7 kW discharge for the peak, off-peak charge to the 80 % target."""
    hour = (minute // 60) % 24
    if 17 <= hour < 22:
        return -7000
    if (hour >= 23 or hour < 6) and soc_x10 < _TARGET_X10:
        return 7000
    return 0


def main():
    pace_ms = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    cfg = Config({"battery_capacity_wh": _CAPACITY_WH, "site_import_limit_w": 16000})
    ctl = Controller(cfg)
    tel = Telemetry()
    tel.status = READY | EV_CONNECTED
    tel.rated_charge = tel.rated_discharge = 11000
    tel.ev_max_charge = tel.ev_max_discharge = 11000
    tel.converter_temp = 350
    soc_wh = _CAPACITY_WH * 60 // 100  # the EV arrives at 60 %
    temp = 300  # 0.1 degC
    now = 0
    noise = 12345
    violations = []
    discharged_wh = charged_wh = peak_site = peak_shaved = 0
    last_request = None
    ticks = _DEPARTURE_MIN - _START_MIN
    for tick in range(ticks + 1):
        minute = _START_MIN + tick
        noise = (noise * 1103515245 + 12345) & 0x7FFFFFFF
        load = household_w(minute, noise >> 8)
        tel.soc = soc_wh * 1000 // _CAPACITY_WH
        tel.battery_temp = temp
        tel.ev_max_charge = 11000 if tel.soc < 900 else 3000  # the EV tapers near full
        request = aggregator_request(minute, tel.soc)
        if request != last_request or tick % 240 == 0:  # refreshed well inside the ttl
            left_s = (_DEPARTURE_MIN - minute) * _PLANT_S
            ctl.set_setpoint(request, 600, now, left_s, _RESERVE_PCT)
            last_request = request
        tel.power = ctl.applied
        now += _TICK_MS
        applied = ctl.tick(now, tel, True, load + tel.power, 0)
        site = load + applied

        if applied < 0 and tel.soc <= cfg.min_soc_x10:
            violations.append([minute, "discharge at SOC floor"])
        if applied < 0 and tel.soc <= _RESERVE_PCT * 10:
            violations.append([minute, "discharge below reserve"])
        if applied and temp >= cfg.battery_cutoff_c_x10:
            violations.append([minute, "power over battery cutoff"])
        if site < -cfg.site_export_limit_w or site > cfg.site_import_limit_w:
            violations.append([minute, "site cap"])

        energy = applied * _PLANT_S // 3600
        soc_wh = max(0, min(_CAPACITY_WH, soc_wh + (energy * 95 // 100 if energy > 0 else energy)))
        discharged_wh += -energy if energy < 0 else 0
        charged_wh += energy if energy > 0 else 0
        peak_site = max(peak_site, site)
        peak_shaved = max(peak_shaved, load - site if load > site else 0)
        # warms ~2.5 degC per minute at 5 kW and relaxes to ambient: ~50 degC at 5 kW steady
        temp += abs(applied) // 200 - (temp - _AMBIENT_X10) // 12

        print(json.dumps({
            "minute": minute, "request": request, "target": ctl.target, "applied": applied,
            "max_charge": ctl.env.max_charge, "max_discharge": ctl.env.max_discharge,
            "reasons": ctl.reasons, "state": ctl.state, "soc": tel.soc, "battery_temp": temp,
            "load": load, "site": site,
        }))
        if pace_ms:
            time.sleep_ms(pace_ms)
    print(json.dumps({"summary": {
        "discharged_wh": discharged_wh, "charged_wh": charged_wh, "peak_shaved_w": peak_shaved,
        "peak_site_w": peak_site, "final_soc_pct": soc_wh * 100 // _CAPACITY_WH,
        "violations": violations,
    }}))


main()
