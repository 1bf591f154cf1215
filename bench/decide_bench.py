"""One controller decision (`Controller.decide`: envelope, arbitration, ramp, frequency
response) on the MicroPython unix port.

    MICROPYPATH=firmware micropython bench/decide_bench.py [decisions]

Prints microseconds per decision and heap bytes allocated per decision after warm-up,
measured with gc disabled around the whole run (the goal is 0 bytes: the boards' heap
must not fragment at up to 12 decisions a second for months). The inputs cycle through
derating, site caps, the SOC floor, ramps and grid frequencies (a curve, then the config's
droop once the setpoint's curve reverts, and implausible readings) and the owner's V2G
budget (open, then spent) so every branch is timed.
"""

import gc
import sys
import time

from pile.config import Config
from pile.control import Controller
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_READY, Telemetry

PERIOD_MS = 250
BATTERY_TEMPS = (250, 470, 520, 560, 490, 300)
SITE_W = (4000, 9000, -2000, 12000, None)
SOCS = (600, 199, 700, 1000)
FREQS = (5000, 4980, 5021, 4400, 4995, 5150, 4900)  # 0.01 Hz; 44 Hz is implausible
CURVE = [[49500, -11000], [49964, 0], [50036, 0], [50500, 11000]]


def main():
    decisions = int(sys.argv[1]) if len(sys.argv) > 1 else 10000
    ctl = Controller(Config({"site_import_limit_w": 16000, "freq_response": "droop",
                             "budget_wh_day": 60}))  # spent mid-run: open, then closed
    tel = Telemetry()
    tel.status = STATUS_READY | STATUS_EV_CONNECTED
    tel.rated_charge = tel.rated_discharge = 11000
    tel.ev_max_charge = tel.ev_max_discharge = 11000
    tel.converter_temp = 400
    now = 0
    ctl.decide(now, tel, True, SITE_W[0], 0)  # the converter was read: ready
    ctl.set_setpoint(-7000, 3600, now, 36000, 40, 2, CURVE, 100)  # the curve for 100 s

    def run(count, now):
        for i in range(count):
            now += PERIOD_MS
            tel.battery_temp = BATTERY_TEMPS[i % 6]
            tel.soc = SOCS[(i >> 3) & 3]
            tel.grid_freq = FREQS[i % 7]
            tel.power = ctl.applied
            ctl.decide(now, tel, True, SITE_W[i % 5], 0)
        return now

    now = run(200, now)  # warm-up: first-time attribute and dict growth
    gc.collect()
    gc.disable()
    before = gc.mem_alloc()
    start = time.ticks_us()
    now = run(decisions, now)
    elapsed = time.ticks_diff(time.ticks_us(), start)
    allocated = gc.mem_alloc() - before
    gc.enable()
    print("decisions: %d" % decisions)
    print("time per decision: %.1f us" % (elapsed / decisions))
    print("heap allocated per decision: %d bytes (%d in total)" % (allocated // decisions,
                                                                    allocated))


main()
