"""The fleet file (TOML): the piles, the target's source and the dispatch settings.

    [dispatch]                 # all optional
    period_s = 1.0             # a split and its setpoints every period
    ttl_s = 5                  # each setpoint's ttl: a dead aggregator's piles fall back
    deadband_w = 100           # a setpoint is re-sent early only when it moved this much
    wear_fair = false          # discharge evens out the energy each pile gave
    wear_window_s = 3600
    telemetry_period_s = 1     # the piles' own: silent for 3 of them excludes a pile

    [target]
    power_w = 0                # until the schedule or the API says otherwise
    schedule = "evening.toml"  # optional: [[step]] at_s = 0, power_w = -150000 ...
                               # from `start = 2026-12-03T17:00:00Z` in it, if given (so
                               # a restarted aggregator goes on where it was), else from
                               # the aggregator's start
    http = "127.0.0.1:8080"    # optional: the HTTP API and /metrics
    http_token_file = "keys/api.token"  # optional: writes to the API need this token

    [broker]                   # for piles with mqtt = true (docs/aggregator.md)
    address = "127.0.0.1:1883"
    user = "agg-1"             # the aggregator's own broker user
    password_file = "keys/agg-1.password"
    topic_prefix = "v2g"       # as the piles' board files say
    keepalive_s = 2            # other workers notice this one gone in 1.5 of them

    [rollout]                  # optional: field updates (docs/aggregator.md, Rollouts)
    technician_keys = "keys"   # a folder of PILE_ID.technician.key files
    canary_percent = 5         # the first wave; then waves of wave_percent
    wave_percent = 25
    parallel = 50              # piles receiving a package at once
    confirm_s = 600            # a pile not confirmed this long after its start halts it

    [homeassistant]            # optional: Home Assistant MQTT discovery for the piles on
    enabled = false            # the broker (pilectl/aggregator/homeassistant.py); off unless true
    discovery_prefix = "homeassistant"  # as Home Assistant's MQTT integration says
    state_period_s = 10        # each pile's values republished as JSON this often

    [[pile]]
    id = "pile-001"
    tcp = "192.168.1.50:7700"  # or serial = "/dev/ttyUSB0", or mqtt = true
    key_file = "keys/pile-001.key"
    technician_key_file = "keys/pile-001.technician.key"  # optional: for rollouts only
    priority = 0               # tier: lower tiers are filled first
    group = "depot-a"
    owner_reserve = false      # true: Home Assistant may set this pile's owner_reserve_soc
    owner_budget = false       # true: ... and its budget_wh_day, budget_cycles_week_pct
                               # (the pile bounds them: docs/aggregator.md)

Relative paths are relative to the fleet file. FleetError says what is wrong and where.
"""

import tomllib
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from pilectl import keys
from pilectl.aggregator.broker import NOT_IN_PILE_ID


class FleetError(ValueError):
    pass


@dataclass
class PileEntry:
    pile_id: str
    key: bytes
    tcp: tuple | None = None  # (host, port)
    serial: str | None = None
    mqtt: bool = False  # reached through the fleet's broker
    priority: int = 0
    group: str = ""
    technician_key_file: Path | None = None  # read by a rollout, for update messages only
    owner_reserve: bool = False  # Home Assistant may set its owner_reserve_soc
    owner_budget: bool = False  # Home Assistant may set its owner's V2G budgets


@dataclass
class Dispatch:
    period_s: float = 1.0
    ttl_s: int = 5
    deadband_w: int = 100
    wear_fair: bool = False
    wear_window_s: float = 3600.0
    telemetry_period_s: float = 1.0


@dataclass
class Broker:
    host: str
    port: int
    user: str
    password: str
    topic_prefix: str = "v2g"
    keepalive_s: int = 2


@dataclass
class Rollouts:
    """The fleet file's [rollout]: where the technician's keys are, and the defaults of a
    rollout's waves (pilectl/aggregator/rollout.py, Settings)."""

    technician_keys: Path | None = None
    canary_percent: float = 5.0
    wave_percent: float = 25.0
    parallel: int = 50
    confirm_s: float = 600.0


@dataclass
class HomeAssistant:
    """The fleet file's [homeassistant]: MQTT discovery for the piles on the broker."""

    enabled: bool = False
    discovery_prefix: str = "homeassistant"
    state_period_s: float = 10.0


@dataclass
class Fleet:
    piles: list
    dispatch: Dispatch = field(default_factory=Dispatch)
    power_w: int = 0
    schedule: list = field(default_factory=list)  # [(at_s, power_w)], sorted
    schedule_start: float | None = None  # epoch s the steps count from; None: at start
    http: tuple | None = None  # (host, port)
    broker: Broker | None = None
    rollouts: Rollouts = field(default_factory=Rollouts)
    http_token: str | None = None  # writes to the API need it, when set
    homeassistant: HomeAssistant = field(default_factory=HomeAssistant)


def load(path):
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise FleetError(f"cannot read the fleet file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path}: not TOML: {exc}") from None
    return parse(data, path.parent, str(path))


def parse(data, base, where="the fleet file"):
    unknown = set(data) - {"dispatch", "target", "pile", "broker", "rollout", "homeassistant"}
    if unknown:
        raise FleetError(f"{where}: unknown section {sorted(unknown)[0]!r}; "
                         "known: dispatch, target, broker, rollout, homeassistant, pile")
    dispatch = _dispatch(data.get("dispatch", {}), where)
    target = data.get("target", {})
    _known(target, {"power_w", "schedule", "http", "http_token_file"}, f"{where} [target]")
    piles = [_pile(entry, base, f"{where} [[pile]] #{n + 1}")
             for n, entry in enumerate(data.get("pile", []))]
    if not piles:
        raise FleetError(f"{where}: no [[pile]] entries")
    seen = set()
    for pile in piles:
        if pile.pile_id in seen:
            raise FleetError(f"{where}: pile {pile.pile_id!r} is listed twice")
        seen.add(pile.pile_id)
    broker = _broker(data["broker"], base, f"{where} [broker]") if "broker" in data else None
    if broker is None and any(pile.mqtt for pile in piles):
        raise FleetError(f"{where}: piles with mqtt = true need a [broker] section")
    home = _homeassistant(data.get("homeassistant", {}), f"{where} [homeassistant]")
    if home.enabled and broker is None:
        raise FleetError(f"{where} [homeassistant]: Home Assistant reads the piles' values "
                         "on the broker: add a [broker] section, or enabled = false")
    if home.enabled:
        from pilectl.aggregator.homeassistant import node_id  # which imports the service

        nodes = {}
        for pile in piles:
            other = nodes.setdefault(node_id(pile.pile_id), pile.pile_id)
            if other != pile.pile_id:
                raise FleetError(f"{where}: piles {other!r} and {pile.pile_id!r} would be one "
                                 "device in Home Assistant, whose ids take letters, digits, "
                                 "_ and - only: rename one")
    for flag in _OWNER_FLAGS:
        if any(getattr(pile, flag) and not pile.mqtt for pile in piles):
            raise FleetError(f"{where}: {flag} = true is for piles on the broker "
                             "(mqtt = true), where Home Assistant sees them")
    schedule, start = [], None
    if "schedule" in target:
        start, schedule = load_schedule(Path(base) / target["schedule"])
    return Fleet(piles, dispatch, _int(target.get("power_w", 0), f"{where} [target] power_w"),
                 schedule, start, _address(target["http"], f"{where} [target] http")
                 if "http" in target else None, broker,
                 _rollouts(data.get("rollout", {}), base, f"{where} [rollout]"),
                 _token(target, base, f"{where} [target]"), home)


def _homeassistant(section, where):
    _known(section, set(HomeAssistant.__dataclass_fields__), where)
    found = HomeAssistant(**section)
    if not isinstance(found.enabled, bool):
        raise FleetError(f"{where}: enabled must be true or false")
    prefix = found.discovery_prefix
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#"):
        raise FleetError(f"{where}: discovery_prefix must be a topic without wildcards "
                         "(Home Assistant's default: homeassistant)")
    period = found.state_period_s
    if not isinstance(period, int | float) or isinstance(period, bool) or not 1 <= period <= 3600:
        raise FleetError(f"{where}: state_period_s must be seconds, 1..3600")
    return found


def _token(target, base, where):
    """The API's token for writes, from http_token_file; None when not set."""
    if "http_token_file" not in target:
        return None
    path = Path(base) / str(target["http_token_file"])
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise FleetError(f"{where}: cannot read http_token_file {path}: {exc.strerror}") from None
    if len(token) < 16:
        raise FleetError(f"{where}: the token in {path} is shorter than 16 characters: "
                         "write a long random one (e.g. openssl rand -hex 16)")
    return token


def _rollouts(section, base, where):
    _known(section, set(Rollouts.__dataclass_fields__), where)
    found = Rollouts(**section)
    if found.technician_keys is not None:
        found.technician_keys = Path(base) / str(found.technician_keys)
    for name in ("canary_percent", "wave_percent", "confirm_s"):
        value = getattr(found, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise FleetError(f"{where}: {name} must be a number > 0")
    if found.canary_percent > 100 or found.wave_percent > 100:
        raise FleetError(f"{where}: canary_percent and wave_percent are percentages: up to 100")
    if not isinstance(found.parallel, int) or isinstance(found.parallel, bool) or \
            found.parallel < 1:
        raise FleetError(f"{where}: parallel must be a whole number of piles >= 1")
    return found


def _broker(section, base, where):
    _known(section, {"address", "user", "password_file", "topic_prefix", "keepalive_s"}, where)
    for name in ("address", "user", "password_file"):
        if not isinstance(section.get(name), str):
            raise FleetError(f"{where}: {name} (text) is required")
    path = Path(base) / section["password_file"]
    try:
        password = path.read_text().strip()
    except OSError as exc:
        raise FleetError(f"{where}: cannot read password_file {path}: {exc.strerror}") from None
    prefix = section.get("topic_prefix", "v2g")
    if not isinstance(prefix, str) or not prefix or any(c in prefix for c in "+#"):
        raise FleetError(f"{where}: topic_prefix must be a topic without wildcards")
    keepalive = section.get("keepalive_s", 2)
    if not isinstance(keepalive, int) or isinstance(keepalive, bool) or not 1 <= keepalive <= 60:
        raise FleetError(f"{where}: keepalive_s must be whole seconds, 1..60")
    return Broker(*_address(section["address"], f"{where} address"), section["user"],
                  password, prefix, keepalive)


def load_schedule(path):
    """(start epoch s or None, [(at_s, power_w)]): `start` an offset date-time, each
    [[step]] at_s seconds from it and power_w the fleet target (+ charge, - discharge)."""
    try:
        data = tomllib.loads(Path(path).read_text())
    except OSError as exc:
        raise FleetError(f"cannot read the schedule {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise FleetError(f"{path}: not TOML: {exc}") from None
    start = data.get("start")
    if start is not None:
        if not isinstance(start, datetime) or start.tzinfo is None:
            raise FleetError(f"{path}: start must be a date-time with its offset, e.g. "
                             "2026-12-03T17:00:00Z")
        start = start.timestamp()
    steps = []
    for n, step in enumerate(data.get("step", [])):
        _known(step, {"at_s", "power_w"}, f"{path} [[step]] #{n + 1}")
        at = step.get("at_s")
        if not isinstance(at, int | float) or at < 0:
            raise FleetError(f"{path} [[step]] #{n + 1}: at_s must be seconds >= 0")
        steps.append((float(at), _int(step.get("power_w"), f"{path} [[step]] #{n + 1} power_w")))
    if not steps:
        raise FleetError(f"{path}: no [[step]] entries")
    return start, sorted(steps)


def _dispatch(section, where):
    _known(section, set(Dispatch.__dataclass_fields__), f"{where} [dispatch]")
    dispatch = Dispatch(**section)
    for name in ("period_s", "ttl_s", "wear_window_s", "telemetry_period_s"):
        value = getattr(dispatch, name)
        if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
            raise FleetError(f"{where} [dispatch] {name} must be a number > 0")
    if not isinstance(dispatch.ttl_s, int) or not 1 <= dispatch.ttl_s <= 3600:
        raise FleetError(f"{where} [dispatch] ttl_s must be whole seconds, 1..3600")
    if dispatch.ttl_s < 2 * dispatch.period_s:
        raise FleetError(f"{where} [dispatch] ttl_s must cover two periods at least, so a "
                         "setpoint is renewed before it runs out")
    if not isinstance(dispatch.deadband_w, int) or dispatch.deadband_w < 0:
        raise FleetError(f"{where} [dispatch] deadband_w must be whole watts >= 0")
    if not isinstance(dispatch.wear_fair, bool):
        raise FleetError(f"{where} [dispatch] wear_fair must be true or false")
    return dispatch


_OWNER_FLAGS = ("owner_reserve", "owner_budget")  # what Home Assistant may set of a pile


def _pile(entry, base, where):
    _known(entry, {"id", "tcp", "serial", "mqtt", "key_file", "technician_key_file",
                   "priority", "group", *_OWNER_FLAGS}, where)
    pile_id = entry.get("id")
    if not isinstance(pile_id, str) or not pile_id:
        raise FleetError(f"{where}: id (text) is required")
    mqtt = entry.get("mqtt", False)
    if not isinstance(mqtt, bool):
        raise FleetError(f"{where} ({pile_id}): mqtt must be true or false")
    if ("tcp" in entry) + ("serial" in entry) + mqtt != 1:
        raise FleetError(f"{where} ({pile_id}): give one of tcp = \"HOST:PORT\", "
                         "serial = \"DEVICE\" or mqtt = true")
    if mqtt and any(c in pile_id for c in NOT_IN_PILE_ID):
        raise FleetError(f"{where} ({pile_id}): on MQTT a pile id is one topic level: "
                         "no / + #")
    if "key_file" not in entry:
        raise FleetError(f"{where} ({pile_id}): key_file is required (the pile's link key)")
    try:
        key = keys.read(Path(base) / entry["key_file"])
    except keys.KeyFileError as exc:
        raise FleetError(f"{where} ({pile_id}): {exc}") from None
    priority = entry.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool) or priority < 0:
        raise FleetError(f"{where} ({pile_id}): priority must be a whole number >= 0")
    technician = entry.get("technician_key_file")
    owner = [entry.get(flag, False) for flag in _OWNER_FLAGS]
    for flag, value in zip(_OWNER_FLAGS, owner, strict=True):
        if not isinstance(value, bool):
            raise FleetError(f"{where} ({pile_id}): {flag} must be true or false")
    return PileEntry(pile_id, key, _address(entry["tcp"], f"{where} ({pile_id}) tcp")
                     if "tcp" in entry else None, entry.get("serial"), mqtt, priority,
                     str(entry.get("group", "")),
                     None if technician is None else Path(base) / str(technician),
                     *owner)


def technician_key(entry, folder=None):
    """The pile's technician's key for update messages, from its technician_key_file or
    else FOLDER/PILE_ID.technician.key; when there is none (or it is no good), why, as
    text. Never the link key: a file holding it is refused."""
    path = entry.technician_key_file
    if path is None and folder is not None:
        path = Path(folder) / keys.path_for(entry.pile_id, technician=True).name
    if path is None:
        return "no technician key (give technician_key_file, or [rollout] technician_keys)"
    if not Path(path).exists():
        return f"no technician key ({path} does not exist)"
    try:
        key = keys.read(path)
    except keys.KeyFileError as exc:
        return f"no technician key ({exc})"
    if key == entry.key:
        return (f"no technician key ({path} holds the pile's link key, which never installs "
                "firmware)")
    return key


def _address(text, where):
    host, _, port = str(text).rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise FleetError(f"{where}: {text!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _int(value, where):
    if not isinstance(value, int) or isinstance(value, bool):
        raise FleetError(f"{where} must be whole watts")
    return value


def _known(section, names, where):
    if not isinstance(section, dict):
        raise FleetError(f"{where} must be a table")
    for name in section:
        if name not in names:
            raise FleetError(f"{where}: unknown key {name!r}; known: {', '.join(sorted(names))}")
