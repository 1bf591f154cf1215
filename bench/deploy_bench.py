"""Seconds and bytes of `pilectl deploy`: a first deploy, a redeploy with nothing changed
and one after a one-module change (goal: that one copies one file).

    python bench/deploy_bench.py      (or `make bench-deploy`)

The board is the MicroPython unix port behind a pty (pilectl.unixboard): a pty moves
bytes at once, so on a real board's USB REPL the copying part takes longer; the
files and bytes are the same.
"""

import json
import shutil
import sys
import tempfile
from pathlib import Path

from pilectl import FIRMWARE
from pilectl import deploy as deployer
from pilectl.sim.run import load_scenario
from pilectl.unixboard import BoardBench


def one(bench, source=None):
    board, report = deployer.deploy(bench.board_file, bench.usb, source)
    banner = board.banner(30)
    if banner is None:
        sys.exit("the firmware did not start after the deploy")
    return report


def main():
    work = Path(tempfile.mkdtemp(prefix="deploy-bench-"))
    changed = work / "firmware"
    shutil.copytree(FIRMWARE, changed)
    with open(changed / "pile" / "meter.py", "a") as f:
        f.write("\n_CHANGED = 1\n")
    bench = BoardBench(work / "bench", load_scenario("steady"))
    try:
        runs = [("first deploy", one(bench)), ("nothing changed", one(bench)),
                ("one module changed", one(bench, changed))]
    finally:
        bench.close()
        shutil.rmtree(work, ignore_errors=True)
    print(f"{'deploy':<20} {'files':>7} {'bytes':>7} {'seconds':>8}")
    for name, report in runs:
        files = f"{len(report['files_copied'])}/{report['files_total']}"
        print(f"{name:<20} {files:>7} {report['bytes_copied']:>7} {report['seconds']:>8.2f}")
    print(json.dumps({name: {k: report[k] for k in ("files_copied", "bytes_copied", "seconds")}
                      for name, report in runs}))
    if runs[2][1]["files_copied"] != ["pile/meter.mpy"]:
        sys.exit("goal missed: the one-module redeploy copied "
                 f"{runs[2][1]['files_copied']}")


main()
