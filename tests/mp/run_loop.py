"""The firmware's own control loop alone, on the bus the board file names, under MicroPython.

    run_loop.py BOARD_JSON PERIODS SETPOINT_W [CONFIG_JSON]

Built by `pile.firmware.build_loop`, as on a board: every period is `ControlLoop.period()`
(the tick's transaction, the same-tick cut, the meter when due, the mid-tick read).
Prints one JSON line per period, so a host test can inject faults at known periods and
check what the firmware did. (The whole firmware, with the host link, is main.py.)
"""

import asyncio
import json
import sys

from pile.control import NotReady
from pile.firmware import build_loop, build_pile, load_board
from pile.hal import select

board = load_board(sys.argv[1])
periods, setpoint = int(sys.argv[2]), int(sys.argv[3])
pile = build_pile(board)
if len(sys.argv) > 4:
    pile.set_config(json.loads(sys.argv[4]))
loop = build_loop(pile, select(board, "firmware"), board)
converter, meter, master, tel, ctl = loop.converter, loop.meter, loop.converter.master, \
    pile.tel, pile.ctl


async def main():
    asked = False
    for period in range(periods):
        if not asked:
            try:  # as a host would: the pile takes a setpoint once it has read the converter
                pile.setpoint(setpoint, 3600)
                asked = True
            except NotReady:
                pass
        before = (master.transactions, master.bytes_out, master.bytes_in)
        await loop.period()
        print(json.dumps({
            "period": period, "ok": loop.converter_ok, "state": ctl.state,
            "applied": ctl.applied, "reasons": ctl.reasons, "failed_polls": ctl.failed_polls,
            "soc": tel.soc, "battery_temp": tel.battery_temp, "power": tel.power,
            "status": tel.status, "rated": [tel.rated_charge, tel.rated_discharge],
            "ev_max": [tel.ev_max_charge, tel.ev_max_discharge],
            "heartbeat": converter.heartbeat, "heartbeat_echo": tel.heartbeat_echo,
            "site_w": meter.site_w, "meter_age_ms": meter.age_ms(pile.now()),
            "use_23": converter.use_23, "poll_us": loop.poll_us, "cuts": loop.cuts,
            "transactions": master.transactions - before[0],
            "bytes": [master.bytes_out - before[1], master.bytes_in - before[2]]}))


asyncio.run(main())
