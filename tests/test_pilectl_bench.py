"""`pilectl bench` as a newcomer runs it: the scenario plays on MicroPython and leaves its files."""

import json
import subprocess

from conftest import BIN


def test_bench_plays_scenario_with_zero_violations(tmp_path):
    out = tmp_path / "bench-out"
    result = subprocess.run([str(BIN / "pilectl"), "bench", "--pace-ms", "0", "--json",
                             "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["violations"] == []
    assert summary["discharged_wh"] > 1000 and summary["charged_wh"] > 1000
    assert summary["final_soc_pct"] == 80
    assert (out / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    rows = [json.loads(line) for line in (out / "demo.jsonl").read_text().splitlines()]
    assert len(rows) == 14 * 60 + 1
    for row in rows:  # checked here again, from the trace alone
        assert -row["max_discharge"] <= row["applied"] <= row["max_charge"]
        if row["applied"] < 0:
            assert row["soc"] > 500, "discharged at or below the 50 % reserve"
        assert row["site"] >= 0, "exported to the grid with an export cap of 0"
    assert any(row["applied"] < 0 for row in rows) and any(row["applied"] > 0 for row in rows)
