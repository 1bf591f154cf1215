"""A whole firmware to one pile over TCP, the control period while it goes, and a rollback.

    python bench/update_bench.py [--skip-rollback] [--pico] [--fleet N]   (make bench-update)

A fresh unix-port board (pilectl.unixboard: main.py and the boot stage run at every
boot) with the simulated plant on its bus is deployed over USB and discharging at a
steady setpoint. The control period is measured from outside, through the real
interface: the plant timestamps every control-block write, one per tick.
1. `transfer`: the firmware built for this machine (`pilectl release build`) put on the
   pile over TCP by pilectl.field.update, from the offer to the new firmware confirmed
   after its trial boot; the transfer's own seconds (offer to commit) and the control
   period's p99 during the transfer against the same number of seconds before it.
2. `rollback`: a package whose control loop hangs after 3 periods: the seconds from
   the hang to the old firmware's HELLO, against one watchdog timeout plus one boot
   (the old firmware's boot measured on its own as a reboot's).
3. with --pico, bench/pico_update_bench.py (the same over the emulated Pico's 115200-baud
   serial link), and with --fleet N, bench/rollout_bench.py --piles N (a rollout in waves
   to N emulated piles and one real firmware): each runs as its own process, its last
   JSON line is taken into this one's.
Goals: transfer ≤ 10 s (≤ 30 s on the Pico); period p99 during it no more than 10 ms
above without; the rollback within one watchdog timeout plus one boot; 1,000 piles in
≤ 5 minutes. Ends with one JSON line.
"""

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stats import figures

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = {"name": "update", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 6000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000}}
_WATCHDOG_S = 3.0  # pile/firmware.py's _WATCHDOG_MS
_HANG = ("            await self.loop.period()\n",
         "            await self.loop.period()\n"
         "            if self.loop.periods > 3:\n"
         "                print('planted: the control loop hangs now')\n"
         "                import time\n"
         "                time.sleep(60)\n")


def periods(writes, start, end):
    times = [t for t, _ in writes if start <= t < end]
    return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]


def pilectl(home, *args):
    done = subprocess.run([str(Path(sys.executable).parent / "pilectl"), *args],
                          capture_output=True, text=True, env={"PILECTL_HOME": str(home),
                                                                "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(f"pilectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class Rig:
    def __init__(self, directory):
        from pilectl import release
        from pilectl.sim.harness import free_port
        from pilectl.unixboard import BoardBench

        self.dir = directory
        self.home = directory / "home"
        self.key = directory / "maker.pem"
        public = release.keygen(self.key)
        self.tcp_port = free_port()
        self.bench = BoardBench(directory / "board", SCENARIO, tcp_port=self.tcp_port,
                                update={"release_key": public, "trial_s": 60})
        self.writes = self.bench.sim.plant.control_writes()

    def deploy(self):
        bench = self.bench
        pilectl(self.home, "deploy", "--board", str(bench.board_file), "--port", bench.usb,
                "--link", bench.link_host)
        pilectl(self.home, "provision-key", "--port", bench.link_host)
        pilectl(self.home, "provision-key", "--technician", "--port", bench.link_host)

    def package(self, version, source=None):
        out = self.dir / f"pile-{version}.pkg"
        more = ["--source", str(source)] if source else []
        pilectl(self.home, "release", "build", "--key", str(self.key), "--arch", "local",
                "--version", version, "-o", str(out), *more)
        from pilectl.release import Package

        return Package.load(out)

    def target(self):
        from pilectl.field import Target

        return Target(tcp=f"127.0.0.1:{self.tcp_port}", timeout=5.0)


async def transfer(rig):
    """The whole firmware over TCP, with the control period before and during."""
    import os

    from pilectl import field

    os.environ["PILECTL_HOME"] = str(rig.home)
    package = rig.package("0.9.0")
    client = await field.connect(rig.target())
    await client.setpoint(-4000, 3600)
    await asyncio.sleep(2)
    marks = {}

    def progress(held, size):
        now = time.monotonic()
        marks.setdefault("first", now)
        if held >= size:
            marks.setdefault("all_held", now)

    quiet_start = time.monotonic()
    await asyncio.sleep(8)
    quiet_end = time.monotonic()
    started = time.monotonic()
    result = await field.update(client, package, on_progress=progress)
    confirmed = time.monotonic()
    transfer_s = marks["all_held"] - started
    quiet = figures(periods(rig.writes, quiet_start, quiet_end))
    during = figures(periods(rig.writes, started, marks["all_held"]))
    return {"package_bytes": package.size, "files": len(package.files()),
            "chunks": result["chunks_sent"], "transfer_s": round(transfer_s, 2),
            "to_confirmed_s": round(confirmed - started, 2),
            "throughput_kb_s": round(package.size / transfer_s / 1000, 1),
            "period_p99_ms_without": quiet["p99_ms"], "period_p99_ms_during": during["p99_ms"],
            "period_max_ms_during": during["max_ms"], "periods_during": during["n"]}


class Console:
    """The board's USB console read in a thread: each line with the time it came."""

    def __init__(self, port):
        import threading

        import serial

        self.lines = []
        self._port = serial.Serial(port, 115200, timeout=0.2)
        self._stop = False
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self):
        pending = b""
        while not self._stop:
            pending += self._port.read(4096)
            *lines, pending = pending.split(b"\n")
            now = time.monotonic()
            self.lines += [(now, line) for line in lines]

    def when(self, text, after=0.0, timeout=90.0):
        """When a line with `text` came after `after`, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                if at > after and text in line:
                    return at
            time.sleep(0.05)
        raise SystemExit(f"the console never said {text!r}")

    def close(self):
        self._stop = True
        self._thread.join()
        self._port.close()


async def rollback(rig, tmp):
    """A hanging image: from its hang to the old firmware running again, against one
    watchdog timeout plus one boot (a requested reboot's, timed the same way)."""
    from pilectl import field
    from pilectl.transfer import UpdateFailed

    source = tmp / "hangs"
    shutil.copytree(ROOT / "firmware", source, ignore=shutil.ignore_patterns("__pycache__"))
    path = source / "pile" / "firmware.py"
    text = path.read_text()
    if _HANG[0] not in text:
        raise SystemExit("the planted hang no longer fits pile/firmware.py: update _HANG")
    path.write_text(text.replace(*_HANG))
    package = rig.package("0.9.1", source)
    console = Console(rig.bench.usb)
    try:
        client = await field.connect(rig.target())
        asked = time.monotonic()
        await client.command("reboot")
        await client.close()
        boot_s = console.when(b"firmware 0.9.0 running", asked) - asked
        await asyncio.sleep(3)
        client = await field.connect(rig.target())
        try:
            await field.update(client, package)
        except UpdateFailed as exc:
            reason = exc.reason
        else:
            raise SystemExit("the hanging image was not rolled back")
        finally:
            await client.close()
        hang_at = console.when(b"planted: the control loop hangs now")
        back_at = console.when(b"firmware 0.9.0 running", hang_at)
    finally:
        console.close()
    return {"reason": reason, "hang_to_old_running_s": round(back_at - hang_at, 2),
            "watchdog_s": _WATCHDOG_S, "boot_s": round(boot_s, 2),
            "goal_s": round(_WATCHDOG_S + boot_s, 2)}


async def main_async(skip_rollback):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        rig = Rig(tmp)
        try:
            rig.deploy()
            result = {"transfer": await transfer(rig)}
            if not skip_rollback:
                result["rollback"] = await rollback(rig, tmp)
        finally:
            rig.bench.close()
        result["violations"] = len(rig.bench.sim.oracle.summary())
    return result


def part(script, *args):
    """Run another bench script; its last line (JSON), or what went wrong."""
    done = subprocess.run([sys.executable, str(ROOT / "bench" / script), *args],
                          capture_output=True, text=True)
    sys.stdout.write(done.stdout)
    lines = done.stdout.strip().splitlines()
    try:
        return json.loads(lines[-1])
    except (IndexError, ValueError):
        return {"error": f"{script} ended with status {done.returncode}: "
                         f"{(done.stderr or done.stdout).strip()[-300:]}"}


def main():
    args = sys.argv[1:]
    result = asyncio.run(main_async("--skip-rollback" in args))
    t = result["transfer"]
    print(f"transfer: {t['package_bytes']} bytes in {t['files']} files, {t['chunks']} chunks, "
          f"{t['transfer_s']} s over TCP ({t['throughput_kb_s']} kB/s); confirmed after "
          f"{t['to_confirmed_s']} s")
    print(f"control period p99: {t['period_p99_ms_without']:.1f} ms without, "
          f"{t['period_p99_ms_during']:.1f} ms during (max {t['period_max_ms_during']:.1f})")
    if "rollback" in result:
        r = result["rollback"]
        print(f"rollback: old firmware running {r['hang_to_old_running_s']} s after the hang "
              f"(goal: watchdog {r['watchdog_s']} s + one boot {r['boot_s']} s = "
              f"{r['goal_s']} s): {r['reason']}")
    if "--pico" in args:
        result["pico"] = part("pico_update_bench.py")
    if "--fleet" in args:
        result["fleet"] = part("rollout_bench.py", "--piles", args[args.index("--fleet") + 1])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
