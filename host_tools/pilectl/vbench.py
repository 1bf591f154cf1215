"""The virtual bench: the whole pile off the board, through its real interfaces.

Two pty pairs (the RS485 bus and the serial link), the simulated plant with its
oracle on the bus, the firmware (firmware/main.py) on the MicroPython unix port,
and host clients on the serial link and on TCP 127.0.0.1. Used by `pilectl bench`
and by the HIL suite (hil_tests/) when no real board is given.
"""

import asyncio
import contextlib
import json
import secrets
import shutil
from pathlib import Path

from pilectl import FIRMWARE, MICROPYTHON, firmware_path, micropython_env
from pilectl.client import Client, LinkError
from pilectl.sim.harness import PtyPair, free_port
from pilectl.sim.run import Simulation

_START_S = 10  # for the firmware's "running" line


def unix_board(pile_id, bus, link=None, tcp_port=None, **more):
    """A unix-port board file: the pile's ends of the bus and link ptys, the plant's units.

    TCP, when asked for, listens on 127.0.0.1 only: a bench never serves the network.
    """
    board = {"board": "unix_sim", "pile_id": pile_id,
             "modbus": {"device": bus, "baud": 115200, "converter_unit": 1, "meter_unit": 2},
             "link": {}, **more}
    if link is not None:
        board["link"].update(device=link, baud=115200)
    if tcp_port is not None:
        board["link"].update(tcp_port=tcp_port, tcp_host="127.0.0.1")
    return board


class VirtualBench:
    """Start with `await bench.start()`; `bench.sim` is the plant, `bench.key` the link key
    (the aggregator's), `bench.technician_key` the technician's."""

    target = "unix"  # the MicroPython port the firmware runs on
    machine = None  # what the board says it is, where a deploy asked

    def __init__(self, directory, scenario, key=True, heapsize=None, firmware=None):
        """`firmware` is a directory with main.py, pile/ and profiles/ (default: the
        firmware sources pilectl came with; pilectl.build makes the .mpy build a board
        gets)."""
        self.dir = Path(directory).resolve()  # the firmware runs in it
        self.dir.mkdir(parents=True, exist_ok=True)
        self.scenario = scenario
        self.key = secrets.token_bytes(32) if key is True else key
        self.technician_key = secrets.token_bytes(32) if self.key is not None else None
        self.heapsize = heapsize
        # absolute: the firmware runs in self.dir, where a path relative to the caller's
        # directory (make soak's bench-out/soak/firmware-mpy) names nothing
        self.firmware_dir = Path(firmware).resolve() if firmware else FIRMWARE
        self.sim = Simulation(scenario)
        self.tcp_port = free_port()
        self.board_path = self.dir / "board.json"
        self.firmware = None
        self.firmware_output = []
        self._ptys = []
        self._sim_task = None
        self._reader = None

    def board(self):
        bus, link = self._ptys
        board = unix_board("bench-001", bus.a, link.a, tcp_port=self.tcp_port,
                           estop_file=str(self.dir / "estop"),
                           state_dir=str(self.dir / "state"))
        board.update(self.scenario.get("board", {}))
        return board

    async def start(self):
        """Power on and provision. A start that fails or is interrupted (an error, Ctrl-C,
        a firmware that does not start) stops what it had started before it raises: the
        caller has nothing to clean up."""
        try:
            await self._power_on()
            await self._provision()
        except BaseException:
            await self._stop_after_failed_start()
            raise
        return self

    async def _stop_after_failed_start(self):
        with contextlib.suppress(Exception):  # the start's own error is the one to report
            await self.stop()

    async def _power_on(self):
        """The wiring, the plant on the bus, the firmware running."""
        shutil.rmtree(self.dir / "state", ignore_errors=True)  # a fresh pile every bench
        self._ptys = []  # kept one by one: stop() closes those made before a failure
        self._ptys.append(PtyPair(self.dir / "bus-pile", self.dir / "bus-plant"))
        self._ptys.append(PtyPair(self.dir / "link-pile", self.dir / "link-host"))
        self.board_path.write_text(json.dumps(self.board()))
        self._sim_task = asyncio.create_task(self.sim.run(self._ptys[0].b, duration_s=86400))
        await self.start_firmware()

    async def _provision(self):
        """The keys over the wired link, as a technician does; then the scenario's config."""
        if self.key is not None:
            wired = await self.serial()
            try:
                await wired.provision_key(self.key)
                await wired.provision_key(self.technician_key, technician=True)
            finally:
                await wired.close()
        config = self.scenario.get("config")
        if config:
            client = await self.technician()
            try:
                await client.config_set(config)
            finally:
                await client.close()

    async def technician(self):
        """A client with the technician's key (and the link key)."""
        return await self.tcp(technician=True)

    async def figures(self):
        """What the target measures of itself for the summary, once the scenario has run:
        nothing on the unix port."""
        return {}

    async def start_firmware(self, script=None, script_args=()):
        """Start (or restart, after `stop_firmware`) the firmware process and wait for it:
        main.py, or another `script` given `script_args` before the board file's path."""
        args = [str(MICROPYTHON)]
        if self.heapsize:
            args += ["-X", f"heapsize={self.heapsize}"]
        args += [str(script or self.firmware_dir / "main.py"), *script_args]
        self.firmware = await asyncio.create_subprocess_exec(
            *args, str(self.board_path), cwd=self.dir,
            env=micropython_env(*firmware_path(self.firmware_dir)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        try:
            line = await asyncio.wait_for(self.firmware.stdout.readline(), _START_S)
        except TimeoutError:
            line = b""
        except BaseException:
            await self.stop_firmware()
            raise
        self.firmware_output.append(line.decode().rstrip())
        if b"running" not in line:
            raise RuntimeError(await self._failed_start(line))
        self._reader = asyncio.create_task(self._collect())

    async def _failed_start(self, line):
        """The firmware did not say it runs: end it (it may still be booting, or hung)
        and say what it said and what to check."""
        try:
            await asyncio.wait_for(self.firmware.wait(), 2)  # a traceback being written
        except TimeoutError:
            pass
        running = self.firmware.returncode is None
        await self.stop_firmware()
        said = (line + await self.firmware.stdout.read()).decode(errors="replace").strip()
        self.firmware_output += said.splitlines()[1:]
        how = (f"said nothing of running within {_START_S:g} s and was stopped" if running
               else f"exited with status {self.firmware.returncode}")
        return (f"the firmware did not start: it {how}; its output:\n"
                f"{said or '(nothing)'}\n"
                f"Check the firmware tree ({self.firmware_dir}: main.py, pile/ and profiles/, "
                f"--firmware) and the heap (--heapsize {self.heapsize or 'default'}: a "
                "MemoryError wants more).")

    async def _collect(self):
        async for line in self.firmware.stdout:
            self.firmware_output.append(line.decode().rstrip())

    async def stop_firmware(self):
        if self.firmware is not None and self.firmware.returncode is None:
            self.firmware.kill()
            await self.firmware.wait()
        if self._reader is not None:
            self._reader.cancel()

    @property
    def serial_device(self):
        """The host's end of the pile's serial link (a pty), for a host program to open."""
        return self._ptys[1].b

    async def serial(self, key=None, technician_key=None):
        return await Client.serial(self.serial_device, key=key, technician_key=technician_key)

    async def aggregator(self):
        """The aggregator's client: TCP, signed with the link key."""
        return await self.tcp()

    async def tcp(self, key=None, wait_s=3.0, technician=False):
        """A TCP client, the aggregator's (the link key), or with `technician` the
        technician's too; the pile opens TCP within a second of getting its key."""
        deadline = asyncio.get_running_loop().time() + wait_s
        tech = self.technician_key if technician else None
        while True:
            try:
                return await Client.tcp("127.0.0.1", self.tcp_port, key=key or self.key,
                                        technician_key=tech)
            except LinkError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                await asyncio.sleep(0.2)

    async def stop(self):
        """Stop everything that started, even after a failed start; re-raise a plant error."""
        try:
            await self.stop_firmware()
            if self._sim_task is not None:
                self._sim_task.cancel()
                (outcome,) = await asyncio.gather(self._sim_task, return_exceptions=True)
                if not isinstance(outcome, asyncio.CancelledError | type(None)):
                    raise RuntimeError(f"the simulated plant failed: {outcome!r}") from outcome
        finally:
            for ptys in self._ptys:
                ptys.close()
