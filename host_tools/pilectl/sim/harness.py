"""Pty pairs, the simulated plant in a thread of its own, and the small things benches and
tests need around the processes they start (a free port, a stop that cannot hang).

The plant runs with its own event loop so the caller may block (subprocesses, serial
reads) while it answers.
"""

import asyncio
import contextlib
import os
import socket
import subprocess
import threading
import time


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop_process(process, grace_s=5):
    """Ask `process` to end (SIGTERM), and kill it if it has not within `grace_s`."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def await_ptys(socat, paths, owner):
    """Wait until `socat` has made the pty links `paths`; else close `owner` and fail.
    Interrupted (Ctrl-C), it closes `owner` too: socat never outlives a failed start."""
    deadline = time.monotonic() + 5
    try:
        while not all(os.path.exists(path) for path in paths):
            if time.monotonic() > deadline or socat.poll() is not None:
                raise RuntimeError("socat made no pty: is socat installed (make setup)?")
            time.sleep(0.02)
    except BaseException:
        owner.close()
        raise


def clear_links(*paths):
    """Remove pty links an earlier bench left at `paths` before a socat makes new ones: a
    killed socat leaves them, and a live one keeps them pointing at its ptys, so they
    would pass for the new socat's before it replaced them (the plant and the firmware
    could then open ends of different pairs)."""
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


class PtyPair:
    """Two linked ptys from socat, `a` and `b`: a serial cable with nothing in between."""

    def __init__(self, a, b):
        self.a, self.b = str(a), str(b)
        clear_links(self.a, self.b)
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
        if not started.wait(5):
            raise RuntimeError("the simulated plant did not start within 5 s")
        time.sleep(0.3)  # the server opens its end of the pty

    def close(self):
        self._loop.call_soon_threadsafe(self.stop.set)
        self.thread.join(5)
