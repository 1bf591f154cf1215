"""`pilectl bench --scenario site`: a site group of real firmwares on the simulated site
(pilectl/sitebench.py), live, then summarised and plotted.

The aggregator asks the group for the scenario's target: it splits it over the piles'
envelopes from their TELEMETRY (pilectl/aggregator/split.py), which in a site group
include each pile's allowance, so its setpoints stay inside every allowance (counted).
The oracle checks the caps at the connection point; its violations must be 0.
"""

import asyncio
import time

from rich.live import Live
from rich.table import Table

from pilectl.aggregator.split import Share, split
from pilectl.benchplay import figures_table, save_plot, write_trace
from pilectl.client import LinkError, PileError
from pilectl.names import reasons
from pilectl.sitebench import SiteBench

TTL_S = 10


class SiteScenarioError(ValueError):
    pass


def check(scenario):
    """The scenario's `site` part: 2 to 8 piles and the connection's caps."""
    site = scenario.get("site")
    if not isinstance(site, dict):
        raise SiteScenarioError("a site scenario has a \"site\" object: piles, import_cap_w, "
                                "export_cap_w")
    unknown = set(site) - {"piles", "import_cap_w", "export_cap_w", "period_ms"}
    if unknown:
        raise SiteScenarioError(f"site.{sorted(unknown)[0]} is not a site key (piles, "
                                "import_cap_w, export_cap_w, period_ms)")
    piles = site.get("piles", 3)
    if not isinstance(piles, int) or not 2 <= piles <= 8:
        raise SiteScenarioError(f"site.piles must be 2 to 8, not {piles!r}")
    return site


def live_table(row, name, caps):
    table = Table(title=f"site group on the virtual bench, scenario {name}: t = {row['t']:.0f} s")
    for column in ("pile", "asked", "power", "envelope (with its share)", "reasons"):
        table.add_column(column, justify="right" if column != "reasons" else "left")
    for pile in row["piles"]:
        table.add_row(pile["pile_id"], "-" if pile["asked_w"] is None else
                      f"{pile['asked_w']:+d} W", f"{pile['power_w']:+d} W",
                      f"-{pile['max_discharge_w']} .. +{pile['max_charge_w']} W",
                      ", ".join(reasons(pile["reasons"])) or "-")
    table.add_row("site", "", f"{row['site_w']:+d} W", f"caps +{caps[0]} / -{caps[1]} W",
                  f"load {row['load_w']} W, oracle violations {row['violations']}")
    return table


async def play(scenario, out_dir, console, show_live=True):
    """Run the site scenario; return (rows, summary). Writes site.jsonl and site.png."""
    site = check(scenario)
    caps = (site.get("import_cap_w", 40000), site.get("export_cap_w", 11000))
    bench = SiteBench(out_dir / "run", piles=site.get("piles", 3), import_cap_w=caps[0],
                      export_cap_w=caps[1], load_w=scenario.get("load_w") or ((0, 3000),),
                      period_ms=site.get("period_ms", 1000))
    rows, asked, outside = [], 0, 0
    schedule = sorted(scenario.get("aggregator", []), key=lambda s: s["at"])
    await bench.start()
    clients = []
    try:
        clients = [await pile.aggregator() for pile in bench.piles]
        start = time.monotonic()
        target, until, setpoints = None, 0.0, {}
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            while (t := time.monotonic() - start) < scenario.get("duration_s", 40):
                while schedule and schedule[0]["at"] <= t:
                    step = schedule.pop(0)
                    target, until = step["power_w"], t + step["ttl_s"]
                tels = [await client.telemetry() for client in clients]
                if target is not None and t < until:
                    plan = split(target, [Share(p.pile_id, tel["max_charge_w"],
                                                tel["max_discharge_w"])
                                          for p, tel in zip(bench.piles, tels, strict=True)])
                    setpoints = plan.setpoints
                    for pile, tel, client in zip(bench.piles, tels, clients, strict=True):
                        power = setpoints[pile.pile_id]
                        outside += not -tel["max_discharge_w"] <= power <= tel["max_charge_w"]
                        await client.setpoint(power, TTL_S)
                        asked += 1
                else:
                    setpoints = {}
                _, site_w, _ = bench.samples[-1]
                row = {"t": round(t, 2), "site_w": site_w,
                       "load_w": round(bench.load_w(bench.t)),
                       "violations": len(bench.violations()),
                       "piles": [dict(pile_id=p.pile_id, asked_w=setpoints.get(p.pile_id),
                                      power_w=round(plant.power_w),
                                      max_charge_w=tel["max_charge_w"],
                                      max_discharge_w=tel["max_discharge_w"],
                                      reasons=tel["reasons"])
                                 for p, plant, tel in zip(bench.piles, bench.plants, tels,
                                                          strict=True)]}
                rows.append(row)
                if show_live:
                    live.update(live_table(row, scenario.get("name", "?"), caps))
                await asyncio.sleep(0.5)
    finally:
        for client in clients:
            await client.close()
        await bench.stop()
    write_trace(rows, out_dir / "site.jsonl")
    plot(bench, scenario, out_dir / "site.png")
    summary = {"scenario": scenario.get("name", "?"), "piles": bench.n,
               "seconds": rows[-1]["t"] if rows else 0, "import_cap_w": caps[0],
               "export_cap_w": caps[1], "worst_export_over_w": bench.worst_export_over_w(),
               "seconds_over_cap": bench.seconds_over_cap(), "setpoints": asked,
               "setpoints_outside_an_allowance": outside, "violations": bench.violations()}
    return rows, summary


def plot(bench, scenario, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = [s[0] for s in bench.samples]
    kw = 1 / 1000
    fig, ax = plt.subplots(figsize=(10, 5))
    for i, pile_id in enumerate(bench.ids):
        ax.plot(t, [s[2][i] * kw for s in bench.samples], label=f"{pile_id} power")
    ax.plot(t, [s[1] * kw for s in bench.samples], label="site (grid) power", linewidth=2,
            color="black")
    ax.axhline(-bench.export_cap_w * kw, color="red", linestyle=":", label="export cap")
    ax.set_xlabel("seconds")
    ax.set_ylabel("kW (+ into the EV, + import)")
    ax.legend(loc="upper right", fontsize="small")
    ax.grid(alpha=0.3)
    fig.suptitle(f"Site group on the virtual bench, scenario {scenario.get('name', '?')}: "
                 f"{bench.n} firmwares behind one meter")
    save_plot(fig, path)


def summary_table(summary, out_dir):
    table = figures_table(summary)
    table.add_row("piles in the group", str(summary["piles"]))
    table.add_row("export beyond the cap, at worst / in all",
                  f"{summary['worst_export_over_w']} W / {summary['seconds_over_cap']} s")
    table.add_row("setpoints / outside an allowance",
                  f"{summary['setpoints']} / {summary['setpoints_outside_an_allowance']}")
    table.add_row("oracle violations", str(len(summary["violations"])))
    table.add_row("trace / plot", f"{out_dir}/site.jsonl, site.png")
    return table


def run(scenario, out_dir, console, show_live=True):
    """`play`, with a link or start-up failure said as a RuntimeError (no traceback)."""
    try:
        return asyncio.run(play(scenario, out_dir, console, show_live))
    except (OSError, TimeoutError, LinkError, PileError) as exc:
        raise RuntimeError(f"the site bench stopped: {exc}") from exc
