"""`pilectl bench`: play the scripted scenario on the firmware under MicroPython, live.

The firmware's safety core runs on the MicroPython unix port (bench/demo.py);
this side shows each tick, then writes a JSONL trace, a PNG plot and a summary
under the output directory.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

from rich.live import Live
from rich.table import Table

from pilectl import REPO
from pilectl.names import STATES, reasons

MICROPYTHON = Path(sys.executable).parent / "micropython"


def clock(minute):
    return f"{(minute // 60) % 24:02d}:{minute % 60:02d}"


def live_table(row):
    table = Table(title="V2G pile, firmware on MicroPython: " + clock(row["minute"]))
    table.add_column("", style="bold")
    table.add_column("now", justify="right")
    for name, value in (
        ("state", STATES[row["state"]]),
        ("aggregator asks", f"{row['request']:+d} W"),
        ("applied", f"{row['applied']:+d} W"),
        ("envelope", f"-{row['max_discharge']} .. +{row['max_charge']} W"),
        ("reasons", ", ".join(reasons(row["reasons"])) or "-"),
        ("SOC", f"{row['soc'] / 10:.1f} %"),
        ("battery", f"{row['battery_temp'] / 10:.1f} degC"),
        ("household load", f"{row['load']} W"),
        ("site (grid)", f"{row['site']:+d} W"),
    ):
        table.add_row(name, value)
    return table


def run(out_dir, pace_ms, console, show_live=True):
    """Play the scenario; returns (rows, summary). Raises RuntimeError if it cannot run."""
    if not MICROPYTHON.exists():
        raise RuntimeError("micropython is not installed in this environment: run `make setup`")
    env = dict(os.environ, MICROPYPATH=str(REPO / "firmware"))
    proc = subprocess.Popen([str(MICROPYTHON), str(REPO / "bench" / "demo.py"), str(pace_ms)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    rows, summary = [], None
    with Live(console=console, refresh_per_second=10, transient=False) as live:
        for line in proc.stdout:
            message = json.loads(line)
            if "summary" in message:
                summary = message["summary"]
                continue
            rows.append(message)
            if show_live:
                live.update(live_table(message))
    if proc.wait() != 0 or summary is None:
        raise RuntimeError("the firmware demo failed under MicroPython:\n" + proc.stderr.read())
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "demo.jsonl", "w") as trace:
        for row in rows:
            trace.write(json.dumps(row) + "\n")
    plot(rows, out_dir / "demo.png")
    return rows, summary


def plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [r["minute"] / 60 for r in rows]
    fig, (power, battery) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    power.plot(hours, [r["request"] / 1000 for r in rows], "--", label="aggregator request")
    power.plot(hours, [r["applied"] / 1000 for r in rows], label="applied", linewidth=2)
    power.fill_between(hours, [-r["max_discharge"] / 1000 for r in rows],
                       [r["max_charge"] / 1000 for r in rows], alpha=0.15, label="envelope")
    power.plot(hours, [r["load"] / 1000 for r in rows], label="household load")
    power.plot(hours, [r["site"] / 1000 for r in rows], label="site (grid) power")
    power.set_ylabel("kW (+ into the EV)")
    power.legend(loc="upper right", fontsize="small")
    power.grid(alpha=0.3)
    battery.plot(hours, [r["soc"] / 10 for r in rows], label="SOC %")
    battery.plot(hours, [r["battery_temp"] / 10 for r in rows], label="battery degC")
    battery.axhline(50, color="grey", linestyle=":", label="reserve 50 %")
    battery.set_xlabel("hour (24 and later: next morning)")
    battery.legend(loc="upper right", fontsize="small")
    battery.grid(alpha=0.3)
    fig.suptitle("Evening peak shaving and overnight charge (firmware safety core)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def summary_table(summary, out_dir):
    table = Table(title="Scenario summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_row("energy discharged (V2G)", f"{summary['discharged_wh'] / 1000:.1f} kWh")
    table.add_row("energy charged", f"{summary['charged_wh'] / 1000:.1f} kWh")
    table.add_row("peak shaved", f"{summary['peak_shaved_w'] / 1000:.1f} kW")
    table.add_row("final SOC", f"{summary['final_soc_pct']} %")
    table.add_row("safety violations", str(len(summary["violations"])))
    table.add_row("trace / plot", f"{out_dir}/demo.jsonl, demo.png")
    return table
