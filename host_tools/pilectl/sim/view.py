"""`pilectl sim`: the plant on a serial device, with a live view and the oracle's verdict."""

import asyncio
import contextlib
import json

from rich.live import Live
from rich.table import Table

from pilectl.sim.run import Simulation


def live_table(sample, scenario):
    table = Table(title=f"simulated plant, scenario {scenario}: t = {sample['t']:.1f} s")
    table.add_column("", style="bold")
    table.add_column("now", justify="right")
    for name, value in (
        ("commanded", f"{sample['commanded_w']:+d} W"),
        ("converter power", f"{sample['power_w']:+d} W"),
        ("EV", "plugged in" if sample["ev_connected"] else "unplugged"),
        ("SOC", f"{sample['soc_pct']:.2f} %"),
        ("battery", f"{sample['battery_temp_c']:.1f} degC"),
        ("converter", f"{sample['converter_temp_c']:.1f} degC"),
        ("site (grid)", f"{sample['site_w']:+d} W"),
        ("heartbeat age", f"{sample['heartbeat_age_s']:.1f} s"),
        ("oracle violations", str(sample["violations"])),
    ):
        table.add_row(name, value)
    return table


def summary_table(result):
    table = Table(title=f"scenario {result['scenario']}: {result['duration_s']} s")
    table.add_column("", style="bold")
    table.add_column("")
    table.add_row("energy into the EV", f"{result['energy_in_wh']} Wh")
    table.add_row("energy out of the EV", f"{result['energy_out_wh']} Wh")
    table.add_row("bus requests served", str(result["bus_requests"]))
    table.add_row("events", ", ".join(f"{t} s {name} {'on' if on else 'off'}"
                                      for t, name, on in result["events"]) or "-")
    violations = result["violations"]
    table.add_row("oracle violations", str(len(violations)) if violations else "0 (none)")
    for v in violations:
        table.add_row("", f"{v['rule']}: {v['start_s']:.1f}-{v['end_s']:.1f} s, worst "
                          f"{v['worst']:.1f} against {v['limit']:.1f}")
    return table


def run(bus, scenario, baud, duration_s, console, live=True, trace=None):
    """Serve the plant until the scenario ends; return the result dict."""
    sim = Simulation(scenario)
    name = scenario.get("name", "?")
    with (open(trace, "w") if trace else contextlib.nullcontext()) as trace_file, \
            (Live(console=console, refresh_per_second=5) if live
             else contextlib.nullcontext()) as view:
        def on_sample(sample):
            if view is not None:
                view.update(live_table(sample, name))
            if trace_file is not None:
                trace_file.write(json.dumps(sample) + "\n")

        return asyncio.run(sim.run(bus, baud, duration_s, on_sample))
