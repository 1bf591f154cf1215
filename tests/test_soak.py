"""Two minutes of the soak (bench/soak.py): every fault the bench makes, reboots and power
cuts, with no oracle violation, no crash and an event log intact across every restart.
`make soak` runs the 30-minute version."""

import json
import subprocess
import sys

from helpers import ROOT


def test_two_minutes_of_every_fault(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "2", "--seed", "20261203",
         "--out", str(tmp_path)], capture_output=True, text=True, timeout=600)
    lines = result.stdout.strip().splitlines()
    assert lines and lines[-1].startswith("{"), result.stdout + result.stderr
    found = json.loads(lines[-1])
    assert found["violations"] == 0, result.stdout
    assert found["crashes"] == 0, result.stdout
    assert found["event_log_intact"], found["event_log_problems"]
    assert found["reboots"] + found["power_cuts"] >= 1 and found["restarts"] >= 1, found
    assert found["heap_free_last"] > 0 and (tmp_path / "soak.png").stat().st_size > 0
    assert result.returncode == 0, result.stderr
