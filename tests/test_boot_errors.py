"""The firmware's first words when its board file or wiring is wrong: a sentence naming the
file, key or device, exit status 2, no traceback (MicroPython unix port)."""

import json

from helpers import FIRMWARE


def boot(micropython, board_path):
    return micropython(FIRMWARE / "main.py", str(board_path))


def test_no_board_file(micropython, tmp_path):
    result = boot(micropython, tmp_path / "board.json")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "no board file " + str(tmp_path / "board.json") in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_a_typo_and_a_missing_device(micropython, tmp_path):
    spec = json.loads((FIRMWARE.parent / "boards" / "unix_sim.json").read_text())
    spec["state_dir"] = str(tmp_path / "state")
    spec["link"] = {}
    spec["modbus"]["baudd"] = 9600
    board = tmp_path / "board.json"
    board.write_text(json.dumps(spec))
    result = boot(micropython, board)
    assert result.returncode == 2 and "modbus.baudd is not a board file key" in result.stdout
    del spec["modbus"]["baudd"]
    spec["modbus"]["device"] = str(tmp_path / "no-adapter")
    board.write_text(json.dumps(spec))
    result = boot(micropython, board)
    assert result.returncode == 2, result.stdout + result.stderr
    assert "cannot open serial device " + str(tmp_path / "no-adapter") in result.stdout
    assert "Traceback" not in result.stdout + result.stderr


def test_main_py_frozen_into_the_firmware_boots(micropython, tmp_path):
    """MicroPython sets `__file__` only for a main.py run from the filesystem: main.py
    frozen into a board's firmware must not need it (it stopped at the REPL with a
    NameError on the rp2 port). Here main.py runs without it, as frozen code does."""
    runner = tmp_path / "frozen.py"
    runner.write_text("import sys\nsource = open(sys.argv.pop(1)).read()\n"
                      "exec(compile(source, 'main.py', 'exec'), {'__name__': '__main__'})\n")
    result = micropython(runner, str(FIRMWARE / "main.py"), str(tmp_path / "board.json"))
    assert "NameError" not in result.stdout + result.stderr, result.stdout + result.stderr
    assert result.returncode == 2 and "no board file" in result.stdout
