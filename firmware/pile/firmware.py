"""The pile firmware, started by main.py: `micropython firmware/main.py BOARD_JSON`.

Wires the board's HAL, the Modbus converter and meter, the control loop, the
host link (serial and/or TCP) and telemetry into one asyncio loop. A supervisor
feeds the watchdog only while every task keeps checking in.
"""

import asyncio
import gc
import json
import sys

from micropython import const

from pile import profile
from pile.app import Pile
from pile.clock import ticks_diff, ticks_ms
from pile.control import FAULT, NO_EV, STOPPED
from pile.converter import Converter
from pile.link import Link
from pile.loop import ControlLoop
from pile.meter import Meter
from pile.modbus import Master
from pile.store import Store
from pile.supervisor import Supervisor

_WATCHDOG_MS = const(8000)  # within the RP2040's 8.3 s; every task checks in far more often
_REBOOT_DELAY_MS = const(300)  # lets the ACK of COMMAND 2 leave first


def load_board(path):
    with open(path) as f:
        return json.load(f)


def hal_for(board, root):
    if "device" in board["modbus"]:  # devices by path: the unix port
        from pile.hal import unix

        return unix.Board(board, root)
    if board["board"].startswith("esp32"):
        from pile.hal import esp32

        return esp32.board(board)
    from pile.hal import rp2

    return rp2.board(board)


class Firmware:
    def __init__(self, board, root="."):
        self.board = board
        hal = hal_for(board, root)
        self.pile = Pile(board["pile_id"], Store(board.get("state_dir", "state")))
        bus = board["modbus"]
        master = Master(hal.rs485("modbus"), bus["baud"])
        converter_spec = profile.load(bus.get("converter_profile", "generic-v2g"), hal.profiles)
        self.converter = Converter(master, converter_spec, self.pile.tel, bus.get("converter_unit"))
        meter = None
        if bus.get("meter_unit") is not None:
            meter_spec = profile.load(bus.get("meter_profile", "sdm630"), hal.profiles)
            meter = Meter(master, meter_spec, bus["meter_unit"])
        self.loop = ControlLoop(self.pile, self.converter, meter, hal.estop())
        link = board.get("link", {})
        self.link = Link(self.pile, insecure=board.get("insecure", False))
        self.link_stream = hal.link_stream()
        self.tcp_port = link.get("tcp_port")
        self.hal = hal
        self.wdt = hal.watchdog(_WATCHDOG_MS)
        self.supervisor = Supervisor(self.wdt)
        self.wifi = hal.wifi()
        self.contactor = hal.output("contactor_pin")
        self.led = hal.output("status_led_pin")

    def show(self, state, tick):
        """Contactor closed unless stopped, faulted or without an EV (opened after the tick's
        0 W write); the status LED blinks while all is well and stays lit otherwise."""
        held = state in (STOPPED, FAULT, NO_EV)
        if self.contactor is not None:
            self.contactor.value(0 if held else 1)
        if self.led is not None:
            self.led.value(1 if state in (STOPPED, FAULT) else tick & 1)

    def service_mode(self):
        """Stopped at the REPL: the converter told to stop (its own heartbeat watchdog
        would stop it within 5 s anyway), the contactor open, the board's watchdog fed by
        a timer until the next reset."""
        asyncio.run(self.converter.command(0, False))
        if self.contactor is not None:
            self.contactor.value(0)
        self.hal.service_mode(self.wdt)

    async def control(self):
        token = self.supervisor.task()
        pile = self.pile
        ticks = 0
        while True:
            started = ticks_ms()
            await self.loop.tick()
            ticks = (ticks + 1) & 0xFF
            self.show(pile.ctl.state, ticks)
            self.supervisor.check_in(token)
            if pile.reboot_requested:
                await asyncio.sleep_ms(_REBOOT_DELAY_MS)
                reboot()
            gc.collect()  # at a quiet point, so the heap never fragments into a failure
            period = pile.cfg.tick_ms
            await asyncio.sleep_ms(max(0, period // 2 - ticks_diff(ticks_ms(), started)))
            await self.loop.watch()
            await asyncio.sleep_ms(max(0, period - ticks_diff(ticks_ms(), started)))

    async def telemetry(self):
        token = self.supervisor.task()
        while True:
            await asyncio.sleep_ms(self.pile.cfg.telemetry_period_s * 1000)
            await self.link.broadcast_telemetry()
            self.supervisor.check_in(token)

    async def run(self):
        tasks = [asyncio.create_task(self.control()), asyncio.create_task(self.telemetry())]
        if self.link_stream is not None:
            stream = self.link_stream
            tasks.append(asyncio.create_task(self.link.serve_serial(stream, stream)))
        if self.tcp_port is not None:
            tasks.append(asyncio.create_task(self.link.run_tcp(self.tcp_port, on_refused=say)))
        if self.wifi is not None:  # not supervised: a missing access point is no hang
            tasks.append(asyncio.create_task(self.wifi.keep_connected()))
        say("pile %s firmware %s running" % (self.pile.pile_id, self.pile.version))
        await asyncio.gather(*tasks)


def say(message):
    print(message)


def reboot():
    import machine

    if hasattr(machine, "reset"):
        machine.reset()
    sys.exit(3)  # the unix port's machine cannot reset: the bench restarts the process


def main(root):
    """Run the pile from the board file named on the command line (/board.json on a board)."""
    path = sys.argv[1] if len(sys.argv) > 1 else "/board.json"
    firmware = Firmware(load_board(path), root)
    gc.collect()  # start the loop with only what stays
    try:
        asyncio.run(firmware.run())
    except KeyboardInterrupt:  # Ctrl-C on the USB REPL: a technician or `pilectl deploy`
        firmware.service_mode()
        say("firmware stopped; at the REPL until reset")
        raise
