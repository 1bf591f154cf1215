"""`pilectl sim` as a technician runs it: a scenario on a bus, the oracle's verdict, errors."""

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import FIRMWARE, MICROPYTHON, ROOT
from pilectl import micropython_env
from pilectl.sim.harness import PtyPair
from pilectl.sim.plant import COMMAND, HEARTBEAT, SETPOINT
from pilectl.sim.run import Simulation
from pilectl.vbench import unix_board
from plant_bench import CONFIG

PILECTL = Path(sys.executable).parent / "pilectl"


def pilectl(*args, timeout=120):
    return subprocess.run([str(PILECTL), *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def test_unknown_scenario_lists_the_known_ones(tmp_path):
    device = tmp_path / "bus"
    device.touch()
    result = pilectl("sim", "--bus", str(device), "--scenario", "nope")
    assert result.returncode != 0
    assert "no scenario 'nope'" in result.stderr and "fault-tour" in result.stderr


def test_scenario_mistakes_are_named_before_the_bus_is_looked_for(tmp_path):
    for plant, said in (({"socc": 0.5}, "plant.socc is not a plant key (did you mean soc?)"),
                        ({"soc": 50}, "plant.soc is a fraction from 0 to 1 (50 % is 0.5)"),
                        ({"capacity_kwh": "big"}, "plant.capacity_kwh must be a number")):
        path = tmp_path / "mine.json"
        path.write_text(json.dumps({"name": "mine", "plant": plant}))
        result = pilectl("sim", "--bus", "/dev/no-such-adapter", "--scenario", str(path))
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def test_missing_bus_says_how_to_make_one():
    result = pilectl("sim", "--bus", "/dev/no-such-adapter")
    assert result.returncode != 0 and "socat" in result.stderr


@pytest.mark.usefixtures("socat")
def test_fault_tour_against_the_firmware_loop(tmp_path):
    ptys = PtyPair(tmp_path / "pile", tmp_path / "plant")
    pile, plant = ptys.a, ptys.b
    try:
        scenario = json.loads((ROOT / "host_tools/pilectl/scenarios/fault-tour.json").read_text())
        scenario["oracle"] = {"site_export_limit_w": CONFIG["site_export_limit_w"]}
        path = tmp_path / "tour.json"
        path.write_text(json.dumps(scenario))
        sim = subprocess.Popen([str(PILECTL), "sim", "--bus", str(plant), "--scenario",
                                str(path), "--json", "--trace", str(tmp_path / "trace.jsonl")],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               cwd=ROOT)
        time.sleep(1.5)
        board = tmp_path / "board.json"
        board.write_text(json.dumps(unix_board("tour-001", pile, state_dir=str(tmp_path))))
        firmware = subprocess.run([str(MICROPYTHON), "tests/mp/run_loop.py", str(board), "150",
                                   "-4000", json.dumps(CONFIG)],
                                  cwd=ROOT, env=micropython_env(FIRMWARE),
                                  capture_output=True, text=True, timeout=90)
        out, err = sim.communicate(timeout=60)
    finally:
        ptys.close()
    periods = [json.loads(line) for line in firmware.stdout.splitlines()]
    result = json.loads(out)
    assert sim.returncode == 0, err
    assert result["violations"] == []
    assert {name for _, name, _ in result["events"]} >= {"silence", "crc", "unplug", "fault"}
    assert result["energy_out_wh"] > 0
    assert any(not p["ok"] for p in periods) and periods[-1]["ok"]
    assert len((tmp_path / "trace.jsonl").read_text().splitlines()) > 100


@pytest.mark.parametrize("deaf_s, heard_s, violated", [(7.0, 4.5, False), (7.0, 5.5, True),
                                                      (0.0, 5.5, True)])
def test_a_stale_heartbeat_counts_only_while_the_converter_can_hear(deaf_s, heard_s, violated):
    """The oracle's heartbeat rule blames the firmware for a command left standing only
    for the time the converter could have heard a newer one: a converter the bus does not
    reach (silent) stops by its own watchdog, and the firmware cannot tell it to (found
    on the 19200-baud bus of the emulated Pico, where finding the fault takes longer)."""
    sim = Simulation({"name": "heartbeat"})
    converter = sim.plant.converter
    for address, value in ((SETPOINT, 0xFFFF), (SETPOINT + 1, 0xF060), (COMMAND, 1),
                           (HEARTBEAT, 1)):  # -4000 W, run, a heartbeat
        converter.holding[address] = value
        converter.on_write(address, [value])
    sim.faults.silent = True
    for _ in range(int(deaf_s / 0.05)):
        sim.advance(0.05)
    sim.faults.silent = False
    for _ in range(int(heard_s / 0.05)):  # listening again, and nothing new written
        sim.advance(0.05)
    assert sim.plant.commanded_w == -4000
    stale = [v for v in sim.oracle.violations if "heartbeat" in v.rule]
    assert bool(stale) == violated


def command(sim, watts):
    """The firmware's control write, as the bus would carry it: `watts`, run, a heartbeat."""
    converter = sim.plant.converter
    words = [(watts >> 16) & 0xFFFF, watts & 0xFFFF, 1, converter.holding[HEARTBEAT] + 1]
    for offset, value in enumerate(words):
        converter.holding[SETPOINT + offset] = value
    converter.on_write(SETPOINT, words)


def test_the_grid_steps_ramps_and_plays_a_recorded_event():
    sim = Simulation({"grid": {"hz": [[0, 50.0], [1, 50.0], [1, 49.8], [2, 49.9]],
                               "event": "gb-2019-08-09", "event_at": 10}})
    seen = {}
    for _ in range(int(100 / 0.05)):
        sim.advance(0.05)
        seen[round(sim.plant.t, 2)] = sim.plant.converter.holding[11]
    assert seen[0.5] == 5000 and seen[1.05] == 4980 and seen[1.5] == 4985  # 0.01 Hz
    assert seen[86.0] == 4880  # the event's second fall, 76 s after it began
    assert min(seen.values()) == 4880


@pytest.mark.parametrize("grid, said", [
    ({"hz": [[0, 5000]]}, "5000 Hz at 0 s is no grid frequency"),
    ({"event": "nope"}, "no recorded grid event 'nope'"),
    ({"hertz": []}, "grid.hertz is not a grid key"),
    ({"response": {"droop": 5}}, "grid.response.droop is not a response key")])
def test_grid_mistakes_are_named(tmp_path, grid, said):
    path = tmp_path / "mine.json"
    path.write_text(json.dumps({"name": "mine", "grid": grid}))
    result = pilectl("sim", "--bus", "/dev/no-such-adapter", "--scenario", str(path))
    assert result.returncode == 1 and said in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("answer_w, after_s, held_by, violated", [
    (-3721, 0.3, None, False),  # the droop's -721 W on time
    (-3721, 0.8, None, True),  # late: 0.2 s response + 0.3 s reading delay allowed
    (-3300, 0.3, None, True),  # on time but short of 90 %
    (-3300, 0.3, "soc", False),  # short, held at the SOC floor
    (-3300, 0.3, "export", False)])  # short, held by the site's export cap
def test_the_oracle_expects_the_frequency_response(answer_w, after_s, held_by, violated):
    limits = {"site_export_limit_w": 11000, "min_soc_pct": 20}
    if held_by == "soc":
        limits["min_soc_pct"] = 59.9
    if held_by == "export":
        limits["site_export_limit_w"] = 300  # 3 kW of load, 3.3 kW of discharge
    sim = Simulation({"grid": {"hz": [[0, 50.0], [1, 50.0], [1, 49.8]], "response": {}},
                      "load_w": [[0, 3000]], "oracle": limits})
    command(sim, -3000)
    while sim.plant.t < 1 + after_s:
        sim.advance(0.05)
    command(sim, answer_w)
    while sim.plant.t < 3:
        sim.advance(0.05)
    found = [v for v in sim.oracle.violations if "frequency" in v.rule]
    assert bool(found) == violated, found
    others = [v for v in sim.oracle.violations if "frequency" not in v.rule]
    assert held_by == "soc" or not others, others


def test_a_response_within_the_plants_step_is_not_taken_for_the_baseline():
    """The pile may answer between the plant's steps: the baseline is the power before."""
    sim = Simulation({"grid": {"hz": [[0, 50.0]], "response": {}}, "load_w": [[0, 3000]],
                      "oracle": {"site_export_limit_w": 11000}})
    command(sim, -3000)
    while sim.plant.t < 1:
        sim.advance(0.05)
    sim.plant.hold_grid(49.8)
    command(sim, -3721)  # answered before the plant's next step
    while sim.plant.t < 3:
        sim.advance(0.05)
    assert not sim.oracle.violations, sim.oracle.violations
