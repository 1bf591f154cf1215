"""The firmware test cases of tests/fw, run again under the MicroPython unix port."""

import ast

import pytest
from helpers import FIRMWARE, FW_TESTS, ROOT

MODULES = sorted(p.stem for p in FW_TESTS.glob("test_*.py"))


def test_found_firmware_test_modules():
    assert {"test_limits", "test_control", "test_config"} <= set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_passes_under_micropython(micropython, module):
    source = (FW_TESTS / (module + ".py")).read_text()
    cases = [n.name for n in ast.parse(source).body
             if isinstance(n, ast.FunctionDef) and n.name.startswith("test_")]
    result = micropython(ROOT / "tests" / "mp" / "run.py", module, paths=(FIRMWARE, FW_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.splitlines()[-1] == f"{len(cases)} passed, 0 failed", result.stdout
