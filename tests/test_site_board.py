"""A site group that could exceed its caps is refused by the host's check too: `pilectl
deploy` runs the firmware's board check (pile/board.py) before it touches a board, and
says why without a traceback."""

import json
import subprocess
import sys

from helpers import ROOT


def deploy(board, tmp_path):
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    return subprocess.run(
        [sys.executable, "-c", "from pilectl.cli import main; main()", "deploy", "--board",
         str(path), "--port", str(tmp_path / "no-board")],
        capture_output=True, text=True, timeout=60)


def test_deploy_refuses_a_group_over_its_caps_and_names_the_sums(tmp_path):
    board = json.loads((ROOT / "boards" / "unix_sim.json").read_text())
    board["site"] = {"group": "depot-1", "role": "leader", "leader": board["pile_id"],
                     "import_cap_w": 40000, "export_cap_w": 11000, "udp_port": 7710,
                     "members": {board["pile_id"]: {"import_w": 20000, "export_w": 6000,
                                                    "host": "10.0.0.11"},
                                 "sim-002": {"import_w": 20000, "export_w": 6000,
                                             "host": "10.0.0.12"}}}
    result = deploy(board, tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the fallback export shares add up to 12000 W, above export_cap_w 11000 W" in (
        result.stderr), result.stderr
    assert "nothing was deployed" in result.stderr and "Traceback" not in result.stderr
    board["site"]["members"]["sim-002"]["export_w"] = 5000
    result = deploy(board, tmp_path)  # the group fits: on to the board, which is not there
    assert "fallback" not in result.stderr and "no-board" in result.stderr, result.stderr


def test_the_pile_refuses_such_a_group_at_boot(micropython, tmp_path):
    from helpers import FIRMWARE

    board = json.loads((ROOT / "boards" / "unix_sim.json").read_text())
    board["state_dir"] = str(tmp_path / "state")
    board["site"] = {"group": "depot-1", "role": "member", "leader": "sim-002",
                     "import_cap_w": 10000, "export_cap_w": 0, "udp_port": 7710,
                     "members": {board["pile_id"]: {"import_w": 6000, "export_w": 0,
                                                    "host": "127.0.0.1"},
                                 "sim-002": {"import_w": 6000, "export_w": 0,
                                             "host": "127.0.0.2"}}}
    path = tmp_path / "board.json"
    path.write_text(json.dumps(board))
    result = micropython(FIRMWARE / "main.py", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "the fallback import shares add up to 12000 W, above import_cap_w 10000 W" in (
        result.stdout), result.stdout
    assert "Traceback" not in result.stdout + result.stderr
