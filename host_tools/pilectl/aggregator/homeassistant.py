"""Home Assistant MQTT discovery for the piles on the broker (docs/aggregator.md).

With `[homeassistant] enabled = true` in the fleet file, each worker publishes, for every
pile it serves on the broker, retained discovery configs in the shape Home Assistant's
MQTT integration documents (`<discovery>/<component>/<node_id>/<object_id>/config`):
one device a pile, sensors for its SOC, power, setpoint, state, battery temperature,
the reasons that limit it and its owner's V2G budget left, and numbers for what the
owner sets where the fleet file lets Home Assistant set it for the pile: the departure
reserve (`owner_reserve = true`), the daily and weekly V2G budgets (`owner_budget =
true`).

**Values.** The piles' up topics carry CBOR under a COSE MAC, which Home Assistant cannot
read; the aggregator, which verifies them, republishes each pile's latest values as one
JSON object, retained, on `<prefix>/<pile>/ha/state` every `state_period_s`, and at
once when the pile's config answer came. Availability is the pile's own retained
`<prefix>/<pile>/status` (`online`, or its last will `offline`); the sensors expire
after 3 state periods, so a stopped aggregator's last values do not stay on show.

**The owner's numbers.** Home Assistant publishes a number to
`<prefix>/<pile>/ha/<object id>/set`. The aggregator sends the pile a CONFIG_SET of that
one owner's key (`NUMBERS`) signed with the link key, the owner's path that `pilectl
budget` takes (the link key may set the owner's keys, nothing else), then asks the pile
for the value back. The pile checks it against the technician's bound (`max_soc`,
`budget_max_wh_day`, `budget_max_cycles_week_pct`) and the pile maker's limits and
refuses what lies outside, changing nothing; either way Home Assistant is shown what
the pile then holds. The aggregator checks only that the command is a whole number: the
bounds are the pile's to enforce.

**Leaving the fleet.** Which topics were published for a pile is kept in a retained
record, `<prefix>-agg/ha/<pile>`. Each worker reads those records when it connects: a
pile the fleet file no longer lists gets an empty retained message on each of its
topics (Home Assistant then removes its entities) and its record cleared; a pile that
no longer lets Home Assistant set a number loses it the same way.
"""

import json
import re
import time

from pile.surface import OFFLINE, ONLINE

from pilectl import names, wire
from pilectl.aggregator.service import budget_left

# What the owner may set from Home Assistant, a number entity each: object id, name, the
# pile's config key, the technician's bound on it (the number's max; the top of a budget's
# range is "no budget"), unit, step, and the fleet file's flag that lets Home Assistant.
NUMBERS = (
    ("owner_reserve", "Departure reserve (owner)", "owner_reserve_soc", "max_soc", "%", 1,
     "owner_reserve"),
    ("budget_wh_day", "Daily V2G budget (owner)", "budget_wh_day", "budget_max_wh_day", "Wh",
     100, "owner_budget"),
    ("budget_cycles_week", "Weekly V2G budget (owner)", "budget_cycles_week_pct",
     "budget_max_cycles_week_pct", "% of a cycle", 10, "owner_budget"),
)
_SOC, _POWER, _STATE, _BATTERY_TEMP, _REASONS = 4, 3, 2, 5, 9
_EXPIRE_PERIODS = 3
COMMAND_GAP_S = 2.0  # a pile takes one owner's command this often: a flood wears no flash
_NUMBER_CLASSES = {"%": "battery", "Wh": "energy"}  # a number's device class by its unit
_LARGEST = 1 << 30  # a command beyond this is no setting (and no small int on a board)
_NOT_IN_NODE_ID = re.compile(r"[^A-Za-z0-9_-]")
# object id, name, what of the state, unit, device class, state class
SENSORS = (
    ("soc", "SOC", "soc", "%", "battery", "measurement"),
    ("power", "Power", "power_w", "W", "power", "measurement"),
    ("setpoint", "Setpoint", "setpoint_w", "W", "power", "measurement"),
    ("state", "State", "state", None, "enum", None),
    ("battery_temp", "Battery temperature", "battery_temp_c", "°C", "temperature",
     "measurement"),
    ("reasons", "Limited by", "reasons", None, None, None),
    ("budget_left", "V2G budget left", "budget_left_wh", "Wh", "energy_storage",
     "measurement"),
)


def node_id(pile_id):
    """The pile id as a discovery topic's node_id, which takes [A-Za-z0-9_-] only."""
    return "v2g_" + _NOT_IN_NODE_ID.sub("_", pile_id)


def config_topics(discovery_prefix, entry):
    """Every discovery config topic of a pile's entities, by object id."""
    node = node_id(entry.pile_id)
    found = {name: f"{discovery_prefix}/sensor/{node}/{name}/config" for name, *_ in SENSORS}
    for name, *_ in numbers(entry):
        found[name] = f"{discovery_prefix}/number/{node}/{name}/config"
    return found


def numbers(entry):
    """The `NUMBERS` the fleet file lets Home Assistant set for the pile of `entry`."""
    return [number for number in NUMBERS if getattr(entry, number[-1])]


def asked(entry):
    """The config keys whose values the pile is asked for: its numbers and their bounds."""
    return [key for _, _, setting, bound, *_ in numbers(entry) for key in (setting, bound)]


def state_payload(link):
    """The pile's latest values as Home Assistant reads them (JSON bytes), or None before
    its first TELEMETRY."""
    tel = link.telemetry
    if tel is None:
        return None
    state = tel.get(_STATE)
    return json.dumps({
        "soc": None if tel.get(_SOC) is None else tel[_SOC] / 10,
        "power_w": tel.get(_POWER),
        "setpoint_w": link.sent_w,
        "state": names.STATES.get(state, f"state {state}"),
        "battery_temp_c": None if tel.get(_BATTERY_TEMP) is None else tel[_BATTERY_TEMP] / 10,
        "reasons": ", ".join(names.reasons(tel.get(_REASONS, 0))) or "none",
        "budget_left_wh": budget_left(tel),
        **{key: link.config.get(key) for _, _, key, *_ in numbers(link.entry)},
    }).encode()


class HomeAssistant:
    """What one worker publishes for Home Assistant, through its BrokerLink."""

    def __init__(self, settings, broker):
        """`settings` the fleet file's [homeassistant]; `broker` the worker's BrokerLink
        (its `links`, `owned`, `publish`)."""
        self.settings = settings
        self.broker = broker
        self.prefix = broker.prefix
        self.records = f"{broker.shared}/ha"
        self.announced = {}  # pile id -> (what they said of it, its configs) as published
        # on this connection
        self.shown = set()  # pile ids whose values were published on this connection
        self._commanded = {}  # pile id -> time.monotonic() of its latest command sent
        for link in broker.links.values():
            link.on_config = self._config_came

    def subscriptions(self):
        return [(f"{self.records}/+", 1), (f"{self.prefix}/+/ha/+/set", 0)]

    def state_topic(self, pile_id):
        return f"{self.prefix}/{pile_id}/ha/state"

    def command_topic(self, pile_id, name):
        return f"{self.prefix}/{pile_id}/ha/{name}/set"

    # -- what is published ----------------------------------------------------------

    def configs(self, link):
        """{topic: payload} of the pile's discovery configs; a number only once the pile
        said its bound, which is the number's max."""
        entry = link.entry
        pile_id = entry.pile_id
        hello = link.hello or {}
        device = {"identifiers": [node_id(pile_id)], "name": f"V2G pile {pile_id}",
                  "manufacturer": "V2G pile edge controller", "model": "bidirectional pile",
                  "sw_version": str(hello.get(wire.HELLO_FIRMWARE, "unknown"))}
        common = {"device": device, "origin": {"name": "pile-aggregator"},
                  "availability": [{"topic": f"{self.prefix}/{pile_id}/status",
                                    "payload_available": ONLINE.decode(),
                                    "payload_not_available": OFFLINE.decode()}],
                  "state_topic": self.state_topic(pile_id)}
        topics = config_topics(self.settings.discovery_prefix, entry)
        found = {}
        for name, title, field, unit, device_class, state_class in SENSORS:
            config = {**common, "name": title, "unique_id": f"{node_id(pile_id)}_{name}",
                      "value_template": f"{{{{ value_json.{field} }}}}",
                      "expire_after": round(_EXPIRE_PERIODS * self.settings.state_period_s)}
            if unit is not None:
                config["unit_of_measurement"] = unit
            if device_class is not None:
                config["device_class"] = device_class
            if state_class is not None:
                config["state_class"] = state_class
            if device_class == "enum":
                config["options"] = list(names.STATES.values())
            found[topics[name]] = config
        for name, title, key, bound_key, unit, step, _ in numbers(entry):
            bound = link.config.get(bound_key)
            if bound is None:
                continue  # the number appears once the pile said its bound, its max
            found[topics[name]] = {
                **common, "name": title, "unique_id": f"{node_id(pile_id)}_{name}",
                "command_topic": self.command_topic(pile_id, name),
                "value_template": f"{{{{ value_json.{key} }}}}",
                "min": 0, "max": bound, "step": step, "mode": "box",
                "unit_of_measurement": unit}
            if unit in _NUMBER_CLASSES:
                found[topics[name]]["device_class"] = _NUMBER_CLASSES[unit]
        return {topic: json.dumps(config).encode() for topic, config in found.items()}

    def connected(self):
        """A new broker connection: publish everything again (a restarted broker without
        persistence lost the retained configs)."""
        self.announced.clear()
        self.shown.clear()

    def publish(self, everything=True):
        """Each state period (`everything`): the configs that changed and the values of
        every pile this worker serves, the pile's reserve and its bound asked for where
        not yet known. In between, the same for the piles not yet shown on this
        connection only, so that a pile shows within a second of its first TELEMETRY."""
        for pile_id in set(self.announced) - self.broker.owned:
            del self.announced[pile_id]  # another worker's now: it publishes them
        self.shown &= self.broker.owned
        for pile_id in sorted(self.broker.owned):
            if not everything and pile_id in self.shown:
                continue
            link = self.broker.links[pile_id]
            keys = asked(link.entry)
            if any(key not in link.config for key in keys):
                link.request(wire.CONFIG_GET, {wire.BODY: keys})
            self._announce(link)
            self._publish_state(link)

    def _announce(self, link):
        """The pile's configs, when what they say of it changed (its firmware, its bound)
        or this connection has not published them yet."""
        pile_id = link.entry.pile_id
        said = ((link.hello or {}).get(wire.HELLO_FIRMWARE),
                [link.config.get(key) for key in asked(link.entry)])
        known = self.announced.get(pile_id)
        if known is not None and known[0] == said:
            return  # built every period, they cost 72 ms at 1,000 piles
        before = {} if known is None else known[1]
        configs = self.configs(link)
        for topic, payload in configs.items():
            if before.get(topic) != payload:
                self.broker.publish(topic, payload, qos=1, retain=True)
        self.announced[pile_id] = (said, configs)
        record = sorted(config_topics(self.settings.discovery_prefix, link.entry).values())
        self.broker.publish(f"{self.records}/{pile_id}",
                            json.dumps(record + [self.state_topic(pile_id)]).encode(),
                            qos=1, retain=True)

    def _publish_state(self, link):
        payload = state_payload(link)
        if payload is not None:
            self.broker.publish(self.state_topic(link.entry.pile_id), payload, retain=True)
            self.shown.add(link.entry.pile_id)

    def _config_came(self, link):
        """The pile answered with its config: Home Assistant sees its settings now (those it
        took, or those it kept when it refused a command)."""
        if link.entry.pile_id in self.broker.owned and link.entry.pile_id in self.announced:
            self._announce(link)  # a number appears once its bound is known
            self._publish_state(link)

    # -- what comes in --------------------------------------------------------------

    def record(self, pile_id, payload):
        """A retained record of the topics published for `pile_id`: those of a pile that
        left the fleet, or of an entity it no longer has, are cleared."""
        if not payload:
            return
        try:
            published = set(json.loads(payload))
        except (ValueError, TypeError):
            self.broker.counters["bad_shared_records"] += 1
            return
        link = self.broker.links.get(pile_id)
        wanted = set()
        if link is not None:
            wanted = set(config_topics(self.settings.discovery_prefix, link.entry).values())
            wanted.add(self.state_topic(pile_id))
        for topic in sorted(published - wanted):
            if isinstance(topic, str) and not any(c in topic for c in "+#"):
                self.broker.publish(topic, b"", qos=1, retain=True)
                self.broker.counters["ha_topics_cleared"] += 1
        if link is None:
            self.broker.publish(f"{self.records}/{pile_id}", b"", qos=1, retain=True)

    def command(self, pile_id, name, payload):
        """Home Assistant set the owner's number `name` of `pile_id`: a CONFIG_SET of its
        one key under the link key, then the values asked back; one command a pile every
        `COMMAND_GAP_S` at most, and none for a value the pile already holds (each change
        the pile takes is a flash write and two event-log entries). Ignored for a pile
        another worker serves."""
        link = self.broker.links.get(pile_id)
        if link is None or pile_id not in self.broker.owned:
            return
        value = _whole(payload)
        key = next((key for number, _, key, *_ in numbers(link.entry) if number == name),
                   None)
        now = time.monotonic()
        last = self._commanded.get(pile_id)
        if key is None or value is None or link.config.get(key) == value or (
                last is not None and now - last < COMMAND_GAP_S):
            self.broker.counters["ha_commands_refused"] += 1  # or nothing to change, or
            self._publish_state(link)  # too soon: Home Assistant shows the pile's value
            return
        self._commanded[pile_id] = now
        self.broker.counters["ha_commands"] += 1
        link.request(wire.CONFIG_SET, {wire.BODY: {key: value}})
        link.request(wire.CONFIG_GET, {wire.BODY: asked(link.entry)})


def _whole(payload):
    """The whole number Home Assistant sent ("40" or "40.0"), or None."""
    try:
        value = float(payload.decode())
    except (UnicodeDecodeError, ValueError):
        return None
    if value != value or abs(value) >= _LARGEST or value != int(value):
        return None
    return int(value)
