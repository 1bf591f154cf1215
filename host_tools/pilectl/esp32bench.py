"""The virtual bench on an emulated ESP32 over its emulated Wi-Fi (pilectl.boardbench).

The official ESP32 MicroPython in the Wi-Fi QEMU (pilectl.esp32), the firmware put on it
with `pilectl deploy` over UART0 (the REPL), the simulated plant on UART2 (the RS485
bus), the technician on the serial link (UART1), and the aggregator's signed setpoints
over Wi-Fi by TCP: the board joins the emulated access point and the host reaches its
link port through QEMU's user network (`hostfwd`), nothing else.

A blank emulated ESP32 takes minutes to take a whole deploy (its flash is slow:
docs/esp32.md), so the bench programs the board's flash with the firmware first, as a
factory does, and `pilectl deploy` copies what differs; `fresh=True` deploys onto a
blank board instead.
"""

import asyncio
import json

from pilectl.boardbench import ROOT, DeployedBench
from pilectl.esp32 import Esp32

BOARD = ROOT / "boards" / "esp32.json"


class Esp32Bench(DeployedBench):
    """`await bench.start()`; `bench.esp32` is the board."""

    target = "esp32"
    board_file = BOARD
    hal = "esp32"

    def __init__(self, directory, scenario, key=True, firmware=None, fresh=False):
        super().__init__(directory, scenario, key=key, firmware=firmware)
        self.fresh = fresh
        self.esp32 = None

    @property
    def serial_device(self):
        return self.esp32.uart1

    @property
    def repl(self):
        return self.esp32.uart0

    async def _power_on(self):
        board = self.board()
        self.board_path.write_text(json.dumps(board))
        self.esp32 = Esp32(self.dir / "esp32", listen=[board["link"]["tcp_port"]])
        self.esp32.flash.unlink(missing_ok=True)  # a fresh board every bench
        if not self.fresh:
            self.esp32.program(self.board_path, self.firmware_dir)
        await asyncio.get_running_loop().run_in_executor(None, self.esp32.start)
        self.tcp_port = self.esp32.listening[board["link"]["tcp_port"]]
        self._sim_task = asyncio.create_task(self.sim.run(self.esp32.uart2, duration_s=86400))
        await self.start_firmware()

    def deploy(self):
        """Esp32Error, a RuntimeError, is what the bench's caller reports."""
        if self.fresh:
            return self.esp32.deploy(self.board_path, self.firmware_dir)
        return self.esp32.programmed()

    async def aggregator(self):
        """The aggregator's client: TCP over the board's Wi-Fi, signed with the link key;
        the pile joins the access point and opens TCP once it has its key."""
        return await self.tcp(wait_s=60)

    async def figures(self):
        """The heap free after the last collection and the lowest (DIAGNOSTICS); then, the
        firmware stopped, the board's own timings and heap (measure_on_board)."""
        counters = await self.diagnostics()
        found = {"heap_low": counters["heap_low"]}
        await self.stop_firmware()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.interrupt)
        found.update(await loop.run_in_executor(None, self.measure_on_board))
        found["heap_live"] = found["heap_total"] - counters["heap_free"]
        return found

    async def stop(self):
        try:
            await super().stop()
        finally:
            if self.esp32 is not None:
                self.esp32.stop()
