"""Command line entry point: `pilectl COMMAND`."""

import json
import sys
from pathlib import Path

import click
from rich.console import Console


@click.group()
def main():
    """Field and bench tool for the V2G pile edge controller."""


def _needs_bench_extra(command, unix_port=False):
    """The bench commands need the `bench` extra; without it, say how to get it."""
    hint = "install it with: pip install 'pilectl[bench]' (or `make setup` in a checkout)"
    try:
        import matplotlib  # noqa: F401
        import pymodbus  # noqa: F401
    except ImportError as exc:
        raise click.ClickException(f"`pilectl {command}` needs the bench extra ({exc.name} is "
                                   f"not installed): {hint}") from None
    from pilectl import MICROPYTHON

    if unix_port and not MICROPYTHON.exists():
        raise click.ClickException(f"`pilectl {command}` runs the firmware on the MicroPython "
                                   f"unix port, which is not installed: {hint}")


@main.command()
@click.option("--scenario", default="evening", show_default=True,
              help="A scenario name (host_tools/pilectl/scenarios) or a JSON file.")
@click.option("--out", "out_dir", default="bench-out", show_default=True, type=click.Path(),
              help="Where the trace (JSONL) and plot (PNG) go.")
@click.option("--heapsize", help="Run the firmware with `micropython -X heapsize=...` (e.g. "
              "128K); implies --mpy, since a board runs the precompiled build.")
@click.option("--mpy", is_flag=True, help="Run the .mpy build a board gets (mpy-cross), not the "
              "sources.")
@click.option("--target", type=click.Choice(["unix", "rp2", "esp32"]), default="unix",
              show_default=True, help="unix: the MicroPython unix port; rp2: the official "
              "Raspberry Pi Pico build on an emulated RP2040, deployed over its USB serial, "
              "the plant on UART0, setpoints on the serial link (UART1); esp32: the official "
              "ESP32 build in a QEMU with Wi-Fi, deployed over UART0, the plant on UART2, "
              "setpoints over Wi-Fi by TCP.")
@click.option("--fresh", is_flag=True, help="With --target esp32: deploy onto a blank board "
              "(minutes on the emulated flash) instead of one programmed with the firmware.")
@click.option("--romfs", is_flag=True, help="With --target rp2: the RPI_PICO_ROMFS build, the "
              "firmware's modules deployed into its ROMFS partition (pilectl deploy --romfs).")
@click.option("--frozen", is_flag=True, help="With --target rp2: the PILE_PICO build with the "
              "firmware frozen in (make firmware-rp2, or PICO_FIRMWARE_FROZEN).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON only.")
def bench(scenario, out_dir, heapsize, mpy, target, romfs, frozen, fresh, as_json):
    """The virtual bench: firmware on MicroPython, simulated plant, host link, live.

    Exits 1 when the plant's safety oracle recorded a violation.
    """
    _needs_bench_extra("bench", unix_port=target == "unix")
    from pilectl import benchplay
    from pilectl.sim.run import ScenarioError, load_scenario

    try:
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    if "site" in loaded:  # several piles behind one connection: pilectl/siteplay.py
        if target != "unix" or heapsize or mpy or romfs or frozen or fresh:
            raise click.ClickException("a site scenario runs on the unix port only, from the "
                                       "sources")
        return _bench_site(loaded, Path(out_dir), as_json)
    if target == "rp2":
        from pilectl.pico import firmware_image, missing

        if missing() is not None:
            raise click.ClickException(f"no emulated Pico here: {missing()}")
        if heapsize:
            raise click.ClickException("--heapsize is the unix port's: a Pico has its own heap")
        if romfs and frozen:
            raise click.ClickException("--romfs or --frozen: the modules go to one place")
        if romfs and firmware_image("romfs") is None:
            raise click.ClickException("no MicroPython build with a ROMFS partition: set "
                                       "PICO_FIRMWARE_ROMFS to one (RPI_PICO_ROMFS)")
        if frozen and firmware_image("frozen") is None:
            raise click.ClickException("no build with the firmware frozen in: run `make "
                                       "firmware-rp2` or set PICO_FIRMWARE_FROZEN "
                                       "(boards/rp2/README.md)")
    elif target == "esp32":
        from pilectl.esp32 import missing

        if missing() is not None:
            raise click.ClickException(f"no emulated ESP32 here: {missing()}")
        if heapsize or romfs or frozen:
            raise click.ClickException("--heapsize, --romfs and --frozen are not for the "
                                       "ESP32: its image has its own heap and no ROMFS")
    elif romfs or frozen:
        raise click.ClickException("--romfs and --frozen need --target rp2: the unix port "
                                   "has no flash (make bench-romfs measures a ROMFS image)")
    if fresh and target != "esp32":
        raise click.ClickException("--fresh is for --target esp32")
    console = Console(stderr=as_json)
    firmware = None
    if (mpy or heapsize) and target == "unix":
        from pilectl.build import build

        firmware = Path(out_dir) / "firmware-mpy"
        build(firmware)
    try:
        _, summary = benchplay.run(loaded, Path(out_dir), console, show_live=not as_json,
                                   heapsize=heapsize, firmware=firmware, target=target,
                                   layout="romfs" if romfs else "frozen" if frozen else "stock",
                                   fresh=fresh)
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from exc
    _bench_verdict(console, summary, benchplay.summary_table, out_dir, as_json)


def _bench_verdict(console, summary, table, out_dir, as_json):
    """The bench's summary (JSON, or `table`), and exit 1 on an oracle violation."""
    if as_json:
        click.echo(json.dumps(summary))
    else:
        console.print()
        console.print(table(summary, out_dir))
    if summary["violations"]:
        click.echo(f"safety violations: {summary['violations']}", err=True)
        sys.exit(1)


def _bench_site(scenario, out_dir, as_json):
    """`pilectl bench` for a site scenario: several firmwares as one site group."""
    from pilectl import siteplay

    console = Console(stderr=as_json)
    try:
        _, summary = siteplay.run(scenario, out_dir, console, show_live=not as_json)
    except (siteplay.SiteScenarioError, RuntimeError) as exc:
        raise click.ClickException(str(exc)) from exc
    _bench_verdict(console, summary, siteplay.summary_table, out_dir, as_json)


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
    _needs_bench_extra("sim")
    from pilectl.sim import view
    from pilectl.sim.run import ScenarioError, load_scenario

    try:  # the scenario first: its mistakes need no bus to be found
        loaded = load_scenario(scenario)
    except ScenarioError as exc:
        raise click.ClickException(str(exc)) from exc
    if not Path(bus).exists():
        raise click.ClickException(
            f"no device {bus}: plug in the USB-RS485 adapter (ls /dev/ttyUSB*), or make a "
            "virtual bus with: socat pty,raw,echo=0,link=pile pty,raw,echo=0,link=plant")
    console = Console(stderr=as_json)
    result = view.run(bus, loaded, baud, duration, console, live=not as_json, trace=trace)
    if as_json:
        click.echo(json.dumps(result))
    else:
        console.print(view.summary_table(result))
    if result["violations"]:
        sys.exit(1)


# -- technician commands over the pile link ---------------------------------------------

def link_options(command):
    """Where the pile is and how to sign: the same options on every link command."""
    options = [
        click.option("--port", envvar="PILECTL_PORT",
                     help="The pile's USB serial link (e.g. /dev/ttyUSB0). [env PILECTL_PORT]"),
        click.option("--tcp", envvar="PILECTL_TCP",
                     help="The pile on the network: HOST or HOST:PORT (default port 7700). "
                     "[env PILECTL_TCP]"),
        click.option("--baud", default=115200, show_default=True),
        click.option("--key-file", type=click.Path(dir_okay=False),
                     help="The link key file (default: the one provision-key saved for the "
                     "pile, under $PILECTL_HOME/keys)."),
        click.option("--technician-key-file", type=click.Path(dir_okay=False),
                     help="The technician's key file (default: the one provision-key "
                     "--technician saved for the pile); needed for config set, release, "
                     "reset-fault and reboot once the pile has a technician's key."),
        click.option("--timeout", default=5.0, show_default=True, help="Seconds to wait for "
                     "a reply."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _target(port, tcp, baud, key_file, timeout, technician_key_file):
    from pilectl.field import Target

    return Target(port, tcp, baud, key_file, timeout, technician_key_file)


def _call(target, action):
    """Run one link action; every failure becomes one line saying what to do next."""
    from pilectl import wire
    from pilectl.client import LinkError, PileError
    from pilectl.field import FieldError, run

    try:
        return run(target, action)
    except (FieldError, LinkError) as exc:
        raise click.ClickException(str(exc)) from None
    except PileError as exc:
        hint = {wire.ERR_AUTH: " (use the keys provisioned on this pile, --key-file and "
                               "--technician-key-file, or provision them again over USB "
                               "serial)",
                wire.ERR_REPLAY: " (another tool is using this seq: retry)"}.get(exc.code, "")
        raise click.ClickException(f"{exc}{hint}") from None


def _echo_json(data):
    click.echo(json.dumps(data, default=str))


def _rich_table(title, rows, columns):
    """A table of `rows`; None shows as a dash, a list as its items joined."""
    from rich.table import Table

    def shown(value):
        if value is None:
            return "—"
        return ", ".join(value) if isinstance(value, list) else str(value)

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(shown(value) for value in row))
    return table


def _table(title, rows, columns):
    Console().print(_rich_table(title, rows, columns))


@main.command()
@link_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def status(as_json, **link):
    """Who the pile is and what it is doing now: one table."""
    from pilectl import field

    data = _call(_target(**link), field.status)
    if as_json:
        return _echo_json(data)
    data["reasons"] = data["reasons"] or "none"
    signed = data.pop("link")
    data["link"] = f"signed, key id {signed['key_id']}" if signed["signed"] else "unsigned"
    diagnostics = data.pop("diagnostics")
    slots = data.pop("firmware_slots")
    _table(f"pile {data['pile_id']}", data.items(), ["", "value"])
    if slots:
        _table("firmware slots", slots.items(), ["", "value"])
    if diagnostics:
        _table("diagnostics (counted since boot)", sorted(diagnostics.items()),
               ["counter", "value"])


@main.command()
@link_options
@click.option("--count", type=int, help="Stop after this many telemetry messages.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line per telemetry message.")
def monitor(count, as_json, **link):
    """Live view of the pile's telemetry (Ctrl-C to stop)."""
    from rich.live import Live

    from pilectl import field

    def view(sample):
        return _rich_table("pile telemetry (Ctrl-C to stop)", sample.items(), ["", "value"])

    async def action(client):
        if as_json:
            return await field.monitor(client, _echo_json, count)
        with Live(auto_refresh=False) as live:
            await field.monitor(client, lambda s: live.update(view(s), refresh=True), count)

    try:
        _call(_target(**link), action)
    except KeyboardInterrupt:
        pass  # the technician is done watching


@main.group()
def config():
    """Read or change the pile's configuration."""


@config.command("get")
@link_options
@click.argument("keys", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def config_get(keys, as_json, **link):
    """Show the configuration (all keys, or the KEYS named), with allowed ranges."""
    from pilectl import field

    values = _call(_target(**link), lambda c: c.config_get(list(keys) if keys else None))
    if as_json:
        return _echo_json(values)
    rows = field.config_rows(values)
    _table("pile configuration", [r.values() for r in rows], ["key", "value", "allowed",
                                                              "default"])


@config.command("set")
@link_options
@click.argument("assignments", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def config_set(assignments, as_json, **link):
    """Change keys: KEY=VALUE ... Checked before sending; all or nothing."""
    from pilectl import field

    result = _call(_target(**link), lambda c: field.config_set(c, assignments))
    if as_json:
        return _echo_json(result)
    _table("the pile's answer", [(k, v["before"], v["after"]) for k, v in result.items()],
           ["key", "before", "now"])


@main.command()
@link_options
@click.option("--day-wh", help="The owner's daily discharge budget: Wh over any 24 hours of "
              "the pile's run time, or 'none'.")
@click.option("--week-cycles", help="The owner's weekly budget in equivalent full cycles of "
              "battery_capacity_wh (e.g. 3.5), or 'none'.")
@click.option("--reserve", type=int, help="The owner's departure reserve, SOC %: no "
              "departure's reserve is below it.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def budget(day_wh, week_cycles, reserve, as_json, **link):
    """The owner's V2G budget: what is left, what went out over the day and the week, the
    owner's settings and the technician's bounds. With options, change the owner's
    settings (checked before sending; the link key suffices)."""
    from pilectl import field

    try:
        changes = field.budget_changes(day_wh, week_cycles, reserve)
    except field.FieldError as exc:
        raise click.ClickException(str(exc)) from None
    data = _call(_target(**link), lambda c: field.budget(c, changes))
    if as_json:
        return _echo_json(data)

    def wh(value, none="no budget"):
        return none if value is None else f"{value:,} Wh"

    week = data["budget_cycles_week"]
    cap = data["budget_max_cycles_week"]
    rows = [("left now", wh(data["budget_left_wh"]) + (
                 " (discharge closed)" if data["closes_discharge"] else "")),
            ("out over the day (24-25 h)", wh(data["day_out_wh"])),
            ("out over the week (7-8 days)", wh(data["week_out_wh"])),
            ("daily budget", f"{wh(data['budget_wh_day'])} (at most "
                             f"{wh(data['budget_max_wh_day'], 'any')})"),
            ("weekly budget", ("no budget" if week is None else
                               f"{week:g} cycles = {wh(data['budget_wh_week'])}")
             + f" (at most {'any' if cap is None else f'{cap:g} cycles'})"),
            ("departure reserve", f"{data['owner_reserve_soc']} % (at most "
                                  f"{data['reserve_max_soc']} %)")]
    _table("the owner's V2G budget", rows, ["", "value"])


def _ack_out(ack, as_json):
    from pilectl import names

    if as_json:
        return _echo_json({**ack, "reasons": names.reasons(ack["reasons"])})
    limited = ", ".join(names.reasons(ack["reasons"])) or "nothing"
    click.echo(f"accepted: target {ack['target_w']} W (limited by: {limited})")


@main.command(context_settings={"ignore_unknown_options": True})  # -3000 is a power
@link_options
@click.argument("power_w", type=int)
@click.option("--ttl", type=int, required=True, help="Seconds the setpoint holds (1..3600).")
@click.option("--departure", type=int, help="Seconds until the owner leaves.")
@click.option("--reserve", type=int, help="SOC (%) the owner needs at departure.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def setpoint(power_w, ttl, departure, reserve, as_json, **link):
    """Ask for POWER_W (W, + charge, - discharge) for --ttl seconds; shows what the pile
    will apply."""
    ack = _call(_target(**link), lambda c: c.setpoint(power_w, ttl, departure, reserve))
    _ack_out(ack, as_json)


def _command(name, doc):
    @link_options
    @click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
    def command(as_json, **link):
        _ack_out(_call(_target(**link), lambda c: c.command(name)), as_json)

    command.__doc__ = doc
    main.command(name)(command)


_command("stop", "Stop the pile (latched until `release`).")
_command("reset-fault", "Ask the converter to clear its fault.")
_command("reboot", "Reboot the pile's controller.")


@main.command()
@link_options
@click.option("--since", default=0, show_default=True, help="First event index to show.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def events(since, as_json, **link):
    """The pile's event log, decoded."""
    from pilectl import field

    entries = _call(_target(**link), lambda c: field.events(c, since))
    if as_json:
        return _echo_json(entries)
    _table("events (kept on flash across reboots)",
           [(e["index"], e["uptime_s"], e["event"], e["value"], e["detail"]) for e in entries],
           ["#", "uptime s", "event", "value", ""])


@main.command("provision-key")
@link_options
@click.option("--remove", is_flag=True, help="Remove the pile's key (signing off).")
@click.option("--technician", is_flag=True, help="The technician's key (config, keys, "
              "release, reset-fault, reboot) instead of the link key (the aggregator's).")
@click.option("--site", "site_file", type=click.Path(dir_okay=False), help="A site group's "
              "key instead (docs/site-group.md), the same on every pile of the group: read "
              "from this file, which is made with a new random key if it does not exist.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def provision_key(remove, technician, site_file, as_json, **link):
    """Give the pile a new random key over USB serial: its link key (which an aggregator
    gets too), or with --technician the technician's, or with --site FILE its site
    group's. The key is saved for this tool (mode 0600) and never shown."""
    from pilectl import field

    target = _target(**link)
    if not target.port:
        raise click.ClickException("the link key is set over the USB serial link only: "
                                   "connect with --port, not --tcp")
    if site_file and technician:
        raise click.ClickException("--site or --technician: one key at a time")
    result = _call(target, lambda c: field.provision_key(c, target, remove, technician,
                                                          site_file))
    if as_json:
        return _echo_json(result)
    which = "site key" if site_file else "technician's key" if technician else "link key"
    if remove:
        click.echo(f"pile {result['pile_id']}: {which} removed")
    else:
        click.echo(f"pile {result['pile_id']}: {which} provisioned (key id "
                   f"{result['key_id']}), saved to {result['key_file']}")


# -- deploy --------------------------------------------------------------------------------

@main.command()
@click.option("--board", "board_file", required=True, type=click.Path(dir_okay=False),
              help="The board file (boards/*.json) with this pile's wiring and id.")
@click.option("--port", required=True, envvar="PILECTL_USB",
              help="The board's USB REPL port (e.g. /dev/ttyACM0). [env PILECTL_USB]")
@click.option("--link", help="Wait for the pile's HELLO here: its serial link (a device) or "
              "HOST:PORT. Without it, the firmware's start-up line on the USB console counts.")
@click.option("--source", type=click.Path(file_okay=False), help="Another firmware tree "
              "(default: this repository's firmware/).")
@click.option("--wait", default=30.0, show_default=True, help="Seconds to wait for the pile.")
@click.option("--romfs", is_flag=True, help="Put the firmware's modules into the board's ROMFS "
              "partition (a MicroPython build with one, e.g. RPI_PICO_ROMFS): they run from "
              "flash, leaving the heap free.")
@click.option("--frozen", is_flag=True, help="The board's MicroPython has the firmware frozen "
              "in (boards/rp2/PILE_PICO): copy only main.py, the board file and the profiles.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON only.")
def deploy(board_file, port, link, source, wait, romfs, frozen, as_json):
    """Compile the firmware for the board's MicroPython, copy what changed, reset, and wait
    until the pile answers."""
    from rich.progress import Progress

    from pilectl import deploy as deployer

    console = Console(stderr=True, quiet=as_json)
    done = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("copying", total=None)

        def on_bytes(path, written):
            done[path] = written
            progress.update(task, completed=sum(done.values()), description=f"copying {path}")

        try:
            board, report = deployer.deploy(board_file, port, source, on_bytes, romfs=romfs,
                                            frozen=frozen)
        except deployer.DeployError as exc:
            raise click.ClickException(str(exc)) from None
    if link:
        board.transport.close()
        hello = _wait_for_hello(link, wait)
        report.update(firmware=hello["firmware"], answered_on=link)
    else:
        found = board.banner(wait)
        if found is None:
            raise click.ClickException(f"the firmware did not start within {wait:g} s: see what "
                                       f"it says with `mpremote connect {port} repl`")
        report.update(firmware=found[1], answered_on=f"console {port}")
    if as_json:
        return _echo_json(report)
    console = Console()
    console.print(f"copied {len(report['files_copied'])} of {report['files_total']} files "
                  f"({report['bytes_copied']} bytes), removed {len(report['files_removed'])}, "
                  f"in {report['seconds']} s")
    if romfs:
        console.print(f"ROMFS image of {report['romfs_bytes']} bytes "
                      + ("written" if report["romfs_written"] else "already on the board"))
    console.print(f"pile {report['pile_id']} runs firmware {report['firmware']} "
                  f"(answered on {report['answered_on']})")


def _wait_for_hello(link, wait):
    """The pile's HELLO on `link` (a serial device or HOST:PORT), retried until `wait` s."""
    import time

    from pilectl import field
    from pilectl.client import LinkError

    target = field.Target(tcp=link) if ":" in link and not Path(link).exists() else \
        field.Target(port=link)
    target.timeout = 2.0
    deadline = time.monotonic() + wait

    async def hello(client):
        return field.readable_hello(client.hello)

    while True:
        try:
            return field.run(target, hello)
        except field.FieldError as exc:
            raise click.ClickException(str(exc)) from None
        except LinkError as exc:
            if time.monotonic() > deadline:
                raise click.ClickException(f"no HELLO on {link} within {wait:g} s ({exc}): is "
                                           "the link in the board file the one given?") from None
            time.sleep(0.5)


# -- field updates ------------------------------------------------------------------------

@main.group(invoke_without_command=True)
@link_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
@click.pass_context
def release(ctx, as_json, **link):
    """Release a stop (refused while the E-stop input is active).

    With a command: the pile maker's release key and signed update packages
    (docs/field-update.md)."""
    if ctx.invoked_subcommand is None:
        _ack_out(_call(_target(**link), lambda c: c.command("release")), as_json)


@release.command("keygen")
@click.argument("private_key", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def release_keygen(private_key, as_json):
    """Make a release key pair: PRIVATE_KEY (PEM, keep it offline) and PRIVATE_KEY.pub; the
    public key goes into every board file as update.release_key."""
    from pilectl import release as releases

    try:
        public = releases.keygen(private_key)
    except releases.ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        return _echo_json({"private_key": private_key, "public_key": public})
    click.echo(f"private key: {private_key} (keep it off the network; piles trust it)")
    click.echo(f"public key:  {public}")
    click.echo(f'board file:  "update": {{"release_key": "{public}"}}')


@release.command("build")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False),
              help="The release key (PEM) from pilectl release keygen.")
@click.option("--arch", default="local", show_default=True,
              help="The boards' architecture, as mpy-cross -march names it (armv6m for the "
              "RP2040, xtensawin for the ESP32), 'none' for bytecode only, 'local' for this "
              "machine's unix port.")
@click.option("--version", "version", help="The firmware version to stamp (default: the "
              "source's pile/__init__.py VERSION).")
@click.option("--source", type=click.Path(file_okay=False, exists=True),
              help="A firmware tree (default: the firmware pilectl came with).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False),
              help="Where to write the package.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def release_build(key_file, arch, version, source, out, as_json):
    """Compile a firmware tree and sign it into one update package."""
    from pile.surface import ARCHES

    from pilectl import build, deploy
    from pilectl import release as releases

    march = None if arch == "none" else build.local_march() if arch == "local" else arch
    if march is not None and march not in ARCHES:
        raise click.ClickException(f"--arch {arch}: not an mpy-cross architecture; one of "
                                   f"{', '.join(a for a in ARCHES if a)}, none or local")
    try:
        private = releases.load_private(key_file)
        files, stamped = releases.firmware_files(source, version, march)
        major, minor = deploy.local_mpy_version()
        package = releases.make(files, stamped, march, major | minor << 8, private)
        package.save(out)
    except (releases.ReleaseError, deploy.DeployError) as exc:
        raise click.ClickException(str(exc)) from None
    summary = {"package": out, **package.describe()}
    if as_json:
        return _echo_json(summary)
    _table(f"update package {out}", summary.items(), ["", "value"])


@release.command("show")
@click.argument("package", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print JSON only.")
def release_show(package, as_json):
    """What a package holds: version, architecture, files."""
    from pilectl import release as releases

    try:
        found = releases.Package.load(package)
    except releases.ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    summary = found.describe()
    if as_json:
        return _echo_json({**summary, "file_list": [[p, n] for p, n, _ in found.files()]})
    _table(f"update package {package}", summary.items(), ["", "value"])


@main.command()
@click.argument("package", type=click.Path(dir_okay=False))
@link_options
@click.option("--downgrade", is_flag=True, help="Allow a version older than the running one.")
@click.option("--wait", default=600.0, show_default=True, help="Seconds to wait, in all, for "
              "the transfer, the trial boot and its confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON only.")
def update(package, downgrade, wait, as_json, **link):
    """Put a signed update package on the pile (USB serial or TCP) and wait until the new
    firmware confirms itself after its trial boot. Resumes where an earlier run stopped."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

    from pilectl import field
    from pilectl import release as releases
    from pilectl.transfer import UpdateFailed

    try:
        found = releases.Package.load(package)
    except releases.ReleaseError as exc:
        raise click.ClickException(str(exc)) from None
    console = Console(stderr=True, quiet=as_json)
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as progress:
        task = progress.add_task(f"firmware {found.version}", total=found.size)

        async def action(client):
            return await field.update(client, found, downgrade, lambda held, size:
                                      progress.update(task, completed=held), wait)

        try:
            result = _call(_target(**link), action)
        except UpdateFailed as exc:
            raise click.ClickException(f"{exc}; nothing changed on the pile"
                                       if not exc.rolled_back else str(exc)) from None
    if as_json:
        return _echo_json(result)
    Console().print(f"pile {result['pile_id']} runs firmware {result['version']}, confirmed "
                    f"after its trial boot ({result['chunks_sent']} chunks sent, "
                    f"{result['seconds']} s)")
