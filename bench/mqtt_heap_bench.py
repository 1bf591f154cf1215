"""What the broker link costs the pile: heap and memory without MQTT, on MQTT, on MQTT+TLS.

    python bench/mqtt_heap_bench.py          (make bench-mqtt)

The whole firmware on the virtual bench (unix port, .mpy as a board runs it), three
times: without an `mqtt` part, dialling Mosquitto on 127.0.0.1, and dialling its TLS
listener with the CA in `ca_file`. After 4 s of running, the firmware's own figures
(DIAGNOSTICS `heap_free` after a collection, `heap_low`). On the unix port mbedtls
allocates with the C library's malloc, so this shows the TLS session's Python objects
only; on an RP2040 build (bare-metal mbedtls) its record buffers (16 KB in, 4 KB out in
MicroPython's mbedtls config) come out of the MicroPython heap too, and on an ESP32 out
of ESP-IDF's heap. Ends with one JSON line.
"""

import asyncio
import json
import sys
import tempfile
from pathlib import Path

from pilectl.aggregator import run as run_loop
from pilectl.aggregator.broker import Mosquitto
from pilectl.build import build
from pilectl.sim.run import load_scenario
from pilectl.vbench import VirtualBench

_RUN_S = 4.0


async def figures(directory, firmware, board):
    bench = VirtualBench(directory, dict(load_scenario("steady"), board=board),
                         firmware=firmware)
    try:
        await bench.start()
        await asyncio.sleep(_RUN_S)
        wired = await bench.serial(key=bench.key)
        try:
            found = await wired.diagnostics()
        finally:
            await wired.close()
        return {"heap_free": found["heap_free"], "heap_low": found["heap_low"],
                "mqtt_connects": found.get("mqtt_connects")}
    finally:
        await bench.stop()


async def main(directory):
    firmware = directory / "build"
    build(firmware)
    users = {"bench-001": "pw", "agg": "pw-agg"}
    with Mosquitto(directory / "broker", users, ["agg"], tls=True) as broker:
        mqtt = {"host": "127.0.0.1", "port": broker.port, "password": "pw"}
        tls = dict(mqtt, port=broker.tls_port, tls_hostname="localhost",
                   ca_file=str(directory / "broker" / "tls" / "ca.der"))
        runs = {}
        for name, part in (("none", None), ("mqtt", mqtt), ("mqtt_tls", tls)):
            board = {} if part is None else {"mqtt": part}
            runs[name] = await figures(directory / name, firmware, board)
    base = runs["none"]
    print("layout     heap live vs none   lowest free   broker connects")
    for name, r in runs.items():
        print(f"{name:9s}  {base['heap_free'] - r['heap_free']:10d} B   {r['heap_low']:10d} B"
              f"   {r['mqtt_connects']}")
    print(json.dumps({"runs": runs,
                      "mqtt_heap_b": base["heap_free"] - runs["mqtt"]["heap_free"],
                      "tls_heap_b": runs["mqtt"]["heap_free"] - runs["mqtt_tls"]["heap_free"]}))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as directory:
        run_loop(main(Path(directory)))
    sys.exit(0)
