"""Fleet scale through a broker: emulated piles and aggregator workers on one Mosquitto.

    python bench/fleet_mqtt_bench.py [--piles N ...] [--workers K ...]
    (make bench-fleet-mqtt; PILES=N WORKERS=K for one size)

For each size and worker count: Mosquitto on 127.0.0.1 with a user per pile and the ACL
(pilectl/aggregator/broker.py); emulated piles dialling it
(pilectl/aggregator/emulator.py --broker, at most 2,500 a process, the firmware's own
core and MQTT packets, keepalive 5 s); K aggregator processes sharing the fleet
(bench/fleet_mqtt_worker.py, which is `pile-aggregator run --worker` with the ACKs
timed inside). Once every pile is served and every worker has caught up with what the
broker sends it (caught_up_s: a worker is seconds behind after a large fleet's start),
the target steps from -30 % to +30 % of the fleet's rating through the broker, as a
target set on one worker's API is: reported, the time from that change to each pile's
ACK of its new setpoint (p50, p99), and to each worker's getting it (target_s) and
reporting its ACKs (report_s; within 20 s, or the run fails). Then 100 piles go silent
with their sockets open (SIGUSR1 to an emulator): the time until the workers have left
all of them out of the split (offline detection, goal <= 1.5 x keepalive; a worker
excludes a pile silent for 3 telemetry periods, or at its will) and until the broker has
published their wills.
And the broker's and the workers' CPU and RSS over 5 s of steady running. Goal: 10,000
piles, ACKed p99 < 1 s. Each run ends with one JSON line.
"""

import argparse
import asyncio
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
from pilectl.aggregator import run as run_loop
from pilectl.aggregator.broker import Mosquitto
from pilectl.aggregator.emulator import broker_users, pile_ids

sys.path.insert(0, str(Path(__file__).parent))
from fleet_bench import cpu_seconds, percentile, rss_mb  # noqa: E402

_PER_EMULATOR = 2500
_RATED_W = 11000
_KEEPALIVE_S = 5
_FROZEN = 100
_WORKER = Path(__file__).with_name("fleet_mqtt_worker.py")


class Worker:
    def __init__(self, proc):
        self.proc = proc
        self.status = None
        self.states = None  # its piles at each step to being served (fleet_mqtt_worker)
        self.behind_s = None  # how far behind it reads the broker
        self.acks = asyncio.Queue()
        self._reading = asyncio.create_task(self._read())

    async def _read(self):
        async for line in self.proc.stdout:
            found = json.loads(line)
            if "status" in found:
                self.status = found["status"]
                self.states = found.get("states")
                self.behind_s = found.get("behind_s")
            else:
                self.acks.put_nowait(found)

    async def stop(self):
        if self.proc.returncode is None:
            self.proc.terminate()
            await self.proc.wait()
        self._reading.cancel()


async def start_emulators(piles, directory, port):
    procs, entries = [], []
    for n, first in enumerate(range(0, piles, _PER_EMULATOR)):
        count = min(_PER_EMULATOR, piles - first)
        fleet = directory / f"emu{n}.toml"
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pilectl.aggregator.emulator", "--piles", str(count), "--broker",
            f"127.0.0.1:{port}", "--keys", str(directory / "keys"), "--prefix", f"e{n}-",
            "--fleet", str(fleet), "--keepalive", str(_KEEPALIVE_S),
            "--freeze", str(_FROZEN), stdout=asyncio.subprocess.PIPE)
        procs.append(proc)
        entries.append(fleet)
    for proc in procs:
        line = await asyncio.wait_for(proc.stdout.readline(), 180)
        if not line.startswith(b"ready"):
            raise RuntimeError(f"an emulator did not start: {line!r}")
    return procs, [fleet.read_text() for fleet in entries]


async def collect_wills(bench, frozen, frozen_at):
    """Seconds from `frozen_at` to each frozen pile's `offline` will, within 4 keepalives."""
    waiting, found = set(frozen), []
    try:
        async with asyncio.timeout(4 * _KEEPALIVE_S):
            async for message in bench.messages:
                pile = message.topic.value.split("/")[1]
                if pile in waiting and bytes(message.payload) == b"offline":
                    found.append(time.time() - frozen_at)
                    waiting.discard(pile)
                    if not waiting:
                        break
    except TimeoutError:
        pass  # counted: fewer wills than frozen piles
    return found


async def wait_until(check, seconds, what):
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > seconds:
            raise RuntimeError(f"not within {seconds} s: {what()}")
        await asyncio.sleep(0.2)
    return time.monotonic() - started


async def measure(piles, workers, directory):
    ids = [pid for n, first in enumerate(range(0, piles, _PER_EMULATOR))
           for pid in pile_ids(min(_PER_EMULATOR, piles - first), f"e{n}-")]
    users = broker_users(directory / "keys", ids)
    names = [f"agg-{n + 1}" for n in range(workers)]
    for name in [*names, "bench"]:
        users[name] = f"pw-{name}"
        (directory / f"{name}.password").write_text(users[name])
    broker = Mosquitto(directory / "broker", users, [*names, "bench"]).start()
    procs, running = [], []
    try:
        started = time.monotonic()
        procs, entries = await start_emulators(piles, directory, broker.port)
        fleet = directory / "fleet.toml"
        fleet.write_text(
            f"[dispatch]\nttl_s = 10\n\n[target]\npower_w = {int(-0.3 * piles * _RATED_W)}\n\n"
            f'[broker]\naddress = "127.0.0.1:{broker.port}"\nuser = "agg-1"\n'
            f'password_file = "agg-1.password"\n\n' + "".join(entries))
        for name in names:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(_WORKER), str(fleet), name,
                str(directory / f"{name}.password"), stdout=asyncio.subprocess.PIPE,
                limit=1 << 24)  # a report of 10,000 ACK times is one long line
            running.append(Worker(proc))

        def online():
            return sum(w.status["online"] for w in running if w.status)

        await wait_until(lambda: online() == piles, 180, lambda: (
            f"{online()} of {piles} piles online; by worker, its piles at each step to "
            f"being served: {[w.states for w in running]}"))
        connect_s = time.monotonic() - started
        # and every worker caught up with what the broker sends it (at a fleet's start it
        # may be seconds behind, and a target change would reach it that late)
        caught_up_s = await wait_until(
            lambda: all(w.behind_s is not None and w.behind_s < 1 for w in running), 120,
            lambda: f"workers behind by {[w.behind_s for w in running]} s")
        await asyncio.sleep(3)
        pids = [broker.process.pid] + [w.proc.pid for w in running]
        cpu0, wall0 = [cpu_seconds(pid) for pid in pids], time.monotonic()
        await asyncio.sleep(5)
        wall = time.monotonic() - wall0
        cpu = [100 * (cpu_seconds(pid) - c) / wall for pid, c in zip(pids, cpu0, strict=True)]
        rss = [rss_mb(pid) for pid in pids]
        async with aiomqtt.Client("127.0.0.1", broker.port, username="bench",
                                  password=users["bench"], identifier="bench") as bench:
            changed_at, report_s = time.time(), []
            await bench.publish("v2g-agg/target", json.dumps([int(0.3 * piles * _RATED_W),
                                                              None]), qos=1, retain=True)
            reports = []
            for worker in running:  # each within 10 s of the change reaching it
                try:
                    reports.append(await asyncio.wait_for(worker.acks.get(), 20))
                except TimeoutError:
                    raise RuntimeError(
                        f"no ACK report from worker {running.index(worker) + 1} within 20 s "
                        f"of the target change; reports before: {report_s}") from None
                report_s.append(round(time.time() - changed_at, 2))
            latencies = [t - changed_at for r in reports for t in r["acked"]]
            wanted = sum(r["wanted"] for r in reports)
            await bench.subscribe("v2g/+/status")
            frozen = {f"e0-{i:05d}" for i in range(_FROZEN)}
            await asyncio.sleep(1)  # the retained statuses have come
            frozen_at = time.time()
            procs[0].send_signal(signal.SIGUSR1)
            wills = asyncio.create_task(collect_wills(bench, frozen, frozen_at))
            detect_s = await wait_until(lambda: online() <= piles - _FROZEN, 4 * _KEEPALIVE_S,
                                        lambda: f"{online()} of {piles} still served")
            wills = await wills
        return {"piles": piles, "workers": workers, "connect_s": round(connect_s, 1),
                "caught_up_s": round(caught_up_s, 1),
                "acked": len(latencies), "wanted": wanted,
                "target_s": [round(r["target_at"] - changed_at, 2) for r in reports],
                "report_s": report_s,
                "acked_p50_ms": round(1000 * percentile(latencies, 50)) if latencies else None,
                "acked_p99_ms": round(1000 * percentile(latencies, 99)) if latencies else None,
                "keepalive_s": _KEEPALIVE_S, "offline_detect_s": round(detect_s, 2),
                "wills": len(wills), "will_s": round(max(wills), 2) if wills else None,
                "broker_cpu_pct": round(cpu[0], 1), "broker_rss_mb": round(rss[0], 1),
                "aggregator_cpu_pct": [round(c, 1) for c in cpu[1:]],
                "aggregator_rss_mb": [round(r, 1) for r in rss[1:]],
                "refused": sum(w.status["counters"].get("refused", 0) for w in running),
                **{name: sum(w.status["counters"].get(name, 0) for w in running)
                   for name in ("hellos_asked_again", "subscribes_again")}}
    finally:
        for worker in running:
            await worker.stop()
        for proc in procs:
            proc.kill()
            await proc.wait()
        broker.stop()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--piles", type=int, nargs="*", default=[])
    parser.add_argument("--workers", type=int, nargs="*", default=[])
    args = parser.parse_args()
    sizes = args.piles or [1000, 5000, 10000]
    counts = args.workers or [1, 2]
    print("piles  workers  ACKed p50/p99 ms  offline s / wills s (keepalive)  broker CPU %/RSS MB"
          "  workers CPU %  connect s", flush=True)
    for piles in sizes:
        for workers in counts:
            with tempfile.TemporaryDirectory() as directory:
                r = run_loop(measure(piles, workers, Path(directory)))
            print(f"{piles:5d}  {workers:7d}  {r['acked_p50_ms']!s:>6} / {r['acked_p99_ms']!s:>5}"
                  f"  {r['offline_detect_s']:6.2f} / {r['will_s']!s:>6} ({r['keepalive_s']} s)"
                  f"            {r['broker_cpu_pct']:5.1f} / {r['broker_rss_mb']:5.1f}"
                  f"   {r['aggregator_cpu_pct']!s:>12}  {r['connect_s']:7.1f}", flush=True)
            print(json.dumps(r), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
