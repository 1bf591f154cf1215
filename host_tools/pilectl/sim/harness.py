"""A pty pair with the simulated plant on one end and a MicroPython script on the other.

Used by the driver tests and the bus benchmark: the plant runs in a thread with
its own event loop; the script's JSON lines are read one tick at a time so a test
can inject faults at known ticks.
"""

import asyncio
import json
import os
import subprocess
import threading
import time

from pilectl import MICROPYTHON, REPO, micropython_env
from pilectl.sim.run import Simulation


def await_ptys(socat, paths, owner):
    """Wait until `socat` has made the pty links `paths`; else close `owner` and fail."""
    deadline = time.monotonic() + 5
    while not all(os.path.exists(path) for path in paths):
        if time.monotonic() > deadline or socat.poll() is not None:
            owner.close()
            raise RuntimeError("socat made no pty: is socat installed (make setup)?")
        time.sleep(0.02)


class PtyPair:
    """Two linked ptys from socat, `a` and `b`: a serial cable with nothing in between."""

    def __init__(self, a, b):
        self.a, self.b = str(a), str(b)
        self.socat = subprocess.Popen(["socat", f"pty,raw,echo=0,link={self.a}",
                                       f"pty,raw,echo=0,link={self.b}"],
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL)
        await_ptys(self.socat, (self.a, self.b), self)

    def close(self):
        self.socat.kill()
        self.socat.wait()


class PlantThread:
    """The simulated plant on `plant_end`, in a thread with its own event loop, so the
    caller may block (subprocesses, serial reads) while the plant answers."""

    def __init__(self, sim, plant_end, duration_s=600):
        self.sim = sim
        started = threading.Event()

        def run():
            async def main():
                task = asyncio.create_task(sim.run(plant_end, duration_s=duration_s))
                self.stop = asyncio.Event()
                self._loop = asyncio.get_running_loop()
                started.set()
                await self.stop.wait()
                task.cancel()

            asyncio.run(main())

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        assert started.wait(5)
        time.sleep(0.3)  # the server opens its end of the pty

    def close(self):
        self._loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)


class PlantBench:
    def __init__(self, directory, scenario, script, *args, line_baud=None):
        """Ptys in `directory`; `line_baud` delays replies by their wire time at that baud."""
        self.ptys = PtyPair(directory / "pile", directory / "plant")
        self.pile_end, self.plant_end = self.ptys.a, self.ptys.b
        self.sim = Simulation(scenario)
        self.sim.faults.line_baud = line_baud
        self.result = None
        self.plant = PlantThread(self.sim, self.plant_end)
        self.proc = subprocess.Popen([str(MICROPYTHON), script, self.pile_end, *args], cwd=REPO,
                                     env=micropython_env(REPO / "firmware"),
                                     stdout=subprocess.PIPE, text=True)

    def ticks(self):
        for line in self.proc.stdout:
            yield json.loads(line)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.plant.close()
        self.ptys.close()
