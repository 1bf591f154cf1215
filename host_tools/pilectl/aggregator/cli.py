"""`pile-aggregator`: the fleet aggregator an operator runs.

    pile-aggregator run FLEET.toml [--json] [--trace FILE] [--duration S]
                       [--worker NAME --password-file FILE]
    pile-aggregator plot TRACE.jsonl OUT.png
    pile-aggregator broker-config FLEET.toml OUT_DIR [--port 1883] [--host 0.0.0.0]
                                  [--worker NAME ...] [--home-assistant USER ...]
    pile-aggregator rollout FLEET.toml PACKAGE [--canary-percent 5] [--wave-percent 25]
                            [--parallel 50] [--confirm-s 600] [--canary PILE_ID ...]
                            [--technician-keys DIR] [--downgrade] [--api] [--json]

`run` connects to every pile of the fleet file, dispatches every period, serves the HTTP
API and /metrics when the fleet file names an address, and shows a live table (or one
JSON line a period with --json). With --worker, this process is one of several sharing
the fleet's piles on its broker (docs/aggregator.md). `rollout` puts a signed update
package on the fleet in waves, as `run` dispatching meanwhile, and ends with the
rollout (exit 0 when every pile runs it, 1 when it halted, 3 when piles were skipped
for want of a technician's key); with --api it hands the rollout to the aggregator
already running for the fleet file (its HTTP API) and follows it. A mistake in the
fleet file is one message and exit 2.
"""

import asyncio
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


async def _run(fleet, as_json, trace_path, duration, rollout=None):
    from pilectl.aggregator.api import Metrics, application, serve
    from pilectl.aggregator.service import Aggregator

    aggregator = Aggregator(fleet)
    metrics = Metrics(aggregator)
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
            if rollout is None:  # a rollout's --json says its report alone, at its end
                print(line, flush=True)
        else:
            live.update(_view(status), refresh=True)

    aggregator.on_status = on_status
    runner = None
    try:
        if fleet.http is not None:
            if not _loopback(fleet.http[0]):
                click.echo(f"pile-aggregator: note: the API on {fleet.http[0]} answers reads "
                           "(the page, /status, /metrics) to anyone who reaches it; writes "
                           "need the operator token (docs/operator.md)", err=True)
            runner = await serve(application(aggregator, metrics, fleet.http_token),
                                 *fleet.http)
        aggregator.start()
        if rollout is None:
            await aggregator.run(duration)
        else:
            await _run_rollout(aggregator, *rollout)
    finally:
        await aggregator.stop()
        if runner is not None:
            await runner.cleanup()
        if live is not None:
            live.stop()
        if trace is not None:
            trace.close()


async def _run_rollout(aggregator, package, settings, technician_keys, report):
    """Dispatch while the rollout runs; its last summary appended to `report`."""
    dispatching = asyncio.create_task(aggregator.run())
    try:
        while aggregator.broker is not None and not aggregator.broker.joined:
            await asyncio.sleep(0.1)  # which piles are this worker's is known once joined
        rollout = aggregator.start_rollout(package, settings, technician_keys)
        await aggregator.rollout_ended()
        aggregator.dispatch_once()  # the table's last state
        report.append(rollout.summary())
    finally:
        dispatching.cancel()
        await asyncio.gather(dispatching, return_exceptions=True)


@main.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.argument("package", type=click.Path(dir_okay=False))
@click.option("--canary-percent", type=float, help="Piles in the first wave, in percent "
              "(default: the fleet file's [rollout], else 5).")
@click.option("--wave-percent", type=float, help="Piles in each later wave, in percent "
              "(default 25).")
@click.option("--parallel", type=int, help="Piles receiving the package at once (default 50).")
@click.option("--confirm-s", type=float, help="Seconds from a pile's start to its confirmed "
              "trial boot before it halts the rollout (default 600).")
@click.option("--canary", "canaries", multiple=True, help="A pile in the canary wave (repeat).")
@click.option("--technician-keys", type=click.Path(file_okay=False),
              help="A folder of PILE_ID.technician.key files (for piles without a "
              "technician_key_file).")
@click.option("--downgrade", is_flag=True, help="Allow a version older than a pile runs.")
@click.option("--api", "via_api", is_flag=True, help="Hand the rollout to the aggregator "
              "already running for FLEET_FILE (its [target] http) and follow it.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON only.")
def rollout(fleet_file, package, canary_percent, wave_percent, parallel, confirm_s, canaries,
            technician_keys, downgrade, via_api, as_json):
    """Put the signed update PACKAGE on the piles of FLEET_FILE, in waves: each wave once
    every pile of the one before confirmed it; halted by a refusal, a rollback, or a pile
    not confirmed in time."""
    from pilectl import release
    from pilectl.aggregator.rollout import Settings

    try:
        fleet = load(fleet_file)
        found = release.Package.load(package)
    except (FleetError, release.ReleaseError) as exc:
        _fail(exc, 2)
    defaults = fleet.rollouts
    settings = Settings(
        canary_percent=_given(canary_percent, defaults.canary_percent),
        wave_percent=_given(wave_percent, defaults.wave_percent),
        parallel=_given(parallel, defaults.parallel),
        confirm_s=_given(confirm_s, defaults.confirm_s), canaries=canaries,
        downgrade=downgrade)
    problem = settings.problem()
    if problem:
        _fail(problem, 2)
    report = []
    try:
        if via_api:
            run_loop(_follow(fleet, Path(package), settings, technician_keys, as_json, report))
        else:
            if fleet.broker is not None and importlib.util.find_spec("aiomqtt") is None:
                _fail("piles on a broker need aiomqtt: pip install 'pilectl[mqtt]'", 2)
            run_loop(_run(fleet, as_json, None, None, (found, settings, technician_keys and
                                                       Path(technician_keys), report)))
    except KeyboardInterrupt:
        _fail("interrupted: piles already committed confirm or roll back by themselves; "
              "run the same rollout again to go on where each pile stands"
              + (" (the aggregator's own rollout goes on: DELETE /rollout halts it)"
                 if via_api else ""), 1)
    except OSError as exc:
        _fail(f"{exc.strerror or exc}: is the HTTP address in use by another aggregator? "
              "Then give --api to hand it the rollout", 1)
    summary = report[-1]
    click.echo(json.dumps(summary) if as_json else _report(summary))
    sys.exit(0 if summary["state"] == "done" and not summary["skipped"] else
             3 if summary["state"] == "done" else 1)


def _given(value, default):
    return default if value is None else value


def _fail(message, status):
    click.echo(f"pile-aggregator: {message}", err=True)
    sys.exit(status)


def _report(summary):
    """A rollout's end in words: how far it went, and every pile that stopped it."""
    waves = ", ".join(f"{size} pile{'s' * (size != 1)} in {seconds:g} s" for size, seconds in
                      zip(summary["wave_sizes"], summary["wave_seconds"], strict=False))
    lines = [f"rollout of {summary['version']}: {summary['state']} after "
             f"{summary['seconds']:g} s, wave {summary['wave']} of {summary['waves']}"
             + (f" ({waves})" if waves else ""),
             f"  {summary['updated']} of {summary['piles']} piles run {summary['version']}"]
    for pile in summary["failures"]:
        lines.append(f"  {pile['pile']} (wave {pile['wave']}) {pile['kind']}: {pile['reason']}")
    for pile in summary["skips"]:
        lines.append(f"  {pile['pile']} skipped: {pile['reason']}")
    if summary["stopped"]:
        lines.append(f"  {summary['stopped']} piles stopped before their commit (they run "
                     "the old firmware; the package waits half sent)")
    if summary["halted_because"]:
        lines.append(f"  halted: {summary['halted_because']}; {summary['pending']} piles "
                     "were never offered the package")
    return "\n".join(lines)


async def _follow(fleet, package, settings, technician_keys, as_json, report):
    """POST the rollout to the running aggregator's API, then follow it to its end."""
    import aiohttp

    if fleet.http is None:
        _fail("--api needs the fleet file's [target] http: the address of the running "
              "aggregator's API", 2)
    if settings.downgrade or technician_keys:
        _fail("--downgrade and --technician-keys are not for --api: the running "
              "aggregator takes its keys from the fleet file, and no downgrade", 2)
    host, port = fleet.http
    base = f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"
    headers = {"Authorization": f"Bearer {fleet.http_token}"} if fleet.http_token else {}
    query = [(name, str(getattr(settings, name))) for name in
             ("canary_percent", "wave_percent", "parallel", "confirm_s")]
    query += [("canary", pile_id) for pile_id in settings.canaries]
    live = None
    async with aiohttp.ClientSession(headers=headers) as http:
        try:
            async with http.post(f"{base}/rollout", params=query,
                                 data=package.read_bytes()) as reply:
                if reply.status != 202:
                    _fail(f"the aggregator at {base} refused the rollout: "
                          f"{(await reply.json()).get('error')}", 1)
        except aiohttp.ClientConnectionError as exc:
            _fail(f"no aggregator answers at {base} ({exc}): start pile-aggregator run "
                  "first, or leave out --api", 1)
        if not as_json:
            from rich.live import Live

            live = Live(auto_refresh=False)
            live.start()
        try:
            while True:
                async with http.get(f"{base}/rollout") as reply:
                    summary = await reply.json()
                if live is not None:
                    live.update(_rollout_table(summary), refresh=True)
                if summary["state"] in ("done", "halted"):
                    report.append(summary)
                    return
                await asyncio.sleep(1)
        finally:
            if live is not None:
                live.stop()


def _view(status):
    """The live table, and the rollout's below it while there is one."""
    table = _table(status)
    rollout = status.get("rollout")
    if rollout is None:
        return table
    from rich.console import Group

    return Group(table, _rollout_table(rollout))


def _rollout_table(rollout):
    from rich.table import Table

    table = Table(title=f"rollout of {rollout['version']}: {rollout['state']}, wave "
                        f"{rollout['wave']} of {rollout['waves']} "
                        f"({rollout['seconds']:.0f} s)")
    for column in ("updated", "updating", "pending", "failed", "skipped", "stopped"):
        table.add_column(column, justify="right")
    table.add_row(*(str(rollout[c]) for c in ("updated", "updating", "pending", "failed",
                                               "skipped", "stopped")))
    if rollout["halted_because"]:
        table.caption = f"halted: {rollout['halted_because']}"
    return table


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
    if status.get("budget_piles"):  # piles whose owners set a V2G budget
        table.caption += (f"; V2G budgets: {status['budget_spent']} of "
                          f"{status['budget_piles']} spent, {kw(status['budget_left_wh'])}h "
                          "left")
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
@click.option("--home-assistant", "home_assistant", multiple=True,
              help="Home Assistant's broker user (repeat), for [homeassistant] enabled = true.")
def broker_config(fleet_file, out_dir, port, host, workers, home_assistant):
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
    home = fleet.homeassistant
    if home_assistant and not home.enabled:
        click.echo(f"pile-aggregator: --home-assistant is for a fleet with Home Assistant "
                   f"on: add [homeassistant] enabled = true to {fleet_file}", err=True)
        sys.exit(2)
    out = Path(out_dir).resolve()  # the config names its files by absolute path
    names = list(workers) or [fleet.broker.user]
    users = {entry.pile_id: kept_password(out / "piles" / f"{entry.pile_id}.password")
             for entry in fleet.piles if entry.mqtt}
    for name in names:
        users[name] = fleet.broker.password if name == fleet.broker.user else \
            kept_password(out / "workers" / f"{name}.password")
    for name in home_assistant:
        if name in users:
            click.echo(f"pile-aggregator: --home-assistant {name}: a pile or worker has that "
                       "broker user already: give Home Assistant another", err=True)
            sys.exit(2)
        users[name] = kept_password(out / "home-assistant" / f"{name}.password")
    try:
        conf = write_config(out, port, users, names, fleet.broker.topic_prefix, host,
                            discovery_prefix=home.discovery_prefix if home.enabled else None,
                            home_assistant=home_assistant)
    except (BrokerError, OSError) as exc:
        click.echo(f"pile-aggregator: {exc}", err=True)
        sys.exit(1)
    click.echo(f"{conf}: {len(users) - len(names) - len(home_assistant)} piles, workers "
               f"{', '.join(names)}\n"
               f"start it with: mosquitto -c {conf}\n"
               f"each pile's password is in {out / 'piles'}/PILE_ID.password: put it in the "
               "board file's mqtt.password")
    if home_assistant:
        click.echo(f"Home Assistant's password is in {out / 'home-assistant'}/USER.password: "
                   "give it in its MQTT integration")


def _loopback(host):
    """Whether the API's address is this machine's own (127.0.0.1, ::1, localhost)."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


if __name__ == "__main__":
    main()
