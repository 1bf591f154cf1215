"""The control period while hosts flood the link and read nothing back.

    python bench/flood_bench.py [seconds per phase]      (or `make bench-flood`)

The firmware runs on the virtual bench (unix port, simulated plant with its oracle),
discharging at a steady setpoint. The control period is measured from outside, through
the real interface: the plant timestamps every control-block write, one per tick. Four
phases: no flood; the serial link flooded; a TCP client flooding; both at once. Each
flooder is a process of its own that writes signed CONFIG_GET requests (whose replies are
~18 times their size) as fast as the line takes them and never reads a reply.
Goal: the flooded period's p99 within 10 % of the unflooded one, 0 oracle violations.
Ends with one JSON line.
"""

import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

from stats import figures

SCENARIO = {"name": "flood", "plant": {"capacity_kwh": 500.0, "soc": 0.6},
            "load_w": [[0, 6000]],
            "config": {"site_import_limit_w": 16000, "site_export_limit_w": 11000},
            "oracle": {"site_import_limit_w": 16000, "site_export_limit_w": 11000}}


def flood(kind, where, key_hex, seconds):
    """A flooder process: `flood serial DEVICE KEY S` or `flood tcp PORT KEY S`."""
    import cbor2
    import serial
    from pilectl import cose, wire

    key = bytes.fromhex(key_hex)
    deframer = wire.Deframer()
    if kind == "tcp":
        import socket

        sock = socket.create_connection(("127.0.0.1", int(where)))
        send, read = sock.sendall, lambda: sock.recv(4096)
    else:
        line = serial.Serial(where, 115200, timeout=1)
        line.write(wire.frame(wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 0})))
        send, read = line.write, lambda: line.read(4096)
    hello = None
    while hello is None:  # the greeting once, for the nonce and the next seq; then never
        for message in deframer.feed(read()):
            payload = wire.decode(cbor2.loads(message).value[2])
            if payload[wire.TYPE] == wire.HELLO:
                hello = payload
    nonce, seq = hello[wire.HELLO_NONCE], hello[wire.HELLO_NEXT_SEQ] + 1000 * (kind == "tcp")
    sent, deadline = 0, time.monotonic() + seconds
    while time.monotonic() < deadline:
        request = {wire.TYPE: wire.CONFIG_GET, wire.SEQ: seq + sent}
        send(wire.frame(cose.sign(key, wire.encode(request), nonce)))
        sent += 1
    print(json.dumps({"flooder": kind, "requests_sent": sent}))


def periods(writes, start, end):
    times = [t for t, _ in writes if start <= t < end]
    return [(b - a) * 1000 for a, b in zip(times, times[1:], strict=False)]


async def run(seconds):
    from pilectl.vbench import VirtualBench

    with tempfile.TemporaryDirectory() as directory:
        bench = VirtualBench(Path(directory), SCENARIO)
        await bench.start()
        writes = bench.sim.plant.control_writes()  # one per tick
        try:
            aggregator = await bench.tcp()
            await aggregator.setpoint(-4000, 3600)
            await asyncio.sleep(2)
            phases = {}
            for name, kinds in (("none", ()), ("serial", ("serial",)), ("tcp", ("tcp",)),
                                ("both", ("serial", "tcp"))):
                where = {"serial": str(bench.dir / "link-host"), "tcp": str(bench.tcp_port)}
                procs = [await asyncio.create_subprocess_exec(
                    sys.executable, __file__, "flood", kind, where[kind], bench.key.hex(),
                    str(seconds), stdout=asyncio.subprocess.PIPE) for kind in kinds]
                start = time.monotonic()
                await asyncio.sleep(seconds)
                end = time.monotonic()
                sent = [json.loads((await p.communicate())[0]) for p in procs]
                phases[name] = {**figures(periods(writes, start + 0.5, end)),
                                "flooders": sent}
                await asyncio.sleep(1)
            counters = await aggregator.diagnostics()
            await aggregator.close()
        finally:
            await bench.stop()
        violations = bench.sim.oracle.summary()
    return phases, counters, violations


def main():
    if sys.argv[1:2] == ["flood"]:
        return flood(*sys.argv[2:5], float(sys.argv[5]))
    seconds = float(sys.argv[1]) if len(sys.argv) > 1 else 15
    phases, counters, violations = asyncio.run(run(seconds))
    print("%-8s %6s %10s %8s %8s  %s" % ("flood", "ticks", "median ms", "p99 ms", "max ms",
                                         "requests sent"))
    for name, row in phases.items():
        sent = ", ".join("%s %d" % (f["flooder"], f["requests_sent"]) for f in row["flooders"])
        print("%-8s %6d %10.1f %8.1f %8.1f  %s" % (name, row["n"], row["median_ms"],
                                                    row["p99_ms"], row["max_ms"], sent or "-"))
    print("pile: %d requests shed over the budget, %d replies dropped, %d frames dropped" % (
        counters.get("requests_shed", 0), counters.get("replies_dropped", 0),
        counters.get("frames_dropped", 0)))
    worst = max(phases[k]["p99_ms"] for k in ("serial", "tcp", "both"))
    base = phases["none"]["p99_ms"]
    print("goal: flooded p99 within 10 %% of %.1f ms: %s; oracle violations: %d" % (
        base, "met" if worst <= 1.1 * base else "NOT met", len(violations)))
    print(json.dumps({"period_p99_ms": phases["both"]["p99_ms"],
                      "period_max_ms": phases["both"]["max_ms"],
                      "unflooded_p99_ms": base, "worst_flooded_p99_ms": worst,
                      "violations": len(violations), "phases": phases,
                      "pile_counters": counters}))


main()
