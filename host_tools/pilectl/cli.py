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
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(),
              help="Where the trace (JSONL) and plot (PNG) go.")
@click.option("--pace-ms", default=20, show_default=True,
              help="Wall-clock pause per control tick, so the live view can be followed.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
def bench(out_dir, pace_ms, as_json):
    """Play the scripted evening-to-morning scenario on the firmware, live."""
    from pilectl import demo

    console = Console(stderr=as_json)
    try:
        _, summary = demo.run(Path(out_dir), pace_ms, console, show_live=not as_json)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(summary))
    else:
        console.print()
        console.print(demo.summary_table(summary, out_dir))
    if summary["violations"]:
        click.echo(f"safety violations: {summary['violations']}", err=True)
        sys.exit(1)
