"""The smallest MicroPython heap the firmware survives the default scenario with.

    python bench/heap_bench.py [low_kb] [high_kb]     (or `make bench-heap`)

Plays the `evening` scenario on the virtual bench with the firmware, built to .mpy
as a board gets it, started as `micropython -X heapsize=N`, bisecting N in KB. A
run counts only when the firmware stays up, every setpoint is acked and the oracle
records nothing. The unix port is 64-bit, so objects are about twice their size on
the 32-bit boards.
"""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from pilectl import benchplay
from pilectl.build import build
from pilectl.sim.run import load_scenario
from rich.console import Console


async def survives(kb, firmware):
    with tempfile.TemporaryDirectory() as directory:
        try:
            _, summary = await benchplay.play(load_scenario("evening"), Path(directory),
                                              Console(quiet=True), show_live=False,
                                              heapsize=f"{kb}K", firmware=firmware)
        except Exception as exc:  # a firmware that ran out of memory shows up here
            return False, f"{type(exc).__name__}: {exc}"[:300]
    return not summary["violations"] and summary["setpoints_acked"] == 8, summary


def main():
    low = int(sys.argv[1]) if len(sys.argv) > 1 else 64
    high = int(sys.argv[2]) if len(sys.argv) > 2 else 128
    firmware = Path(tempfile.mkdtemp(prefix="firmware-mpy-"))
    build(firmware)  # as deployed: precompiled, so the board's compiler needs no heap
    ok, detail = asyncio.run(survives(high, firmware))
    print(f"{high} KB: {'survives' if ok else 'fails'}")
    if not ok:
        print(json.dumps({"high_kb": high, "survives": False, "detail": str(detail)}))
        sys.exit(1)
    while high - low > 4:
        mid = (low + high) // 2
        ok, _ = asyncio.run(survives(mid, firmware))
        print(f"{mid} KB: {'survives' if ok else 'fails'}")
        if ok:
            high = mid
        else:
            low = mid
    print(f"smallest heap that survives the evening scenario: {high} KB (to within 4 KB)")
    print(json.dumps({"smallest_kb": high}))


main()
