"""The MCU HALs type-check against the MicroPython stubs of their port (pyright).

Both stub packages define `machine`, so each port has its own stub directory
(made by `make setup`); pyright's typeshedPath points there so `time.ticks_ms`
and friends resolve to MicroPython's, not CPython's.
"""

import json
import shutil
import subprocess

import pytest
from helpers import BIN, FIRMWARE, ROOT

PORTS = ("esp32", "rp2")


def pyright(port, files, tmp_path):
    stubs = ROOT / ".venv" / "stubs" / port
    if not (stubs / "machine").exists() and not (stubs / "machine.pyi").exists():
        pytest.fail(f"stubs for {port} are missing: run `make setup`")
    config = tmp_path / "pyrightconfig.json"
    config.write_text(json.dumps({
        "typeshedPath": str(stubs),
        "extraPaths": [str(stubs), str(FIRMWARE), str(ROOT / "host_tools")],
        "pythonVersion": "3.11",
        "typeCheckingMode": "basic",
        "reportMissingModuleSource": False,
    }))
    result = subprocess.run([str(BIN / "pyright"), "-p", str(config), *map(str, files)],
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


@pytest.mark.parametrize("port", PORTS)
def test_hal_type_checks_against_port_stubs(port, tmp_path):
    hal = FIRMWARE / "pile" / "hal"
    code, output = pyright(port, [hal / "mcu.py", hal / (port + ".py"),
                                  FIRMWARE / "pile" / "wifi.py"], tmp_path)
    assert code == 0, output
    assert "0 errors" in output


@pytest.mark.parametrize("port", PORTS)
def test_a_wrong_uart_method_is_caught(port, tmp_path):
    broken = tmp_path / "pile" / "hal"
    shutil.copytree(FIRMWARE / "pile", tmp_path / "pile")
    mcu = broken / "mcu.py"
    mcu.write_text(mcu.read_text().replace("self.uart.txdone()", "self.uart.tx_done()"))
    code, output = pyright(port, [mcu], tmp_path)
    assert code != 0
    assert "tx_done" in output
