"""Soak: the whole pile for a long while under every fault the bench can make.

    python bench/soak.py MINUTES [--seed N] [--heapsize 224K] [--out DIR] [--firmware DIR]
                                                        (or `make soak SOAK_MIN=N`)

The firmware runs on the virtual bench (unix port, simulated plant with its safety
oracle) and, every second or two, the runner does one thing chosen at random (seeded,
so a run can be repeated): a signed setpoint with a random ttl, a new household load, a
bus fault (silence, CRC errors, noise, slow replies, exception codes, a missing function,
a wrong unit), a silent meter, a battery or converter temperature spike, a converter
fault (reset by the technician later), the EV unplugged and plugged back, a config
change, a host link dropped and opened again, malformed frames on either link, a
requested reboot, or a power cut (kill -9 of the firmware, started again as a board's
power would); at least one reboot (a third of the way) and one cut (two thirds). It
restarts the firmware after every exit, as a board's boot does, and counts an exit
nobody asked for (a crash, a watchdog reset) as a crash.

Every 10 s it reads the pile's DIAGNOSTICS (heap free after a collection, flash writes,
Modbus and link counters); every 30 s the new event log entries. At the end it checks the
event log: no gap, one boot entry for each start with the cause that was injected, and
every entry read during the run still the same at its index. It writes soak.png (the
series) and soak.jsonl (the samples), prints a table, and ends with one JSON line.

Refused setpoints are counted by reason (`refusals`: the ERROR's name in pilectl.wire.ERRORS
with the pile's latest detail text) with the longest run of them (`longest_refused_run`).
A pile refuses the odd one by design (busy until its first converter reading after a boot),
so a few in a row pass; an aggregator locked out does not: 10 setpoints refused in a row
(LOCKOUT_SETPOINTS), or every setpoint for 60 s (LOCKOUT_S), is a lockout (`lockouts`).
The soak fails (exit status 1, each reason on a `FAILED:` line before the JSON) on an
oracle violation, a crash, an event log not intact, or a lockout.
"""

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import pilectl  # noqa: F401  (first: it makes the firmware's `pile` importable)
from pile.surface import RESET_POWER_ON, RESET_REQUESTED
from pilectl import field, wire
from pilectl.build import build
from pilectl.client import LinkError, PileError
from pilectl.vbench import VirtualBench

SCENARIO = {"name": "soak", "plant": {"capacity_kwh": 5.0, "soc": 0.6},
            "load_w": [[0, 3000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 2000},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 2000}}
BUS_FAULTS = ("silence", "meter_silence", "crc", "noise", "exception", "slow", "wrong_unit",
              "no_function_23")
LINK_ERRORS = (LinkError, PileError, OSError, TimeoutError)
_SAMPLE_S = 10
_EVENTS_S = 30
_SETTLE_S = 3.0  # after a start: the boot entry is on flash within a second
# A host locked out fails the soak: LOCKOUT_SETPOINTS setpoints refused in a row, or every
# setpoint refused for LOCKOUT_S. A pile refuses the odd setpoint by design (busy until its
# first converter reading after a boot, which a bus fault of at most 4 s may delay): two
# or three in a row, a few seconds; an aggregator refused for a minute has lost the pile.
LOCKOUT_SETPOINTS = 10
LOCKOUT_S = 60.0
# A bus fault lasts at most 4 s, with 1 s of a working bus before the next: a bus down for
# longer than the converter's heartbeat timeout (5 s) leaves the pile's last command
# standing in a converter that no longer hears it. The converter's own watchdog then stops
# it, and the oracle rightly flags the standing command; no firmware can prevent that.
_BUS_FAULT_S = (0.5, 4.0)
_BUS_GAP_S = 1.0
# _LOAD_WHILE_SILENT: the household load changes only on a working bus. A load that rises
# while the meter is silent is seen when the last reading counts as lost (meter_stale_s,
# 3 s, DESIGN section 6), longer than the oracle gives the site cap (2.5 s): by design.


class Soak:
    def __init__(self, bench, rng):
        self.bench = bench
        self.rng = rng
        self.sim = bench.sim
        self.aggregator = self.technician = self.serial = None
        self.counts = dict.fromkeys(("setpoints", "refused", "loads", "bus_faults",
                                     "temperature_spikes", "converter_faults", "unplugs",
                                     "config_changes", "link_drops", "malformed_frames",
                                     "reboots", "power_cuts", "crashes", "link_errors",
                                     "restarts"), 0)
        self.expected_exit = None  # the exit status an injected reboot or power cut gives
        self.bus_free_at = 0.0  # monotonic time from which the next bus fault may start
        self.starts = [RESET_POWER_ON]  # the boot cause expected for each start
        self.crash_output = []
        self.actions = []  # (plant time s, action), to explain a violation
        self.samples = []
        self.seen_events = {}  # index -> entry, as read during the run
        self.refusals = {}  # ERROR name (pilectl.wire.ERRORS) -> {"count", "detail": last}
        self.refused_run = []  # (s since start, ERROR name, detail): the refusals since the
        self.longest_run = []  # last accepted setpoint, and the longest such run
        self.lockouts = []  # texts: each run of refusals long enough to fail the soak
        self.boot_totals = {}  # counters summed over finished boots
        self.boot_last = {}
        self.started_at = time.monotonic()
        self.up_at = time.monotonic()

    # -- the firmware's life -----------------------------------------------------------

    async def keep_running(self):
        """Start the firmware again after every exit; count the ones nobody asked for."""
        while True:
            code = await self.bench.firmware.wait()
            if code != self.expected_exit:
                self.counts["crashes"] += 1
                self.crash_output.append({"exit": code,
                                          "output": self.bench.firmware_output[-20:]})
                self.starts.append(RESET_POWER_ON)  # what a crash-and-restart logs, unless
                # the watchdog noted itself: the event check accepts either for a crash
            self.expected_exit = None
            self._close_boot()
            await asyncio.sleep(0.2)  # as the board's boot loop
            await self.bench.start_firmware()
            self.counts["restarts"] += 1
            self.up_at = time.monotonic()

    def _close_boot(self):
        for key, value in self.boot_last.items():
            self.boot_totals[key] = self.boot_totals.get(key, 0) + value
        self.boot_last = {}

    async def clients(self):
        """The aggregator (TCP, link key), the technician (TCP) and the serial line, opened
        again when a reboot or a drop closed them."""
        if self.aggregator is None:
            self.aggregator = await self.bench.tcp(wait_s=10)
        if self.technician is None:
            self.technician = await self.bench.tcp(technician=True, wait_s=10)
        if self.serial is None:
            self.serial = await self.bench.serial(self.bench.key, self.bench.technician_key)

    async def drop_clients(self):
        for name in ("aggregator", "technician", "serial"):
            client = getattr(self, name)
            setattr(self, name, None)
            if client is not None:
                with contextlib.suppress(*LINK_ERRORS):
                    await client.close()

    # -- what the runner does ----------------------------------------------------------

    async def act(self, action=None):
        """One thing, chosen at random unless named; logged with the plant's time."""
        rng = self.rng
        action = action or rng.choices(
            ["setpoint", "load", "bus", "temperature", "fault", "unplug", "config", "drop",
             "malformed", "reboot", "cut"],
            [30, 10, 12, 4, 2, 3, 2, 4, 5, 1, 1])[0]
        self.actions.append((round(self.sim.plant.t, 2), action))
        await getattr(self, "_" + action)()

    async def _setpoint(self):
        rng = self.rng
        power = rng.choice([0, rng.randint(-11000, 11000), rng.randint(-3000, 3000)])
        extra = {}
        if rng.random() < 0.2:
            extra = {"departure_s": rng.randint(600, 7200), "reserve_soc": rng.randint(30, 80)}
        try:
            await self.aggregator.setpoint(power, rng.randint(1, 30), **extra)
            self.counts["setpoints"] += 1
        except PileError as exc:
            self.refused(exc)
        else:
            self.end_refused_run()

    def refused(self, exc):
        """A refused setpoint: counted by its reason; a run of them is a lockout when it
        reaches LOCKOUT_SETPOINTS or LOCKOUT_S."""
        self.counts["refused"] += 1
        name = wire.ERRORS.get(exc.code, f"code {exc.code}")
        reason = self.refusals.setdefault(name, {"count": 0, "detail": ""})
        reason["count"] += 1
        reason["detail"] = exc.detail
        self.refused_run.append((round(time.monotonic() - self.started_at, 1), name,
                                 exc.detail))
        if len(self.refused_run) > len(self.longest_run):
            self.longest_run = list(self.refused_run)

    def end_refused_run(self):
        """A setpoint accepted, or the end of the run: judge the refusals before it."""
        run, self.refused_run = self.refused_run, []
        if run and (len(run) >= LOCKOUT_SETPOINTS or run[-1][0] - run[0][0] >= LOCKOUT_S):
            self.lockouts.append(describe_run(run))

    async def _load(self):
        if time.monotonic() < self.bus_free_at:  # see _LOAD_WHILE_SILENT
            return await self._setpoint()
        watts = self.rng.choice([0, 1500, 3000, 6000, 9000, self.rng.randint(0, 9000)])
        self.sim.plant.load_w = lambda t: watts
        self.counts["loads"] += 1

    async def _bus(self):
        rng = self.rng
        now = time.monotonic()
        if now < self.bus_free_at:
            return await self._setpoint()
        event = {"do": rng.choice(BUS_FAULTS), "for": round(rng.uniform(*_BUS_FAULT_S), 1)}
        self.bus_free_at = now + event["for"] + _BUS_GAP_S
        if event["do"] == "exception":
            event["code"] = rng.choice([1, 2, 3, 4, 6])
        elif event["do"] == "slow":
            event["delay_s"] = round(rng.uniform(0.05, 0.4), 2)
        self.sim.inject(event)
        self.counts["bus_faults"] += 1

    async def _temperature(self):
        rng = self.rng
        which, hot, normal = rng.choice([("battery_temp", (46, 62), 25),
                                         ("converter_temp", (76, 95), 40)])
        self.sim.inject({"do": which, "value": rng.uniform(*hot)})
        self.sim.inject({"do": which, "value": normal}, after_s=rng.uniform(3, 15))
        self.counts["temperature_spikes"] += 1

    async def _fault(self):
        self.sim.inject({"do": "fault", "code": self.rng.randint(1, 40)})
        self.counts["converter_faults"] += 1
        await asyncio.sleep(self.rng.uniform(2, 6))
        await self.technician.command("reset-fault")

    async def _unplug(self):
        rng = self.rng
        self.sim.inject({"do": "unplug"})
        self.sim.inject({"do": "plug", "soc": round(rng.uniform(0.15, 0.95), 2)},
                        after_s=rng.uniform(2, 10))
        self.counts["unplugs"] += 1

    async def _config(self):
        rng = self.rng
        change = rng.choice([{"ramp_w_per_s": rng.randint(1000, 20000)},
                             {"min_soc": rng.randint(20, 30)},  # the oracle's floor: 20
                             {"no_meter_charge_w": rng.randint(0, 7000)}])
        await self.technician.config_set(change)
        self.counts["config_changes"] += 1

    async def _drop(self):
        name = self.rng.choice(["aggregator", "serial"])
        client = getattr(self, name)
        setattr(self, name, None)
        await client.close()
        self.counts["link_drops"] += 1

    async def _malformed(self):
        rng = self.rng
        client = rng.choice([self.aggregator, self.serial])
        garbage = rng.choice([rng.randbytes(rng.randint(1, 80)) + b"\x00",  # bad CRC or COBS
                              b"\x01" * rng.randint(1, 700) + b"\x00",  # over-long
                              None])
        if garbage is None:  # well framed, but not a message this pile takes
            # the pile's ERROR is read here: left unread, the client would take it for the
            # reply to its next request (a setpoint "refused" that the pile had accepted)
            with contextlib.suppress(PileError):
                await client.exchange_raw(rng.randbytes(rng.randint(1, 60)))
        else:
            await client.send_raw(garbage, frame=False)
        self.counts["malformed_frames"] += 1

    async def _reboot(self):
        await self._settled()
        self.expected_exit = 3
        self.starts.append(RESET_REQUESTED)
        try:
            await self.technician.command("reboot")
        except LINK_ERRORS:
            self.expected_exit = None  # not asked after all: the pile was restarting
            self.starts.pop()
            raise
        self.counts["reboots"] += 1
        await self.drop_clients()
        await asyncio.sleep(1.5)

    async def _cut(self):
        await self._settled()
        if self.bench.firmware.returncode is not None:
            return  # off already: restarting
        self.expected_exit = -signal.SIGKILL
        self.starts.append(RESET_POWER_ON)
        self.bench.firmware.send_signal(signal.SIGKILL)
        self.counts["power_cuts"] += 1
        await self.drop_clients()
        await asyncio.sleep(1.0)

    async def _settled(self):
        """A reboot or cut only once this boot's entry is on flash (flushed within 1 s), and
        on a working bus (a restart on a dead bus would add to its silence)."""
        now = time.monotonic()
        wait = max(_SETTLE_S - (now - self.up_at), self.bus_free_at - now)
        if wait > 0:
            await asyncio.sleep(wait)

    # -- what the runner reads ---------------------------------------------------------

    async def sample(self):
        found = await self.technician.diagnostics()
        self.boot_last = {key: found[key] for key in (
            "flash_writes", "modbus_failures", "frames_dropped", "requests_refused",
            "requests_shed", "safety_cuts")}
        totals = {key: self.boot_totals.get(key, 0) + value
                  for key, value in self.boot_last.items()}
        plant = self.sim.plant
        self.samples.append({"t_s": round(time.monotonic() - self.started_at, 1),
                             "heap_free": found["heap_free"], "soc_pct": round(plant.soc * 100, 1),
                             "power_w": round(plant.power_w),
                             "violations": len(self.sim.oracle.violations), **totals})

    async def read_events(self):
        first = max(self.seen_events, default=-1) + 1
        for entry in await field.events(self.technician, first):
            self.seen_events[entry["index"]] = entry

    async def check_events(self):
        """What is wrong with the event log at the end, as a list of texts."""
        entries = await field.events(self.technician, 0)
        wrong = []
        indexes = [e["index"] for e in entries]
        if indexes != list(range(indexes[0], indexes[0] + len(indexes))):
            wrong.append("the event log has a gap")
        for entry in entries:
            seen = self.seen_events.get(entry["index"])
            if seen is not None and seen != entry:
                wrong.append(f"entry {entry['index']} changed: {seen} then {entry}")
        boots = [e["value"] for e in entries if e["event"] == "boot"]
        expected = self.starts[-len(boots):]
        if len(boots) > len(self.starts) or any(
                b != e and not (e == RESET_POWER_ON and self.counts["crashes"])
                for b, e in zip(boots, expected, strict=True)):
            wrong.append(f"boot causes {boots}, expected the end of {self.starts}")
        if indexes[0] == 0 and len(boots) != len(self.starts):
            wrong.append(f"{len(boots)} boot entries for {len(self.starts)} starts")
        return wrong, len(entries), len(boots)


async def run(minutes, seed, heapsize, out, firmware):
    rng = random.Random(seed)
    bench = VirtualBench(out / "bench", SCENARIO, heapsize=heapsize, firmware=firmware)
    await bench.start()
    soak = Soak(bench, rng)
    keeper = asyncio.create_task(soak.keep_running())
    start = time.monotonic()
    end = start + minutes * 60
    forced = [(start + minutes * 20, "reboot"), (start + minutes * 40, "cut")]  # at least one
    next_sample = next_events = time.monotonic()
    last_line = 0.0
    try:
        while time.monotonic() < end:
            if keeper.done():  # the firmware did not start again: its error ends the soak
                keeper.result()
            try:
                await soak.clients()
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + _SAMPLE_S
                    await soak.sample()
                if now >= next_events:
                    next_events = now + _EVENTS_S
                    await soak.read_events()
                due = [f for f in forced if f[0] <= now]
                if due:
                    forced.remove(due[0])
                await soak.act(due[0][1] if due else None)
            except LINK_ERRORS:
                soak.counts["link_errors"] += 1  # a reboot or drop under way: open again
                await soak.drop_clients()
                await asyncio.sleep(0.5)
            if time.monotonic() - last_line > 30:
                last_line = time.monotonic()
                left = max(0, end - last_line) / 60
                print(f"  {left:4.1f} min left  violations {len(bench.sim.oracle.violations)}"
                      f"  crashes {soak.counts['crashes']}  restarts {soak.counts['restarts']}",
                      flush=True)
            await asyncio.sleep(rng.uniform(0.3, 2.0))
        await asyncio.sleep(_SETTLE_S)  # the last boot's and actions' entries onto flash
        for _ in range(3):
            try:
                await soak.clients()
                await soak.sample()
                wrong, kept, boots = await soak.check_events()
                break
            except LINK_ERRORS as exc:
                failure = f"{type(exc).__name__}: {exc}"
                await soak.drop_clients()
                await asyncio.sleep(2)
        else:
            wrong, kept, boots = [f"the event log could not be read at the end: {failure}"], 0, 0
        soak.end_refused_run()
    finally:
        keeper.cancel()
        await soak.drop_clients()
        await bench.stop()
    return soak, wrong, kept, boots


def describe_run(run):
    """A run of refused setpoints [(s, ERROR name, detail), ...], in a sentence."""
    reasons = {}
    for _, name, detail in run:
        reasons.setdefault(name, detail)
    said = "; ".join(f"{name} ({sum(r[1] == name for r in run)}: {detail})"
                     for name, detail in reasons.items())
    return (f"{len(run)} setpoints refused in a row over {run[-1][0] - run[0][0]:.0f} s "
            f"(from {run[0][0]:.0f} s): {said}")


def slope_per_min(samples, key):
    points = [(s["t_s"] / 60, s[key]) for s in samples if s.get(key) is not None]
    if len(points) < 2:
        return 0.0
    mean_t = sum(t for t, _ in points) / len(points)
    mean_v = sum(v for _, v in points) / len(points)
    spread = sum((t - mean_t) ** 2 for t, _ in points)
    return sum((t - mean_t) * (v - mean_v) for t, v in points) / spread if spread else 0.0


def plot(samples, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
    axes[0].plot(t, [s["heap_free"] for s in samples], color="tab:blue")
    axes[0].set_ylabel("heap free after\na collection (B)")
    axes[1].plot(t, [s["flash_writes"] for s in samples], label="flash writes")
    axes[1].plot(t, [s["modbus_failures"] for s in samples], label="Modbus failures")
    axes[1].plot(t, [s["frames_dropped"] + s["requests_refused"] for s in samples],
                 label="frames dropped or refused")
    axes[1].set_ylabel("count since start")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].plot(t, [s["power_w"] / 1000 for s in samples], color="tab:green", label="power kW")
    axes[2].plot(t, [s["soc_pct"] / 10 for s in samples], color="tab:orange",
                 label="SOC / 10 %")
    axes[2].set_ylabel("plant")
    axes[2].set_xlabel("minutes")
    axes[2].legend(loc="upper left", fontsize=8)
    fig.suptitle("soak: the pile under every fault the bench makes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("minutes", type=float)
    parser.add_argument("--seed", type=int, default=None, help="repeat a run (printed at start)")
    parser.add_argument("--heapsize", default="224K", help="the firmware's -X heapsize")
    parser.add_argument("--out", type=Path, default=None, help="where soak.png and soak.jsonl go")
    parser.add_argument("--firmware", type=Path, default=None,
                        help="a firmware tree (main.py, pile/, profiles/); default: this one "
                             "built to .mpy, as deployed")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int.from_bytes(os.urandom(4), "big")
    # absolute from here on: the firmware runs in the bench's own directory, where `make
    # soak`'s bench-out/soak (relative to the caller's) names nothing
    out = (args.out or Path(tempfile.mkdtemp(prefix="soak-"))).resolve()
    out.mkdir(parents=True, exist_ok=True)
    print(f"soak: {args.minutes:g} min, seed {seed}, heap {args.heapsize}, output in {out}",
          flush=True)
    try:
        if args.firmware is None:  # as a board runs it: precompiled, no compiler on the heap
            args.firmware = out / "firmware-mpy"
            build(args.firmware)
        started = time.monotonic()
        soak, wrong, kept, boots = asyncio.run(run(args.minutes, seed, args.heapsize, out,
                                                   args.firmware))
    except RuntimeError as exc:  # the firmware did not build or start (again): said why
        sys.exit(f"soak: {exc}")
    except KeyboardInterrupt:
        sys.exit("soak: interrupted; the bench is stopped")
    minutes = (time.monotonic() - started) / 60
    samples = soak.samples
    with open(out / "soak.jsonl", "w") as f:
        for sample in samples:
            f.write(json.dumps(sample) + "\n")
    plot(samples, out / "soak.png")
    last = samples[-1]
    hours = minutes / 60
    longest = soak.longest_run
    result = {"minutes": round(minutes, 2), "seed": seed,
              "violations": len(soak.bench.sim.oracle.violations),
              "crashes": soak.counts["crashes"],
              "heap_free_first": samples[0]["heap_free"], "heap_free_last": last["heap_free"],
              "heap_free_min": min(s["heap_free"] for s in samples if s["heap_free"]),
              "heap_free_slope_b_per_min": round(slope_per_min(samples, "heap_free"), 1),
              "flash_writes_per_hour": round(last["flash_writes"] / hours),
              "modbus_failures": last["modbus_failures"],
              "frames_dropped_or_refused": last["frames_dropped"] + last["requests_refused"],
              "event_log_intact": not wrong, "event_log_problems": wrong,
              "events_kept": kept, "boot_entries": boots, **soak.counts,
              "refusals": soak.refusals,
              "longest_refused_run": {
                  "setpoints": len(longest), "from_s": longest[0][0] if longest else None,
                  "seconds": round(longest[-1][0] - longest[0][0], 1) if longest else 0},
              "lockouts": soak.lockouts, "plot": str(out / "soak.png")}
    if soak.crash_output:
        print("crashes:", json.dumps(soak.crash_output, indent=1))
    for violation in soak.bench.sim.oracle.summary():
        print("violation:", violation)
        start = violation["start_s"]
        print("   after:", [a for a in soak.actions if start - 10 <= a[0] <= start + 1])
        print("   plant:", [e for e in soak.bench.sim.log if start - 10 <= e[0] <= start + 1])
    width = max(len(k) for k in result)
    for key, value in result.items():
        if key not in ("event_log_problems", "lockouts") or value:
            print(f"  {key:<{width}}  {value}")
    failures = [f"{result['violations']} oracle violations"] * bool(result["violations"])
    failures += [f"{result['crashes']} crashes"] * bool(result["crashes"])
    failures += [f"event log: {problem}" for problem in wrong]
    failures += [f"the aggregator was locked out: {lockout}" for lockout in soak.lockouts]
    for failure in failures:
        print("FAILED:", failure)
    print(json.dumps(result))
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
