"""The virtual bench on an emulated Raspberry Pi Pico: the path a real board takes.

The official rp2 MicroPython on the emulated RP2040 (pilectl.pico), the firmware put on
it with `pilectl deploy` over its USB serial (the raw REPL), the simulated plant on
UART0 (the RS485 bus, GP0/GP1), the technician's and the aggregator's serial link on
UART1 (GP4/GP5; a Pico has no Wi-Fi), the E-stop loop on GP15 driven from the host.
The same scenarios, oracle and keys as the unix-port bench (pilectl.vbench).
"""

import asyncio
import json
import re
import subprocess
import threading
from pathlib import Path

import serial

from pilectl import MPREMOTE
from pilectl.client import Client
from pilectl.deploy import FEED_WATCHDOG
from pilectl.pico import Pico, PicoError, firmware_image
from pilectl.vbench import VirtualBench

ROOT = Path(__file__).resolve().parents[2]
BOARD = ROOT / "boards" / "pico.json"
# Each measurement runs after a soft reset, so the heap holds only the REPL and what the
# script makes; the firmware's watchdog is fed as pilectl deploy feeds it.
_HEAP = """
import gc
gc.collect()
free = gc.mem_free()
total = free + gc.mem_alloc()
import pile.firmware, pile.hal.rp2
gc.collect()
print('HEAP', total, free, free - gc.mem_free())
"""


class PicoBench(VirtualBench):
    """`await bench.start()`; `bench.pico` is the board, `bench.deployed` the deploy's
    report. Setpoints go over the serial link (`aggregator()`): no TCP on a Pico."""

    target = "rp2"

    def __init__(self, directory, scenario, key=True, firmware=None, layout="stock"):
        super().__init__(directory, scenario, key=key, firmware=firmware)
        self.layout = layout  # stock (.mpy on littlefs), romfs or frozen: pilectl.pico
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
        self._since = dict(self.pico.stats(), periods=(await self._diagnostics())["periods"])
        return self

    async def figures(self):
        """Since the scenario began: the share of emulated time the RP2040's core ran (not
        waiting for an interrupt), that time per control period, and how closely emulated
        time kept to wall time; the heap free after the last collection and the lowest
        (DIAGNOSTICS). Then, the firmware stopped: a decision, a signed SETPOINT handled
        and a TELEMETRY sent, timed on the board (bench/decide_bench.py,
        bench/protocol_bench.py), and the heap at boot and after the firmware's imports."""
        now = self.pico.stats()
        counters = await self._diagnostics()
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
        await loop.run_in_executor(None, self.pico.interrupt)
        found.update(await loop.run_in_executor(None, self._measure_on_board))
        found["heap_live"] = found["heap_total"] - counters["heap_free"]
        return found

    async def _diagnostics(self):
        client = await self.technician()
        try:
            return await client.diagnostics()
        finally:
            await client.close()

    def _measure_on_board(self):
        decide = self._run_on_board(bench_source("decide_bench", 500))
        protocol = self._run_on_board(bench_source("protocol_bench", 40))
        heap = self._run_on_board(_HEAP)
        total, boot, imports = (int(v) for v in re.search(r"HEAP (\d+) (\d+) (\d+)",
                                                           heap).groups())
        result = json.loads(protocol.strip().splitlines()[-1])
        return {"decide_us": float(re.search(r"time per decision: ([\d.]+) us", decide)[1]),
                "decide_alloc_b": int(re.search(r"allocated per decision: (\d+)", decide)[1]),
                "setpoint_us": round(result["request_us"]),
                "telemetry_us": round(result["telemetry_us"]),
                "heap_total": total, "heap_boot_free": boot, "heap_imports": imports}

    def _run_on_board(self, code):
        """`code` on the board with mpremote, after a soft reset; its output."""
        done = subprocess.run([str(MPREMOTE), "connect", self.pico.usb, "exec",
                               FEED_WATCHDOG + code],
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"on the emulated Pico: {done.stdout[-500:]}{done.stderr[-500:]}")
        return done.stdout

    async def _power_on(self):
        (self.dir / "pico" / "flash.img").unlink(missing_ok=True)  # a fresh board every bench
        self.pico = Pico(self.dir / "pico", firmware_image(self.layout))
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
                None, lambda: self.pico.deploy(self.board_path, self.firmware_dir,
                                               layout=self.layout))
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


def bench_source(name, count):
    """A bench script's source for `mpremote exec`: the rp2 port has no sys.argv, so the
    count is given in its place."""
    source = (ROOT / "bench" / f"{name}.py").read_text()
    return f"ARGV = [{name!r}, {str(count)!r}]\n" + source.replace("sys.argv", "ARGV")
