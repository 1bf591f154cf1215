"""Field updates on the emulated Raspberry Pi Pico: the official rp2 MicroPython in
rp2040js (pilectl.pico), the firmware deployed over its USB serial with a release key in
its board file, the simulated plant on UART0, the technician on the serial link (UART1,
115200 baud), packages built for the RP2040 (`pilectl release build --arch armv6m`).

A power cycle in the middle of a transfer keeps every chunk the pile had saved, and the
host sends only the rest; the new firmware boots on trial and confirms itself; a
firmware whose control loop hangs is reset by the RP2040's watchdog and rolled back, and
the old firmware says why. Skipped, saying where to get them, without Node.js, rp2040js
or the Pico image (as tests/test_pico.py).
"""

import asyncio
import json
import math
import shutil
import subprocess
import threading
import time

import pytest
import serial
from helpers import BIN, FIRMWARE, board_exec
from pile import VERSION
from pilectl import field, release, transfer, wire
from pilectl.pico import Pico, missing

pytestmark = pytest.mark.skipif(missing() is not None, reason=str(missing()))

SCENARIO = {"name": "pico-update", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 6000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000}}
TRIAL_S = 90  # a trial boot confirms itself within seconds; this is its limit
GAP_S = 0.052  # between update requests, as pilectl.field paces them (20 a second)
_HANG = ("            await self.loop.period()\n",
         "            await self.loop.period()\n"
         "            if self.loop.periods > 3:\n"
         "                import time\n"
         "                time.sleep(60)  # planted: the control loop hangs\n")


class Rig:
    """The pile on the emulated Pico, and an event loop of its own in a thread: the
    simulated plant runs in it between the tests' requests."""

    def __init__(self, directory):
        from pilectl.picobench import PicoBench

        self.dir = directory
        self.key = directory / "maker.pem"
        self.public = release.keygen(self.key)
        scenario = dict(SCENARIO, board={"update": {"release_key": self.public,
                                                    "trial_s": TRIAL_S}})
        self.bench = PicoBench(directory / "bench", scenario)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coroutine, timeout=600):
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout)

    def package(self, version, source=None):
        """`pilectl release build --arch armv6m`: the RP2040's architecture."""
        out = self.dir / f"pile-{version}-armv6m.pkg"
        more = ["--source", str(source)] if source else []
        done = subprocess.run([str(BIN / "pilectl"), "release", "build", "--key",
                               str(self.key), "--arch", "armv6m", "--version", version,
                               "-o", str(out), "--json", *more],
                              capture_output=True, text=True, timeout=120,
                              env={"PILECTL_HOME": str(self.dir / "home"),
                                   "PATH": "/usr/bin:/bin"})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["arch"] == "armv6m"
        return release.Package.load(out)

    def events_since(self, after, name):
        return [e for t, e in self.bench.pico.history if t > after and e["event"] == name]

    def close(self):
        try:
            self.run(self.bench.stop(), 60)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.loop.close()


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    """A fresh Pico, the firmware deployed over USB with a release key, the link and the
    technician's keys provisioned over the serial link (a pile without a technician's
    key takes the wired link as the technician)."""
    found = Rig(tmp_path_factory.mktemp("pico-update"))
    try:
        found.run(found.bench.start(), 300)
        yield found
        assert found.bench.sim.oracle.violations == []
    finally:
        found.close()


def test_a_host_writing_to_a_board_whose_uart_is_off_does_not_hang_the_emulator(tmp_path):
    """rp2040js gives a UART with no baud rate set a rate of Infinity: bytes a host sent
    to a board that had not set its UART up (one rebooting) came no time apart, and with
    the receive FIFO full the emulator fired the same alarm for ever. They are lost, as on
    a wire, and the board runs on."""
    with Pico(tmp_path) as pico, serial.Serial(pico.uart1, 115200) as host:
        host.write(bytes(range(100)))  # UART1 is off: nothing set it up
        time.sleep(1)
        assert pico.stats()["instructions"] > 0
        assert board_exec(pico.usb, "print('alive')") == "alive"


async def _cut_in_the_middle(rig, package):
    """Chunks until a third of the package is held, then a power cycle while the pile
    takes the next one: (bytes the pile had acknowledged, bytes it says it holds when the
    same package is offered again after the cycle)."""
    bench, loop = rig.bench, asyncio.get_running_loop()
    client = await bench.technician()
    plan = transfer.Transfer(package)
    status = await client.update_status()
    while True:
        step = plan.next(status)
        if step == transfer.WAIT:  # the signature is being checked
            await asyncio.sleep(0.2)
            status = await client.update_status()
            continue
        await asyncio.sleep(max(0.0, GAP_S - (loop.time() - client.sent_at)))
        if step.mtype == wire.UPDATE_CHUNK and plan.held >= package.size // 3:
            break
        status = await client.request(step.mtype, step.fields, wire.UPDATE_STATUS)
    acknowledged = plan.held
    pending = asyncio.create_task(client.request(step.mtype, step.fields, wire.UPDATE_STATUS))
    await asyncio.sleep(0.03)  # its bytes on the wire, or being written
    cut = time.monotonic()
    bench.pico.command(power="cycle")
    await asyncio.gather(pending, return_exceptions=True)  # no answer: the chip restarted
    client = await client.reconnect(120)
    assert rig.events_since(cut, "boot")[0]["cause"] == "power"
    assert (await client.update_status()).get(2) == 0  # idle until offered again
    offer = plan.next(await client.update_status())
    assert offer.mtype == wire.UPDATE_OFFER
    status = await client.request(offer.mtype, offer.fields, wire.UPDATE_STATUS)
    await client.close()
    return acknowledged, status


def test_an_update_over_the_serial_link_rides_a_power_cycle_then_boots_on_trial_and_confirms(rig):
    package = rig.package("0.2.0")
    acknowledged, resumed = rig.run(_cut_in_the_middle(rig, package))
    held = resumed.get(3)
    assert resumed.get(2) == 2, transfer.named(resumed)  # receiving, no signature again
    # what was saved in whole files: the file under way and the chunks in RAM went
    assert 0 < held <= acknowledged, (acknowledged, held)

    async def the_rest():
        client = await rig.bench.technician()
        try:
            result = await field.update(client, package, confirm_s=300)
        finally:
            await client.close()
        client = await rig.bench.technician()
        try:
            return result, await field.status(client)
        finally:
            await client.close()

    result, status = rig.run(the_rest())
    assert result["chunks_taken"] == math.ceil((package.size - held) / package.chunk)
    assert result["version"] == "0.2.0" and status["firmware"] == "0.2.0"
    assert status["firmware_slots"] == {"running": "0.2.0", "slot": "a", "other_slot": VERSION,
                                        "update": "idle", "last_rollback": None}


def test_a_firmware_whose_control_loop_hangs_is_reset_by_the_watchdog_and_rolled_back(
        rig, tmp_path):
    source = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, source, ignore=shutil.ignore_patterns("__pycache__"))
    path = source / "pile" / "firmware.py"
    assert _HANG[0] in path.read_text(), "the planted hang no longer fits pile/firmware.py"
    path.write_text(path.read_text().replace(*_HANG))
    package = rig.package("9.0.0", source)
    started = time.monotonic()

    async def update():
        client = await rig.bench.technician()
        running = (await client.update_status()).get(6)
        try:
            await field.update(client, package, confirm_s=300)
        except transfer.UpdateFailed as exc:
            failed = exc
        else:
            raise AssertionError("the hanging firmware was not rolled back")
        finally:
            await client.close()
        client = await rig.bench.technician()
        try:
            return running, failed, await client.update_status(), client.hello, \
                await field.events(client)
        finally:
            await client.close()

    running, failed, status, hello, events = rig.run(update())
    reason = "the trial boot ended before it confirmed itself (watchdog reset)"
    assert failed.rolled_back and reason in failed.reason
    assert rig.events_since(started, "watchdog"), "the RP2040's watchdog did not fire"
    assert status.get(6) == running and status.get(2) == 0  # the old firmware, idle
    assert status.get(8)[:2] == ["9.0.0", reason]  # UPDATE_STATUS: the last rollback
    assert hello.get(wire.HELLO_ROLLBACK)[:2] == ["9.0.0", reason]  # and HELLO, while it runs
    assert [e["value"] for e in events if e["event"] == "field update"][-1] == 3  # rolled back
