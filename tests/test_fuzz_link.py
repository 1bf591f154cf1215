"""100,000 random and mutated frames into the firmware's frame -> message path, under MicroPython.

See tests/mp/fuzz_link.py for the input kinds. FUZZ_SEED picks another run.
"""

import json
import os

from helpers import FIRMWARE, FW_TESTS, ROOT

FRAMES = 100_000
SEED = os.environ.get("FUZZ_SEED", "2026")


def test_fuzzed_frames_are_dropped_or_answered_and_change_nothing(micropython):
    result = micropython(ROOT / "tests" / "mp" / "fuzz_link.py", SEED, str(FRAMES), timeout=600,
                         paths=(FIRMWARE, FW_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout.splitlines()[-1])
    assert report["escaped"] == 0, result.stdout
    assert report["state_unchanged"], report
    assert min(report["modes"]) > FRAMES // 10  # every kind of input was exercised
    # every frame is counted exactly once: dropped by the deframer, or answered
    assert report["good_frames"] + report["dropped"] == report["expected_frames"]
    assert report["replies"] == report["good_frames"]
    assert report["accepted"] + report["errors"] == report["replies"]
    assert report["dropped"] == report["bad_crc"] + report["malformed"] + report["too_long"]
    # only greetings and read-only answers may be accepted; nothing was ACKed
    assert set(report["reply_types"]) <= {"1", "7", "9", "11"}, report["reply_types"]
    assert report["reply_types"]["11"] == report["errors"]
    for code in (1, 2, 3, 4, 5):  # malformed, unknown type, bad field, auth, replay
        assert report["errors_by_code"][code] > 0, report["errors_by_code"]
    assert min(report["bad_crc"], report["malformed"], report["too_long"]) > 0
