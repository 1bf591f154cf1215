"""Command line entry point: `pilectl COMMAND`."""

import json
import sys
from pathlib import Path

import click
from rich.console import Console


@click.group()
def main():
    """Field and bench tool for the V2G pile edge controller."""


@main.command()
@click.option("--scenario", default="evening", show_default=True,
              help="A scenario name (host_tools/pilectl/scenarios) or a JSON file.")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(),
              help="Where the trace (JSONL) and plot (PNG) go.")
@click.option("--heapsize", help="Run the firmware with `micropython -X heapsize=...` (e.g. 64K).")
@click.option("--mpy", is_flag=True, help="Run the .mpy build a board gets (mpy-cross), not the "
              "sources.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
def bench(scenario, out_dir, heapsize, mpy, as_json):
    """The virtual bench: firmware on MicroPython, simulated plant, host link, live.

    Exits 1 when the plant's safety oracle recorded a violation.
    """
    from pilectl import benchplay
    from pilectl.sim.run import ScenarioError, load_scenario

    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    console = Console(stderr=as_json)
    firmware = None
    if mpy:
        from pilectl.build import build

        firmware = Path(out_dir) / "firmware-mpy"
        build(firmware)
    try:
        _, summary = benchplay.run(loaded, Path(out_dir), console, show_live=not as_json,
                                   heapsize=heapsize, firmware=firmware)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary))
    else:
        console.print()
        console.print(benchplay.summary_table(summary, out_dir))
    if summary["violations"]:
        click.echo(f"safety violations: {summary['violations']}", err=True)
        sys.exit(1)


@main.command()
@click.option("--bus", required=True, help="Serial device of the RS485 bus: a USB-RS485 adapter "
              "on a HIL bench, or one end of a pty pair (socat) on a virtual one.")
@click.option("--scenario", default="steady", show_default=True,
              help="A scenario name (host_tools/pilectl/scenarios) or a JSON file.")
@click.option("--baud", default=115200, show_default=True)
@click.option("--duration", type=float, help="Seconds to run (default: the scenario's).")
@click.option("--trace", type=click.Path(), help="Write one JSON line per plant step here.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON only.")
def sim(bus, scenario, baud, duration, trace, as_json):
    """Run the simulated converter, battery and meter on a serial bus, with the safety oracle.

    Exits 1 when the oracle recorded a violation.
    """
    from pilectl.sim import view
    from pilectl.sim.run import ScenarioError, load_scenario

    if not Path(bus).exists():
        raise click.ClickException(
            f"no device {bus}: plug in the USB-RS485 adapter (ls /dev/ttyUSB*), or make a "
            "virtual bus with: socat pty,raw,echo=0,link=pile pty,raw,echo=0,link=plant")
    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    console = Console(stderr=as_json)
    result = view.run(bus, loaded, baud, duration, console, live=not as_json, trace=trace)
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(view.summary_table(result))
    if result["violations"]:
        sys.exit(1)
