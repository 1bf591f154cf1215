"""pilectl: the field technician's and bench engineer's tool for the V2G pile."""

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
