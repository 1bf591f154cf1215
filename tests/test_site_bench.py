"""The simulated site with three real firmwares (MicroPython unix port) as one site group
(pilectl/sitebench.py): the export cap held at the connection point while all three
discharge into a light load, and through the loss of the leader, of a member, of the site
link and of the meter, and a forged allowance: 0 oracle violations in each, over UDP on
the site LAN and over the site bus (ptys joined by a multi-drop hub). The same three
piles with today's firmware (each keeping the caps alone) overshoot.

Each test runs its own site for about 25 s. The oracle allows the meter's reading delay
and one period (2 s) before an overshoot counts."""

import asyncio

import pytest
from pilectl.sitebench import SiteBench

SETTLE_S = 8  # HELLOs, the first allowances, the ramps
CAP_W = 11000
LOAD_W = 2000
TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "bus"])


def run(tmp_path, failure=None, alone=False, after_s=8, transport="udp", load_w=LOAD_W):
    """A three-pile site on `transport` asked to discharge 11 kW each into a 2 kW load;
    `failure(bench)` after SETTLE_S, then `after_s` more. Returns the bench, stopped."""

    async def scenario():
        bench = SiteBench(tmp_path, piles=3, alone=alone, export_cap_w=CAP_W,
                          load_w=((0, load_w),), transport=transport)
        await bench.start()
        try:
            await bench.discharge()
            bench.asked_at = bench.t
            await asyncio.sleep(SETTLE_S)
            bench.failed_at = bench.t
            if failure is not None:
                result = failure(bench)
                if asyncio.iscoroutine(result):
                    await result
            await asyncio.sleep(after_s)
        finally:
            await bench.stop()
        return bench

    return asyncio.run(scenario())


def settled(bench):
    """The samples from SETTLE_S after the aggregator asked on: (t, site W, [pile W])."""
    return [s for s in bench.samples if s[0] >= bench.failed_at]


@TRANSPORTS
def test_the_export_cap_holds_while_all_three_discharge_into_a_light_load(socat, tmp_path,
                                                                          transport):
    bench = run(tmp_path, transport=transport)
    assert bench.violations() == []
    assert bench.worst_export_over_w(since_s=bench.failed_at) == 0
    exported = [-site_w for _, site_w, _ in settled(bench)]
    assert min(exported) >= 0.95 * CAP_W, settled(bench)[-1]  # the headroom used
    powers = settled(bench)[-1][2]
    assert max(powers) - min(powers) <= 1  # max-min fair: no pile starved


@TRANSPORTS
def test_the_leader_killed(socat, tmp_path, transport):
    bench = run(tmp_path, lambda b: b.kill(0), transport=transport)
    assert bench.violations() == []
    shares = bench.shares
    # every member falls back to its share within two periods (and one tick)
    back = [t for t, _, powers in bench.samples if t > bench.failed_at
            and all(-powers[i] <= shares[i][1] for i in (1, 2))]
    assert back and back[0] - bench.failed_at <= 2.25, back[:1]


@TRANSPORTS
def test_a_member_killed(socat, tmp_path, transport):
    bench = run(tmp_path, lambda b: b.kill(2), transport=transport)
    assert bench.violations() == []


@TRANSPORTS
def test_the_site_link_cut(socat, tmp_path, transport):
    bench = run(tmp_path, lambda b: b.cut_link(), transport=transport)
    assert bench.violations() == []
    powers = bench.samples[-1][2]  # the members on their fallback shares, the leader at 0
    assert all(-p <= share[1] for p, share in zip(powers[1:], bench.shares[1:], strict=True))
    assert powers[0] == 0, powers


@TRANSPORTS
def test_the_meter_lost(socat, tmp_path, transport):
    bench = run(tmp_path, lambda b: b.meter_lost(), after_s=10, transport=transport)
    assert bench.violations() == []
    assert bench.samples[-1][2] == [0, 0, 0]  # the no-meter rule: no export at all


@TRANSPORTS
def test_a_forged_allowance(socat, tmp_path, transport):
    bench = run(tmp_path, lambda b: b.forge_allowance(1), after_s=4, transport=transport)
    assert bench.violations() == []
    assert bench.worst_export_over_w(since_s=bench.failed_at) == 0


def test_a_load_falling_over_a_second_keeps_the_cap(socat, tmp_path):
    """The group at its export cap while the load falls 6 kW over a second, five times at
    five phases of the meter's readings: the leader takes the load to go on falling as
    far as it fell between the last two readings, so the reading that shows a fall's
    start meets it, and no overshoot outlasts the grace (seen failing without that rule:
    2.2 s over the cap)."""
    bench = run(tmp_path, SiteBench.falling_load, after_s=5 * 4.3 + 2, load_w=7000)
    assert bench.violations() == []
    assert min(-site_w for _, site_w, _ in settled(bench)) < 0.8 * CAP_W  # the falls came


def test_todays_firmware_alone_overshoots_the_cap(socat, tmp_path):
    """Each pile keeps the caps from its own view of the meter: all three take the same
    headroom, the site exports past its cap, all cut, all climb again. The oracle sees
    each overshoot (an excursion), though none outlasts its grace (a violation)."""
    bench = run(tmp_path, alone=True)
    seen = bench.oracle.excursions["site export above its cap"]
    # how far varies run to run (docs/site-group.md: 1.9 to 7 kW); a group: 0 W, 0 s
    assert seen["worst_beyond"] > 1000 and seen["seconds"] > 1.0, seen


def pilectl(*args, cwd):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", "from pilectl.cli import main; main()", *args],
                          capture_output=True, text=True, timeout=300, cwd=cwd)


def test_pilectl_bench_plays_the_site_scenario(socat, tmp_path):
    import json

    result = pilectl("bench", "--scenario", "site", "--json", "--out", str(tmp_path),
                     cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    summary = json.loads(result.stdout)
    assert summary["piles"] == 3 and summary["violations"] == []
    assert summary["setpoints"] > 0 and summary["setpoints_outside_an_allowance"] == 0
    assert (tmp_path / "site.png").stat().st_size > 10000
    rows = [json.loads(line) for line in (tmp_path / "site.jsonl").read_text().splitlines()]
    assert len(rows[-1]["piles"]) == 3


def test_a_wrong_site_scenario_is_said_without_a_traceback(tmp_path):
    import json

    scenario = tmp_path / "nine.json"
    scenario.write_text(json.dumps({"name": "nine", "site": {"piles": 9}}))
    result = pilectl("bench", "--scenario", str(scenario), cwd=tmp_path)
    assert result.returncode == 1 and "site.piles must be 2 to 8, not 9" in result.stderr
    assert "Traceback" not in result.stderr
