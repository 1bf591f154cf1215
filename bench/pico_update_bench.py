"""A field update of the whole firmware on the emulated Raspberry Pi Pico, over its serial link.

    python bench/pico_update_bench.py [--skip-rollback] [--flash-timing]
                                                          (part of `make bench-update`)

The official rp2 MicroPython on the emulated RP2040 (pilectl.picobench, docs/pico.md),
the firmware deployed over its USB serial with a release key in its board file, the
simulated plant on UART0 (19200 baud), the technician on the serial link (UART1, 115200
baud), the pile discharging at a steady setpoint. Without Node.js, rp2040js or the Pico
image it says why and ends with {"skipped": REASON}.

Two clocks: the emulated RP2040's (`time.ticks_us()` on the board; the runner's counters
and the frames it stamps) and the wall clock (the host, and the plant, which stamps the
control-block writes it receives). The emulator keeps emulated time to wall time while
the core has time to spare, and falls behind while it runs flat out (it executes about a
fifth of an RP2040's instructions a wall second): so the emulated figures are what the
RP2040 would take, less what the emulator does not model (flash erase and program take
no time here: the counts are given; cache misses), and the wall figures what this
machine takes. Each figure says which clock it is on. `--flash-timing` runs the emulator
with the flash's erases and programs taking the chip's typical time (W25Q16JV: 45 ms a
4 KiB sector, 0.4 ms a page), the core stopped meanwhile, as MicroPython's rp2 port
writes the flash with interrupts off.
1. `transfer`: an armv6m package of the firmware (`pilectl release build --arch armv6m`),
   from the offer to every chunk held, on both clocks; the signature check within it
   (offer to the first chunk taken); flash erases and programs meanwhile; then the
   commit, the trial boot and its confirmation (wall). The control period is measured on
   both clocks, during the transfer and for as long before it: the emulated one from the
   runner's stamp of each control-block write the firmware sends on UART0, the wall one
   from the plant's. Goals: offer to all held ≤ 30 s; period p99 during the transfer no
   more than 10 ms above without.
2. `verify`: the P-256 check of the package's signature on the board (pile.signature, a
   slice at a time as the update task runs it), the firmware stopped: emulated µs, the
   longest slice, and wall seconds.
3. `rollback`: a package whose control loop hangs after 3 periods (a watchdog reset, then
   the boot stage rolls back): from the hang to the old firmware running again, against
   one watchdog timeout plus one boot (a requested reboot's, timed the same way).
Ends with one JSON line.
"""

import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from stats import figures

ROOT = Path(__file__).resolve().parent.parent
SCENARIO = {"name": "pico-update", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 6000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000}}
TRIAL_S = 120
WATCHDOG_S = 3.0  # pile/firmware.py's _WATCHDOG_MS
QUIET_S = 15.0  # the control period measured without a transfer, for this long
GAP_S = 0.052  # between update requests, as pilectl.field paces them (20 a second)
POLL_S = 0.5  # between asking how the signature check goes, as pilectl.field asks
PERIOD_S = 0.25  # the pile's tick_ms (DESIGN's default, the bench's board)
_AROUND_S = 0.12  # the requests shown with a late period: those in this long before
GOAL_TRANSFER_S = 30.0
GOAL_PERIOD_MS = 10.0
_HANG = ("            await self.loop.period()\n",
         "            await self.loop.period()\n"
         "            if self.loop.periods > 3:\n"
         "                import time\n"
         "                print('planted: the control loop hangs now at %d ms' % "
         "time.ticks_ms())\n"
         "                time.sleep(60)\n")


def pilectl(home, *args):
    done = subprocess.run([str(Path(sys.executable).parent / "pilectl"), *args],
                          capture_output=True, text=True,
                          env={"PILECTL_HOME": str(home), "PATH": "/usr/bin:/bin"})
    if done.returncode != 0:
        raise SystemExit(f"pilectl {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def package(directory, key, version, source=None):
    """`pilectl release build --arch armv6m` (the RP2040's), loaded."""
    from pilectl.release import Package

    out = directory / f"pile-{version}-armv6m.pkg"
    more = ["--source", str(source)] if source else []
    pilectl(directory / "home", "release", "build", "--key", str(key), "--arch", "armv6m",
            "--version", version, "-o", str(out), *more)
    return Package.load(out)


def hanging_source(directory):
    """The firmware with its control loop hanging after 3 periods (and saying when)."""
    source = directory / "hangs"
    shutil.copytree(ROOT / "firmware", source, ignore=shutil.ignore_patterns("__pycache__"))
    path = source / "pile" / "firmware.py"
    text = path.read_text()
    if _HANG[0] not in text:
        raise SystemExit("the planted hang no longer fits pile/firmware.py: update _HANG")
    path.write_text(text.replace(*_HANG))
    return source


def is_control_write(frame):
    """A Modbus request of the firmware that writes the converter's control block (the
    plant's SETPOINT register first): function 16, or 23 with its write address."""
    from pilectl.sim.plant import SETPOINT

    if len(frame) < 8:
        return False
    if frame[1] == 0x10:
        return int.from_bytes(frame[2:4], "big") == SETPOINT
    return frame[1] == 0x17 and int.from_bytes(frame[6:8], "big") == SETPOINT


def answer_times(frames, start, end):
    """Figures of the ms from a request's last byte in to its answer's first byte out, on
    the serial link within [start, end) (emulated): how long the pile held a chunk."""
    found = []
    heard = None
    for frame in frames:
        if frame.way == "in":
            heard = frame.end
        elif heard is not None:
            if start <= heard < end:
                found.append((frame.start - heard) * 1000)
            heard = None
    return figures(found)


def periods(times, start, end):
    """ms between consecutive times within [start, end)."""
    inside = [t for t in times if start <= t < end]
    return [(b - a) * 1000 for a, b in zip(inside, inside[1:], strict=False)]


class Console(threading.Thread):
    """The board's USB console: each line with the wall time it came (as it comes); a line
    with "running" (the firmware's start-up line) asks the runner for its counters at
    once, to stamp it with the emulated time since boot (`Pico.stamped`)."""

    def __init__(self, port, pico):
        import serial

        super().__init__(daemon=True)
        self.pico = pico
        self.lines = []
        self._port = serial.Serial(port, 115200, timeout=0.05)
        self._stopping = False
        self.start()

    def run(self):
        pending = b""
        while not self._stopping:
            try:
                pending += self._port.read(max(1, self._port.in_waiting))
            except (OSError, ValueError):
                return
            *lines, pending = pending.split(b"\n")
            now = time.monotonic()
            for line in lines:
                if b"running" in line:
                    self.pico.stamp()
                self.lines.append((now, line.decode(errors="replace").rstrip()))

    def when(self, pattern, after=0.0, timeout=120.0):
        """(wall time, match) of the first line matching `pattern` after `after`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for at, line in list(self.lines):
                found = re.search(pattern, line)
                if at > after and found:
                    return at, found
            time.sleep(0.01)
        raise SystemExit(f"the console never said {pattern!r}; it said: "
                         + " | ".join(line for _, line in self.lines[-10:]))

    def close(self):
        self._stopping = True
        self.join(1)
        self._port.close()


class Clocks:
    """Emulated and wall time now, from the runner's counters (`Pico.stats`)."""

    def __init__(self, pico):
        self.pico = pico

    def now(self):
        stats = self.pico.stats()
        return {"wall": time.monotonic(), "emulated": stats["emulated_ns"] / 1e9,
                "busy": (stats["emulated_ns"] - stats["idle_ns"]) / 1e9,
                "flash": stats.get("flash", {})}


async def transfer(bench, pkg):
    """The package from the offer to every chunk held, with the control period before and
    during on both clocks; then the commit, the trial boot and its confirmation."""
    from pilectl import field, wire
    from pilectl import transfer as plan_of

    pico, clocks = bench.pico, Clocks(bench.pico)
    wall_writes = bench.sim.plant.control_writes()
    aggregator = await bench.aggregator()
    await aggregator.setpoint(-4000, 3600)
    await aggregator.close()
    await asyncio.sleep(3)
    pico.record_frames("uart0", "uart1")
    quiet = clocks.now()
    await asyncio.sleep(QUIET_S)
    client = await bench.technician()
    before = await client.diagnostics()
    plan = plan_of.Transfer(pkg)
    status = await client.update_status()
    offered = taken = None
    sent = 0
    loop = asyncio.get_running_loop()
    while True:
        step = plan.next(status)
        if step == plan_of.WAIT:
            await asyncio.sleep(POLL_S)
            status = await client.update_status()
            continue
        if not isinstance(step, plan_of.Send) or step.mtype == wire.UPDATE_COMMIT:
            break
        if step.mtype == wire.UPDATE_OFFER:
            offered = clocks.now()
        elif taken is None:
            taken = clocks.now()
        await asyncio.sleep(max(0.0, GAP_S - (loop.time() - client.sent_at)))
        status = await client.request(step.mtype, step.fields, wire.UPDATE_STATUS)
        sent += step.mtype == wire.UPDATE_CHUNK
    held = clocks.now()
    frames = pico.recorded_frames()
    after = await client.diagnostics()
    # the commit, the reboot into the trial and its confirmation: pilectl update's own path
    result = await field.update(client, pkg, confirm_s=300)
    confirmed = time.monotonic()
    writes = [f.start for f in frames["uart0"] if f.way == "out" and is_control_write(f.data)]
    answers = answer_times(frames["uart1"], offered["emulated"], held["emulated"])
    walls = [t for t, _ in wall_writes]
    emulated, wall = (
        {"without": figures(periods(times, quiet[clock], offered[clock])),
         "during": figures(periods(times, offered[clock], held[clock]))}
        for clock, times in (("emulated", writes), ("wall", walls)))
    late = late_periods(writes, offered["emulated"], held["emulated"],
                        emulated["without"]["p99_ms"] + GOAL_PERIOD_MS, frames["uart1"])
    span = held["emulated"] - offered["emulated"]
    wall_span = held["wall"] - offered["wall"]
    flash = {k: held["flash"].get(k, 0) - offered["flash"].get(k, 0) for k in held["flash"]}
    return {"package_bytes": pkg.size, "files": len(pkg.files()), "chunks": sent,
            "offer_to_held_emulated_s": round(span, 2),
            "offer_to_held_wall_s": round(wall_span, 2),
            "signature_check_emulated_s": round(taken["emulated"] - offered["emulated"], 2),
            "signature_check_wall_s": round(taken["wall"] - offered["wall"], 2),
            "cpu_busy_pct": round(100 * (held["busy"] - offered["busy"]) / span, 1),
            "throughput_kb_s_emulated": round(pkg.size / span / 1000, 2),
            "flash_during": flash, "to_confirmed_wall_s": round(confirmed - offered["wall"], 1),
            "reconnects": result["reconnects"], "request_to_answer_emulated_ms": answers,
            "heap_free_before": before["heap_free"], "heap_low_before": before["heap_low"],
            "heap_free_after": after["heap_free"], "heap_low_after": after["heap_low"],
            # on the board, this boot: the latest tick, the longest after-tick work (flush,
            # budget, collection) and the update task's longest slice, before and after
            "on_board_ms": {name: [before.get(name), after.get(name)] for name in (
                "tick_late_max_ms", "after_tick_max_ms", "update_slice_max_ms")},
            "period_emulated_ms": emulated, "period_wall_ms": wall,
            "late_periods_emulated": late}


def late_periods(times, start, end, limit_ms, link):
    """[s after `start` the period began, its ms, the link's requests around its end] of
    every period within [start, end) longer than `limit_ms`: where in the transfer (the
    signature check, the writing) the control loop ran late, and whether a request was
    being handled when its tick was due. Each request as [ms from its last byte in to the
    tick that came late, ms from its answer's first byte out to that tick (negative:
    answered before it), its ms on the wire (a chunk's is some 45)], for a request in within
    `_AROUND_S` before the tick."""
    inside = [t for t in times if start <= t < end]
    found = []
    for a, b in zip(inside, inside[1:], strict=False):
        if (b - a) * 1000 > limit_ms:
            due = a + PERIOD_S
            found.append([round(a - start, 2), round((b - a) * 1000, 1),
                          requests_near(link, due - _AROUND_S, b)])
    return found


def requests_near(link, start, tick):
    """The requests on `link` (recorded frames) whose last byte came in within [start,
    tick), each [ms before `tick` it came, ms from `tick` to its answer, ms on the wire]."""
    found = []
    for i, frame in enumerate(link):
        if frame.way == "in" and start <= frame.end < tick:
            answer = next((f for f in link[i + 1:] if f.way == "out"), None)
            found.append([round((tick - frame.end) * 1000, 1),
                          None if answer is None else round((answer.start - tick) * 1000, 1),
                          round((frame.end - frame.start) * 1000, 1)])
    return found


_VERIFY = """
import gc, time
from binascii import unhexlify
from pile.signature import verifying
key, head, signature = unhexlify('%s'), unhexlify('%s'), unhexlify('%s')
gc.collect()
print('START')
steps = verifying(key, head, signature)
good = None
slices = longest = total = 0
while good is None:
    t = time.ticks_us()
    try:
        next(steps)
    except StopIteration as e:
        good = e.value
    dt = time.ticks_diff(time.ticks_us(), t)
    total += dt
    slices += 1
    longest = max(longest, dt)
print('VERIFY', good, total, slices, longest)
"""


def verify_on_board(bench, pkg, public_hex):
    """pile.signature on the board, the firmware stopped (after a soft reset, its
    watchdog fed): emulated µs from the board's clock, wall seconds between its lines."""
    from pilectl import MPREMOTE
    from pilectl.deploy import FEED_WATCHDOG

    bench.interrupt()
    code = FEED_WATCHDOG + _VERIFY % (public_hex, pkg.head.hex(), pkg.signature.hex())
    with subprocess.Popen([str(MPREMOTE), "connect", bench.repl, "exec", code],
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as run:
        started = None
        for line in run.stdout:
            if line.startswith("START"):
                started = time.monotonic()
            found = re.match(r"VERIFY (\w+) (\d+) (\d+) (\d+)", line)
            if found:
                wall = time.monotonic() - started
                break
        else:
            raise SystemExit(f"the board did not verify the signature (exit {run.wait()})")
        run.wait(30)
    good, total, slices, longest = found.groups()
    return {"valid": good == "True", "emulated_ms": round(int(total) / 1000, 1),
            "slices": int(slices), "longest_slice_emulated_ms": round(int(longest) / 1000, 2),
            "wall_s": round(wall, 2)}


# The package's chunks into pile.update.Updater on the board (a slot of its own under /ub,
# the signature taken as checked): each chunk taken (what the pile does for an
# UPDATE_CHUNK, less the link's frame, MAC, CBOR and the answer) and each slice of the
# update task's writing (`step`, run in the gap after a tick: up to 512 bytes into a file,
# a file closed, or the progress saved), timed, and the progress saves' share of them.
_CHUNKS = """
import gc, time
from binascii import unhexlify
from hashlib import sha256
import bootstage
from pile import cbor, update
from pile.store import Store

class Pile:
    version = '0.0.1'
    rollback = None
    def log_update(self, event):
        pass
    def request_reboot(self):
        pass

def checked(key, message, signature):
    return True
    yield

# The board's own other slot (after the rollback step, the package rolled back) is what
# the next update empties first, as an offer on the firmware does: emptied here, or three
# whole firmwares and these copies leave too little flash for the offer.
bootstage.init('')
for _ in update._empty(bootstage.path(bootstage.other())):
    pass
pile = Pile()
pile.store = Store('/ub/state')
bootstage.init('/ub')
u = update.Updater(pile, bootstage, bytes(64), checked, cbor, 60)
head = unhexlify('%s')
u.offer(head, bytes(64), False)
while u.step():
    pass
spent = [0, 0]
save = u._save
def timed(*args):
    t = time.ticks_us()
    save(*args)
    took = time.ticks_diff(time.ticks_us(), t)
    spent[0] += took
    spent[1] = max(spent[1], took)
u._save = timed
size, step = u.head['size'], u.head['chunk']
each = []
slices = []
with open('/ub/stream.bin', 'rb') as stream, open('/ub/links.bin', 'rb') as links:
    links.read(32)
    offset = 0
    while offset < size:
        data, link = stream.read(step), links.read(32)
        gc.collect()
        t = time.ticks_us()
        u.chunk(offset, data, link)
        each.append(time.ticks_diff(time.ticks_us(), t))
        offset += len(data)
        while u.working():
            gc.collect()
            into = u._out is not None
            t = time.ticks_us()
            u.step()
            slices.append((time.ticks_diff(time.ticks_us(), t), offset, into,
                           u._out is not None, u.written))
each.sort()
slices.sort()
print('CHUNKS', len(each), sum(each), each[len(each) // 2], each[-1], len(slices),
      sum(s[0] for s in slices), slices[len(slices) // 2][0], slices[-1][0], spent[0],
      spent[1])
print('LONGEST', slices[-5:])
"""


def chunks_on_board(bench, pkg):
    """Every chunk of `pkg` into an Updater on the board, the firmware stopped: emulated ms
    a chunk (median, longest), and the shares of the write and of the progress saved."""
    from pilectl import MPREMOTE
    from pilectl.deploy import FEED_WATCHDOG
    from pilectl.release import chain

    work = Path(tempfile.mkdtemp())
    try:
        (work / "stream.bin").write_bytes(pkg.stream)
        (work / "links.bin").write_bytes(b"".join(chain(pkg.stream, pkg.chunk)))
        done = subprocess.run(
            [str(MPREMOTE), "connect", bench.repl, "exec",
             FEED_WATCHDOG + "import os\nos.mkdir('/ub')", "+", "cp",
             str(work / "stream.bin"), str(work / "links.bin"), ":/ub/", "+", "exec",
             _CHUNKS % pkg.head.hex()], capture_output=True, text=True, timeout=600)
    finally:
        shutil.rmtree(work)
    found = re.search(r"CHUNKS" + r" (\d+)" * 10, done.stdout)
    longest_five = re.search(r"LONGEST (.*)", done.stdout)
    if longest_five:
        print("  the update task's five longest slices (us, chunk offset, a file open "
              "before, after, saved):", longest_five.group(1))
    if found is None:
        raise SystemExit(f"the chunks did not go in on the board: {done.stdout[-800:]}"
                         f"{done.stderr[-400:]}")
    (count, total, median, longest, slices, spent, slice_median, slice_longest, save,
     save_longest) = (int(v) for v in found.groups())
    return {"chunks": count, "median_ms": round(median / 1000, 1),
            "max_ms": round(longest / 1000, 1), "mean_ms": round(total / count / 1000, 1),
            "writing_slices": slices, "slice_median_ms": round(slice_median / 1000, 1),
            "slice_max_ms": round(slice_longest / 1000, 1),
            "writing_ms": round(spent / 1000, 1),
            "save_share_pct": round(100 * save / spent, 1),
            "save_max_ms": round(save_longest / 1000, 1)}


async def rollback(bench, pkg, console, running):
    """A hanging image, from its hang to the old firmware running again, on both clocks;
    against one watchdog timeout plus one boot (a requested reboot's)."""
    from pilectl import field
    from pilectl.transfer import UpdateFailed

    pico = bench.pico
    banner = rf"firmware {re.escape(running)} running"
    client = await bench.technician()
    asked = time.monotonic()
    await client.command("reboot")
    await client.close()
    up, _ = console.when(banner, asked)
    boot_emulated = pico.stamped(up)["emulated_ns"] / 1e9  # since that boot
    boot_wall = up - _boot_time(pico, asked)
    await asyncio.sleep(3)
    client = await bench.technician()
    try:
        await field.update(client, pkg, confirm_s=300)
    except UpdateFailed as exc:
        reason = exc.reason
    else:
        raise SystemExit("the hanging image was not rolled back")
    finally:
        await client.close()
    hang_at, hang = console.when(r"planted: the control loop hangs now at (\d+) ms")
    back_at, _ = console.when(banner, hang_at)
    fired = next(e for t, e in pico.history if t > hang_at and e["event"] == "watchdog")
    hang_to_reset = fired["emulated_ns"] / 1e9 - int(hang[1]) / 1000
    back_emulated = pico.stamped(back_at)["emulated_ns"] / 1e9  # since the rollback's boot
    client = await bench.technician()
    try:
        status = await client.update_status()
        hello_rollback = client.hello.get(9)
    finally:
        await client.close()
    return {"reason": reason, "update_status_rollback": status.get(8),
            "hello_rollback": hello_rollback, "running_after": status.get(6),
            "hang_to_old_running_wall_s": round(back_at - hang_at, 2),
            "hang_to_reset_emulated_s": round(hang_to_reset, 2),
            "rollback_boot_emulated_s": round(back_emulated, 2),
            "hang_to_old_running_emulated_s": round(hang_to_reset + back_emulated, 2),
            "watchdog_s": WATCHDOG_S, "boot_emulated_s": round(boot_emulated, 2),
            "boot_wall_s": round(boot_wall, 2),
            "goal_emulated_s": round(WATCHDOG_S + boot_emulated, 2),
            "goal_wall_s": round(WATCHDOG_S + boot_wall, 2)}


def _boot_time(pico, after):
    """The wall time of the first boot the runner reported after `after`."""
    return next(t for t, e in pico.history if t > after and e["event"] == "boot")


async def run(directory, skip_rollback, flash_timing):
    from pilectl import release
    from pilectl.picobench import PicoBench

    key = directory / "maker.pem"
    public = release.keygen(key)
    new = package(directory, key, "0.9.0")
    scenario = dict(SCENARIO, board={"update": {"release_key": public, "trial_s": TRIAL_S}})
    bench = PicoBench(directory / "bench", scenario, flash_timing=flash_timing)
    await bench.start()
    result = {"machine": bench.machine, "flash_timing": flash_timing}
    try:
        await bench.stop_firmware()  # its console reader: ours stamps each line
        console = Console(bench.repl, bench.pico)
        try:
            result["transfer"] = await transfer(bench, new)
            if not skip_rollback:
                hangs = package(directory, key, "0.9.1", hanging_source(directory))
                result["rollback"] = await rollback(bench, hangs, console, "0.9.0")
        finally:
            console.close()
        result["verify"] = verify_on_board(bench, new, public)
        result["chunk_on_board"] = chunks_on_board(bench, new)
    finally:
        with contextlib.suppress(Exception):
            await bench.stop()
    result["violations"] = len(bench.sim.oracle.summary())
    return result


def report(result):
    t = result["transfer"]
    print(f"on {result['machine']} (emulated), serial link 115200 baud; flash writes "
          + ("take the chip's typical time" if result["flash_timing"] else "take no time"))
    print(f"transfer: {t['package_bytes']} bytes in {t['files']} files, {t['chunks']} chunks; "
          f"offer to all held {t['offer_to_held_emulated_s']} s emulated "
          f"({t['offer_to_held_wall_s']} s wall), goal ≤ {GOAL_TRANSFER_S:g} s: "
          f"{'met' if t['offer_to_held_emulated_s'] <= GOAL_TRANSFER_S else 'NOT met'}")
    print(f"  signature check in it: {t['signature_check_emulated_s']} s emulated "
          f"({t['signature_check_wall_s']} s wall); core busy {t['cpu_busy_pct']} %; "
          f"flash during it: {t['flash_during']}")
    a = t["request_to_answer_emulated_ms"]
    print(f"  a request's last byte to its answer's first (emulated): median {a['median_ms']} "
          f"ms, p99 {a['p99_ms']} ms, max {a['max_ms']} ms ({a['n']} requests)")
    print(f"  heap (DIAGNOSTICS): free {t['heap_free_before']} B before, "
          f"{t['heap_free_after']} B with all held; lowest {t['heap_low_before']} B before, "
          f"{t['heap_low_after']} B with all held")
    print("  on the board (DIAGNOSTICS, ms, before and with all held):",
          ", ".join(f"{k} {v[0]} → {v[1]}" for k, v in t["on_board_ms"].items()))
    print(f"  confirmed after its trial boot {t['to_confirmed_wall_s']} s (wall) after the offer")
    for clock in ("emulated", "wall"):
        p = t[f"period_{clock}_ms"]
        print(f"  control period ({clock} clock): p99 {p['without']['p99_ms']} ms without, "
              f"{p['during']['p99_ms']} ms during (median {p['during']['median_ms']}, max "
              f"{p['during']['max_ms']}, {p['during']['n']} periods)")
    e = t["period_emulated_ms"]
    above = e["during"]["p99_ms"] - e["without"]["p99_ms"]
    print(f"  periods more than {GOAL_PERIOD_MS:g} ms over the p99 without, [s after the "
          f"offer, ms] (the signature check ends at {t['signature_check_emulated_s']} s): "
          f"{t['late_periods_emulated'] or 'none'}")
    print(f"  goal: p99 during no more than {GOAL_PERIOD_MS:g} ms above without (emulated): "
          f"{above:+.1f} ms, {'met' if above <= GOAL_PERIOD_MS else 'NOT met'}")
    v = result["verify"]
    print(f"P-256 signature check on the board: {v['emulated_ms']} ms emulated in {v['slices']} "
          f"slices (longest {v['longest_slice_emulated_ms']} ms), {v['wall_s']} s wall; "
          f"valid: {v['valid']}")
    c = result["chunk_on_board"]
    print(f"on the board, the firmware stopped (emulated): a chunk taken, median "
          f"{c['median_ms']} ms, max {c['max_ms']} ms; the update task's writing, "
          f"{c['writing_ms']} ms in {c['writing_slices']} slices (median "
          f"{c['slice_median_ms']} ms, max {c['slice_max_ms']} ms), saving the progress "
          f"{c['save_share_pct']} % of it")
    if "rollback" in result:
        r = result["rollback"]
        print(f"rollback of a hanging image: old firmware running "
              f"{r['hang_to_old_running_emulated_s']} s (emulated) after the hang "
              f"(reset after {r['hang_to_reset_emulated_s']} s, then a boot of "
              f"{r['rollback_boot_emulated_s']} s); goal: watchdog {r['watchdog_s']:g} s + "
              f"one boot {r['boot_emulated_s']} s = {r['goal_emulated_s']} s; wall "
              f"{r['hang_to_old_running_wall_s']} s against {r['goal_wall_s']} s")
        print(f"  the pile says: {r['update_status_rollback']}")
    print(f"oracle violations: {result['violations']}")
    print(json.dumps(result))


def main():
    from pilectl.pico import missing

    reason = missing()
    if reason is not None:
        print(f"pico-update bench: skipped: {reason}")
        print(json.dumps({"skipped": reason}))
        return
    with tempfile.TemporaryDirectory() as directory:
        result = asyncio.run(run(Path(directory), "--skip-rollback" in sys.argv,
                                 "--flash-timing" in sys.argv))
    report(result)


if __name__ == "__main__":
    main()
