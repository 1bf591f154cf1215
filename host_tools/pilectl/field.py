"""The technician's commands over the pile link, and how their answers read.

Each command connects (serial link or TCP), finds the pile's key by the pile id
in its HELLO (pilectl.keys), does one thing and returns plain data; cli.py prints
it as a table or as JSON. Config changes are checked here against the firmware's
own schema before anything is sent.
"""

import asyncio
import difflib
import time
from dataclasses import dataclass
from pathlib import Path

from pile.surface import CHOICES, INTEGERS, REASON_V2G_BUDGET, Config, ConfigError, allowed

from pilectl import cose, keys, names, transfer, wire
from pilectl.client import Client, LinkError, PileError

_PAGE_GAP_S = 0.06  # between EVENTS_GET pages: under the pile's 20 requests a second
_REQUEST_GAP_S = 0.052  # between update requests: the same budget, back to back
_POLL_S = 0.5  # between asking how a signature check or a trial boot goes
_MAX_DROPS = 10  # link drops an update rides out before it gives up (run it again to resume)


class FieldError(Exception):
    """A command that cannot go ahead; the text says what to do instead."""


@dataclass
class Target:
    """Where the pile is: `port` (the USB serial link) or `tcp` ("host" or "host:port")."""

    port: str | None = None
    tcp: str | None = None
    baud: int = 115200
    key_file: str | None = None
    timeout: float = 5.0
    technician_key_file: str | None = None


_DEFAULT_TCP_PORT = 7700


async def connect(target):
    if not target.port and not target.tcp:
        raise FieldError("say where the pile is: --port /dev/ttyUSB0 (its USB serial link) or "
                         "--tcp HOST[:PORT] (Wi-Fi); or set PILECTL_PORT / PILECTL_TCP")
    try:
        key = keys.read(target.key_file) if target.key_file else None
        technician = keys.read(target.technician_key_file) if target.technician_key_file \
            else None
    except keys.KeyFileError as exc:
        raise FieldError(str(exc)) from None
    keyring = None if key else keys.lookup
    if target.port:
        return await Client.serial(target.port, key, target.baud, target.timeout, keyring,
                                   technician)
    host, port = parse_tcp(target.tcp)
    return await Client.tcp(host, port, key, target.timeout, keyring, technician)


def parse_tcp(text):
    """(host, port) from "HOST", "HOST:PORT", "[IPv6]" or "[IPv6]:PORT"; FieldError else."""
    host, port = text, ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or rest and not rest.startswith(":"):
            raise FieldError(f"--tcp {text!r}: write an IPv6 address as [ADDRESS] or "
                             "[ADDRESS]:PORT")
        port = rest[1:]
    elif text.count(":") == 1:
        host, _, port = text.partition(":")
    if not host:
        raise FieldError(f"--tcp {text!r}: no host; write HOST or HOST:PORT")
    if not port:
        return host, _DEFAULT_TCP_PORT
    if not port.isdigit() or not 1 <= int(port) <= 65535:
        raise FieldError(f"--tcp {text!r}: the port must be a number from 1 to 65535")
    return host, int(port)


def readable_hello(hello):
    return {name: hello.get(key) for key, name in wire.HELLO_FIELDS.items()
            if key != wire.HELLO_NONCE}


def readable_telemetry(t):
    """Telemetry in the units a technician reads: %, degC, W, names."""

    def scaled(value, divisor):
        return None if value is None else value / divisor

    return {
        "state": names.STATES.get(t["state"], t["state"]),
        "power_w": t["power_w"],
        "applied_w": t["applied_w"],
        "soc_pct": scaled(t["soc_permille"], 10),
        "battery_temp_c": scaled(t["battery_temp_dc"], 10),
        "converter_temp_c": scaled(t["converter_temp_dc"], 10),
        "max_charge_w": t["max_charge_w"],
        "max_discharge_w": t["max_discharge_w"],
        "reasons": names.reasons(t["reasons"] or 0),
        "ttl_left_s": t["ttl_left_s"],
        "site_w": t["site_w"],
        "fault_code": t["fault_code"],
        "uptime_s": t["uptime_s"],
        "energy_in_wh": t["energy_in_wh"],
        "energy_out_wh": t["energy_out_wh"],
        "budget_left_wh": t["budget_left_wh"],  # None: no V2G budget (or an older firmware)
        "day_out_wh": t["day_out_wh"],
        "week_out_wh": t["week_out_wh"],
    }


async def status(client):
    """Who the pile is, its latest telemetry, its slots (None from a firmware without
    field updates) and its diagnostic counters (None from a firmware too old)."""
    telemetry = await client.telemetry()
    diagnostics = await _unless_unknown(client.diagnostics())
    update = await _unless_unknown(client.update_status())
    slots = None
    if update is not None:
        update = transfer.named(update)
        rollback = update["rollback"]
        slots = {"running": update["running"], "slot": update["slot"] or "root",
                 "other_slot": update["previous"], "update": update["state"],
                 "last_rollback": f"{rollback[0]}: {rollback[1]}" if rollback else None}
    return {"link": {"signed": client.key is not None,
                     "key_id": cose.key_id(client.key).hex() if client.key else None},
            **readable_hello(client.hello), **readable_telemetry(telemetry),
            "firmware_slots": slots, "diagnostics": diagnostics}


async def _unless_unknown(request):
    """The reply to `request`, None when the firmware does not know the message type."""
    try:
        return await request
    except PileError as exc:
        if exc.code != wire.ERR_UNKNOWN_TYPE:
            raise
        return None


async def update(client, package, downgrade=False, on_progress=lambda held, size: None,
                 confirm_s=600):
    """Put `package` (pilectl.release.Package) on the pile and wait until its trial boot
    confirms it: offer, chunks from wherever the pile stands, commit, reconnect after the
    reboot. Returns what happened; UpdateFailed when the pile refuses or rolls back."""
    current = [client]  # the client in use: the reboot into the trial replaces it
    try:
        return await _update(current, package, downgrade, on_progress, confirm_s)
    finally:
        if current[0] is not client:  # `run` closes the first one
            await current[0].close()


async def _update(current, package, downgrade, on_progress, confirm_s):
    plan = transfer.Transfer(package, downgrade)
    started = time.monotonic()
    deadline = started + confirm_s
    sent = taken = drops = reconnects = 0
    status = await current[0].update_status()
    while True:
        step = plan.next(status)
        on_progress(plan.held, package.size)
        if step == transfer.DONE:
            return {"pile_id": current[0].hello.get(wire.HELLO_PILE_ID),
                    "version": package.version, "chunks_sent": sent, "chunks_taken": taken,
                    "reconnects": reconnects, "seconds": round(time.monotonic() - started, 2)}
        if time.monotonic() > deadline:
            raise FieldError(f"the update did not finish within {confirm_s:g} s; the pile "
                             f"says: {transfer.named(status)}; run pilectl update again "
                             "to resume")
        try:
            if step == transfer.REBOOT:  # the answer comes from the trial's first boot
                current[0] = await current[0].reconnect(deadline - time.monotonic(),
                                                        new_boot=True)
                reconnects += 1
                status = await current[0].update_status()
                continue
            held = plan.held
            status = await _step(current[0], step)
            if step != transfer.WAIT and step.mtype == wire.UPDATE_CHUNK:
                sent += 1
                taken += (status.get(3) or 0) > held  # 3: held (wire.UPDATE_FIELDS)
        except LinkError:
            # the link dropped or the pile rebooted: the pile keeps what it holds, so go
            # on from what it says once it answers again
            drops += 1
            if drops > _MAX_DROPS:
                raise
            current[0] = await current[0].reconnect(deadline - time.monotonic())
            reconnects += 1
            status = await current[0].update_status()


async def _step(client, step):
    """Carry out one step of a Transfer: the pile's next status."""
    if step == transfer.WAIT:
        await asyncio.sleep(_POLL_S)
        return await client.update_status()
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, _REQUEST_GAP_S - (loop.time() - client.sent_at)))
    return await client.request(step.mtype, step.fields, wire.UPDATE_STATUS)


async def monitor(client, on_sample, count=None):
    """Call `on_sample(readable telemetry)` for each TELEMETRY, `count` times or forever."""
    seen = 0
    while count is None or seen < count:
        on_sample(readable_telemetry(await client.telemetry()))
        seen += 1


def parse_changes(assignments):
    """KEY=VALUE texts to a dict of typed values, each checked on its own."""
    changes = {}
    for text in assignments:
        key, sep, raw = text.partition("=")
        key = key.strip()
        if not sep:
            raise FieldError(f"{text!r}: write KEY=VALUE, e.g. min_soc=25")
        if key not in INTEGERS and key not in CHOICES:
            close = difflib.get_close_matches(key, [*INTEGERS, *CHOICES], n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise FieldError(f"unknown config key {key!r}{hint}; `pilectl config get` lists them")
        if key in INTEGERS:
            try:
                value = int(raw)
            except ValueError:
                raise FieldError(f"{key}: {raw!r} is not an integer; allowed {allowed(key)}")\
                    from None
        else:
            value = raw.strip()
        changes[key] = value
    return changes


def check_changes(current, changes):
    """Raise FieldError unless the pile would accept `changes` on top of `current`."""
    try:
        Config(current).update(changes)
    except ConfigError as exc:
        raise FieldError(f"not sent, nothing changed: {exc}") from None


async def config_set(client, assignments):
    changes = parse_changes(assignments)
    before = await client.config_get()
    check_changes(before, changes)
    after = await client.config_set(changes)
    return {key: {"before": before.get(key), "after": after.get(key)} for key in changes}


_NONE = "none"  # no V2G budget: the top of the key's range


def budget_changes(day_wh=None, week_cycles=None, reserve=None):
    """The config changes for the owner's settings as given on the command line: Wh a
    day, equivalent full cycles a week (3.5), each or "none"; the reserve in SOC %."""
    changes = {}
    for key, text, scale in (("budget_wh_day", day_wh, 1),
                             ("budget_cycles_week_pct", week_cycles, 100)):
        if text is None:
            continue
        if text.strip().lower() == _NONE:
            changes[key] = INTEGERS[key][2]
            continue
        try:
            value = float(text) * scale
        except ValueError:
            raise FieldError(f"{text!r}: give a number or {_NONE}") from None
        if value != int(value):
            raise FieldError(f"{text!r}: at most {'whole Wh' if scale == 1 else 'hundredths'}")
        changes[key] = int(value)
    if reserve is not None:
        changes["owner_reserve_soc"] = reserve
    return changes


async def budget(client, changes=None):
    """The owner's V2G budget on the pile: its settings and the technician's bounds on
    them (None: no budget), what is left and what went out; `changes` (budget_changes)
    are made first, checked before sending. The link key is enough to make them: the
    owner's keys are the link key's to set."""
    current = await client.config_get()
    if "budget_wh_day" not in current:
        raise FieldError("this pile's firmware has no V2G budget: update it (pilectl update)")
    if changes:
        check_changes(current, changes)
        current = await client.config_set(changes)
    tel = await client.telemetry()

    def setting(key, scale=1):
        value = current[key]
        return None if value == INTEGERS[key][2] else value / scale if scale > 1 else value

    capacity = current["battery_capacity_wh"]
    week_pct = setting("budget_cycles_week_pct")
    return {"budget_left_wh": tel["budget_left_wh"], "day_out_wh": tel["day_out_wh"],
            "week_out_wh": tel["week_out_wh"],
            "closes_discharge": bool((tel["reasons"] or 0) & REASON_V2G_BUDGET),
            "budget_wh_day": setting("budget_wh_day"),
            "budget_cycles_week": setting("budget_cycles_week_pct", 100),
            "budget_wh_week": None if week_pct is None else capacity // 100 * week_pct,
            "owner_reserve_soc": current["owner_reserve_soc"],
            "budget_max_wh_day": setting("budget_max_wh_day"),
            "budget_max_cycles_week": setting("budget_max_cycles_week_pct", 100),
            "reserve_max_soc": current["max_soc"], "battery_capacity_wh": capacity}


def config_rows(values):
    """(key, value, allowed, default) for every key the pile reported."""
    rows = []
    for key, value in values.items():
        default = INTEGERS[key][0] if key in INTEGERS else CHOICES.get(key, (None,))[0]
        rows.append({"key": key, "value": value, "allowed": allowed(key)
                     if key in INTEGERS or key in CHOICES else "", "default": default})
    return rows


async def event_entries(client, since=0):
    """Every event entry [index, uptime, code, value] from index `since` on; pages are
    asked for until one comes back empty, whatever page size the firmware uses, paced
    under the pile's request budget (20 a second a connection: a faster reader is shed,
    not answered)."""
    entries = []
    while page := await client.events(since):
        entries += page
        since = page[-1][0] + 1
        await asyncio.sleep(_PAGE_GAP_S)
    return entries


async def events(client, since=0):
    """Every event from index `since` on, decoded."""
    return [{"index": index, "uptime_s": uptime, "event": names.EVENTS.get(code, f"code {code}"),
             "value": value, "detail": names.event_detail(code, value)}
            for index, uptime, code, value in await event_entries(client, since)]


async def provision_key(client, target, remove=False, technician=False, site_file=None):
    """A new random key to the pile over the serial link, saved before it is sent: the
    link key (the aggregator's too), or with `technician` the technician's; or with
    `site_file` the site group's key in that file (made with a new key the first time)."""
    pile_id = client.hello.get(wire.HELLO_PILE_ID)
    if site_file is not None:
        return await _provision_site_key(client, pile_id, Path(site_file), remove)
    given = target.technician_key_file if technician else target.key_file
    final = given or keys.path_for(pile_id, technician)
    if remove:
        await client.provision_key(None, technician)
        return {"pile_id": pile_id, "key_id": None, "key_file": None}
    key = keys.new_key()
    pending = keys.save(key, str(final) + ".pending")
    try:
        await client.provision_key(key, technician)
    except PileError:  # refused: the pile keeps its old key
        pending.unlink()
        raise
    except LinkError as exc:  # no answer: the pile may have taken the key, so it stays here
        raise FieldError(f"{exc}. The pile may have the new key: it is kept in {pending}; if "
                         f"commands now report a key mismatch or are refused, give "
                         f"--{'technician-' if technician else ''}key-file {pending}") from None
    path = keys.promote(pending, final)
    return {"pile_id": pile_id, "key_id": cose.key_id(key).hex(), "key_file": str(path)}


async def _provision_site_key(client, pile_id, path, remove):
    """The group's one site key: every pile of a site group holds the same."""
    if remove:
        await client.provision_key(None, site=True)
        return {"pile_id": pile_id, "key_id": None, "key_file": None}
    try:
        key = keys.read(path) if path.exists() else None
    except keys.KeyFileError as exc:
        raise FieldError(str(exc)) from None
    if key is None:
        key = keys.new_key()
        keys.save(key, path)
    await client.provision_key(key, site=True)
    return {"pile_id": pile_id, "key_id": cose.key_id(key).hex(), "key_file": str(path)}


def run(target, action):
    """Connect, run `action(client)`, close; returns what the action returned."""

    async def main():
        client = await connect(target)
        try:
            return await action(client)
        finally:
            await client.close()

    return asyncio.run(main())
