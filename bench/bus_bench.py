"""Bus cost of a control tick: transactions, bytes, and bus time against the wire time.

    python bench/bus_bench.py [ticks]      (or `make bench-perf`)

For each baud rate the simulated plant delays every reply by the wire time of the
request and the reply at that baud (a pty has no baud of its own), and the
firmware's drivers run under MicroPython (tests/mp/drive_plant.py). The run at
"no line" (replies at once) measures the converter's reply latency plus software.
Goal: tick bus time <= 1.2 x wire time (bytes at 11 bits, plus t3.5) + that latency.
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

from pile.modbus import gap_us, wire_us
from pilectl.sim.harness import PlantBench

SCENARIO = {"name": "bus-bench", "load_w": [[0, 6000]], "oracle": {"site_export_limit_w": 11000}}
BAUDS = (None, 9600, 19200, 115200)


def measure(baud, ticks):
    with tempfile.TemporaryDirectory() as directory:
        bench = PlantBench(Path(directory), SCENARIO, "tests/mp/drive_plant.py",
                           str(baud or 115200), "generic-v2g", "sdm630", str(ticks), "-4000",
                           line_baud=baud)
        try:
            rows = list(bench.ticks())
        finally:
            bench.close()
    converter_only = [r for r in rows[1:] if r["transactions"] == 1 and r["ok"]]
    with_meter = [r for r in rows[1:] if r["transactions"] == 2]
    out, back = converter_only[0]["bytes"]
    meter_bytes = [a - b for a, b in zip(with_meter[0]["bytes"], (out, back), strict=True)]
    return {
        "baud": baud,
        "ticks": len(rows),
        "converter_bytes": [out, back],
        "meter_bytes_per_s": meter_bytes,
        "transactions_per_tick": round(statistics.mean(r["transactions"] for r in rows[1:]), 2),
        "bus_us_median": statistics.median(r["bus_us"] for r in converter_only),
        "heap_bytes_median": statistics.median(r["heap"] for r in converter_only),
        "bus_us_p90": statistics.quantiles([r["bus_us"] for r in converter_only], n=10)[-1],
    }


def main():
    ticks = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    results = [measure(baud, ticks) for baud in BAUDS]
    latency_us = results[0]["bus_us_median"] - 2000  # less the 2 ms t3.5 sleep (1.75 rounded up)
    print("converter: one function-23 transaction per tick, %d bytes out, %d back; "
          "meter: %d out, %d back per second; %.2f transactions per tick in all" % (
              *results[1]["converter_bytes"], *results[1]["meter_bytes_per_s"],
              results[1]["transactions_per_tick"]))
    print("reply latency plus software, no line: %.1f ms; heap per converter transaction "
          "(unix port): %d bytes" % (latency_us / 1000, results[0]["heap_bytes_median"]))
    print("%8s %12s %12s %14s %8s" % ("baud", "wire ms", "bus ms (med)", "goal ms", "ratio"))
    for r in results[1:]:
        nbytes = sum(r["converter_bytes"])
        wire = wire_us(nbytes, r["baud"]) + gap_us(r["baud"])
        goal = 1.2 * wire + latency_us
        r.update(wire_us=wire, goal_us=goal, ratio_to_wire=round(r["bus_us_median"] / wire, 3),
                 within_goal=r["bus_us_median"] <= goal)
        print("%8d %12.2f %12.2f %14.2f %8.2f%s" % (
            r["baud"], wire / 1000, r["bus_us_median"] / 1000, goal / 1000,
            r["ratio_to_wire"], "" if r["within_goal"] else "  (over the goal)"))
    print(json.dumps({"latency_us": latency_us, "results": results}))


main()
