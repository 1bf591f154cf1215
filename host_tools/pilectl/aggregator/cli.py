"""`pile-aggregator`: the fleet aggregator an operator runs.

    pile-aggregator run FLEET.toml [--json] [--trace FILE] [--duration S]
                       [--worker NAME --password-file FILE]
    pile-aggregator plot TRACE.jsonl OUT.png
    pile-aggregator broker-config FLEET.toml OUT_DIR [--port 1883] [--host 0.0.0.0]
                                  [--worker NAME ...]

`run` connects to every pile of the fleet file, dispatches every period, serves the HTTP
API and /metrics when the fleet file names an address, and shows a live table (or one
JSON line a period with --json). With --worker, this process is one of several sharing
the fleet's piles on its broker (docs/aggregator.md). A mistake in the fleet file is one
message and exit 2.
"""

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import click

from pilectl.aggregator import run as run_loop
from pilectl.aggregator.fleet import FleetError, load


@click.group()
def main():
    """The fleet aggregator: a fleet target split over many piles, live."""


@main.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="One JSON line a period, no table.")
@click.option("--trace", type=click.Path(dir_okay=False), help="Append each period (JSONL).")
@click.option("--duration", type=float, help="Stop after this many seconds.")
@click.option("--worker", help="This process's broker user, one of several sharing the "
              "fleet (instead of [broker] user).")
@click.option("--password-file", type=click.Path(dir_okay=False),
              help="That user's broker password (instead of [broker] password_file).")
def run(fleet_file, as_json, trace, duration, worker, password_file):
    """Dispatch the fleet of FLEET_FILE until Ctrl-C."""
    try:
        fleet = load(fleet_file)
        if worker or password_file:
            fleet.broker = as_worker(fleet, worker, password_file)
    except FleetError as exc:
        click.echo(f"pile-aggregator: {exc}", err=True)
        sys.exit(2)
    if fleet.broker is not None and importlib.util.find_spec("aiomqtt") is None:
        click.echo("pile-aggregator: piles on a broker need aiomqtt: "
                   "pip install 'pilectl[mqtt]'", err=True)
        sys.exit(2)
    try:
        run_loop(_run(fleet, as_json, trace, duration))
    except KeyboardInterrupt:
        pass  # the operator stopped it: the piles fall back when their ttl runs out
    except OSError as exc:
        click.echo(f"pile-aggregator: {exc.strerror or exc}: is the HTTP address in "
                   "use by another process?", err=True)
        sys.exit(1)


def as_worker(fleet, worker, password_file):
    """The fleet's [broker] as another worker: its own user and password."""
    if fleet.broker is None:
        raise FleetError("--worker and --password-file are for piles on a broker: the "
                         "fleet file has no [broker] section")
    changes = {"user": worker} if worker else {}
    if password_file:
        try:
            changes["password"] = Path(password_file).read_text().strip()
        except OSError as exc:
            raise FleetError(f"cannot read --password-file {password_file}: "
                             f"{exc.strerror}") from None
    return dataclasses.replace(fleet.broker, **changes)


async def _run(fleet, as_json, trace_path, duration):
    from pilectl.aggregator.api import Metrics, application, serve
    from pilectl.aggregator.service import Aggregator

    aggregator = Aggregator(fleet)
    metrics = Metrics()
    trace = open(trace_path, "a") if trace_path else None  # noqa: SIM115 (closed below)
    live = None
    if not as_json:
        from rich.live import Live

        live = Live(auto_refresh=False)
        live.start()

    def on_status(status):
        metrics.record(status)
        line = json.dumps(status)
        if trace is not None:
            trace.write(line + "\n")
            trace.flush()
        if live is None:
            print(line, flush=True)
        else:
            live.update(_table(status), refresh=True)

    aggregator.on_status = on_status
    runner = None
    try:
        if fleet.http is not None:
            runner = await serve(application(aggregator, metrics), *fleet.http)
        aggregator.start()
        await aggregator.run(duration)
    finally:
        await aggregator.stop()
        if runner is not None:
            await runner.cleanup()
        if live is not None:
            live.stop()
        if trace is not None:
            trace.close()


def _table(status):
    from rich.table import Table

    worker = f"worker {status['worker']} of {status['workers']}, its share of " \
        f"{status['fleet_target_w'] / 1000:,.1f} kW: " if "worker" in status else ""
    table = Table(title=f"{worker}fleet: {status['online']} of {status['piles']} piles "
                        f"heard, {status['excluded']} excluded")
    for column in ("", "target", "planned", "delivered", "shortfall", "envelope"):
        table.add_column(column, justify="right")
    kw = lambda w: f"{w / 1000:,.1f} kW"  # noqa: E731
    table.add_row("fleet", kw(status["target_w"]) + f" ({status['source']})",
                  kw(status["planned_w"]), kw(status["delivered_w"]), kw(status["shortfall_w"]),
                  f"{kw(status['envelope_low_w'])} .. {kw(status['envelope_high_w'])}")
    for name, group in sorted(status["groups"].items()):
        table.add_row(f"group {name or '-'} ({group['online']}/{group['piles']})", "",
                      kw(group["planned_w"]), kw(group["delivered_w"]), "", "")
    table.caption = (f"split {status['split_ms']} ms, dispatch {status['dispatch_ms']} ms; "
                     f"refused {status['counters'].get('refused', 0)}")
    return table


@main.command()
@click.argument("trace_file", type=click.Path(exists=True, dir_okay=False))
@click.argument("png", type=click.Path(dir_okay=False))
def plot(trace_file, png):
    """PNG of the target, what was delivered and the fleet's envelope, from a trace."""
    try:
        import matplotlib
    except ImportError:
        click.echo("pile-aggregator: plotting needs matplotlib: pip install 'pilectl[bench]'",
                   err=True)
        sys.exit(2)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(trace_file) as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if not rows:
        click.echo(f"pile-aggregator: {trace_file} has no periods", err=True)
        sys.exit(2)
    t = [(r["t"] - rows[0]["t"]) / 60 for r in rows]
    fig, ax = plt.subplots(figsize=(9, 4.5))
    ax.fill_between(t, [r["envelope_low_w"] / 1000 for r in rows],
                    [r["envelope_high_w"] / 1000 for r in rows], color="0.9",
                    label="fleet envelope")
    ax.plot(t, [r["target_w"] / 1000 for r in rows], label="target", color="tab:red")
    ax.plot(t, [r["delivered_w"] / 1000 for r in rows], label="delivered", color="tab:blue")
    ax.set_xlabel("minutes")
    ax.set_ylabel("kW (+ charge, - discharge)")
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(png, dpi=90)
    click.echo(png)


@main.command("broker-config")
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--port", default=1883, show_default=True, help="The broker's MQTT port.")
@click.option("--host", default="0.0.0.0", show_default=True, help="The address it listens on.")
@click.option("--worker", "workers", multiple=True,
              help="An aggregator worker's user (repeat; default: [broker] user).")
def broker_config(fleet_file, out_dir, port, host, workers):
    """Mosquitto's files for the piles of FLEET_FILE on its broker: mosquitto.conf, the
    hashed passwd, the ACL, and one password a pile (and a worker) in OUT_DIR. Passwords
    already there are kept, so running it again after adding piles changes no board."""
    from pilectl.aggregator.broker import BrokerError, kept_password, write_config

    try:
        fleet = load(fleet_file)
    except FleetError as exc:
        click.echo(f"pile-aggregator: {exc}", err=True)
        sys.exit(2)
    if fleet.broker is None:
        click.echo(f"pile-aggregator: {fleet_file} has no [broker] section: add one "
                   "(docs/aggregator.md) and mqtt = true on the piles it serves", err=True)
        sys.exit(2)
    out = Path(out_dir).resolve()  # the config names its files by absolute path
    names = list(workers) or [fleet.broker.user]
    users = {entry.pile_id: kept_password(out / "piles" / f"{entry.pile_id}.password")
             for entry in fleet.piles if entry.mqtt}
    for name in names:
        users[name] = fleet.broker.password if name == fleet.broker.user else \
            kept_password(out / "workers" / f"{name}.password")
    try:
        conf = write_config(out, port, users, names, fleet.broker.topic_prefix, host)
    except (BrokerError, OSError) as exc:
        click.echo(f"pile-aggregator: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{conf}: {len(users) - len(names)} piles, workers {', '.join(names)}\n"
               f"start it with: mosquitto -c {conf}\n"
               f"each pile's password is in {out / 'piles'}/PILE_ID.password: put it in the "
               "board file's mqtt.password")


if __name__ == "__main__":
    main()
