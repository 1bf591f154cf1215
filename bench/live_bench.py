"""What the live fleet page costs the aggregator: dispatch time without and with a
browser's stream open, and the push's own time a period.

    python bench/live_bench.py [PILES]           (make bench-live; PILES=2000 by default)

Emulated piles (bench/fleet_bench.py's processes) on 127.0.0.1; the aggregator in this
process with its HTTP API; 20 s of dispatch with no stream open, then 20 s with one
`curl -N .../events` reading the page's stream (a process of its own, as a browser
would be). Reported, each phase: dispatch_ms p50/p99 (the period's whole work, split
and setpoints and the history point), and with the stream the push's build time
(p50/p99: every changed row and the fleet, once for every browser) and the bytes a
second the stream carried. One JSON line.
"""

import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fleet_bench import percentile, start_emulators
from pilectl.aggregator import run as run_loop
from pilectl.aggregator.api import Metrics, application, serve
from pilectl.aggregator.fleet import load
from pilectl.aggregator.service import Aggregator
from pilectl.vbench import free_port

_PHASE_S = 20


async def measure(piles, directory):
    procs, entries = start_emulators(piles, directory)
    port = free_port()
    curl = None
    try:
        path = directory / "fleet.toml"
        path.write_text(f'[dispatch]\nttl_s = 10\n\n[target]\npower_w = {-3000 * piles}\n'
                        f'http = "127.0.0.1:{port}"\n\n' + "".join(entries))
        aggregator = Aggregator(load(path))
        runner = await serve(application(aggregator, Metrics()), "127.0.0.1", port)
        aggregator.start()
        started = time.monotonic()
        while aggregator.dispatch_once()["online"] < piles:
            if time.monotonic() - started > 120:
                raise RuntimeError(f"not every pile heard in 120 s: {aggregator.last}")
            await asyncio.sleep(1)
        await aggregator.run(3)
        result = {"piles": piles}
        for phase in ("alone", "with_stream"):
            if phase == "with_stream":
                out = directory / "stream.txt"
                curl = subprocess.Popen(["curl", "-sN", f"http://127.0.0.1:{port}/events",
                                         "-o", str(out)])
                await aggregator.run(3)  # its snapshot read
                size0 = out.stat().st_size
            dispatch, push = [], []

            def on_status(status, dispatch=dispatch, push=push):
                dispatch.append(status["dispatch_ms"])
                push.append(aggregator.live.push_ms)  # the previous period's push
            aggregator.on_status = on_status
            await aggregator.run(_PHASE_S)
            result[f"{phase}_dispatch_ms_p50"] = percentile(dispatch, 50)
            result[f"{phase}_dispatch_ms_p99"] = percentile(dispatch, 99)
            if phase == "with_stream":
                result["push_ms_p50"] = round(percentile(push[1:], 50), 2)
                result["push_ms_p99"] = round(percentile(push[1:], 99), 2)
                result["stream_kb_per_s"] = round(
                    (out.stat().st_size - size0) / 1024 / _PHASE_S, 1)
                result["browsers_dropped"] = aggregator.live.dropped
        await aggregator.stop()
        await runner.cleanup()
        return result
    finally:
        if curl is not None:
            curl.kill()
            curl.wait()
        for proc in procs:
            proc.kill()
            proc.wait()


def main():
    piles = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
    with tempfile.TemporaryDirectory() as folder:
        print(json.dumps(run_loop(measure(piles, Path(folder)))), flush=True)


if __name__ == "__main__":
    main()
