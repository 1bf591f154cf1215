"""What a HIL test holds: a pile (virtual or real), its plant, and authenticated clients."""

import asyncio

from pile.control import STATE_IDLE
from pilectl.client import Client
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
    """A real board: the plant runs here on the RS485 adapter, the link is the USB serial."""

    @classmethod
    async def open(cls, port, bus, key, scenario=SCENARIO):
        self = cls()
        self.sim = Simulation(scenario)
        self._sim_task = asyncio.create_task(self.sim.run(bus, duration_s=86400))
        self.port = port
        wired = await Client.serial(port, key=None)  # a board without a key (see README)
        await wired.provision_key(key)
        self.key = key
        self.client = wired
        await wired.config_set(scenario["config"])
        return self

    async def tcp(self, key=None):
        raise NotImplementedError("the board's TCP link needs Wi-Fi on the bench network")

    async def serial(self, key=None):
        return await Client.serial(self.port, key=key if key is not None else self.key)

    def press_estop(self, pressed=True):
        raise NotImplementedError("pressing a real E-stop needs a relay on the bench")

    async def reboot_and_reconnect(self):
        await self.client.command("reboot")
        await self.client.close()
        await asyncio.sleep(3)
        self.client = await self.serial()

    async def close(self):
        await self.client.close()
        self._sim_task.cancel()
