"""The firmware's control loop under MicroPython against the simulated plant, on a pty pair.

tests/mp/run_loop.py builds the loop with the firmware's own `build_loop` from a board
file written here; the plant (pymodbus, physics, oracle) runs in a thread of this
process. The script's JSON lines are read one period at a time, so a test or the bus
benchmark can inject faults at known periods.
"""

import json
import subprocess

from helpers import FIRMWARE, MICROPYTHON, ROOT
from pilectl import micropython_env
from pilectl.sim.harness import PlantThread, PtyPair
from pilectl.sim.run import Simulation
from pilectl.vbench import unix_board

# A 16 kW connection that may export 11 kW: the loop's own limits stay out of the way.
CONFIG = {"site_import_limit_w": 16000, "site_export_limit_w": 11000}


class PlantBench:
    def __init__(self, directory, scenario, periods, setpoint_w, config=None, line_baud=None,
                 **board):
        """Ptys in `directory`; `line_baud` delays replies by their wire time at that baud;
        `board` adds keys to the board file (e.g. modbus profiles)."""
        self.ptys = PtyPair(directory / "pile", directory / "plant")
        self.sim = Simulation(scenario)
        self.sim.faults.line_baud = line_baud
        self.plant = PlantThread(self.sim, self.ptys.b)
        spec = unix_board("loop-001", self.ptys.a, state_dir=str(directory / "state"))
        spec["modbus"].update(board)
        board_file = directory / "board.json"
        board_file.write_text(json.dumps(spec))
        args = [str(MICROPYTHON), "tests/mp/run_loop.py", str(board_file), str(periods),
                str(setpoint_w)]
        if config:
            args.append(json.dumps(config))
        self.proc = subprocess.Popen(args, cwd=ROOT, env=micropython_env(FIRMWARE),
                                     stdout=subprocess.PIPE, text=True)

    def periods(self):
        for line in self.proc.stdout:
            yield json.loads(line)

    def close(self):
        self.proc.kill()
        self.proc.wait()
        self.plant.close()
        self.ptys.close()
