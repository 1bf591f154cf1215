"""A power cut at every flash write on littlefs: settings and the event journal survive
(tests/mp/power_cut.py, on the MicroPython unix port's `vfs.VfsLfs2`)."""

import re

from helpers import FIRMWARE, FW_TESTS, ROOT


def test_every_cut_point_leaves_old_or_new_state_and_a_readable_log(micropython):
    result = micropython(ROOT / "tests" / "mp" / "power_cut.py", paths=(FIRMWARE, FW_TESTS))
    last = result.stdout.splitlines()[-1] if result.stdout else ""
    found = re.fullmatch(r"(\d+) cut points, (\d+) failures", last)
    assert found, result.stdout + result.stderr
    print(last)  # the number of cut points, in the test's output (pytest -s, or -rP)
    assert int(found[1]) >= 100 and int(found[2]) == 0, result.stdout
    assert result.returncode == 0, result.stderr
