"""Host programs see the firmware through one module, pile/surface.py, and change none.

A host module (host_tools/) that imports another firmware module, or assigns into one,
couples the host to the firmware's insides: a refactor of the firmware then breaks a
host tool no test of the surface sees. This reads every host module's syntax tree.
"""

import ast

import pytest
from helpers import ROOT

SURFACE = "pile.surface"
HOST = sorted((ROOT / "host_tools").rglob("*.py"))


def firmware_imports(tree):
    """(line, module) of every import of a firmware module, and the names bound to one."""
    found, bound = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name == "pile" or alias.name.startswith("pile."):
                    found.append((node.lineno, alias.name))
                    bound.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
                node.module == "pile" or node.module.startswith("pile.")):
            for alias in node.names:
                module = node.module if node.module != "pile" else f"pile.{alias.name}"
                found.append((node.lineno, module))
                bound.add(alias.asname or alias.name)
    return found, bound


def assignments_into(tree, bound):
    """Lines that assign an attribute of a name bound to a firmware import."""
    lines = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else \
            [node.target] if isinstance(node, ast.AugAssign | ast.AnnAssign) else []
        for target in targets:
            base = target
            while isinstance(base, ast.Attribute):
                base = base.value
            if isinstance(target, ast.Attribute) and isinstance(base, ast.Name) and \
                    base.id in bound:
                lines.append(node.lineno)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id == "setattr" and node.args and \
                isinstance(node.args[0], ast.Name) and node.args[0].id in bound:
            lines.append(node.lineno)
    return lines


def problems(path):
    tree = ast.parse(path.read_text(), str(path))
    found, bound = firmware_imports(tree)
    where = path.relative_to(ROOT)
    wrong = [f"{where}:{line} imports {module}: take it from {SURFACE}"
             for line, module in found if module != SURFACE]
    return wrong + [f"{where}:{line} assigns into the firmware"
                    for line in assignments_into(tree, bound)]


def test_host_modules_take_the_firmware_from_its_surface_only():
    assert HOST, "no host modules found"
    assert [p for path in HOST for p in problems(path)] == []


@pytest.mark.parametrize("source, expected", [
    ("from pile.limits import REASON_NO_EV\n", "imports pile.limits"),
    ("from pile import events\n", "imports pile.events"),
    ("import pile.protocol\n", "imports pile.protocol"),
    ("from pile import surface as fw\nfw.Session.x = 1\n", "assigns into the firmware"),
    ("import pile.surface\npile.surface.dumps = len\n", "assigns into the firmware"),
])
def test_the_rule_sees_each_way_round_it(tmp_path, source, expected, monkeypatch):
    module = ROOT / "host_tools" / "example_of_a_breach.py"  # read, never written
    monkeypatch.setattr(type(module), "read_text", lambda self: source)
    found = problems(module)
    assert len(found) == 1 and expected in found[0]


def test_the_surface_is_never_deployed():
    from pilectl import build

    assert "surface.py" in build.HOST_ONLY


def test_host_tools_leave_asyncio_as_it_is():
    """A host tool that imports the firmware's surface gets MicroPython's `const` for the
    firmware's modules to import, and nothing else: its asyncio stays CPython's."""
    import subprocess
    import sys

    probe = ("import asyncio, pilectl.field, pilectl.aggregator.emulator; "
             "print(hasattr(asyncio, 'sleep_ms'), hasattr(asyncio, 'wait_for_ms'))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                            cwd=ROOT / "docs", timeout=60)
    assert result.stdout.split() == ["False", "False"], result.stderr
