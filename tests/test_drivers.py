"""Converter and meter drivers under MicroPython against the simulated plant on a pty.

tests/mp/drive_plant.py runs the drivers and the controller at 4 Hz; the plant
(pymodbus + physics + oracle) runs in this process. Faults are injected at known
ticks; the oracle must record nothing.
"""

import shutil

import pytest
from pile import limits
from pilectl.sim.harness import PlantBench

pytestmark = pytest.mark.skipif(shutil.which("socat") is None,
                                reason="socat is missing: run `make setup` (apt-get install socat)")
FAULT, DISCHARGING = 4, 3
SCENARIO = {"name": "drivers", "load_w": [[0, 6000]], "oracle": {"site_export_limit_w": 11000}}


@pytest.fixture
def drive(tmp_path):
    benches = []

    def start(ticks, setpoint, meter="sdm630", scenario=SCENARIO):
        bench = PlantBench(tmp_path, scenario, "tests/mp/drive_plant.py", "115200",
                           "generic-v2g", meter, str(ticks), str(setpoint))
        benches.append(bench)
        return bench

    yield start
    for bench in benches:
        bench.close()


def test_one_transaction_per_tick_heartbeat_and_telemetry(drive):
    bench = drive(24, -5000)
    ticks = list(bench.ticks())
    assert len(ticks) == 24 and all(t["ok"] for t in ticks)
    assert ticks[0]["rated"] == [11000, 11000]  # nameplate read once at start
    assert [t["heartbeat"] for t in ticks] == list(range(1, 25))
    assert all(t["heartbeat_echo"] == t["heartbeat"] - 1 for t in ticks[1:])
    later = ticks[1:]
    meter_ticks = [t for t in later if t["meter_age_ms"] < 100]
    assert all(t["transactions"] == 1 for t in later if t not in meter_ticks)
    assert all(t["transactions"] == 2 for t in meter_ticks) and len(meter_ticks) >= 4
    assert ticks[-1]["applied"] == -5000 and ticks[-1]["power"] == -5000
    assert ticks[-1]["site_w"] == 1000  # 6 kW load less 5 kW from the car
    functions = {r[1] for r in bench.sim.faults.requests if r[0] == 1}
    assert functions == {3, 23}  # the nameplate, then only function 23
    assert bench.sim.oracle.violations == []


def test_without_function_23_it_falls_back_to_16_then_3(drive):
    scenario = dict(SCENARIO, events=[{"at": 0, "do": "no_function_23"}])
    bench = drive(10, 3000, scenario=scenario)
    ticks = list(bench.ticks())
    assert all(t["ok"] for t in ticks[1:]) and not ticks[-1]["use_23"]
    assert ticks[-1]["applied"] == 3000 and ticks[-1]["power"] == 3000
    assert {r[1] for r in bench.sim.faults.requests if r[0] == 1} >= {3, 16}


def test_silent_converter_faults_after_three_polls_and_recovers(drive):
    bench = drive(34, -4000)
    states = []
    for tick in bench.ticks():
        states.append(tick)
        if tick["tick"] == 12:
            bench.sim.faults.silent = True
        if tick["tick"] == 20:
            bench.sim.faults.silent = False
    silent = states[13:21]
    assert not any(t["ok"] for t in silent)
    assert [t["failed_polls"] for t in silent[:3]] == [1, 2, 3]
    assert all(t["state"] == FAULT and t["applied"] == 0 for t in silent[2:])
    assert states[21]["ok"] and states[21]["state"] != FAULT
    assert states[-1]["state"] == DISCHARGING and states[-1]["applied"] == -4000
    writes = [r for r in bench.sim.faults.requests if r[1] == 23 or r[1] == 16]
    assert any(r[3][2] == 0 for r in writes[13:])  # a stop command went out on recovery
    assert bench.sim.oracle.violations == []


def test_meter_silence_makes_the_reading_stale_and_stops_discharge(drive):
    scenario = dict(SCENARIO, events=[{"at": 2.5, "do": "meter_silence", "for": 5}])
    bench = drive(36, -3000, scenario=scenario)
    ticks = list(bench.ticks())
    lost = [t for t in ticks if t["reasons"] & limits.METER_LOST]
    assert lost, "the meter never counted as lost"
    assert all(t["applied"] == 0 for t in lost)
    assert all(t["meter_age_ms"] > 3000 for t in lost)
    assert ticks[-1]["applied"] == -3000 and not ticks[-1]["reasons"] & limits.METER_LOST
    assert bench.sim.oracle.violations == []


def test_battery_over_temperature_cuts_power_and_the_oracle_agrees(drive):
    scenario = dict(SCENARIO, events=[{"at": 3, "do": "battery_temp", "value": 58}])
    bench = drive(24, -5000, scenario=scenario)
    ticks = list(bench.ticks())
    hot = [t for t in ticks if t["battery_temp"] >= 550]
    assert hot and all(t["applied"] == 0 for t in hot)
    assert bench.sim.oracle.violations == []


def test_the_oracle_sees_a_pile_that_ignores_the_cap(drive):
    """Negative control: the firmware here allows 11 kW export, the oracle's cap is 0."""
    scenario = dict(SCENARIO, oracle={"site_export_limit_w": 0})
    bench = drive(20, -9000, scenario=scenario)
    list(bench.ticks())
    rules = {v.rule for v in bench.sim.oracle.violations}
    assert rules == {"site export above its cap"}
