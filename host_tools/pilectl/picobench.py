"""The virtual bench on an emulated Raspberry Pi Pico: the path a real board takes.

The official rp2 MicroPython on the emulated RP2040 (pilectl.pico), the firmware put on
it with `pilectl deploy` over its USB serial (the raw REPL), the simulated plant on
UART0 (the RS485 bus, GP0/GP1), the technician's and the aggregator's serial link on
UART1 (GP4/GP5; a Pico has no Wi-Fi), the E-stop loop on GP15 driven from the host.
The same scenarios, oracle and keys as the unix-port bench (pilectl.vbench).
"""

import asyncio
import json
import threading
from pathlib import Path

import serial

from pilectl.client import Client
from pilectl.pico import Pico, PicoError
from pilectl.vbench import VirtualBench

BOARD = Path(__file__).resolve().parents[2] / "boards" / "pico.json"


class PicoBench(VirtualBench):
    """`await bench.start()`; `bench.pico` is the board, `bench.deployed` the deploy's
    report. Setpoints go over the serial link (`aggregator()`): no TCP on a Pico."""

    target = "rp2"

    def __init__(self, directory, scenario, key=True, firmware=None):
        super().__init__(directory, scenario, key=key, firmware=firmware)
        self.pico = None
        self.deployed = None
        self._console = None
        self._since = None  # the runner's counters when the scenario began

    def board(self):
        board = json.loads(BOARD.read_text())
        board.update(pile_id="bench-001", **self.scenario.get("board", {}))
        return board

    @property
    def serial_device(self):
        return self.pico.uart1

    async def start(self):
        await super().start()
        self.sim.start_clock()  # the deploy took a while: the scenario starts now
        self._since = self.pico.stats()
        return self

    def figures(self):
        """Since the scenario began: the share of emulated time the RP2040's core ran
        (not waiting for an interrupt), and how closely emulated time kept to wall time."""
        now = self.pico.stats()
        emulated = now["emulated_ns"] - self._since["emulated_ns"]
        idle = now["idle_ns"] - self._since["idle_ns"]
        wall_ns = (now["wall_ms"] - self._since["wall_ms"]) * 1e6
        return {"cpu_busy_pct": round(100 * (emulated - idle) / emulated, 1),
                "emulated_per_wall": round(emulated / wall_ns, 3)}

    async def _power_on(self):
        (self.dir / "pico" / "flash.img").unlink(missing_ok=True)  # a fresh board every bench
        self.pico = Pico(self.dir / "pico")
        self.pico.start()
        self.board_path.write_text(json.dumps(self.board()))
        self._sim_task = asyncio.create_task(self.sim.run(self.pico.uart0, duration_s=86400))
        await self.start_firmware()

    async def technician(self):
        return await self.serial(self.key, self.technician_key)

    async def start_firmware(self, script=None, script_args=()):
        """Deploy the firmware over the USB serial and wait for its start-up line."""
        if script is not None:
            raise ValueError("an emulated Pico runs the deployed firmware only")
        loop = asyncio.get_running_loop()
        try:
            self.deployed = await loop.run_in_executor(
                None, self.pico.deploy, self.board_path, self.firmware_dir)
        except PicoError as exc:
            raise RuntimeError(str(exc)) from None
        self.machine = self.deployed["machine"]
        pile_id, version = self.deployed["banner"]
        self.firmware_output.append(f"pile {pile_id} firmware {version} running")
        self._console = _Console(self.pico.usb, self.firmware_output)

    async def stop_firmware(self):
        if self._console is not None:
            self._console.close()
            self._console = None

    async def aggregator(self):
        """The aggregator's client: the serial link, signed with the link key."""
        return await Client.serial(self.serial_device, key=self.key)

    async def stop(self):
        try:
            await super().stop()
        finally:
            if self.pico is not None:
                self.pico.stop()


class _Console(threading.Thread):
    """What the firmware prints on the USB console, line by line, into `lines`."""

    def __init__(self, port, lines):
        super().__init__(daemon=True)
        self.port = serial.Serial(port, 115200, timeout=0.2)
        self.lines = lines
        self.stopping = False
        self.start()

    def run(self):
        pending = b""
        while not self.stopping:
            try:
                pending += self.port.read(256)
            except (serial.SerialException, OSError):
                return
            *done, pending = pending.split(b"\n")
            self.lines.extend(line.decode(errors="replace").rstrip() for line in done)

    def close(self):
        self.stopping = True
        self.join(1)
        self.port.close()
