"""The pile emulator: protocol v1 exactly as the firmware speaks it, at fleet cost."""

import subprocess
import sys

from aggregator import mac0
from helpers import ROOT
from pilectl import wire


def replies(*args):
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "emulator_codec_run.py"), *args],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    return [line.rsplit(" ", 1) for line in out.splitlines()]


def test_the_host_codec_makes_the_firmware_codecs_bytes():
    """Every reply kind, byte for byte, but the wording of a CBOR decoder's complaint."""
    firmware, host = replies(), replies("--host")
    assert [name for name, _ in firmware] == [name for name, _ in host]
    assert len(firmware) == 16
    for (name, ours), (_, theirs) in zip(firmware, host, strict=True):
        if name == "not cbor":
            mine = wire.decode(mac0.payload(bytes.fromhex(ours)))
            other = wire.decode(mac0.payload(bytes.fromhex(theirs)))
            assert mine.pop(wire.ERROR_DETAIL) != other.pop(wire.ERROR_DETAIL)
            assert mine == other and mine[wire.ERROR_CODE] == wire.ERR_AUTH
        else:
            assert ours == theirs, name
