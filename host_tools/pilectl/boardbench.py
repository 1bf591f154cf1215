"""The virtual bench on an emulated board: the path a real board takes.

The board's official MicroPython build in its emulator, the firmware put on it with
`pilectl deploy` over its REPL port, the simulated plant on its RS485 UART, the
technician on its serial link. The same scenarios, oracle and keys as the unix-port bench
(pilectl.vbench); pilectl.picobench (an RP2040) and pilectl.esp32bench (an ESP32 on
Wi-Fi) say what differs.
"""

import asyncio
import json
import re
import subprocess
import threading
from pathlib import Path

import serial

from pilectl import MPREMOTE
from pilectl.deploy import FEED_WATCHDOG
from pilectl.vbench import VirtualBench

ROOT = Path(__file__).resolve().parents[2]  # the checkout: bench/ holds the scripts

# Each measurement runs after a soft reset, so the heap holds only the REPL and what the
# script makes; the firmware's watchdog is fed as pilectl deploy feeds it.
_HEAP = """
import gc
gc.collect()
free = gc.mem_free()
total = free + gc.mem_alloc()
import pile.firmware, pile.hal.%s
gc.collect()
print('HEAP', total, free, free - gc.mem_free())
"""


class DeployedBench(VirtualBench):
    """`await bench.start()`; `bench.deployed` is the deploy's report. Subclasses give
    `board_file`, `hal` (the port's HAL module), `repl` (the REPL's device) and
    `serial_device` (the pile's serial link), and power the board on in `_power_on`."""

    board_file = None
    hal = None

    def __init__(self, directory, scenario, key=True, firmware=None):
        super().__init__(directory, scenario, key=key, firmware=firmware)
        self.deployed = None
        self._console = None

    def board(self):
        board = json.loads(self.board_file.read_text())
        board.update(pile_id="bench-001", **self.scenario.get("board", {}))
        return board

    @property
    def repl(self):
        raise NotImplementedError

    async def start(self):
        await super().start()
        self.sim.start_clock()  # the deploy took a while: the scenario starts now
        return self

    def deploy(self):
        """Deploy onto the board and wait for the firmware's start-up line: the report."""
        raise NotImplementedError

    async def technician(self):
        return await self.serial(self.key, self.technician_key)

    async def aggregator(self):
        """The aggregator's client: the serial link, signed with the link key."""
        return await self.serial(self.key)

    async def start_firmware(self, script=None, script_args=()):
        """Deploy the firmware over the REPL port and wait for its start-up line."""
        if script is not None:
            raise ValueError("an emulated board runs the deployed firmware only")
        self.deployed = await asyncio.get_running_loop().run_in_executor(None, self.deploy)
        self.machine = self.deployed["machine"]
        pile_id, version = self.deployed["banner"]
        self.firmware_output.append(f"pile {pile_id} firmware {version} running")
        self._console = Console(self.repl, self.firmware_output)

    async def stop_firmware(self):
        if self._console is not None:
            self._console.close()
            self._console = None

    def interrupt(self):
        """Stop the running firmware at the REPL: it goes to its service mode."""
        from pilectl import deploy

        try:
            deploy.interrupt(self.repl)
        except deploy.DeployError as exc:
            raise RuntimeError(str(exc)) from None

    async def diagnostics(self):
        client = await self.technician()
        try:
            return await client.diagnostics()
        finally:
            await client.close()

    def measure_on_board(self):
        """With the firmware stopped: a decision, a signed SETPOINT handled and a TELEMETRY
        sent, timed on the board (bench/decide_bench.py, bench/protocol_bench.py), and
        the heap at boot and after the firmware's imports."""
        decide = self.run_on_board(bench_source("decide_bench", 500))
        protocol = self.run_on_board(bench_source("protocol_bench", 40))
        heap = self.run_on_board(_HEAP % self.hal)
        total, boot, imports = (int(v) for v in re.search(r"HEAP (\d+) (\d+) (\d+)",
                                                           heap).groups())
        result = json.loads(protocol.strip().splitlines()[-1])
        return {"decide_us": float(re.search(r"time per decision: ([\d.]+) us", decide)[1]),
                "decide_alloc_b": int(re.search(r"allocated per decision: (\d+)", decide)[1]),
                "setpoint_us": round(result["request_us"]),
                "telemetry_us": round(result["telemetry_us"]),
                "heap_total": total, "heap_boot_free": boot, "heap_imports": imports}

    def run_on_board(self, code):
        """`code` on the board with mpremote, after a soft reset; its output."""
        done = subprocess.run([str(MPREMOTE), "connect", self.repl, "exec",
                               FEED_WATCHDOG + code],
                              capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"on the emulated board: {done.stdout[-500:]}"
                               f"{done.stderr[-500:]}")
        return done.stdout


class Console(threading.Thread):
    """What the firmware prints on the REPL port, line by line, into `lines`."""

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
    """A bench script's source for `mpremote exec`: the MCU ports have no sys.argv, so the
    count is given in its place."""
    source = (ROOT / "bench" / f"{name}.py").read_text()
    return f"ARGV = [{name!r}, {str(count)!r}]\n" + source.replace("sys.argv", "ARGV")
