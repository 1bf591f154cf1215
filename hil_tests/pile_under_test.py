"""What a HIL test holds: a pile (virtual or real), its plant, and authenticated clients."""

import asyncio

from pile import config
from pile.control import STATE_IDLE
from pilectl import field, wire
from pilectl.client import Client, LinkError, PileError
from pilectl.pico import send_command
from pilectl.sim.run import Simulation
from pilectl.vbench import VirtualBench

# A quiet evening: plugged in at 60 %, 3 kW of household load, a 16 kW connection.
SCENARIO = {
    "name": "hil",
    "plant": {"capacity_kwh": 5.0, "soc": 0.60},
    "load_w": [[0, 3000]],
    "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000,
               "telemetry_period_s": 1},
    "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000},
}
RATED = 11000


class PileUnderTest:
    """Common helpers; subclasses provide the pile, its plant and its clients."""

    sim: Simulation
    client: Client

    @property
    def plant(self):
        return self.sim.plant

    @property
    def faults(self):
        return self.sim.faults

    def violations(self):
        return self.sim.oracle.summary()

    def load(self, watts):
        self.plant.load_w = lambda t: watts

    def control_writes(self):
        """From now on, (time, registers) of every control-block write, as the plant sees it."""
        return self.plant.control_writes()

    events_from = 0  # the index of the first event this test logged

    async def events(self):
        """The event entries [index, uptime, code, value] logged since the pile was opened
        for this test, every page: a board keeps its log from test to test."""
        return await field.event_entries(self.client, self.events_from)

    async def until(self, condition, timeout=8.0, what="the condition"):
        """The first TELEMETRY (as a dict) for which `condition` holds; fails after `timeout`."""
        deadline = asyncio.get_running_loop().time() + timeout
        last = None
        while asyncio.get_running_loop().time() < deadline:
            last = await self.client.telemetry()
            if condition(last):
                return last
        raise AssertionError(f"{what} did not happen within {timeout} s; last telemetry: {last}")


class VirtualPile(PileUnderTest):
    @classmethod
    async def open(cls, directory, scenario=SCENARIO):
        self = cls()
        self.bench = VirtualBench(directory, scenario)
        await self.bench.start()
        self.sim = self.bench.sim
        self.client = await self.bench.tcp(technician=True)
        await self.until(lambda t: t["state"] == STATE_IDLE and t["site_w"] is not None,
                         what="the pile settling idle with a meter reading")
        return self

    @property
    def key(self):
        return self.bench.key

    async def tcp(self, key=None):
        return await self.bench.tcp(key=key)

    async def aggregator(self):
        """The aggregator's link: TCP, as over Wi-Fi."""
        return await self.bench.tcp()

    async def serial(self, key=None, technician=True):
        """A client on the wired link, the technician's unless `technician` is False."""
        return await self.bench.serial(key=key if key is not None else self.bench.key,
                                       technician_key=self.bench.technician_key
                                       if technician else None)

    def press_estop(self, pressed=True):
        path = self.bench.dir / "estop"
        if pressed:
            path.touch()
        else:
            path.unlink()

    async def reboot_and_reconnect(self):
        """COMMAND 2, wait for the firmware to leave, start it again, connect again."""
        await self.client.command("reboot")
        code = await asyncio.wait_for(self.bench.firmware.wait(), 5)
        assert code == 3, f"the firmware exited with {code}, not 3 (reboot)"
        await self.client.close()
        await self.bench.start_firmware()
        self.client = await self.bench.tcp(technician=True)

    async def close(self):
        await self.client.close()
        await self.bench.stop()


class BoardPile(PileUnderTest):
    """A real board: the plant runs here on the RS485 adapter, the link is its serial port.

    The session's first test provisions `key` on a board that has none; every later one
    finds it there and reboots the board, so each test starts from a fresh boot (no
    setpoint, no latch) with the default config and the suite's, as on the virtual bench;
    `events()` gives the entries logged since."""

    @classmethod
    async def open(cls, port, bus, key, scenario=SCENARIO, estop=None):
        """`estop` (HOST:PORT/PIN): an emulated Pico's control port and E-stop input."""
        self = cls()
        self.estop = estop
        self.sim = Simulation(scenario)
        self._sim_task = asyncio.create_task(self.sim.run(bus, duration_s=86400))
        self.port = port
        self.key = key
        wired = None
        try:
            wired = await Client.serial(port, key=None)
            await wired.provision_key(key)
        except (LinkError, PileError):  # it signs: an earlier test of this session gave it
            if wired is not None:  # the key (the HELLO is signed, or the change refused)
                await wired.close()
            wired = await self.serial()
            booted = wired.hello
            await wired.command("reboot")
            await wired.close()
            wired = await self._after_reboot(booted)
        self.client = wired
        # every key back to its default (a board keeps its config from the last test, a
        # fallback to charge, say), then the suite's; only those that differ, as all of
        # them no longer fit one frame
        wanted = {**config.defaults(), **scenario["config"]}
        now = await wired.config_get()
        changes = {key: value for key, value in wanted.items() if now.get(key) != value}
        if changes:
            await wired.config_set(changes)
        await self.until(lambda t: t["state"] == STATE_IDLE and t["site_w"] is not None,
                         what="the pile settling idle with a meter reading")
        self.events_from = (await wired.diagnostics())["event_next"]
        return self

    async def _after_reboot(self, booted, timeout=20.0):
        """A client once the board answers again after a reset: a HELLO with a new boot
        nonce, not the old firmware's, which may still answer before it resets."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            await asyncio.sleep(1)
            try:
                client = await self.serial()
            except LinkError:
                if asyncio.get_running_loop().time() > deadline:
                    raise
                continue
            if client.hello[wire.HELLO_NONCE] != booted[wire.HELLO_NONCE]:
                return client
            await client.close()
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError(f"the board did not reset within {timeout} s")

    async def tcp(self, key=None):
        raise NotImplementedError("the board's TCP link needs Wi-Fi on the bench network")

    async def aggregator(self):
        """The aggregator's link: the serial port (TCP needs Wi-Fi on the bench network)."""
        return await self.serial()

    async def serial(self, key=None):
        return await Client.serial(self.port, key=key if key is not None else self.key)

    def press_estop(self, pressed=True):
        """Open (pressed) or close the E-stop loop: active low, as the board wires it."""
        if self.estop is None:
            raise NotImplementedError("pressing a real E-stop needs a relay on the bench")
        control, _, pin = self.estop.rpartition("/")
        send_command(control, gpio=[int(pin), 0 if pressed else 1])

    async def reboot_and_reconnect(self):
        booted = self.client.hello
        await self.client.command("reboot")
        await self.client.close()
        self.client = await self._after_reboot(booted)

    async def close(self):
        await self.client.close()
        self._sim_task.cancel()
