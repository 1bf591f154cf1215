"""Shared paths and runners for the host-side tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FW_TESTS = ROOT / "tests" / "fw"
BIN = Path(sys.executable).parent
MICROPYTHON = BIN / "micropython"

sys.path.insert(0, str(FW_TESTS))  # host tests reuse the firmware test helpers (replay, fwtest)


def run_micropython(script, *args, paths=(FIRMWARE,), input=None, timeout=120):
    """Run `script` on the MicroPython unix port with `paths` as its sys.path."""
    # ".frozen" keeps the port's built-in modules (asyncio) importable.
    env = dict(os.environ, MICROPYPATH=":".join([".frozen", *(str(p) for p in paths)]))
    return subprocess.run([str(MICROPYTHON), str(script), *args], input=input, env=env,
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


@pytest.fixture(scope="session")
def micropython():
    if not MICROPYTHON.exists():
        pytest.fail("micropython is not installed in this environment: run `make setup`")
    return run_micropython
