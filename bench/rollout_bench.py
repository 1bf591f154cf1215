"""A fleet rollout: a whole firmware put on N emulated piles and one real firmware, in waves.

    python bench/rollout_bench.py [--piles 1000] [--parallel 100]   (make bench-update)

One real pile: a fresh unix-port board (pilectl.unixboard: main.py and the boot stage run
at every boot) deployed over USB, its keys provisioned over its serial link, the
simulated plant on its bus, reached by the aggregator on its serial link (115200 baud;
--real-link tcp for TCP on 127.0.0.1). N emulated piles (pile-emulator --release-key,
one process: the firmware's own Updater on a model of the boot stage, each claiming the
architecture and .mpy version of this machine's unix port). The package is the real
firmware, built for this machine by `pilectl release build` with a new version and
signed with a fresh release key. The aggregator (this process, pilectl.aggregator)
connects to every pile, dispatches every second, and once every pile is heard rolls
the package out: the real pile in the canary wave (5 % of the fleet), then waves of
25 %, at most --parallel piles receiving the package at once, each pile's requests
paced under its 20 a second.

Reported: the whole rollout's seconds and each wave's (with a pile's median and the
slowest pile), piles updated and failed, requests asked again (unanswered within 5 s or
lost with a link), the real pile's seconds from its first request to its confirmed
trial, the package's bytes and chunks, and the aggregator's dispatch time (p50, p99)
during the rollout. Ends with one JSON line.
"""

import argparse
import asyncio
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilectl import release
from pilectl.aggregator import run as run_loop
from pilectl.aggregator.fleet import load
from pilectl.aggregator.rollout import Settings
from pilectl.aggregator.service import Aggregator
from stats import figures

SCENARIO = {"name": "rollout", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 3000]],
            "config": {"site_import_limit_w": 25000, "site_export_limit_w": 11000},
            "oracle": {"site_import_limit_w": 25000, "site_export_limit_w": 11000}}
REAL = "real-001"
NEW = "0.9.0"  # the package's version: above the firmware's own
_ONLINE_S = 120  # for every pile to be heard before the rollout
_TRIAL_S = 120  # every pile's update.trial_s


def pilectl(home, *args):
    done = subprocess.run([str(Path(sys.executable).parent / "pilectl"), *args],
                          capture_output=True, text=True,
                          env={"PILECTL_HOME": str(home), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(f"pilectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


class Rig:
    """The real pile, the package and the emulator, in `directory`."""

    def __init__(self, directory, piles):
        from pilectl.sim.harness import free_port
        from pilectl.unixboard import BoardBench

        self.dir = directory
        self.home = directory / "home"
        self.key_file = directory / "maker.pem"
        self.public = release.keygen(self.key_file)
        self.tcp_port = free_port()
        self.piles = piles
        self.bench = BoardBench(directory / "board", SCENARIO, pile_id=REAL,
                                tcp_port=self.tcp_port,
                                update={"release_key": self.public, "trial_s": _TRIAL_S})
        self.emulator = None

    def deploy(self):
        bench = self.bench
        pilectl(self.home, "deploy", "--board", str(bench.board_file), "--port", bench.usb,
                "--link", bench.link_host)
        pilectl(self.home, "provision-key", "--port", bench.link_host)
        pilectl(self.home, "provision-key", "--technician", "--port", bench.link_host)

    def package(self):
        out = self.dir / f"pile-{NEW}.pkg"
        pilectl(self.home, "release", "build", "--key", str(self.key_file), "--arch", "local",
                "--version", NEW, "-o", str(out))
        return release.Package.load(out)

    def start_emulator(self, package):
        """The emulated piles, claiming the package's architecture and .mpy version."""
        fields = package.fields
        mpy = f"{fields['mpy'] & 0xFF}.{fields['mpy'] >> 8 & 3}"
        for _ in range(5):
            self.first_port = random.randrange(20000, 60000 - self.piles)
            self.emulator = subprocess.Popen(
                [sys.executable, "-m", "pilectl.aggregator.emulator", "--piles",
                 str(self.piles), "--port", str(self.first_port), "--keys",
                 str(self.dir / "keys"), "--fleet", str(self.dir / "emu.toml"),
                 "--state", str(self.dir / "state"), "--release-key", self.public,
                 "--arch", fields.get("arch") or "none", "--mpy", mpy,
                 "--trial-s", str(_TRIAL_S)],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if self.emulator.stdout.readline().startswith("ready"):
                return
            self.emulator.kill()
            self.emulator.wait()
        raise SystemExit(f"the emulator did not start: {self.emulator.stderr.read()}")

    def fleet(self, real_link):
        keys = self.home / "keys"
        path = self.dir / "fleet.toml"
        link = f'serial = "{self.bench.link_host}"' if real_link == "serial" else \
            f'tcp = "127.0.0.1:{self.tcp_port}"'
        path.write_text(
            "[dispatch]\nttl_s = 5\n\n[target]\npower_w = -20000\n\n"
            f'[[pile]]\nid = "{REAL}"\n{link}\n'
            f'key_file = "{keys / (REAL + ".key")}"\n'
            f'technician_key_file = "{keys / (REAL + ".technician.key")}"\n'
            'group = "real"\n\n' + (self.dir / "emu.toml").read_text())
        return load(path)

    def close(self):
        if self.emulator is not None:
            self.emulator.kill()
            self.emulator.wait()
        self.bench.close()


async def roll_out(rig, package, parallel, real_link):
    aggregator = Aggregator(rig.fleet(real_link))
    dispatch_ms = []
    aggregator.on_status = lambda status: dispatch_ms.append(status["dispatch_ms"])
    aggregator.start()
    dispatching = asyncio.create_task(aggregator.run())
    try:
        deadline = time.monotonic() + _ONLINE_S
        while (aggregator.last or {}).get("online", 0) < rig.piles + 1:
            if time.monotonic() > deadline:
                raise SystemExit(f"only {aggregator.last['online']} of {rig.piles + 1} piles "
                                 f"heard after {_ONLINE_S} s")
            await asyncio.sleep(0.5)
        print(f"{rig.piles + 1} piles heard; rolling out {package.version} "
              f"({package.size} bytes)", flush=True)
        dispatch_ms.clear()
        rollout = aggregator.start_rollout(package, Settings(
            canary_percent=5, wave_percent=25, parallel=parallel, canaries=(REAL,)))
        ended = asyncio.create_task(aggregator.rollout_ended())
        while not ended.done():
            await asyncio.wait([ended], timeout=10)
            s = rollout.summary()
            print(f"  {s['seconds']:6.0f} s  wave {s['wave']} of {s['waves']}: "
                  f"{s['updated']} updated, {s['updating']} updating, {s['failed']} failed",
                  flush=True)
        return rollout, figures(dispatch_ms)
    finally:
        dispatching.cancel()
        await asyncio.gather(dispatching, return_exceptions=True)
        await aggregator.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--piles", type=int, default=1000, help="emulated piles")
    parser.add_argument("--parallel", type=int, default=100,
                        help="piles receiving the package at once")
    parser.add_argument("--real-link", choices=("serial", "tcp"), default="serial",
                        help="how the aggregator reaches the real pile")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.piles * 2 + 256)),
                                                hard))
    with tempfile.TemporaryDirectory() as tmp:
        rig = Rig(Path(tmp), args.piles)
        try:
            rig.deploy()
            package = rig.package()
            rig.start_emulator(package)
            rollout, dispatch = run_loop(roll_out(rig, package, args.parallel,
                                                  args.real_link))
        finally:
            rig.close()
        violations = len(rig.bench.sim.oracle.summary())
    s = rollout.summary()
    real = rollout.piles[REAL]
    print(f"rollout of {s['version']} to {s['piles']} piles: {s['state']} in {s['seconds']} s; "
          f"{s['updated']} updated, {s['failed']} failed")
    for number, (size, seconds) in enumerate(zip(s["wave_sizes"], s["wave_seconds"],
                                                 strict=False), 1):
        piles = [p for p in rollout.piles.values() if p.wave == number]
        times = sorted(p.seconds for p in piles)
        slowest = max(piles, key=lambda p: p.seconds)
        print(f"  wave {number}: {size} piles in {seconds} s (a pile's median "
              f"{times[len(times) // 2]} s; slowest {slowest.pile_id} {slowest.seconds} s, "
              f"{slowest.asked_again} requests asked again)")
    for failure in s["failures"]:
        print(f"  {failure['pile']} {failure['kind']}: {failure['reason']}")
    skips = [p for p in rollout.piles.values() if p.state == "skipped"]
    if skips:
        print(f"  {len(skips)} piles skipped, e.g. {skips[0].pile_id}: {skips[0].reason}")
    others = [p for p in rollout.piles.values() if p.state not in ("updated", "skipped",
                                                                    "failed")]
    if others:
        print(f"  {len(others)} piles neither updated, failed nor skipped, e.g. "
              f"{others[0].pile_id}: {others[0].state}, wave {others[0].wave}")
    print(f"the real firmware ({args.real_link}): {real.state} after {real.seconds} s; "
          f"package {package.size} bytes, {-(-package.size // package.chunk)} chunks a pile; "
          f"dispatch p50 "
          f"{dispatch['median_ms']} ms, p99 {dispatch['p99_ms']} ms during the rollout")
    print(json.dumps({"piles": s["piles"], "state": s["state"], "seconds": s["seconds"],
                      "waves": [{"piles": size, "seconds": seconds} for size, seconds in
                                zip(s["wave_sizes"], s["wave_seconds"], strict=False)],
                      "updated": s["updated"], "failed": s["failed"], "skipped": len(skips),
                      "not_reached": len(others),
                      "asked_again": s["asked_again"],
                      "real_pile": {"state": real.state, "seconds": real.seconds,
                                    "link": args.real_link},
                      "package_bytes": package.size, "parallel": args.parallel,
                      "dispatch_p50_ms": dispatch["median_ms"],
                      "dispatch_p99_ms": dispatch["p99_ms"], "violations": violations}))


if __name__ == "__main__":
    main()
