"""`pile-ocpp`: each pile of a fleet file as an OCPP 2.1 charging station of a CSMS.

    pile-ocpp FLEET.toml --csms ws://HOST:PORT/PATH [--meter-interval S] [--json]

Each pile connects to `{csms}/{pile id}` (OCPP-J: the station id ends the URL) and is
driven by the CSMS's charging profiles; a pile is steered by the CSMS or by
pile-aggregator, not both. A mistake in the fleet file or the URL is one message and
exit 2; a pile that cannot be reached, exit 1.
"""

import asyncio
import json
import sys

import click

from pilectl.aggregator.fleet import FleetError, load
from pilectl.client import Client, LinkError
from pilectl.ocpp_bridge.station import Station

STATUS_S = 2.0


@click.command()
@click.argument("fleet_file", type=click.Path(dir_okay=False))
@click.option("--csms", required=True, help="The CSMS's WebSocket URL, without the station id.")
@click.option("--meter-interval", default=10.0, show_default=True,
              help="Seconds between TransactionEvent meter values.")
@click.option("--json", "as_json", is_flag=True, help="One JSON line of status every 2 s.")
@click.option("--duration", type=float, help="Stop after this many seconds.")
def main(fleet_file, csms, meter_interval, as_json, duration):
    """Bridge the piles of FLEET_FILE to an OCPP 2.1 CSMS until Ctrl-C."""
    if not csms.startswith(("ws://", "wss://")):
        click.echo(f"pile-ocpp: --csms {csms!r} is not a ws:// or wss:// URL", err=True)
        sys.exit(2)
    try:
        fleet = load(fleet_file)
    except FleetError as exc:
        click.echo(f"pile-ocpp: {exc}", err=True)
        sys.exit(2)
    try:
        asyncio.run(_run(fleet, csms.rstrip("/"), meter_interval, as_json, duration))
    except KeyboardInterrupt:
        pass  # the piles fall back when their short ttl runs out
    except LinkError as exc:
        click.echo(f"pile-ocpp: {exc}", err=True)
        sys.exit(1)


async def _connect(entry):
    if entry.mqtt:
        raise LinkError(f"{entry.pile_id}: the OCPP bridge reaches a pile by tcp or serial; "
                        "give it a fleet file without mqtt = true piles")
    if entry.tcp is not None:
        return await Client.tcp(*entry.tcp, key=entry.key)
    return await Client.serial(entry.serial, key=entry.key)


async def _run(fleet, csms, meter_interval, as_json, duration):
    clients = [await _connect(entry) for entry in fleet.piles]
    stations = [Station(entry.pile_id, client, f"{csms}/{entry.pile_id}", meter_interval)
                for entry, client in zip(fleet.piles, clients, strict=True)]
    runs = [asyncio.create_task(station.run()) for station in stations]
    try:
        await asyncio.wait_for(_show(stations, runs, as_json), duration)
    except TimeoutError:
        pass
    finally:
        for task in runs:
            task.cancel()
        await asyncio.gather(*runs, return_exceptions=True)
        for client in clients:
            await client.close()


async def _show(stations, runs, as_json):
    while True:
        for task in runs:
            if task.done():
                task.result()  # a pile link that failed ends the bridge, with its reason
        rows = [status(station) for station in stations]
        if as_json:
            click.echo(json.dumps({"stations": rows}))
        else:
            for row in rows:
                click.echo("{station:<16} {csms:<8} {mode:<16} {applied_w:>7} W  tx {transaction}"
                           .format(**{k: "-" if v is None else v for k, v in row.items()}))
        await asyncio.sleep(STATUS_S)


def status(station):
    tel = station.tel or {}
    sent = station.sent
    return {"station": station.station_id,
            "csms": "online" if station.session is not None else "offline",
            "mode": sent[0].mode if sent else None, "applied_w": tel.get("applied_w"),
            "transaction": station.transaction, "setpoints_sent": station.setpoints_sent}
