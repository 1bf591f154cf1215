"""A controller decision allocates nothing on the heap after warm-up (MicroPython unix port).

Allocation counts are deterministic, unlike timings, so this is a test; the
timing figures live in `make bench-perf`.
"""

from helpers import FIRMWARE, ROOT


def test_a_decision_allocates_no_heap(micropython):
    result = micropython(ROOT / "bench" / "decide_bench.py", "2000", paths=(FIRMWARE,))
    assert result.returncode == 0, result.stderr
    assert "heap allocated per decision: 0 bytes (0 in total)" in result.stdout, result.stdout
