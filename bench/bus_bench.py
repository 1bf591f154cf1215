"""Bus cost of a control period of the real firmware loop: transactions, bytes, bus time.

    python bench/bus_bench.py [periods]      (or `make bench-perf`)

For each baud rate the simulated plant delays every reply by the wire time of the
request and the reply at that baud (a pty has no baud of its own). The control loop is
the firmware's own (`build_loop`, run by tests/mp/run_loop.py under MicroPython): the
tick's function-23 transaction, the mid-tick function-3 read, the meter once a second.
The run at "no line" (replies at once) measures the converter's reply latency plus
software. Goal: the tick's transaction <= 1.2 x wire time (bytes at 11 bits, plus t3.5)
+ that latency.
"""

import json
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "firmware")]  # the plant, and the firmware

from pile.modbus import gap_us, wire_us  # noqa: E402
from plant_bench import CONFIG, PlantBench  # noqa: E402

SCENARIO = {"name": "bus-bench", "load_w": [[0, 6000]], "oracle": {"site_export_limit_w": 11000}}
BAUDS = (None, 9600, 19200, 115200)
F23_BYTES = (21, 41)  # the tick's request and reply (generic-v2g profile)


def measure(baud, periods):
    with tempfile.TemporaryDirectory() as directory:
        bench = PlantBench(Path(directory), SCENARIO, periods, -4000, CONFIG, line_baud=baud)
        try:
            rows = list(bench.periods())
        finally:
            bench.close()
    later = [r for r in rows[1:] if r["ok"]]
    plain = [r for r in later if r["transactions"] == 2]
    with_meter = [r for r in later if r["transactions"] == 3]
    return {
        "baud": baud,
        "periods": len(rows),
        "bytes_per_period": plain[0]["bytes"],
        "meter_bytes_per_s": [a - b for a, b in zip(with_meter[0]["bytes"], plain[0]["bytes"],
                                                     strict=True)],
        "transactions_per_period": round(statistics.mean(r["transactions"] for r in later), 2),
        "tick_us_median": statistics.median(r["poll_us"] for r in later),
        "tick_us_p90": statistics.quantiles([r["poll_us"] for r in later], n=10)[-1],
    }


def main():
    periods = int(sys.argv[1]) if len(sys.argv) > 1 else 40
    results = [measure(baud, periods) for baud in BAUDS]
    latency_us = results[0]["tick_us_median"] - 2000  # less the 2 ms t3.5 sleep (1.75 rounded up)
    out, back = results[1]["bytes_per_period"]
    print("the firmware's loop: %.2f transactions per period (the tick's function 23, the "
          "mid-tick function 3, the meter once a second); %d bytes out and %d back per period, "
          "the meter %d out and %d back per second" % (
              results[1]["transactions_per_period"], out, back,
              *results[1]["meter_bytes_per_s"]))
    print("reply latency plus software, no line: %.1f ms" % (latency_us / 1000))
    print("%8s %12s %16s %14s %8s" % ("baud", "wire ms", "tick ms (med)", "goal ms", "ratio"))
    for r in results[1:]:
        wire = wire_us(sum(F23_BYTES), r["baud"]) + gap_us(r["baud"])
        goal = 1.2 * wire + latency_us
        r.update(wire_us=wire, goal_us=goal, ratio_to_wire=round(r["tick_us_median"] / wire, 3),
                 within_goal=r["tick_us_median"] <= goal,
                 bus_ms_per_period=round((wire_us(out + back, r["baud"]) + 2 * gap_us(r["baud"]))
                                         / 1000, 1))
        print("%8d %12.2f %16.2f %14.2f %8.2f%s" % (
            r["baud"], wire / 1000, r["tick_us_median"] / 1000, goal / 1000,
            r["ratio_to_wire"], "" if r["within_goal"] else "  (over the goal)"))
    print("bus time per period on the wire (both transactions): " + ", ".join(
        "%d baud %.1f ms" % (r["baud"], r["bus_ms_per_period"]) for r in results[1:]))
    print(json.dumps({"latency_us": latency_us, "results": results}))


main()
