"""Fleet scale: one aggregator process against thousands of emulated piles over TCP.

    python bench/fleet_bench.py [PILES ...]      (make bench-fleet, or PILES=N for one size)

For each size: emulated piles (pilectl/aggregator/emulator.py, the firmware's own core under
CPython) in processes of at most 2,500 piles each (a listening and an accepted socket
per pile), on 127.0.0.1; the aggregator (this process, pilectl/aggregator/service.py) connects
to all of them, dispatches every second, and once every pile is heard the target steps
from -30 % to +30 % of the fleet's rating. Reported: the split's time (p50 and the
largest), the time from the target change to each pile's ACK of its new setpoint (p50,
p99), the aggregator's CPU % and RSS per pile, frames verified per second, and the
emulators' CPU apart. Goals: 10,000 piles in one process, split <= 50 ms, ACKed p99
< 1 s. Each size ends with one JSON line.
"""

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pilectl.aggregator import run as run_loop
from pilectl.aggregator.fleet import load
from pilectl.aggregator.service import Aggregator

_PER_EMULATOR = 2500
_RATED_W = 11000
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime + stime


def rss_mb(pid="self"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def percentile(values, p):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] if ordered else None


def start_emulators(piles, directory):
    procs, entries, port = [], [], 20000
    for n, first in enumerate(range(0, piles, _PER_EMULATOR)):
        count = min(_PER_EMULATOR, piles - first)
        fleet = directory / f"emu{n}.toml"
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "pilectl.aggregator.emulator", "--piles",
             str(count), "--port", str(port), "--keys", str(directory / "keys"),
             "--prefix", f"e{n}-", "--fleet", str(fleet), "--groups", "4"],
            stdout=subprocess.PIPE, text=True))
        procs[-1].fleet = fleet
        port += count
    for proc in procs:
        line = proc.stdout.readline()
        if not line.startswith("ready"):
            raise RuntimeError(f"an emulator did not start: {line!r}")
        entries.append(proc.fleet.read_text())
    return procs, entries


async def measure(piles, directory):
    procs, entries = start_emulators(piles, directory)
    try:
        path = directory / "fleet.toml"
        path.write_text("[dispatch]\nttl_s = 10\n\n[target]\npower_w = %d\n\n"
                        % (-0.3 * piles * _RATED_W) + "".join(entries))
        fleet = load(path)
        rss_before = rss_mb()
        aggregator = Aggregator(fleet)
        aggregator.start()
        started = time.monotonic()
        while True:  # every pile heard, connecting at the pace the machine allows
            status = aggregator.dispatch_once()
            if status["online"] == piles:
                break
            if time.monotonic() - started > 120:
                raise RuntimeError(f"only {status['online']} of {piles} piles heard in 120 s")
            await asyncio.sleep(1)
        connect_s = time.monotonic() - started
        await aggregator.run(3)
        cpu0, emu0 = cpu_seconds(os.getpid()), sum(cpu_seconds(p.pid) for p in procs)
        verified0, wall0 = aggregator.counters["frames_verified"], time.monotonic()
        splits = []
        aggregator.on_status = lambda s: splits.append(s["split_ms"])
        await aggregator.run(5)
        changed_at = time.monotonic()
        aggregator.target.set(int(0.3 * piles * _RATED_W))
        aggregator.dispatch_once(changed_at)
        wanted = {link: link.sent_seq for link in aggregator.links
                  if link.sent_at is not None and link.sent_at >= changed_at}
        acked = {}  # the time each ACK was read (PileLink notes it): polled now and then
        while wanted and time.monotonic() - changed_at < 10:
            await asyncio.sleep(0.05)
            for link in [link for link, seq in wanted.items() if link.acked_seq >= seq]:
                acked[link] = link.acked_at - changed_at
                del wanted[link]
        await aggregator.run(5)
        wall = time.monotonic() - wall0
        cpu = cpu_seconds(os.getpid()) - cpu0
        emu = sum(cpu_seconds(p.pid) for p in procs) - emu0
        latencies = list(acked.values())
        result = {"piles": piles, "connect_s": round(connect_s, 1),
                  "split_ms": round(percentile(splits, 50), 2),
                  "split_ms_max": round(max(splits), 2),
                  "acked": len(acked), "acked_p50_ms": round(percentile(latencies, 50) * 1000),
                  "acked_p99_ms": round(percentile(latencies, 99) * 1000),
                  "aggregator_cpu_pct": round(100 * cpu / wall, 1),
                  "aggregator_rss_mb": round(rss_mb(), 1),
                  "rss_kb_per_pile": round((rss_mb() - rss_before) * 1024 / piles, 2),
                  "frames_verified_per_s": round(
                      (aggregator.counters["frames_verified"] - verified0) / wall),
                  "emulator_cpu_pct": round(100 * emu / wall, 1),
                  "emulators": len(procs), "refused": aggregator.counters["refused"],
                  "delivered_w": aggregator.last["delivered_w"],
                  "target_w": aggregator.last["target_w"]}
        await aggregator.stop()
        return result
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


def main():
    sizes = [int(a) for a in sys.argv[1:]] or [1000, 5000, 10000]
    print("piles   split p50/max ms   ACKed p50/p99 ms   aggregator CPU %  RSS/pile KB  "
          "frames/s   emulators CPU %", flush=True)
    for piles in sizes:
        with tempfile.TemporaryDirectory() as directory:
            result = run_loop(measure(piles, Path(directory)))
        print(f"{piles:6d}   {result['split_ms']:6.1f} / {result['split_ms_max']:6.1f}"
              f"      {result['acked_p50_ms']:6d} / {result['acked_p99_ms']:6d}"
              f"      {result['aggregator_cpu_pct']:6.1f}        {result['rss_kb_per_pile']:6.1f}"
              f"   {result['frames_verified_per_s']:8d}   {result['emulator_cpu_pct']:6.1f}",
              flush=True)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
