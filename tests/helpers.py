"""Shared paths and runners for the host-side tests (fixtures are in conftest.py)."""

import subprocess
import sys
from pathlib import Path

from pilectl import MICROPYTHON, micropython_env

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FW_TESTS = ROOT / "tests" / "fw"
BIN = Path(sys.executable).parent

sys.path.insert(0, str(FW_TESTS))  # host tests reuse the firmware test helpers (replay, fwtest)


def run_micropython(script, *args, paths=(FIRMWARE,), input=None, timeout=120):
    """Run `script` on the MicroPython unix port with `paths` as its sys.path."""
    return subprocess.run([str(MICROPYTHON), str(script), *args], input=input,
                          env=micropython_env(*paths),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


class MicroPythonWorker:
    """tests/mp/worker.py under the unix port: firmware codecs on call, one process per session."""

    def __init__(self):
        self.proc = subprocess.Popen([str(MICROPYTHON), str(ROOT / "tests" / "mp" / "worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=micropython_env(FIRMWARE), cwd=ROOT)

    def call(self, command, *args):
        """Run `command` on byte-string args; return bytes, or raise WorkerError."""
        hexes = ["x" + a.hex() if a is not None else "-" for a in args]  # never empty
        self.proc.stdin.write(" ".join([command, *hexes]) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().rstrip("\n")
        status, _, rest = reply.partition(" ")
        if status == "ok":
            return rest
        if status == "err":
            raise WorkerError(rest)
        raise RuntimeError(f"worker died: {reply!r}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class WorkerError(Exception):
    """The firmware code under MicroPython raised; the message names the exception."""
