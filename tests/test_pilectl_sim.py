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
