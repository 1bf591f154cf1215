"""`make hil-rp2`: the HIL suite on an emulated Raspberry Pi Pico, the path a real board takes.

The official rp2 MicroPython on the emulated RP2040 (pilectl.pico), the firmware deployed
over its USB serial with `pilectl deploy` (boards/pico.json), then
`pytest hil_tests --port <UART1, the pile's serial link> --bus <UART0, the RS485 bus>`,
exactly as `make hil` runs against a board on a cable (arguments go on to pytest; paths
into hil_tests among them replace the whole suite). The E-stop loop (GP15) is held
closed from the host, and the suite presses it through the runner's control port
(`--estop`), where a real bench would need a relay. Without Node, rp2040js or the
firmware image it says why and stops with exit code 0, as the suite's own tests skip.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pilectl.pico import Pico, PicoError, missing

ROOT = Path(__file__).resolve().parent.parent
BOARD = ROOT / "boards" / "pico.json"


def main(argv):
    reason = missing()
    if reason is not None:
        print(f"hil-rp2: skipped: {reason}")
        return 0
    with tempfile.TemporaryDirectory() as directory, Pico(directory) as pico:
        try:
            report = pico.deploy(BOARD)
        except PicoError as exc:
            print(f"hil-rp2: {exc}", file=sys.stderr)
            return 1
        pile_id, version = report["banner"]
        print(f"hil-rp2: pile {pile_id} firmware {version} on {report['machine']}, "
              f"deployed in {report['seconds']} s", flush=True)
        estop_pin = json.loads(BOARD.read_text())["estop_pin"]
        paths = [] if any("hil_tests" in a for a in argv) else [str(ROOT / "hil_tests")]
        estop = f"{pico.control}/{estop_pin}"
        return subprocess.call([sys.executable, "-m", "pytest", *paths, "--port", pico.uart1,
                                "--bus", pico.uart0, "--estop", estop, *argv], cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
