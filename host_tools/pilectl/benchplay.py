"""`pilectl bench`: play a scenario on the virtual bench, live, then summarise and plot.

The aggregator's setpoints go over TCP (signed with the key the bench provisioned
over the serial link, as a technician would); every TELEMETRY is shown with what
the plant really did. The oracle's violations must be 0.
"""

import asyncio
import json
import time

from rich.live import Live
from rich.table import Table

from pilectl.client import LinkError, PileError
from pilectl.names import STATES, reasons
from pilectl.vbench import VirtualBench


def live_table(row, name):
    table = Table(title=f"V2G pile on the virtual bench, scenario {name}: t = {row['t']:.0f} s")
    table.add_column("", style="bold")
    table.add_column("now", justify="right")
    request = "-" if row["request_w"] is None else f"{row['request_w']:+d} W"
    for label, value in (
        ("state", STATES.get(row["state"], str(row["state"]))),
        ("aggregator asks", request),
        ("applied", f"{row['applied_w']:+d} W"),
        ("envelope", f"-{row['max_discharge_w']} .. +{row['max_charge_w']} W"),
        ("reasons", ", ".join(reasons(row["reasons"])) or "-"),
        ("SOC", f"{row['soc_permille'] / 10:.1f} %"),
        ("battery", f"{row['battery_temp_dc'] / 10:.1f} degC"),
        ("converter", f"{row['converter_temp_dc'] / 10:.1f} degC"),
        ("household load", f"{row['load_w']:.0f} W"),
        ("site (grid)", "lost" if row["site_w"] is None else f"{row['site_w']:+d} W"),
        ("oracle violations", str(row["violations"])),
    ):
        table.add_row(label, value)
    return table


async def play(scenario, out_dir, console, show_live=True, heapsize=None, firmware=None,
               target="unix", layout="stock", fresh=False):
    """Run `scenario`; return (rows, summary). Writes bench.jsonl and bench.png in out_dir.

    `heapsize` (e.g. "64K") starts the firmware with `micropython -X heapsize=...`;
    `firmware` runs another build (a directory, see pilectl.build); `target` "rp2" runs
    it on an emulated Raspberry Pi Pico (pilectl.picobench) instead of the unix port,
    its modules laid out as `layout` says (pilectl.pico.LAYOUTS); "esp32" on an emulated
    ESP32 over Wi-Fi (pilectl.esp32bench), deployed onto a blank board with `fresh`.
    """
    if target == "rp2":
        from pilectl.picobench import PicoBench

        bench = PicoBench(out_dir / "run", scenario, firmware=firmware, layout=layout)
    elif target == "esp32":
        from pilectl.esp32bench import Esp32Bench

        bench = Esp32Bench(out_dir / "run", scenario, firmware=firmware, fresh=fresh)
    else:
        bench = VirtualBench(out_dir / "run", scenario, heapsize=heapsize, firmware=firmware)
    rows = []
    acked = refused = 0
    try:
        await bench.start()
        client = await bench.aggregator()
        schedule = sorted(scenario.get("aggregator", []), key=lambda s: s["at"])
        start = time.monotonic()
        request, request_until = None, 0.0
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while (t := time.monotonic() - start) < scenario.get("duration_s", 60):
                while schedule and schedule[0]["at"] <= t:
                    step = schedule.pop(0)
                    try:
                        await client.setpoint(step["power_w"], step["ttl_s"],
                                              step.get("departure_s"), step.get("reserve_soc"))
                        acked += 1
                    except Exception:  # counted and shown in the summary
                        refused += 1
                    request, request_until = step["power_w"], t + step["ttl_s"]
                tel = await client.telemetry()
                plant = bench.sim.plant
                row = dict(tel, t=round(t, 2), request_w=request if t < request_until else None,
                           load_w=round(plant.load_w(plant.t)), plant_power_w=round(plant.power_w),
                           violations=len(bench.sim.oracle.violations))
                rows.append(row)
                if show_live:
                    live.update(live_table(row, scenario.get("name", "?")))
        await client.close()
        # the verdict and the energies before the on-board figures: those stop the
        # firmware's loop (the REPL runs the benchmarks), which the plant would count
        summary = summarise(rows, bench, acked, refused, client.rejected)
        summary.update(await bench.figures())
    except (OSError, TimeoutError, LinkError, PileError) as exc:
        said = "\n".join(bench.firmware_output[-8:])
        raise RuntimeError(f"{exc}\nthe firmware's last words:\n{said}") from exc
    finally:
        await bench.stop()
    write_trace(rows, out_dir / "bench.jsonl")
    plot(rows, scenario, out_dir / "bench.png")
    return rows, summary


def write_trace(rows, path):
    """One JSON line a row, in a folder made if need be (the benches' traces)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as trace:
        for row in rows:
            trace.write(json.dumps(row) + "\n")


def summarise(rows, bench, acked, refused, rejected):
    """Figures for the summary; peak shaving compares, over the time the aggregator asked
    for discharge, the household's peak load with the peak the grid actually saw."""
    plant = bench.sim.plant
    window = [r for r in rows if (r["request_w"] or 0) < 0 and r["site_w"] is not None]
    peak_load = max((r["load_w"] for r in window), default=0)
    peak_site = max((r["site_w"] for r in window), default=0)
    return {
        "scenario": bench.scenario.get("name", "?"),
        "seconds": round(rows[-1]["t"], 1) if rows else 0,
        "discharged_wh": round(plant.energy_out_wh, 1),
        "charged_wh": round(plant.energy_in_wh, 1),
        "peak_load_w": peak_load,
        "peak_site_w": peak_site,
        "peak_shaved_w": max(0, peak_load - peak_site),
        "min_soc_pct": min((r["soc_permille"] for r in rows), default=0) / 10,
        "final_soc_pct": rows[-1]["soc_permille"] / 10 if rows else 0,
        "max_battery_temp_c": max((r["battery_temp_dc"] for r in rows), default=0) / 10,
        "setpoints_acked": acked,
        "setpoints_refused": refused,
        "link_messages_rejected": rejected,
        "violations": bench.sim.oracle.summary(),
        "target": bench.target,
        **({"machine": bench.machine} if bench.machine else {}),
    }


def plot(rows, scenario, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [r["t"] for r in rows]
    kw = 1 / 1000
    fig, (power, battery) = plt.subplots(2, 1, sharex=True, figsize=(10, 7))
    power.step(t, [(r["request_w"] or 0) * kw for r in rows], "--", where="post",
               label="aggregator request")
    power.plot(t, [r["applied_w"] * kw for r in rows], label="applied", linewidth=2)
    power.fill_between(t, [-r["max_discharge_w"] * kw for r in rows],
                       [r["max_charge_w"] * kw for r in rows], alpha=0.15, label="envelope")
    power.plot(t, [r["load_w"] * kw for r in rows], label="household load")
    power.plot(t, [(r["site_w"] if r["site_w"] is not None else float("nan")) * kw
                   for r in rows], label="site (grid) power")
    power.set_ylabel("kW (+ into the EV)")
    power.legend(loc="upper right", fontsize="small")
    power.grid(alpha=0.3)
    battery.plot(t, [r["soc_permille"] / 10 for r in rows], label="SOC %")
    battery.plot(t, [r["battery_temp_dc"] / 10 for r in rows], label="battery degC")
    battery.plot(t, [r["converter_temp_dc"] / 10 for r in rows], label="converter degC")
    reserve = scenario.get("config", {}).get("reserve_soc")
    if reserve is not None:
        battery.axhline(reserve, color="grey", linestyle=":", label=f"reserve {reserve} %")
    battery.axhline(45, color="red", linestyle=":", alpha=0.5, label="battery derating 45 degC")
    battery.set_xlabel("seconds")
    battery.legend(loc="upper right", fontsize="small")
    battery.grid(alpha=0.3)
    fig.suptitle(f"Virtual bench, scenario {scenario.get('name', '?')}: firmware on MicroPython, "
                 "plant on Modbus RTU")
    save_plot(fig, path)


def save_plot(fig, path):
    """Lay out, write and close a figure (the benches' PNGs)."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def figures_table(summary):
    """The summary's table, its rows to be added: figure and value."""
    table = Table(title=f"Scenario {summary['scenario']}: summary")
    table.add_column("figure")
    table.add_column("value", justify="right")
    return table


def summary_table(summary, out_dir):
    table = figures_table(summary)
    table.add_row("firmware ran on", (summary.get("machine") or f"the {summary['target']} port")
                  + {"romfs": ", its modules in ROMFS", "frozen": ", its modules frozen in"}.get(
                      summary.get("layout"), ""))
    table.add_row("energy discharged (V2G)", f"{summary['discharged_wh']:.1f} Wh")
    table.add_row("energy charged", f"{summary['charged_wh']:.1f} Wh")
    table.add_row("peak shaved", f"{summary['peak_shaved_w'] / 1000:.1f} kW: the grid saw "
                                 f"{summary['peak_site_w'] / 1000:.1f} kW of a "
                                 f"{summary['peak_load_w'] / 1000:.1f} kW peak")
    table.add_row("SOC lowest / final",
                  f"{summary['min_soc_pct']} % / {summary['final_soc_pct']} %")
    table.add_row("battery hottest", f"{summary['max_battery_temp_c']} degC")
    table.add_row("setpoints acked / refused",
                  f"{summary['setpoints_acked']} / {summary['setpoints_refused']}")
    if "cpu_busy_pct" in summary:
        table.add_row("core busy (emulated)", f"{summary['cpu_busy_pct']} % of the time, "
                      f"{summary['cpu_per_period_ms']} ms a control period; emulated time "
                      f"at {summary['emulated_per_wall']:.2f}x wall time")
    if "decide_us" in summary:
        table.add_row("on the board: a decision / a signed SETPOINT / a TELEMETRY",
                      f"{summary['decide_us']} / {summary['setpoint_us']} / "
                      f"{summary['telemetry_us']} us")
        table.add_row("heap: total / free at boot / held by imports",
                      f"{summary['heap_total']} / {summary['heap_boot_free']} / "
                      f"{summary['heap_imports']} B")
        table.add_row("heap while running: live / lowest free",
                      f"{summary['heap_live']} / {summary['heap_low']} B")
    table.add_row("oracle violations", str(len(summary["violations"])))
    table.add_row("trace / plot", f"{out_dir}/bench.jsonl, bench.png")
    return table


def run(scenario, out_dir, console, show_live=True, heapsize=None, firmware=None,
        target="unix", layout="stock", fresh=False):
    return asyncio.run(play(scenario, out_dir, console, show_live, heapsize, firmware, target,
                            layout, fresh))
