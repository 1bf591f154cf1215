"""The soak (bench/soak.py) and the virtual bench it runs on.

Two minutes of every fault the bench makes, reboots and power cuts, with no oracle
violation, no crash and an event log intact across every restart (`make soak` runs the
30-minute version); a soak started as `make soak` starts it, with a relative --out; and a
bench whose firmware cannot start ends with a clear error and leaves no process behind.
"""

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from helpers import ROOT
from pilectl.client import PileError
from pilectl.sim.harness import PtyPair
from pilectl.vbench import VirtualBench

sys.path.insert(0, str(ROOT / "bench"))
import soak  # noqa: E402

SOAK = ROOT / "bench" / "soak.py"
SCENARIO = {"name": "idle", "plant": {"capacity_kwh": 5.0, "soc": 0.6}, "load_w": [[0, 1000]]}


def children():
    """The processes this test process started that have not been reaped yet, as
    {pid: command line} (zombies included): from /proc, psutil may be missing."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode().strip()
        except OSError:
            continue  # gone meanwhile
        ppid = int(stat.rpartition(")")[2].split()[1])
        if ppid == os.getpid():
            found[int(entry.name)] = cmdline or stat.split()[1]
    return found


def test_two_minutes_of_every_fault(tmp_path):
    result = subprocess.run(
        [sys.executable, str(SOAK), "2", "--seed", "20261203", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stdout + result.stderr
    found = json.loads(lines[-1])
    assert found["violations"] == 0, result.stdout
    assert found["crashes"] == 0, result.stdout
    assert found["event_log_intact"], found["event_log_problems"]
    assert found["reboots"] + found["power_cuts"] >= 1 and found["restarts"] >= 1, found
    assert found["heap_free_last"] > 0 and (tmp_path / "soak.png").stat().st_size > 0
    assert found["setpoints"] > 0 and not found["lockouts"], found["refusals"]
    assert result.returncode == 0, result.stderr


@pytest.mark.usefixtures("socat")
def test_a_relative_out_from_another_directory(tmp_path):
    """As `make soak` runs it: --out relative to the caller's directory, the firmware
    built there (bench-out/soak/firmware-mpy) and run from the bench's own directory."""
    result = subprocess.run(
        [sys.executable, str(SOAK), "0.3", "--seed", "7", "--out", "out/soak"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stdout + result.stderr
    found = json.loads(lines[-1])
    assert found["restarts"] >= 1 and found["crashes"] == 0, result.stdout
    assert (tmp_path / "out" / "soak" / "firmware-mpy" / "main.py").exists()
    assert Path(found["plot"]).is_absolute() and Path(found["plot"]).exists()


async def _start_and_stop(bench):
    try:
        await bench.start()
    finally:
        await bench.stop()


@pytest.mark.usefixtures("socat")
@pytest.mark.parametrize("fault", ["no main.py", "heap too small"])
def test_a_firmware_that_cannot_start_leaves_nothing_running(tmp_path, fault):
    before = children()
    if fault == "no main.py":
        (tmp_path / "tree" / "pile").mkdir(parents=True)
        bench = VirtualBench(tmp_path / "bench", SCENARIO, firmware=tmp_path / "tree")
    else:
        bench = VirtualBench(tmp_path / "bench", SCENARIO, heapsize="8K")
    with pytest.raises(RuntimeError, match="the firmware did not start") as raised:
        asyncio.run(bench.start())  # no stop(): start cleans up after itself
    said = str(raised.value)
    assert ("main.py" in said) if fault == "no main.py" else ("MemoryError" in said), said
    assert "--heapsize" in said and "--firmware" in said, said  # what to try next
    left = {pid: cmd for pid, cmd in children().items() if pid not in before}
    assert not left, f"still running after the failed start: {left}"


@pytest.mark.usefixtures("socat")
def test_a_start_interrupted_leaves_nothing_running(tmp_path):
    """Ctrl-C (a cancelled start) while the firmware boots: the socat pairs and the
    firmware end with it."""
    before = children()
    bench = VirtualBench(tmp_path / "bench", SCENARIO)

    async def interrupted():
        starting = asyncio.create_task(bench.start())
        while bench.firmware is None:  # the ptys are up and the firmware is booting
            await asyncio.sleep(0.01)
        starting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await starting

    asyncio.run(interrupted())
    left = {pid: cmd for pid, cmd in children().items() if pid not in before}
    assert not left, f"still running after the interrupted start: {left}"


def _refusal(name, detail):
    return PileError({v: k for k, v in soak.wire.ERRORS.items()}[name], detail)


def test_refusals_counted_by_reason_and_a_lockout_fails(monkeypatch):
    """A few refusals in a row pass (busy after a boot); LOCKOUT_SETPOINTS in a row, or
    every setpoint for LOCKOUT_S, is a lockout, with its reasons and the pile's words."""
    clock = [0.0]
    monkeypatch.setattr(soak, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    runner = soak.Soak(SimpleNamespace(sim=None), random.Random(1))  # no bench needed
    busy = "no converter reading yet: ask again in a moment"
    for _ in range(3):  # after a boot: busy, then accepted
        clock[0] += 1
        runner.refused(_refusal("busy", busy))
    runner.end_refused_run()
    assert not runner.lockouts
    for n in range(soak.LOCKOUT_SETPOINTS):
        clock[0] += 1
        runner.refused(_refusal("replay", f"seq {n} is not above 99") if n % 2 else
                       _refusal("busy", busy))
    runner.end_refused_run()
    assert len(runner.lockouts) == 1 and "10 setpoints refused in a row" in runner.lockouts[0]
    assert "replay (5: seq 1 is not above 99)" in runner.lockouts[0], runner.lockouts
    assert runner.refusals == {"busy": {"count": 8, "detail": busy},
                               "replay": {"count": 5, "detail": "seq 9 is not above 99"}}
    assert len(runner.longest_run) == soak.LOCKOUT_SETPOINTS
    for _ in range(3):  # few, but over more than a minute: every setpoint refused
        clock[0] += soak.LOCKOUT_S / 2
        runner.refused(_refusal("auth", "not authenticated: bad tag"))
    runner.end_refused_run()
    assert len(runner.lockouts) == 2 and "over 60 s" in runner.lockouts[1], runner.lockouts
    assert runner.counts["refused"] == 16


def _pty_ends(pid):
    """The ptys a process has open."""
    ends = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            ends.add(os.readlink(fd))
    return {end for end in ends if end.startswith("/dev/pts/")}


@pytest.mark.usefixtures("socat")
def test_a_pty_pair_where_an_earlier_one_left_its_socat(tmp_path):
    """A socat left running by a failed start in the same directory (make soak's
    bench-out/soak/bench every time) keeps its pty links there. A new pair took them for
    its own before its socat replaced them, so the plant could open one pair and the
    firmware the other: the pile never read its converter and refused every setpoint
    ("no converter reading yet"), a whole soak of them (2 of 3 benches started so)."""
    leftover = PtyPair(tmp_path / "bus-pile", tmp_path / "bus-plant")
    try:
        fresh = PtyPair(tmp_path / "bus-pile", tmp_path / "bus-plant")
        try:
            links = {os.readlink(fresh.a), os.readlink(fresh.b)}
            assert links <= _pty_ends(fresh.socat.pid), "the links are still the old pair's"
        finally:
            fresh.close()
    finally:
        leftover.close()


@pytest.mark.usefixtures("socat")
def test_a_unix_board_where_an_earlier_bench_left_its_socat(tmp_path):
    """The same for the unix board's USB port (pilectl.unixboard, the deploy bench's
    board): its link is its own socat's pty, not a leftover's."""
    from pilectl.unixboard import UnixBoard

    leftover = PtyPair(tmp_path / "usb", tmp_path / "other")
    try:
        board = UnixBoard(tmp_path / "flash", tmp_path / "usb")
        try:
            assert os.readlink(board.port) in _pty_ends(board.socat.pid), \
                "the link is still the old pair's"
        finally:
            board.close()
    finally:
        leftover.close()
