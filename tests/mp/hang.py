"""The firmware with one long-running task made to hang on cue, to prove the watchdog.

`micropython hang.py TASK TRIGGER FIRMWARE_DIR BOARD_JSON` runs the firmware exactly as
main.py does, except that once the file TRIGGER exists, TASK hangs for good:
- `modbus`: the next Modbus transaction never returns (a driver stuck in a read);
- `serial-write`: the serial link's next write never finishes (a UART that stopped);
- `telemetry`: the telemetry task stops after its next round.
The watchdog must then reset the pile (unix port: the process ends with SIGUSR2).
"""

import asyncio
import os
import sys

from pile import firmware, link, modbus
from pile.hal import unix


def triggered():
    try:
        os.stat(TRIGGER)
    except OSError:
        return False
    return True


async def forever():
    await asyncio.Event().wait()


def hang_modbus():
    transact = modbus.Master._transact

    async def stuck(self, *args):
        if triggered():
            await forever()
        return await transact(self, *args)

    modbus.Master._transact = stuck


def hang_serial_write():
    async def stuck(self):
        if triggered():
            await forever()

    unix.LineWriter.drain = stuck


def hang_telemetry():
    async def stuck(self, check_in=None, mid_period=None):  # Link.run_telemetry: hangs once cued
        while True:
            await asyncio.sleep_ms(1000)
            if triggered():
                await forever()
            self.broadcast_telemetry()
            check_in()

    link.Link.run_telemetry = stuck


TASK, TRIGGER, ROOT = sys.argv[1], sys.argv[2], sys.argv[3]
{"modbus": hang_modbus, "serial-write": hang_serial_write, "telemetry": hang_telemetry}[TASK]()
del sys.argv[1:4]  # main() reads the board file from argv[1], as from main.py
firmware.main(ROOT)
