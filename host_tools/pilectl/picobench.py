"""The virtual bench on an emulated Raspberry Pi Pico (pilectl.boardbench).

The official rp2 MicroPython on the emulated RP2040 (pilectl.pico), the firmware put on
it with `pilectl deploy` over its USB serial (the raw REPL), the simulated plant on
UART0 (the RS485 bus, GP0/GP1), the technician's and the aggregator's serial link on
UART1 (GP4/GP5; a Pico has no Wi-Fi), the E-stop loop on GP15 driven from the host.
"""

import asyncio
import json

from pilectl.boardbench import ROOT, DeployedBench
from pilectl.pico import Pico, PicoError, firmware_image

BOARD = ROOT / "boards" / "pico.json"


class PicoBench(DeployedBench):
    """`await bench.start()`; `bench.pico` is the board, `bench.deployed` the deploy's
    report. Setpoints go over the serial link (`aggregator()`): no TCP on a Pico."""

    target = "rp2"
    board_file = BOARD
    hal = "rp2"

    def __init__(self, directory, scenario, key=True, firmware=None, layout="stock",
                 flash_timing=False):
        super().__init__(directory, scenario, key=key, firmware=firmware)
        self.layout = layout  # stock (.mpy on littlefs), romfs or frozen: pilectl.pico
        self.flash_timing = flash_timing  # flash writes take the chip's time: pilectl.pico
        self.pico = None
        self._since = None  # the runner's counters when the scenario began

    @property
    def serial_device(self):
        return self.pico.uart1

    @property
    def repl(self):
        return self.pico.usb

    async def start(self):
        await super().start()
        self._since = dict(self.pico.stats(), periods=(await self.diagnostics())["periods"])
        return self

    async def figures(self):
        """Since the scenario began: the share of emulated time the RP2040's core ran (not
        waiting for an interrupt), that time per control period, and how closely emulated
        time kept to wall time; the heap free after the last collection and the lowest
        (DIAGNOSTICS). Then, the firmware stopped, the board's own timings and heap
        (DeployedBench.measure_on_board)."""
        now = self.pico.stats()
        counters = await self.diagnostics()
        emulated = now["emulated_ns"] - self._since["emulated_ns"]
        busy = emulated - (now["idle_ns"] - self._since["idle_ns"])
        wall_ns = (now["wall_ms"] - self._since["wall_ms"]) * 1e6
        periods = counters["periods"] - self._since["periods"]
        found = {"layout": self.layout, "cpu_busy_pct": round(100 * busy / emulated, 1),
                 "cpu_per_period_ms": round(busy / max(1, periods) / 1e6, 2),
                 "emulated_per_wall": round(emulated / wall_ns, 3),
                 "heap_low": counters["heap_low"]}
        await self.stop_firmware()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(None, self.interrupt)
        found.update(await loop.run_in_executor(None, self.measure_on_board))
        found["heap_live"] = found["heap_total"] - counters["heap_free"]
        return found

    async def _power_on(self):
        (self.dir / "pico" / "flash.img").unlink(missing_ok=True)  # a fresh board every bench
        self.pico = Pico(self.dir / "pico", firmware_image(self.layout),
                         flash_timing=self.flash_timing)
        self.pico.start()
        self.board_path.write_text(json.dumps(self.board()))
        self._sim_task = asyncio.create_task(self.sim.run(self.pico.uart0, duration_s=86400))
        await self.start_firmware()

    def deploy(self):
        try:
            return self.pico.deploy(self.board_path, self.firmware_dir, layout=self.layout)
        except PicoError as exc:
            raise RuntimeError(str(exc)) from None

    async def stop(self):
        try:
            await super().stop()
        finally:
            if self.pico is not None:
                self.pico.stop()
