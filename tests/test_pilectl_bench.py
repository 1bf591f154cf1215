"""`pilectl bench` as a newcomer runs it: the whole pile on the virtual bench, one minute."""

import json
import subprocess

import pytest
from helpers import BIN
from pile import limits


@pytest.mark.usefixtures("socat")
def test_bench_plays_the_evening_with_zero_violations(tmp_path):
    out = tmp_path / "bench-out"
    # as `make bench` runs it: the output folder relative to where the command runs
    result = subprocess.run([str(BIN / "pilectl"), "bench", "--json", "--out", "bench-out"],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["violations"] == []
    assert summary["setpoints_acked"] == 8 and summary["setpoints_refused"] == 0
    assert summary["link_messages_rejected"] == 0
    assert summary["discharged_wh"] > 10 and summary["charged_wh"] > 10
    assert summary["peak_shaved_w"] > 2000
    assert summary["min_soc_pct"] >= 54.9  # the owner's reserve held
    assert (out / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "bench.jsonl").read_text().splitlines()]
    assert len(rows) >= 50
    for row in rows:  # checked again, from the trace alone
        assert -row["max_discharge_w"] <= row["applied_w"] <= row["max_charge_w"]
        if row["applied_w"] < 0:
            assert row["soc_permille"] > 550, "discharged at or below the reserve"
    # The grid while discharge follows the load under the export cap: ramps, the reserve and
    # the first second of a discharge (the plant's power still rising from 0) aside.
    following = [r["load_w"] + r["plant_power_w"]
                 for before, r in zip(rows, rows[1:], strict=False)
                 if r["reasons"] & limits.REASON_SITE_EXPORT_CAP and r["applied_w"] < 0
                 and r["power_w"] < 0 and before["power_w"] < 0
                 and not r["reasons"] & (limits.REASON_RAMPING | limits.REASON_DEPARTURE_RESERVE)]
    assert len(following) >= 10
    assert -300 <= min(following) and max(following) <= 600, "discharge see-saws around the load"
    reasons = 0
    for row in rows:
        reasons |= row["reasons"]
    for bit in (limits.REASON_DEPARTURE_RESERVE, limits.REASON_BATTERY_HOT,
                limits.REASON_SITE_EXPORT_CAP):
        assert reasons & bit, f"the scenario never showed reason bit {bit}"
    assert any(r["applied_w"] < 0 for r in rows) and any(r["applied_w"] > 0 for r in rows)
