"""The firmware's control loop and its converter and meter drivers under MicroPython,
against the simulated plant on a pty.

tests/mp/run_loop.py runs the loop the firmware builds (`build_loop`) at 4 Hz; the plant
(pymodbus + physics + oracle) runs in this process. Faults are injected at known
periods; the oracle must record nothing.
"""

import pytest
from pile import limits
from pile.control import STATE_DISCHARGING, STATE_FAULT
from plant_bench import CONFIG, PlantBench

SCENARIO = {"name": "drivers", "load_w": [[0, 6000]], "oracle": {"site_export_limit_w": 11000}}


@pytest.fixture
def drive(tmp_path, socat):
    benches = []

    def start(periods, setpoint, scenario=SCENARIO, **board):
        bench = PlantBench(tmp_path, scenario, periods, setpoint, CONFIG, **board)
        benches.append(bench)
        return bench

    yield start
    for bench in benches:
        bench.close()


def test_one_write_and_one_look_per_period_heartbeat_and_telemetry(drive):
    bench = drive(24, -5000)
    periods = list(bench.periods())
    assert len(periods) == 24 and all(p["ok"] for p in periods)
    assert periods[0]["rated"] == [11000, 11000]  # nameplate read once at start
    assert [p["heartbeat"] for p in periods] == list(range(1, 25))  # +1 a tick, no cuts
    assert all(p["heartbeat_echo"] == p["heartbeat"] for p in periods)  # seen mid-tick
    later = periods[1:]
    # the tick's function 23 and the mid-tick function 3; the meter once a second
    assert {p["transactions"] for p in later} == {2, 3}
    meter_periods = [p for p in later if p["transactions"] == 3]
    assert 4 <= len(meter_periods) <= 7
    meter_reads = [r for r in bench.sim.faults.requests if r[0] == 2]
    assert len(meter_reads) == len(meter_periods) + 1  # and once in the first period
    assert periods[-1]["applied"] == -5000 and periods[-1]["power"] == -5000
    assert periods[-1]["site_w"] == 1000  # 6 kW load less 5 kW from the car
    functions = {r[1] for r in bench.sim.faults.requests if r[0] == 1}
    assert functions == {3, 23}  # the nameplate and the mid-tick reads, the tick's writes
    assert bench.sim.oracle.violations == []


def test_without_function_23_it_falls_back_to_16_then_3(drive):
    scenario = dict(SCENARIO, events=[{"at": 0, "do": "no_function_23"}])
    bench = drive(10, 3000, scenario=scenario)
    periods = list(bench.periods())
    assert all(p["ok"] for p in periods[1:]) and not periods[-1]["use_23"]
    assert periods[-1]["applied"] == 3000 and periods[-1]["power"] == 3000
    assert {r[1] for r in bench.sim.faults.requests if r[0] == 1} >= {3, 16}


def test_silent_converter_faults_after_three_polls_and_recovers(drive):
    bench = drive(34, -4000)
    states = []
    for period in bench.periods():
        states.append(period)
        if period["period"] == 12:
            bench.sim.faults.silent = True
        if period["period"] == 20:
            bench.sim.faults.silent = False
    silent = states[13:21]
    assert not any(p["ok"] for p in silent)
    # a period's failed poll counts at the next period's decision
    assert [p["failed_polls"] for p in silent[:4]] == [0, 1, 2, 3]
    assert all(p["state"] == STATE_FAULT and p["applied"] == 0 for p in silent[3:])
    assert states[22]["ok"] and states[22]["state"] != STATE_FAULT
    assert states[-1]["state"] == STATE_DISCHARGING and states[-1]["applied"] == -4000
    writes = [r for r in bench.sim.faults.requests if r[1] == 23 or r[1] == 16]
    assert any(r[3][2] == 0 for r in writes[13:])  # a stop command went out on recovery
    assert bench.sim.oracle.violations == []


def test_meter_silence_makes_the_reading_stale_and_stops_discharge(drive):
    scenario = dict(SCENARIO, events=[{"at": 2.5, "do": "meter_silence", "for": 5}])
    bench = drive(36, -3000, scenario=scenario)
    periods = list(bench.periods())
    lost = [p for p in periods if p["reasons"] & limits.REASON_METER_LOST]
    assert lost, "the meter never counted as lost"
    assert all(p["applied"] == 0 for p in lost)
    assert all(p["meter_age_ms"] > 3000 for p in lost)
    assert periods[-1]["applied"] == -3000 and not periods[-1]["reasons"] & limits.REASON_METER_LOST
    assert bench.sim.oracle.violations == []


def test_battery_over_temperature_cuts_power_and_the_oracle_agrees(drive):
    scenario = dict(SCENARIO, events=[{"at": 3, "do": "battery_temp", "value": 58}])
    bench = drive(24, -5000, scenario=scenario)
    periods = list(bench.periods())
    hot = [p for p in periods if p["battery_temp"] >= 550]
    assert hot and all(p["applied"] == 0 for p in hot)
    assert bench.sim.oracle.violations == []


def test_the_oracle_sees_a_pile_that_ignores_the_cap(drive):
    """Negative control: the firmware here allows 11 kW export, the oracle's cap is 0."""
    scenario = dict(SCENARIO, oracle={"site_export_limit_w": 0})
    bench = drive(20, -9000, scenario=scenario)
    list(bench.periods())
    rules = {v.rule for v in bench.sim.oracle.violations}
    assert rules == {"site export above its cap"}
