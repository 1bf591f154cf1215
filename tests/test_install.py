"""pilectl installed from its wheel (not the editable checkout), run from another directory.

A technician's install has no repository beside it: the firmware it deploys is the copy
installed with it (package data), and `--help`, `status` and `deploy` must work.
The wheel goes into a folder of its own (pip --target, no dependencies: those are this
environment's), which comes first on the path, so nothing is imported from the checkout.
"""

import shutil
import subprocess
import sys

import pytest
from helpers import ROOT, Field
from pile import VERSION
from pilectl.sim.run import load_scenario
from pilectl.unixboard import BoardBench


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    target = tmp_path_factory.mktemp("installed")
    # setuptools builds in the checkout's build/ and copies over what an earlier build
    # left there: packages since moved or renamed would be installed again
    shutil.rmtree(ROOT / "build", ignore_errors=True)
    result = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps",
                             "--no-build-isolation", "--target", str(target), str(ROOT)],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return target


def test_the_installed_copy_is_what_runs(installed, tmp_path):
    result = subprocess.run([sys.executable, "-c", "import pilectl, pile; print(pilectl.FIRMWARE,"
                             " pile.__file__)"], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(installed)})
    firmware, pile = result.stdout.split()
    assert firmware == str(installed / "pilectl" / "firmware")
    assert pile == str(installed / "pilectl" / "firmware" / "pile" / "__init__.py")
    assert (installed / "pilectl" / "firmware" / "profiles" / "generic-v2g.json").exists()
    assert (installed / "pilectl" / "aggregator" / "static" / "page.js").exists()  # the page
    assert not (installed / "micropython.py").exists()  # the const() shim is inside `pile`


def test_one_top_level_name_is_installed(installed, tmp_path):
    """Nothing generic in site-packages: no `pile`, `aggregator` or `ocpp_bridge` of ours
    to collide with a user's; the firmware is importable once pilectl is imported."""
    tops = {p.name for p in installed.iterdir() if p.is_dir() and not p.name.endswith(
        (".dist-info", ".egg-info")) and p.name not in ("bin", "__pycache__")}
    assert tops == {"pilectl"}
    probe = ("import importlib.util as u; print([u.find_spec(n) is None for n in "
             "('pile', 'aggregator', 'ocpp_bridge')]); import pilectl.aggregator.emulator, "
             "pilectl.ocpp_bridge.mapping, pile.surface; print('ok')")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=tmp_path, env={"PYTHONPATH": str(installed)})
    assert result.stdout.split("\n")[:2] == ["[True, True, True]", "ok"], result.stderr


def test_help_deploy_and_status_from_another_directory(installed, tmp_path, socat,
                                                       monkeypatch):
    monkeypatch.chdir(tmp_path)  # as the field guide's "Practise first": a relative folder
    bench = BoardBench("board", load_scenario("steady"))
    field = Field(bench, tmp_path / "home", pilectl=installed / "bin" / "pilectl",
                  PYTHONPATH=str(installed))
    try:
        helped = field.run("--help", link=False)
        assert helped.returncode == 0 and "deploy" in helped.stdout
        deployed = field.json("deploy", "--board", str(bench.board_file), "--port", bench.usb,
                              "--link", bench.link_host, link=False)
        assert deployed["firmware"] == VERSION and len(deployed["files_copied"]) > 20
        assert "profiles/generic-v2g.json" in deployed["files_copied"]
        assert "pile/_cpython.mpy" not in deployed["files_copied"]  # host-only shim
        status = field.json("status")
        assert status["pile_id"] == "field-001" and status["diagnostics"]["periods"] > 0
    finally:
        bench.close()
    assert bench.sim.oracle.violations == []


def test_the_bench_commands_name_the_extra_they_need(installed, tmp_path):
    """A technician's install has no pymodbus; here a stand-in that fails to import hides
    this environment's, as a laptop without the extra would."""
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "pymodbus.py").write_text('raise ImportError("not here", name="pymodbus")\n')
    env = {"PYTHONPATH": f"{hidden}:{installed}", "PATH": "/usr/bin:/bin"}
    for command in (["bench"], ["sim", "--bus", str(tmp_path)]):
        result = subprocess.run([str(installed / "bin" / "pilectl"), *command],
                                capture_output=True, text=True, cwd=tmp_path, env=env)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
        assert "pip install 'pilectl[bench]'" in result.stderr and "pymodbus" in result.stderr
