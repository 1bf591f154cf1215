"""What the firmware leaves free of the heap once booted: a pile alone, and a site member.

    python bench/boot_heap_bench.py [--source FIRMWARE_TREE] [--heapsize 208K]

The whole firmware on the virtual bench (unix port, built to .mpy as a board runs it,
started as `micropython -X heapsize=208K` as the soak starts it), twice: with the board
file of a pile alone, and with a `site` part making it a member of a site group (whose
leader is not there: the member keeps its fallback share). After 4 s of running, the
firmware's own figure: DIAGNOSTICS `heap_free`, after a collection. A pile alone loads
no site module (docs/site-group.md), so its figure is the one of a firmware without site
groups: run it with `--source` on another checkout's firmware/ to compare. A firmware
that does not know site groups refuses the site board: its `site_member` is null. Ends
with one JSON line.
"""

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

from pilectl.build import build
from pilectl.sim.run import load_scenario
from pilectl.vbench import VirtualBench, free_port

_RUN_S = 4.0


def site_part():
    """A member of docs/site-group.md's example group, its leader on a port nobody serves."""
    return {"group": "depot-1", "role": "member", "leader": "pile-a", "import_cap_w": 40000,
            "export_cap_w": 11000, "udp_port": free_port(),
            "members": {"pile-a": {"import_w": 14000, "export_w": 4000, "host": "127.0.0.1",
                                   "port": free_port()},
                        "bench-001": {"import_w": 13000, "export_w": 3500,
                                      "host": "127.0.0.1"}}}


async def heap_free(directory, firmware, heapsize, board):
    bench = VirtualBench(directory, dict(load_scenario("steady"), board=board),
                         heapsize=heapsize, firmware=firmware)
    try:
        await bench.start()
        await asyncio.sleep(_RUN_S)
        wired = await bench.serial(key=bench.key)
        try:
            return (await wired.diagnostics())["heap_free"]
        finally:
            await wired.close()
    finally:
        await bench.stop()


async def main(directory, source, heapsize):
    firmware = directory / "build"
    build(firmware, source)
    alone = await heap_free(directory / "alone", firmware, heapsize, {})
    try:
        member = await heap_free(directory / "member", firmware, heapsize, {"site": site_part()})
    except RuntimeError as exc:  # the firmware refused the board file: no site groups
        print(f"site member: {str(exc).splitlines()[0]}")
        member = None
    print(f"heap free at boot ({heapsize}): alone {alone} B, site member "
          f"{'-' if member is None else f'{member} B'}")
    print(json.dumps({"heapsize": heapsize, "alone": alone, "site_member": member}))


def cli():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=None,
                        help="a firmware tree (main.py, pile/, profiles/); default: this one")
    parser.add_argument("--heapsize", default="208K", help="the firmware's -X heapsize")
    args = parser.parse_args()
    if args.source is not None and not (args.source / "pile").is_dir():
        sys.exit(f"boot_heap_bench: {args.source} is no firmware tree (no pile/ in it)")
    with tempfile.TemporaryDirectory() as directory:
        asyncio.run(main(Path(directory), args.source, args.heapsize))


if __name__ == "__main__":
    cli()
